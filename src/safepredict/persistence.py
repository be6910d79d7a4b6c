"""Save and load a calibrated :class:`~safepredict.SafePredictor` as plain JSON.

The calibration file holds everything :meth:`SafePredictor.calibrate` learned
(the conformal scores and quantile, the certified tier thresholds, the guard
state, the policy, the calibration id), the JSON-safe constructor parameters,
the library versions and a fingerprint of the model — but never the model
itself and never a pickle. Loading parses JSON and rebuilds each fitted object
through a fixed table of ``from_state`` functions: nothing named in the file is
ever imported, called or evaluated.

The model is saved by the user's choice. ``save(path, model="skops")`` writes
it next to the calibration file with :mod:`skops.io` (whose loader refuses
types not on a trusted list); ``joblib``/``pickle`` files can run arbitrary code
when loaded and are deliberately not offered.

The file's format (layout, strict JSON, checksum, verification) lives in
:mod:`safepredict._calibration_file`, the model fingerprint in
:mod:`safepredict._model_fingerprint`.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

import numpy as np

from safepredict._calibration_file import (
    FORMAT,
    SCHEMA_VERSION,
    check_json_safe,
    digest,
    encode_floats,
    key_bytes_of,
    read_document,
)
from safepredict._load_checks import check_conformal, trial_decide
from safepredict._model_fingerprint import (
    check_model,
    library_versions,
    model_fingerprint,
)
from safepredict._state import check_array, check_unit_level
from safepredict._version import __version__
from safepredict.adapters import adapt
from safepredict.config import GuardConfig, TierPolicy
from safepredict.conformal import (
    ClassificationConformal,
    RegressionConformal,
)
from safepredict.exceptions import ConfigError, PersistenceError
from safepredict.explain import ModelExplainer, TokenExplainer
from safepredict.guards import ArrayGuards, InputGuards, TextGuards
from safepredict.tiers import TierCalibration

#: The checksum's old private path (``persistence._digest``), kept for its importers.
_digest = digest

__all__ = [
    "COMPONENTS",
    "FORMAT",
    "SCHEMA_VERSION",
    "Component",
    "SavedPredictor",
    "load_predictor",
    "model_fingerprint",
    "raw_row_parts",
    "read_document",
    "save_predictor",
]


class SavedPredictor(Protocol):
    """What persistence reads and restores on a predictor (``SafePredictor``).

    A protocol rather than an import, so this module never imports the facade
    that calls it (no predictor <-> persistence cycle).
    """

    model: Any
    task_: str
    policy_: TierPolicy
    n_features_in_: int
    conformal_: Any
    conformity_score_: str

    def __init__(self, model: Any, **params: Any) -> None:
        """The constructor: the model and the saved parameters."""

    @classmethod
    def _get_param_names(cls) -> list[str]: ...

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        """The constructor parameters (scikit-learn's ``get_params``)."""
        ...

    def _check_calibrated(self, method: str) -> None: ...


_P = TypeVar("_P", bound=SavedPredictor)


@dataclass(frozen=True)
class Component:
    """One fitted attribute of the predictor that is saved through ``to_state``.

    Parameters
    ----------
    attr : str
        Attribute name on the predictor (``"conformal_"``, ``"guards_"``, ...).
    loaders : mapping of str to callable
        Class name -> function rebuilding the object from its state. Only these
        classes can be restored: the class name in the file is a key into this
        table, never something to import.
    to_state : callable, optional
        How to turn the object into its state; default ``obj.to_state()``.
    with_predictor : bool, default=False
        Call loaders as ``loader(state, predictor)`` (after the constructor
        parameters are set), for state that needs runtime objects such as
        CQR's quantile models.
    validate : callable, optional
        ``validate(obj, predictor)`` checks the restored object against the rest of
        the state (shapes against the feature count, finite values, ...) and raises
        ``ValueError`` (or ``PersistenceError``) when it is inconsistent. Runs after
        every component is restored, before the trial ``decide``.
    """

    attr: str
    loaders: Mapping[str, Callable[..., Any]]
    to_state: Callable[[Any], dict[str, Any]] | None = None
    with_predictor: bool = False
    validate: Callable[[Any, Any], None] | None = None


def _classification_conformal(state: Mapping[str, Any], predictor: SavedPredictor) -> Any:
    """``ClassificationConformal.from_state`` (the predictor is not needed)."""
    return ClassificationConformal.from_state(state)


def _regression_conformal(state: Mapping[str, Any], predictor: SavedPredictor) -> Any:
    """``RegressionConformal.from_state``, handing CQR its quantile models back."""
    models = getattr(predictor, "quantile_models", None)
    kwargs: dict[str, Any] = {} if models is None else {"quantile_models": models}
    return RegressionConformal.from_state(state, **kwargs)


def _explainer(state: Mapping[str, Any], predictor: SavedPredictor) -> Any:
    """``ModelExplainer.from_state`` bound to the predictor's model (shap rebuilds lazily)."""
    return ModelExplainer.from_state(
        dict(state),
        model=adapt(predictor.model, predictor.task_, getattr(predictor, "classes_", None)),
    )


def _token_explainer(state: Mapping[str, Any], predictor: SavedPredictor) -> Any:
    """``TokenExplainer.from_state`` bound to the predictor's (text or array) model."""
    return TokenExplainer.from_state(dict(state), model=predictor.model)


def _validate_conformal(obj: Any, predictor: SavedPredictor) -> None:
    check_unit_level(obj.confidence_level, "conformal confidence_level")
    check_array(obj.calibration_scores, "conformal calibration_scores", finite=False)
    if len(obj.calibration_scores) == 0:
        raise ValueError("conformal calibration_scores is empty.")
    for name in ("quantile", "quantile_upper", "k_star", "lambda_star"):
        value = getattr(obj, name, None)
        if value is not None and math.isnan(float(value)):
            raise ValueError(f"conformal {name} is NaN.")


def _input_guards(state: Mapping[str, Any], predictor: SavedPredictor) -> Any:
    """``InputGuards.from_state`` (the predictor is not needed)."""
    return InputGuards.from_state(state)


def _text_guards(state: Mapping[str, Any], predictor: SavedPredictor) -> Any:
    """Text guards: tokens and feature space from the model / ``featurizer=`` given to load."""
    model, featurizer = predictor.model, getattr(predictor, "featurizer", None)
    return TextGuards.from_state(state, model=model, featurizer=featurizer)


def _array_guards(state: Mapping[str, Any], predictor: SavedPredictor) -> Any:
    """Array guards: the ``featurizer=`` given to load, if they were fitted with one."""
    return ArrayGuards.from_state(state, featurizer=getattr(predictor, "featurizer", None))


def _validate_guards(obj: Any, predictor: SavedPredictor) -> None:
    if not isinstance(obj, InputGuards):  # text and array guards hold no per-column lists
        return
    n = int(predictor.n_features_in_)
    for name in ("columns", "kinds", "low", "high", "allow_missing", "categories"):
        value = getattr(obj, name)
        if len(value) != n:
            raise ValueError(f"guards {name} has {len(value)} entries for {n} features.")
    for name in ("low", "high"):
        values = [v for v in getattr(obj, name) if v is not None]
        check_array(np.asarray(values, dtype=np.float64), f"guards {name}", finite=False)


#: Every fitted component saved in the file, in order. To persist a new fitted object,
#: append a ``Component`` naming its attribute and the loader of its class.
#: An attribute that is absent or ``None`` on the predictor is saved as ``null``.
COMPONENTS: tuple[Component, ...] = (
    Component(
        "conformal_",
        {
            "ClassificationConformal": _classification_conformal,
            "RegressionConformal": _regression_conformal,
        },
        with_predictor=True,
        validate=_validate_conformal,
    ),
    Component("tier_calibration_", {"TierCalibration": TierCalibration.from_state}),
    Component(
        "guards_",
        {"InputGuards": _input_guards, "TextGuards": _text_guards, "ArrayGuards": _array_guards},
        with_predictor=True,
        validate=_validate_guards,
    ),
    Component(
        "explainer_",
        {"ModelExplainer": _explainer, "TokenExplainer": _token_explainer},
        with_predictor=True,
    ),
    Component(
        "guard_config_",
        {"GuardConfig": GuardConfig.from_dict},
        to_state=lambda obj: obj.to_dict(),
    ),
)

#: Simple fitted attributes saved as JSON values.
_FITTED_SCALARS = ("task_", "conformity_score_", "calibration_size_", "calibration_id_")
#: Constructor parameters that change what calibration learned; they cannot be
#: overridden at load time (recalibrate instead).
_CALIBRATION_PARAMS = frozenset(
    {
        "task",
        "confidence_level",
        "conformity_score",
        "tiers",
        "guards",
        "random_state",
        "explainer_background",
        "conditional",
        "smoothed",
    }
)
_SAFE_FILE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")


def raw_row_parts(predictor: SavedPredictor) -> list[str]:
    """The parts of a predictor's saved state that hold raw data rows (opt-ins only).

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> from safepredict import GuardConfig, SafePredictor
    >>> X, y = load_iris(return_X_y=True)
    >>> model = LogisticRegression(max_iter=500).fit(X[::2], y[::2])
    >>> raw_row_parts(SafePredictor(model, log="off").calibrate(X[1::2], y[1::2]))
    []
    >>> knn = SafePredictor(model, guards=GuardConfig(ood_method="knn"), log="off")
    >>> raw_row_parts(knn.calibrate(X[1::2], y[1::2]))
    ["guards_.detector.raw_reference_rows (GuardConfig(ood_method='knn'))"]
    """
    parts = []
    guards = getattr(predictor, "guards_", None)
    if guards is not None and getattr(guards.detector, "kind", None) == "knn":
        parts.append("guards_.detector.raw_reference_rows (GuardConfig(ood_method='knn'))")
    explainer = getattr(predictor, "explainer_", None)
    state = getattr(explainer, "state", None)  # a TokenExplainer keeps no background
    if state is not None and state.background_kind == "sample":
        parts.append("explainer_.background (explainer_background='sample')")
    return parts


# ---------------------------------------------------------------- save
def _builtin_labels(values: Any) -> list[Any]:
    """Class labels as JSON values (numpy scalars to Python ones)."""
    return [v.item() if isinstance(v, np.generic) else v for v in list(values)]


def _params(predictor: SavedPredictor) -> tuple[dict[str, Any], list[str]]:
    saved: dict[str, Any] = {}
    skipped: list[str] = []
    for name, value in predictor.get_params(deep=False).items():
        if name == "model":
            continue
        if name == "tiers":
            saved[name] = predictor.policy_.to_dict()
        elif name == "guards":
            saved[name] = (
                {"guard_config": GuardConfig.coerce(value).to_dict()}
                if isinstance(value, GuardConfig | Mapping)
                else value
            )
        elif name == "redact":
            saved[name] = [str(v) for v in value]
        elif name == "classes" and value is not None:  # labels of an adapted model
            saved[name] = _builtin_labels(value)
        elif value is None or isinstance(value, bool | int | float | str):
            saved[name] = value
        else:
            skipped.append(name)
    return saved, sorted(skipped)


def _component_state(predictor: SavedPredictor, comp: Component) -> dict[str, Any] | None:
    obj = getattr(predictor, comp.attr, None)
    if obj is None:
        return None
    kind = type(obj).__name__
    if kind not in comp.loaders:
        raise PersistenceError(
            f"cannot save {comp.attr}: objects of type {kind} have no registered loader "
            f"(known: {sorted(comp.loaders)}). Register it in safepredict.persistence.COMPONENTS."
        )
    state = comp.to_state(obj) if comp.to_state is not None else obj.to_state()
    check_json_safe(encode_floats(state), f"state.{comp.attr}")
    return {"type": kind, "state": state}


def _dump_model(predictor: SavedPredictor, path: Path) -> dict[str, Any]:
    try:
        import skops.io as sio
    except ImportError as exc:  # pragma: no cover - skops is in the dev environment
        raise ConfigError(
            "save(path, model='skops') needs skops: pip install 'safepredict[skops]'."
        ) from exc
    model_path = path.with_name(path.stem + ".skops")
    sio.dump(predictor.model, model_path)
    return {
        "format": "skops",
        "file": model_path.name,
        "sha256": hashlib.sha256(model_path.read_bytes()).hexdigest(),
    }


def save_predictor(
    predictor: SavedPredictor,
    path: str | Path,
    *,
    model: str | None = None,
    key: bytes | str | None = None,
) -> Path:
    """Write ``predictor``'s calibration to ``path`` (see :meth:`SafePredictor.save`)."""
    predictor._check_calibrated("save")
    if model not in (None, "skops"):
        raise ConfigError(
            f"model must be None (save the calibration only) or 'skops'; got {model!r}. joblib "
            "and pickle are not offered: loading them can execute arbitrary code."
        )
    path = Path(path)
    if not path.parent.is_dir():
        raise PersistenceError(
            f"cannot save to {str(path)!r}: the directory {str(path.parent)!r} does not exist; "
            "create it first."
        )
    key_bytes = key_bytes_of(key)
    fingerprint = model_fingerprint(predictor.model, predictor.task_)
    fingerprint["file"] = None
    params, skipped = _params(predictor)
    names = getattr(predictor, "feature_names_in_", None)
    given = getattr(predictor, "feature_names_", None)
    doc: dict[str, Any] = {
        "format": FORMAT,
        "schema_version": SCHEMA_VERSION,
        "created_at": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "versions": library_versions(),
        "model": fingerprint,
        "params": params,
        "params_not_saved": skipped,
        "fitted": {
            **{a: getattr(predictor, a) for a in _FITTED_SCALARS},
            "n_features_in_": int(predictor.n_features_in_),
            "feature_names_in_": None if names is None else [str(c) for c in names],
            **({} if given is None else {"feature_names_": [str(c) for c in given]}),
            **_modality(predictor),
        },
        "raw_rows": raw_row_parts(predictor),
        "policy": predictor.policy_.to_dict(),
        "state": {c.attr: _component_state(predictor, c) for c in COMPONENTS},
    }
    if model is not None:  # only once every component's state is known to be saveable
        fingerprint["file"] = _dump_model(predictor, path)
    doc = encode_floats(doc)
    check_json_safe(doc, "file")
    doc["checksum"] = digest(doc, key_bytes)
    text = json.dumps(doc, indent=1, sort_keys=True, ensure_ascii=True, allow_nan=False)
    tmp = path.with_name(path.name + ".tmp")
    try:
        tmp.write_text(text + "\n", encoding="ascii")
        tmp.replace(path)  # atomic: a reader never sees a half-written file
    except OSError as exc:
        raise PersistenceError(f"cannot write {str(path)!r}: {exc}.") from exc
    return path


def _load_model_file(p: Path, entry: Any, trusted: Sequence[str] | None) -> Any:
    if not isinstance(entry, dict) or entry.get("format") != "skops":
        raise PersistenceError(
            f"{p} holds no model (it was saved without model='skops'); pass the fitted model: "
            "SafePredictor.load(path, model=model)."
        )
    name = entry.get("file")
    if not isinstance(name, str) or not _SAFE_FILE_NAME.match(name) or ".." in name:
        raise PersistenceError(
            f"{p}: the model file name {name!r} is not a plain file name next to the "
            "calibration file; refusing to follow it."
        )
    model_path = p.with_name(name)
    if not model_path.is_file():
        raise PersistenceError(
            f"model file {str(model_path)!r} (referenced by {p}) does not exist; copy it next to "
            "the calibration file or pass model=."
        )
    if hashlib.sha256(model_path.read_bytes()).hexdigest() != entry.get("sha256"):
        raise PersistenceError(
            f"{model_path}: its SHA-256 differs from the one recorded in {p}; the model file was "
            "replaced or modified after saving. Do not load it."
        )
    try:
        import skops.io as sio
    except ImportError as exc:  # pragma: no cover - skops is in the dev environment
        raise PersistenceError(
            "loading the model needs skops: pip install 'safepredict[skops]'."
        ) from exc
    untrusted = list(sio.get_untrusted_types(file=model_path))
    allowed = set(trusted or ())
    refused = [t for t in untrusted if t not in allowed]
    if refused:
        raise PersistenceError(
            f"{model_path} contains types skops does not trust by default: {refused}. Loading "
            "them may run their code. If you trust this file, pass them explicitly: "
            f"SafePredictor.load(path, trusted={refused!r})."
        )
    return sio.load(model_path, trusted=untrusted)


def _param(doc: Mapping[str, Any], name: str) -> Any:
    value = doc["params"][name]
    if name == "guards" and isinstance(value, dict):
        return GuardConfig.from_dict(value["guard_config"])
    if name == "tiers" and value is not None:
        return TierPolicy.from_dict(value)
    if name == "redact":
        return tuple(value)
    return value


def load_predictor(
    cls: type[_P],
    path: str | Path,
    *,
    model: Any = None,
    trusted: Sequence[str] | None = None,
    key: bytes | str | None = None,
    verify_model: bool = True,
    **params: Any,
) -> _P:
    """Rebuild a calibrated predictor (see :meth:`SafePredictor.load`)."""
    p = Path(path)
    doc = read_document(p, key=key)
    fixed = sorted(set(params) & _CALIBRATION_PARAMS)
    if fixed:
        raise ConfigError(
            f"load() cannot change {fixed}: they shape the saved calibration. Load as saved, "
            "then set_params(...) and calibrate() again to change them."
        )
    try:
        if model is None:
            model = _load_model_file(p, doc["model"].get("file"), trusted)
        task = doc["fitted"]["task_"]
        if task not in ("classification", "regression"):
            raise PersistenceError(f"{p}: unknown task {task!r}.")
        check_model(doc["model"], model, task, verify=verify_model)
        known = set(cls._get_param_names())
        unknown = sorted(set(doc["params"]) - known)
        if unknown:
            raise PersistenceError(
                f"{p} has constructor parameters {unknown} this safepredict ({__version__}) "
                "does not know; load it with the safepredict version that saved it "
                f"({doc['versions'].get('safepredict')})."
            )
        kwargs = {name: _param(doc, name) for name in doc["params"]}
        try:  # the caller's own parameters, alone: a mistake there is the caller's to fix
            cls(model, **params)
        except ConfigError as exc:
            raise _CallerConfigError(str(exc)) from exc
        kwargs.update(params)
        predictor = cls(model, **kwargs)
        fitted = doc["fitted"]
        for attr in _FITTED_SCALARS:
            setattr(predictor, attr, fitted[attr])
        predictor.n_features_in_ = int(fitted["n_features_in_"])
        if fitted.get("input_modality_") is not None:  # text or arrays (safepredict.inputs)
            setattr(predictor, "input_modality_", dict(fitted["input_modality_"]))  # noqa: B010
        for names_attr in ("feature_names_in_", "feature_names_"):
            if fitted.get(names_attr) is not None:
                names_value = [str(c) for c in fitted[names_attr]]
                setattr(predictor, names_attr, np.asarray(names_value, dtype=object))
        predictor.policy_ = TierPolicy.from_dict(doc["policy"])
        if task == "classification":  # classes_, or classes= (safepredict.adapters)
            classes = adapt(model, task, kwargs.get("classes")).classes_
            setattr(predictor, "classes_", np.asarray(classes))  # noqa: B010
        _restore_components(predictor, doc["state"], p)
        check_conformal(predictor, task, p)
        trial_decide(predictor)
    except (PersistenceError, _CallerConfigError):  # the file's fault, or a load parameter's
        raise
    except Exception as exc:  # any inconsistency of the file is a load error, never a decide one
        raise PersistenceError(
            f"{p} is malformed ({type(exc).__name__}: {_short(exc)}); it cannot be restored. "
            "Re-save the predictor from its source."
        ) from exc
    return predictor


def _modality(predictor: SavedPredictor) -> dict[str, Any]:
    """``{"input_modality_": ...}`` for a text or array predictor, else nothing."""
    modality = getattr(predictor, "input_modality_", None)
    return {} if modality is None else {"input_modality_": dict(modality)}


class _CallerConfigError(ConfigError):
    """A parameter given to ``load`` itself is wrong (not the file)."""


def _short(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) <= 300 else text[:297] + "..."


def _restore_components(predictor: SavedPredictor, states: Any, p: Path) -> None:
    if not isinstance(states, dict):
        raise PersistenceError(f"{p}: 'state' must be an object.")
    registry = {c.attr: c for c in COMPONENTS}
    unknown = sorted(set(states) - set(registry))
    if unknown:
        raise PersistenceError(
            f"{p} holds fitted state {unknown} that this safepredict ({__version__}) cannot "
            "restore; load it with the version that saved it."
        )
    if states.get("conformal_") is None:
        raise PersistenceError(f"{p} has no conformal state; it cannot be used to decide.")
    for attr, comp in registry.items():
        entry = states.get(attr)
        if entry is None:
            setattr(predictor, attr, None)
            continue
        if not isinstance(entry, dict) or set(entry) != {"type", "state"}:
            raise PersistenceError(f"{p}: state.{attr} must be {{'type': ..., 'state': ...}}.")
        loader = comp.loaders.get(entry["type"]) if isinstance(entry["type"], str) else None
        if loader is None:
            raise PersistenceError(
                f"{p}: state.{attr} has type {entry['type']!r}; only {sorted(comp.loaders)} can "
                "be restored (types are looked up in a fixed table, never imported)."
            )
        state = entry["state"]
        setattr(predictor, attr, loader(state, predictor) if comp.with_predictor else loader(state))
    for attr, comp in registry.items():
        obj = getattr(predictor, attr, None)
        if obj is not None and comp.validate is not None:
            comp.validate(obj, predictor)
