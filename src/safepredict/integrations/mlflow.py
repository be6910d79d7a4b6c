"""Package a calibrated predictor as an MLflow model (the ``mlflow`` extra).

:func:`log_model` (and :func:`save_model` for a local directory) writes one MLflow
model directory holding:

- the scikit-learn model with MLflow's own ``sklearn`` flavor in skops format
  (``model.skops``; :func:`mlflow.sklearn.load_model` returns the bare model);
- the calibration as safepredict's JSON file (``model.json``, written by
  :meth:`SafePredictor.save`): the same checksum, the SHA-256 of
  ``model.skops`` and the model fingerprint as any saved predictor, so a
  modified file is refused at load; nothing of safepredict is pickled;
- a ``python_function`` flavor whose loader is this module:
  ``mlflow.pyfunc.load_model(uri).predict(frame)`` returns the decisions as
  :meth:`Decisions.to_frame` (sets and reasons as JSON text);
- a signature: the input columns (from ``input_example``) and the decision
  columns with their types.

Loading reads local files only: no network, no environment creation.
Only scikit-learn estimators are accepted (skops must be able to store them with
its default trusted types); log other models with their own MLflow flavor and
pass them to :meth:`SafePredictor.load` yourself.
"""

from __future__ import annotations

import copy
import sys
from collections.abc import Mapping, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

from safepredict._extras import require
from safepredict._validation import describe
from safepredict._version import __version__
from safepredict.decisions import FRAME_COLUMNS
from safepredict.exceptions import ConfigError, NotCalibratedError, PersistenceError
from safepredict.predictor import SafePredictor

__all__ = ["DecisionModel", "decision_schema", "log_model", "save_model"]

FLAVOR_NAME = "safepredict"
_CALIBRATION = "model.json"  # persistence writes the model next to it as model.skops


def _check_predictor(predictor: Any, where: str) -> None:
    if not isinstance(predictor, SafePredictor):
        raise ConfigError(f"{where} needs a SafePredictor; got {describe(predictor)}.")
    if not hasattr(predictor, "conformal_"):
        raise NotCalibratedError(
            f"{where} needs a calibrated predictor; call predictor.calibrate(X_cal, y_cal) first."
        )
    from sklearn.base import BaseEstimator

    model = predictor.model
    if not isinstance(model, BaseEstimator) or predictor.get_params().get("classes") is not None:
        raise ConfigError(
            f"{where} stores the model with MLflow's sklearn flavor (skops format); "
            f"{type(model).__module__}.{type(model).__qualname__} is not a scikit-learn "
            "estimator. Log the model with its own MLflow flavor (e.g. mlflow.xgboost), save "
            "the calibration with predictor.save(path) and rebuild it with "
            "SafePredictor.load(path, model=model)."
        )


def _column_type(dtype: Any, column: str) -> Any:
    import pandas as pd
    from mlflow.types import DataType

    if isinstance(dtype, pd.StringDtype) or pd.api.types.is_object_dtype(dtype):
        return DataType.string
    if pd.api.types.is_bool_dtype(dtype):
        return DataType.boolean
    if pd.api.types.is_integer_dtype(dtype):
        return DataType.long
    if pd.api.types.is_float_dtype(dtype):
        return DataType.double
    raise ConfigError(  # pragma: no cover - to_frame has no other dtypes
        f"decision column {column!r} has dtype {dtype}, which has no MLflow type."
    )


def decision_schema(meta: Any) -> Any:
    """The MLflow output schema of a ``Decisions.to_frame(set_format="string")`` table.

    Parameters
    ----------
    meta : pandas.DataFrame
        A (possibly empty) decisions table.

    Returns
    -------
    mlflow.types.Schema
        One column per decision field; those that can be missing (``prediction``,
        ``prediction_set``, the interval bounds) are optional.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> X, y = load_iris(return_X_y=True)
    >>> model = LogisticRegression(max_iter=500).fit(X[::2], y[::2])
    >>> sp = SafePredictor(model, log="off").calibrate(X[1::2], y[1::2])
    >>> schema = decision_schema(sp.decide(X[:0]).to_frame(set_format="string"))
    >>> [(c.name, c.type.name) for c in schema.inputs][:3]
    [('decision_id', 'string'), ('prediction', 'long'), ('prediction_set', 'string')]
    """
    require("mlflow", "mlflow", "decision_schema")
    from mlflow.types import ColSpec, Schema

    optional = {"prediction", "prediction_set", "interval_lower", "interval_upper"}
    return Schema(
        [
            ColSpec(_column_type(meta[c].dtype, c), c, required=c not in optional)
            for c in FRAME_COLUMNS
        ]
    )


def _signature(predictor: SafePredictor, input_example: Any) -> Any:
    import pandas as pd
    from mlflow.models import ModelSignature, infer_signature

    names = getattr(predictor, "feature_names_in_", None)
    if not isinstance(input_example, pd.DataFrame) or not len(input_example):
        raise ConfigError(
            "input_example must be a non-empty pandas DataFrame of input rows (e.g. "
            f"X_cal.head(5)); got {describe(input_example)}. MLflow records the input schema "
            "from it; the rows themselves are not stored."
        )
    if names is not None and sorted(map(str, input_example.columns)) != sorted(map(str, names)):
        raise ConfigError(
            f"input_example has columns {list(input_example.columns)}; the predictor was "
            f"calibrated on {list(names)}. Pass rows with exactly those columns."
        )
    probe = copy.copy(predictor)  # decide on an empty frame, without events
    probe.log = "off"
    meta = probe.decide(input_example.iloc[:0]).to_frame(set_format="string")
    inputs = infer_signature(input_example).inputs
    return ModelSignature(inputs=inputs, outputs=decision_schema(meta))


def _requirements() -> list[str]:
    pins = [f"safepredict=={__version__}"]
    for dist in ("scikit-learn", "skops"):
        try:
            pins.append(f"{dist}=={metadata.version(dist)}")
        except metadata.PackageNotFoundError:  # pragma: no cover - both come with the extra
            pins.append(dist)
    return pins


def save_model(
    predictor: SafePredictor,
    path: str | Path,
    mlflow_model: Any = None,
    *,
    input_example: Any,
    trusted: Sequence[str] | None = None,
    pip_requirements: Sequence[str] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``predictor`` as an MLflow model directory at ``path`` (see :func:`log_model`).

    Parameters
    ----------
    predictor : SafePredictor
        A calibrated predictor around a scikit-learn estimator.
    path : str or path
        A directory that does not exist yet.
    mlflow_model : mlflow.models.Model, optional
        The model description to add the flavors to (``Model.log`` passes it).
    input_example : pandas.DataFrame
        A few input rows; they give the signature's input schema and are not stored.
    trusted : sequence of str, optional
        Types beyond skops' defaults that the model file may hold (see :func:`log_model`).
    pip_requirements : sequence of str, optional
        Default: safepredict, scikit-learn and skops pinned to the installed versions.
    metadata : mapping, optional
        Stored in the ``MLmodel`` file.

    Returns
    -------
    pathlib.Path
        ``path``.

    Examples
    --------
    >>> import tempfile, pandas as pd
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> X, y = load_iris(return_X_y=True, as_frame=True)
    >>> model = LogisticRegression(max_iter=500).fit(X[::2], y[::2])
    >>> sp = SafePredictor(model, log="off").calibrate(X[1::2], y[1::2])
    >>> out = save_model(sp, Path(tempfile.mkdtemp()) / "m", input_example=X.head())
    >>> sorted(p.name for p in out.iterdir() if p.suffix in (".json", ".skops"))
    ['model.json', 'model.skops']
    """
    require("mlflow", "mlflow", "save_model")
    import mlflow.sklearn
    from mlflow import pyfunc
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

    _check_predictor(predictor, "save_model")
    signature = _signature(predictor, input_example)
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        raise PersistenceError(
            f"cannot save the MLflow model to {str(path)!r}: it already exists and is not an "
            "empty directory. Pass a new directory."
        )
    model = Model() if mlflow_model is None else mlflow_model
    trusted_types = sorted({str(t) for t in trusted or ()})
    try:
        mlflow.sklearn.save_model(
            predictor.model,
            str(path),
            mlflow_model=model,
            serialization_format=mlflow.sklearn.SERIALIZATION_FORMAT_SKOPS,
            signature=signature,
            pip_requirements=list(pip_requirements or _requirements()),
            metadata=None if metadata is None else dict(metadata),
            skops_trusted_types=trusted_types or None,
        )
    except MlflowException as exc:
        raise PersistenceError(
            f"MLflow could not save the model to {str(path)!r}: {exc.message} Save to a new "
            "directory; if the message names types skops does not trust and you have "
            "reviewed them, pass them as trusted=[...]."
        ) from exc
    stored = model.flavors["sklearn"]["pickled_model"]
    expected = Path(_CALIBRATION).with_suffix(".skops").name
    if stored != expected:  # pragma: no cover - MLflow's skops file name changed
        raise PersistenceError(
            f"MLflow stored the model as {stored!r}; safepredict expects {expected!r} next to "
            f"{_CALIBRATION}. Upgrade safepredict for this MLflow version."
        )
    # The calibration, with the SHA-256 of the model file both flavors read: writing it
    # rewrites model.skops with the same skops dump, so the recorded hash is of that file.
    predictor.save(path / _CALIBRATION, model="skops")
    python_function = model.flavors.pop(pyfunc.FLAVOR_NAME)
    pyfunc.add_to_model(
        model,
        loader_module=__name__,
        data=_CALIBRATION,
        conda_env=python_function.get(pyfunc.ENV, {}).get("conda"),
        python_env=python_function.get(pyfunc.ENV, {}).get("virtualenv"),
        predict_fn="predict",
    )
    model.add_flavor(
        FLAVOR_NAME,
        safepredict_version=__version__,
        calibration=_CALIBRATION,
        set_format="string",
        trusted_types=trusted_types,
    )
    model.save(str(path / "MLmodel"))
    return path


def log_model(
    predictor: SafePredictor,
    name: str,
    *,
    input_example: Any,
    trusted: Sequence[str] | None = None,
    registered_model_name: str | None = None,
    pip_requirements: Sequence[str] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Any:
    """Log a calibrated predictor to the active MLflow run (started if there is none).

    ``mlflow.pyfunc.load_model(info.model_uri).predict(frame)`` then returns the
    decisions table (:meth:`Decisions.to_frame` with ``set_format="string"``),
    identical to ``predictor.decide(frame)`` but for the per-batch
    ``decision_id``; ``mlflow.sklearn.load_model(info.model_uri)`` returns the
    bare model.

    Parameters
    ----------
    predictor : SafePredictor
        A calibrated predictor around a scikit-learn estimator.
    name : str
        The model's name in the run.
    input_example : pandas.DataFrame
        A few input rows; they give the signature's input schema and are not
        stored (privacy by default).
    trusted : sequence of str, optional
        Types beyond skops' defaults that the model file may hold, e.g.
        ``["sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor"]``
        for HistGradientBoosting (skops names them when it refuses a model).
        Recorded in the ``MLmodel`` file; loading trusts exactly these, and only
        after the model file's SHA-256 matched the calibration file.
    registered_model_name : str, optional
        Also register the model under this name.
    pip_requirements : sequence of str, optional
        Default: safepredict, scikit-learn and skops pinned to the installed versions.
    metadata : mapping, optional
        Stored in the ``MLmodel`` file.

    Returns
    -------
    mlflow.models.model.ModelInfo
        ``model_uri`` is what ``mlflow.pyfunc.load_model`` takes.

    Raises
    ------
    NotCalibratedError
        If the predictor is not calibrated.
    ConfigError
        If the model is not a scikit-learn estimator, or ``input_example`` does
        not have the calibration columns.
    PersistenceError
        If MLflow cannot store the model.

    Examples
    --------
    >>> import mlflow, tempfile
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> X, y = load_iris(return_X_y=True, as_frame=True)
    >>> sp = SafePredictor(LogisticRegression(max_iter=500).fit(X[::2], y[::2]), log="off")
    >>> sp = sp.calibrate(X[1::2], y[1::2])
    >>> mlflow.set_tracking_uri(Path(tempfile.mkdtemp()).as_uri())  # doctest: +SKIP
    >>> info = log_model(sp, "iris", input_example=X.head())  # doctest: +SKIP
    >>> mlflow.pyfunc.load_model(info.model_uri).predict(X.head())["action"].tolist()
    ... # doctest: +SKIP
    ['accept', 'accept', 'accept', 'accept', 'accept']
    """
    require("mlflow", "mlflow", "log_model")
    from mlflow.exceptions import MlflowException
    from mlflow.models import Model

    _check_predictor(predictor, "log_model")
    try:
        return Model.log(
            artifact_path=None,
            name=name,
            flavor=sys.modules[__name__],
            flavor_name=FLAVOR_NAME,
            registered_model_name=registered_model_name,
            metadata=None if metadata is None else dict(metadata),
            predictor=predictor,
            input_example=input_example,
            trusted=trusted,
            pip_requirements=pip_requirements,
        )
    except MlflowException as exc:
        raise PersistenceError(f"MLflow could not log the model: {exc.message}") from exc


class DecisionModel:
    """What ``mlflow.pyfunc.load_model`` wraps: a loaded predictor whose predict decides.

    Parameters
    ----------
    predictor : SafePredictor
        The predictor rebuilt from the model directory.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> X, y = load_iris(return_X_y=True, as_frame=True)
    >>> model = LogisticRegression(max_iter=500).fit(X[::2], y[::2])
    >>> sp = SafePredictor(model, log="off").calibrate(X[1::2], y[1::2])
    >>> DecisionModel(sp).predict(X.head(2))["tier"].tolist()
    ['auto', 'auto']
    """

    def __init__(self, predictor: SafePredictor) -> None:
        self.predictor = predictor

    def predict(self, model_input: Any, params: Mapping[str, Any] | None = None) -> Any:
        """Decide on ``model_input``; return ``Decisions.to_frame(set_format="string")``."""
        return self.predictor.decide(model_input).to_frame(set_format="string")


def _load_pyfunc(path: str) -> DecisionModel:
    """MLflow's pyfunc entry point: ``path`` is the calibration file of the model directory.

    Rebuilt by :meth:`SafePredictor.load`: the calibration checksum, the SHA-256 of
    ``model.skops`` (checked before skops reads it, refusing untrusted types) and
    the model fingerprint are all verified; any mismatch raises
    :class:`~safepredict.exceptions.PersistenceError`.
    """
    from mlflow.models import Model

    conf = Model.load(str(Path(path).parent)).flavors.get(FLAVOR_NAME, {})
    trusted = [str(t) for t in conf.get("trusted_types") or ()]
    return DecisionModel(SafePredictor.load(path, trusted=trusted))
