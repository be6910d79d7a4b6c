"""SHAP explanations in the user's own feature names, within a latency budget.

This is the only module that imports :mod:`shap` (DESIGN.md, "Layers"); shap is
imported lazily, on the first explanation, so ``import safepredict`` stays fast
and predictors that never explain never pay for it.

How a model is explained
------------------------
* **Tree ensembles** (scikit-learn forests, gradient boosting, xgboost, lightgbm,
  catboost; detected by type, without importing those packages) use
  ``shap.TreeExplainer`` (``tree_path_dependent``, exact, no background needed).
* **Linear models** (``sklearn.linear_model``) use ``shap.LinearExplainer`` on the
  background's mean (exact, interventional).
* **Anything else** uses a model-agnostic explainer over a fixed-size background
  background of the calibration data: ``shap.ExactExplainer`` when the model has few
  input columns (at most :data:`EXACT_MAX_FEATURES`), else
  :class:`PermutationShap` (shap's antithetic permutation algorithm, drawing from a
  ``Generator`` seeded with ``random_state``, never numpy's global generator).

The background is by default aggregated: at most
:data:`AGNOSTIC_BACKGROUND_SIZE` k-means centroids of the calibration rows, each
summarising >= 20 rows, with their weights (the linear explainer uses their
weighted mean and covariance). ``explainer_background="sample"`` opts in to a
raw sample of calibration rows (stored verbatim in saved states).
* A scikit-learn ``Pipeline`` is explained by running the final estimator's
  explainer on the transformed data and summing the contributions of every
  transformed column back into the input column that produced it (one-hot
  columns sum to their source column). The map comes from the
  ``ColumnTransformer`` structure (``transformers_``, ``output_indices_``,
  ``get_feature_names_out``) and is verified by perturbing each input column; a
  preprocessor whose outputs mix several inputs is explained model-agnostically
  in the input columns instead.

What is explained (``Explanation.output``)
------------------------------------------
Additivity ``base_value + sum(values) == explained output`` holds for the
reported quantity:

* ``"prediction"``: the regression output.
* ``"proba[<label>]"``: the predicted class's probability (forests, which
  average leaf probabilities, and the model-agnostic explainers).
* ``"log_odds[<label>]"`` (binary) / ``"logit[<label>]"`` (multiclass): the
  predicted class's ``decision_function`` margin, for gradient boosting and
  linear classifiers, whose probabilities are a non-linear link of an additive
  margin (explaining the margin keeps the explanation exact and cheap).
"""

from __future__ import annotations

import contextlib
import math
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from safepredict._cluster import MIN_GROUP, min_size_kmeans
from safepredict._frames import default_feature_names
from safepredict._validation import check_one_of
from safepredict.decisions import Explanation
from safepredict.exceptions import CalibrationError, ConfigError
from safepredict.explain.tokens import TokenExplainer
from safepredict.reasons import reason_code

__all__ = [
    "BACKGROUNDS",
    "EXACT_MAX_FEATURES",
    "METHODS",
    "REQUESTS",
    "ExplainerState",
    "ModelExplainer",
    "PermutationShap",
    "TokenExplainer",
    "candidate_methods",
    "check_request",
    "feature_groups",
    "margin_output",
    "model_kind",
    "split_pipeline",
    "to_shap",
]

#: Explanation methods, from most to least specialised.
METHODS = ("tree", "linear", "exact", "permutation")
#: What ``SafePredictor(explainer=...)`` accepts.
REQUESTS = ("auto", "tree", "linear", "permutation")
#: Above this many input columns the exact model-agnostic explainer (2**M model
#: evaluations per background row) gives way to the permutation explainer.
EXACT_MAX_FEATURES = 8
#: How the background is kept: ``"kmeans"`` (default: weighted centroids, each
#: aggregating >= 20 calibration rows; no row is stored) or ``"sample"`` (opt-in:
#: a seeded sample of raw calibration rows, stored verbatim in saved states).
BACKGROUNDS = ("kmeans", "sample")
#: Background rows kept (raw sample) for the linear explainer and the mapping checks.
BACKGROUND_SIZE = 100
#: Background rows used by the model-agnostic explainers (cost is linear in it);
#: also the most centroids an aggregated background keeps.
AGNOSTIC_BACKGROUND_SIZE = 20
#: Antithetic permutations per row for the permutation explainer.
N_PERMUTATIONS = 10
#: Reason added to a row whose explanation would exceed ``explain_budget_ms``.
SKIPPED_BUDGET = reason_code("explanation_skipped", "budget")
#: Reason added to a row whose explanation failed (the decision still stands).
SKIPPED_ERROR = reason_code("explanation_skipped", "error")

_TREE_MODULES = ("xgboost", "lightgbm", "catboost")
_TREE_CLASSES = (
    "DecisionTreeClassifier",
    "DecisionTreeRegressor",
    "ExtraTreeClassifier",
    "ExtraTreeRegressor",
    "RandomForestClassifier",
    "RandomForestRegressor",
    "ExtraTreesClassifier",
    "ExtraTreesRegressor",
    "GradientBoostingClassifier",
    "GradientBoostingRegressor",
    "HistGradientBoostingClassifier",
    "HistGradientBoostingRegressor",
)


def _shap() -> Any:
    """Import shap once, lazily.

    shap 0.51's colour module calls a matplotlib API that newer matplotlib marks
    as pending deprecation at import time; that warning is about shap's own
    code, not ours, so it is silenced for the import only.
    """
    with warnings.catch_warnings():
        # shap.plots.colors calls Colormap.set_bad/set_over/set_under at import,
        # which matplotlib >= 3.10 marks as pending deprecation.
        warnings.filterwarnings(
            "ignore",
            message=r"The set_(bad|over|under) function will be deprecated",
            category=PendingDeprecationWarning,
        )
        import shap

    return shap


# ---------------------------------------------------------------- model analysis
def split_pipeline(model: Any) -> tuple[Any, Any]:
    """``(preprocessor, final_estimator)`` of a scikit-learn ``Pipeline``, else ``(None, model)``.

    Examples
    --------
    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from sklearn.linear_model import Ridge
    >>> pre, final = split_pipeline(make_pipeline(StandardScaler(), Ridge()))
    >>> type(final).__name__
    'Ridge'
    """
    steps = getattr(model, "steps", None)
    if isinstance(steps, list) and steps and hasattr(model, "__getitem__"):
        final = steps[-1][1]
        if len(steps) == 1:
            return None, final
        return model[:-1], final
    return None, model


def model_kind(model: Any) -> str:
    """``"tree"``, ``"linear"`` or ``"other"`` for the final estimator of ``model``.

    Detection is by type, so xgboost/lightgbm/catboost models are recognised
    without importing those packages (they need not be installed).

    Examples
    --------
    >>> from sklearn.ensemble import RandomForestRegressor
    >>> from sklearn.neighbors import KNeighborsRegressor
    >>> model_kind(RandomForestRegressor()), model_kind(KNeighborsRegressor())
    ('tree', 'other')
    """
    _, final = split_pipeline(model)
    cls = type(final)
    module = cls.__module__ or ""
    if module.split(".")[0] in _TREE_MODULES:
        return "tree"
    if module.startswith("sklearn.") and cls.__name__ in _TREE_CLASSES:
        return "tree"
    if (
        module.startswith("sklearn.linear_model")
        and hasattr(final, "coef_")
        and hasattr(final, "intercept_")
    ):
        return "linear"
    return "other"


def margin_output(model: Any, X: Any) -> NDArray[np.float64] | None:
    """The classifier's additive margin (log-odds) on ``X``, or ``None`` if it has none.

    Tree SHAP explains gradient-boosted classifiers in their raw margin, so
    additivity is checked against it: ``output_margin=True`` (xgboost),
    ``raw_score=True`` (lightgbm), ``prediction_type="RawFormulaVal"`` (catboost),
    else ``decision_function`` (scikit-learn). A ``Pipeline`` is transformed up to
    its final estimator first.

    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression
    >>> X = np.array([[0.0], [1.0], [2.0], [3.0]])
    >>> model = LogisticRegression().fit(X, [0, 0, 1, 1])
    >>> bool(np.allclose(margin_output(model, X), model.decision_function(X)))
    True
    """
    pre, final = split_pipeline(model)
    root = (type(final).__module__ or "").split(".")[0]
    try:
        if root in _BOOSTING_MARGIN:
            data = X if pre is None else pre.transform(X)
            keyword, value = _BOOSTING_MARGIN[root]
            return np.asarray(final.predict(data, **{keyword: value}), dtype=np.float64)
        if hasattr(model, "decision_function"):
            return np.asarray(model.decision_function(X), dtype=np.float64)
    except Exception:  # a model without a usable margin: only probabilities are candidates
        return None
    return None


#: The ``predict`` keyword that gives each boosting library's raw margin.
_BOOSTING_MARGIN: dict[str, tuple[str, Any]] = {
    "xgboost": ("output_margin", True),
    "lightgbm": ("raw_score", True),
    "catboost": ("prediction_type", "RawFormulaVal"),
}


def candidate_methods(kind: str, requested: str, n_inputs: int) -> tuple[str, ...]:
    """Methods to try, most faithful and cheapest first, for a model kind and request.

    Raises
    ------
    ConfigError
        If a specific explainer was requested that cannot explain this model.

    Examples
    --------
    >>> candidate_methods("tree", "auto", 30)
    ('tree', 'permutation')
    >>> candidate_methods("other", "auto", 4)
    ('exact', 'permutation')
    """
    check_one_of(requested, "explainer", REQUESTS)
    agnostic = ("exact", "permutation") if n_inputs <= EXACT_MAX_FEATURES else ("permutation",)
    if requested == "auto":
        if kind in ("tree", "linear"):
            return (kind, "permutation")
        return agnostic
    if requested in ("tree", "linear") and kind != requested:
        raise ConfigError(
            f"explainer={requested!r} needs a {requested} model (or a Pipeline ending in one); "
            f"this model is of kind {kind!r}. Use explainer='auto' or 'permutation'."
        )
    return (requested,)


def check_request(model: Any, requested: str, background: Any) -> tuple[str, ...]:
    """Validate ``explainer=`` for ``model`` at calibration, without importing shap.

    Returns the candidate methods. An explicit ``"tree"``/``"linear"`` request
    on a model of another kind, or on a ``Pipeline`` whose preprocessing mixes
    input columns (so contributions could not be reported per input column),
    raises here rather than at the first ``decide``.

    Raises
    ------
    ConfigError
        If the request cannot be honoured for this model.
    """
    candidates = candidate_methods(model_kind(model), requested, np.shape(background)[1])
    pre, _ = split_pipeline(model)
    if requested in ("tree", "linear") and pre is not None and len(background):
        sample = background.iloc[:50] if hasattr(background, "iloc") else background[:50]
        if feature_groups(pre, sample) is None:
            raise ConfigError(
                f"explainer={requested!r}: the pipeline's preprocessing mixes input columns, so "
                "contributions cannot be mapped back to them; use explainer='auto' or "
                "'permutation' (explained in the input columns)."
            )
    return candidates


def _input_names(X: Any) -> list[str]:
    if hasattr(X, "columns"):
        return [str(c) for c in X.columns]
    return default_feature_names(np.shape(X)[1])


def _dense(data: Any) -> NDArray[np.float64]:
    if hasattr(data, "toarray"):
        data = data.toarray()
    elif hasattr(data, "to_numpy"):
        data = data.to_numpy()
    return np.asarray(data, dtype=np.float64)


def _structural_groups(pre: Any, names: list[str]) -> NDArray[np.intp] | None:
    """Map transformed columns to input columns from the preprocessor's structure."""
    pre_steps = getattr(pre, "steps", None)
    transformer = pre_steps[-1][1] if pre_steps and len(pre_steps) == 1 else pre
    if pre_steps and len(pre_steps) > 1:
        transformer = None
    if transformer is not None and hasattr(transformer, "transformers_"):
        return _column_transformer_groups(transformer, names)
    try:
        out = [str(c) for c in pre.get_feature_names_out(names)]
    except Exception:  # not every transformer can name its outputs
        return None
    if out == names:  # one-to-one (scalers, imputers, ...)
        return np.arange(len(names), dtype=np.intp)
    return None


def _column_transformer_groups(ct: Any, names: list[str]) -> NDArray[np.intp] | None:
    indices = getattr(ct, "output_indices_", None)
    if indices is None:
        return None
    n_out = max((s.stop for s in indices.values()), default=0)
    groups = np.full(n_out, -1, dtype=np.intp)
    for name, trans, cols in ct.transformers_:
        sl = indices.get(name)
        if sl is None or sl.stop <= sl.start or trans == "drop":
            continue
        col_idx = np.arange(len(names))[cols] if not _is_name_list(cols) else None
        col_names = [names[i] for i in np.atleast_1d(col_idx)] if col_idx is not None else cols
        col_names = [str(c) for c in col_names]
        if trans == "passthrough":
            sub = col_names
        else:
            try:
                sub = [str(c) for c in trans.get_feature_names_out(col_names)]
            except Exception:  # a transformer that cannot name outputs: no structural map
                return None
        if len(sub) != sl.stop - sl.start:
            return None
        for k, out_name in enumerate(sub):
            src = _source_column(out_name, col_names)
            if src is None:
                return None
            groups[sl.start + k] = names.index(src)
    return None if (groups < 0).any() else groups


def _is_name_list(cols: Any) -> bool:
    return isinstance(cols, list | tuple) and all(isinstance(c, str) for c in cols)


def _source_column(out_name: str, inputs: list[str]) -> str | None:
    if out_name in inputs:
        return out_name
    matches = [c for c in inputs if out_name.startswith(c + "_")]
    if not matches:
        return None
    return max(matches, key=len)


def _dependency(pre: Any, sample: Any, names: list[str]) -> NDArray[np.bool_]:
    """``D[k, j]``: transformed column ``k`` changed when input column ``j`` was perturbed."""
    base = _dense(pre.transform(sample))
    n = len(sample)
    dep = np.zeros((base.shape[1], len(names)), dtype=bool)
    for j in range(len(names)):
        for shift in (1, 2, 3):
            if n < 2:
                break
            perturbed = _roll_column(sample, j, shift % n or 1)
            out = _dense(pre.transform(perturbed))
            dep[:, j] |= ~np.isclose(out, base, equal_nan=True).all(axis=0)
    return dep


def _roll_column(sample: Any, j: int, shift: int) -> Any:
    if hasattr(sample, "iloc"):
        copy = sample.copy()
        col = copy.columns[j]
        copy[col] = np.roll(copy[col].to_numpy(), shift)
        return copy
    arr = np.array(sample, copy=True)
    arr[:, j] = np.roll(arr[:, j], shift)
    return arr


def feature_groups(pre: Any, sample: Any) -> NDArray[np.intp] | None:
    """For each column the preprocessor outputs, the input column it came from.

    The map is read from the preprocessor's structure (``ColumnTransformer``
    ``transformers_`` / ``output_indices_`` / ``get_feature_names_out``; one-to-one
    transformers) and checked by perturbing each input column of ``sample``: an
    output column that moves when another input column moves fails the check.
    Without a structural map, the perturbation map is used when every output
    depends on exactly one input.

    Returns
    -------
    ndarray of int or None
        ``None`` when the outputs cannot be attributed to single input columns
        (e.g. polynomial interactions); such pipelines are explained
        model-agnostically in their input columns.

    Examples
    --------
    >>> import pandas as pd
    >>> from sklearn.compose import ColumnTransformer
    >>> from sklearn.preprocessing import OneHotEncoder
    >>> X = pd.DataFrame({"colour": ["red", "blue", "red"], "size": [1.0, 2.0, 3.0]})
    >>> ct = ColumnTransformer([("oh", OneHotEncoder(), ["colour"])], remainder="passthrough")
    >>> feature_groups(ct.fit(X), X).tolist()
    [0, 0, 1]
    """
    names = _input_names(sample)
    structural = _structural_groups(pre, names)
    dep = _dependency(pre, sample, names)
    if structural is not None:
        if len(structural) != dep.shape[0]:
            return None
        wrong = dep & (np.arange(len(names))[None, :] != structural[:, None])
        return None if wrong.any() else structural
    deps = dep.sum(axis=1)
    if (deps != 1).any():
        return None
    return np.asarray(dep.argmax(axis=1), dtype=np.intp)


# ---------------------------------------------------------------- fitted state
@dataclass
class ExplainerState:
    """What an explainer needs to be rebuilt: a background sample and timings.

    The live shap explainer is never part of the state; it is rebuilt lazily
    from the model and this state (so pickling and JSON persistence work).

    Parameters
    ----------
    requested : {"auto", "tree", "linear", "permutation"}
        What the user asked for.
    task : {"classification", "regression"}
        The predictor's task.
    feature_names : tuple of str
        The user's input columns.
    background : dict
        Column name -> list of values, JSON-safe: by default k-means centroids
        of the calibration rows (each the mean, or for a categorical column the
        mode, of >= 20 rows); with ``background_kind="sample"`` a seeded sample
        of raw calibration rows (opt-in).
    is_frame : bool
        Whether the model receives a pandas DataFrame.
    dtypes : dict
        Column name -> pandas dtype string (frames only).
    classes : list, optional
        Class labels (classification).
    budget_ms : float, optional
        Per-row budget.
    random_state : int, optional
        Seed of the background sample and permutation explainer.
    method : str, optional
        The chosen method (set on first use).
    per_row_ms : dict
        Measured per-row cost of each method tried.
    space : str, optional
        ``"proba"``, ``"margin"`` or ``"prediction"``: what the chosen method explains.
    errors : dict
        Method -> why it could not be used (set on first use).
    background_kind : {"kmeans", "sample"}
        How the background was kept (states saved by safepredict 0.1.0 hold a
        raw sample).
    background_weights : list of int, optional
        Calibration rows behind each centroid (``"kmeans"``).

    Examples
    --------
    >>> import numpy as np
    >>> X = np.random.default_rng(0).normal(size=(200, 3))
    >>> s = ExplainerState.fit(X, task="regression")
    >>> ExplainerState.from_state(s.to_state()) == s
    True
    >>> s.background_kind, sum(s.background_weights), min(s.background_weights) >= 20
    ('kmeans', 200, True)
    """

    requested: str
    task: str
    feature_names: tuple[str, ...]
    background: dict[str, list[Any]]
    is_frame: bool = False
    dtypes: dict[str, str] = field(default_factory=dict)
    classes: list[Any] | None = None
    budget_ms: float | None = None
    random_state: int | None = None
    method: str | None = None
    per_row_ms: dict[str, float] = field(default_factory=dict)
    space: str | None = None
    errors: dict[str, str] = field(default_factory=dict)
    background_kind: str = "sample"
    background_weights: list[int] | None = None

    @classmethod
    def fit(
        cls,
        X: Any,
        *,
        task: str,
        requested: str = "auto",
        classes: Sequence[Any] | None = None,
        budget_ms: float | None = None,
        random_state: int | None = None,
        size: int = BACKGROUND_SIZE,
        background: str = "kmeans",
    ) -> ExplainerState:
        """Summarise ``X`` (model input) as the explainers' background.

        ``background="kmeans"`` (default) keeps at most
        :data:`AGNOSTIC_BACKGROUND_SIZE` weighted centroids, each aggregating at
        least 20 rows (numeric columns: the mean; integer columns: the rounded
        mean; other columns: the most frequent value); no row is stored.
        ``background="sample"`` (opt-in) keeps a seeded sample of ``size`` raw rows.

        Raises
        ------
        CalibrationError
            If ``background="kmeans"`` and ``X`` has fewer than 20 rows.
        """
        check_one_of(requested, "explainer", REQUESTS)
        check_one_of(background, "explainer_background", BACKGROUNDS)
        n = len(X)
        rng = np.random.default_rng(random_state if random_state is not None else 0)
        names = _input_names(X)
        is_frame = hasattr(X, "iloc")
        dtypes = {str(c): str(t) for c, t in X.dtypes.items()} if is_frame else {}
        weights: list[int] | None = None
        if background == "sample":
            idx = (
                np.sort(rng.choice(n, size=min(size, n), replace=False)) if n else np.zeros(0, int)
            )
            if is_frame:
                sub = X.iloc[idx]
                data = {str(c): _builtin_list(sub[c].to_numpy()) for c in sub.columns}
            else:
                arr = np.asarray(X)[idx]
                data = {name: _builtin_list(arr[:, j]) for j, name in enumerate(names)}
        else:
            if n < MIN_GROUP:
                raise CalibrationError(
                    f"the explainer's aggregated background needs at least {MIN_GROUP} "
                    f"calibration rows (each centroid summarises >= {MIN_GROUP}); got {n}. "
                    "Calibrate on more rows, or pass explainer_background='sample' to store "
                    "a raw sample of calibration rows instead (opt-in)."
                )
            data, weights = _centroid_background(X, names, rng)
        return cls(
            requested=requested,
            task=task,
            feature_names=tuple(names),
            background=data,
            is_frame=is_frame,
            dtypes=dtypes,
            classes=None if classes is None else _builtin_list(np.asarray(classes)),
            budget_ms=None if budget_ms is None else float(budget_ms),
            random_state=random_state,
            background_kind=background,
            background_weights=weights,
        )

    def background_data(self) -> Any:
        """The background as the model expects it (DataFrame or float array)."""
        if self.is_frame:
            import pandas as pd

            frame = pd.DataFrame({c: self.background[c] for c in self.feature_names})
            return frame.astype(self.dtypes) if self.dtypes else frame
        cols = [self.background[c] for c in self.feature_names]
        return np.asarray(cols, dtype=np.float64).T.reshape(-1, len(self.feature_names))

    def to_state(self) -> dict[str, Any]:
        """JSON-safe dict (restored exactly by :meth:`from_state`)."""
        return {
            "requested": self.requested,
            "task": self.task,
            "feature_names": list(self.feature_names),
            "background": {k: list(v) for k, v in self.background.items()},
            "is_frame": self.is_frame,
            "dtypes": dict(self.dtypes),
            "classes": None if self.classes is None else list(self.classes),
            "budget_ms": self.budget_ms,
            "random_state": self.random_state,
            "method": self.method,
            "per_row_ms": dict(self.per_row_ms),
            "space": self.space,
            "errors": dict(self.errors),
            "background_kind": self.background_kind,
            "background_weights": (
                None if self.background_weights is None else list(self.background_weights)
            ),
        }

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ExplainerState:
        """Rebuild from :meth:`to_state` output."""
        data = dict(state)
        data["feature_names"] = tuple(data["feature_names"])
        return cls(**data)


def _column_is_numeric(values: NDArray[Any], dtype: Any) -> bool:
    kind = getattr(dtype, "kind", "O")
    if str(dtype) in ("category", "bool", "boolean") or kind == "b":
        return False
    if kind in "iuf" or str(dtype) in ("Int8", "Int16", "Int32", "Int64", "Float32", "Float64"):
        return True
    if str(dtype).startswith(("UInt", "Int", "Float")):
        return True
    items = [v for v in values.tolist() if v is not None and v == v]
    return bool(items) and all(
        isinstance(v, int | float | np.number) and not isinstance(v, bool) for v in items
    )


def _centroid_background(
    X: Any, names: list[str], rng: np.random.Generator
) -> tuple[dict[str, list[Any]], list[int]]:
    """Weighted k-means centroids of ``X`` (each cluster >= MIN_GROUP rows), JSON-safe.

    Rows are clustered on standardised numeric columns plus one-hot codes of the
    other columns; a centroid holds each numeric column's mean (rounded for
    integer dtypes) and each other column's most frequent value.
    """
    is_frame = hasattr(X, "iloc")
    n = len(X)
    if is_frame:
        columns = [X.iloc[:, j].to_numpy() for j in range(X.shape[1])]
        kinds = list(X.dtypes)
    else:
        arr = np.asarray(X)
        columns = [arr[:, j] for j in range(arr.shape[1])]
        kinds = [arr.dtype] * arr.shape[1]
    numeric = [_column_is_numeric(c, t) for c, t in zip(columns, kinds, strict=True)]
    feats: list[NDArray[np.float64]] = []
    values: list[Any] = []
    for col, is_num in zip(columns, numeric, strict=True):
        if is_num:
            v = np.array([np.nan if x is None else x for x in col.tolist()], dtype=np.float64)
            v[~np.isfinite(v)] = np.nan
            values.append(v)
            mu = float(np.nanmean(v)) if np.isfinite(v).any() else 0.0
            sd = float(np.nanstd(v)) if np.isfinite(v).any() else 0.0
            z = (v - mu) / (sd if sd > 0 else 1.0)
            feats.append(np.where(np.isfinite(z), z, 0.0)[:, None])
        else:
            items = [str(x) for x in col.tolist()]
            values.append(col)
            uniq, inverse = np.unique(np.asarray(items, dtype=object), return_inverse=True)
            onehot = np.zeros((n, len(uniq)))
            onehot[np.arange(n), inverse] = 1.0 / math.sqrt(2.0)
            feats.append(onehot)
    feats_matrix = np.hstack(feats) if feats else np.zeros((n, 1))
    target = max(1, min(AGNOSTIC_BACKGROUND_SIZE, n // (3 * MIN_GROUP // 2)))
    labels, _ = min_size_kmeans(feats_matrix, target, rng)
    k = int(labels.max()) + 1
    out: dict[str, list[Any]] = {}
    for name, col, v, is_num, dtype in zip(names, columns, values, numeric, kinds, strict=True):
        cells: list[Any] = []
        for c in range(k):
            members = labels == c
            if is_num:
                mv = v[members]
                mv = mv[np.isfinite(mv)]
                if len(mv) == 0:
                    cells.append(None)
                    continue
                mean = float(mv.mean())
                integer = getattr(dtype, "kind", "") in "iu" or str(dtype).startswith(
                    ("Int", "UInt")
                )
                cells.append(round(mean) if integer else mean)
            else:
                cells.append(_mode(col[members]))
        out[name] = cells
    return out, np.bincount(labels, minlength=k).astype(int).tolist()


def _mode(values: NDArray[Any]) -> Any:
    """Most frequent non-missing value (ties: first seen); ``None`` if all are missing."""
    counts: dict[Any, int] = {}
    first: dict[Any, Any] = {}
    for v in values.tolist():
        if v is None or (isinstance(v, float) and v != v) or type(v).__name__ == "NAType":
            continue
        key = (type(v).__name__, str(v))
        counts[key] = counts.get(key, 0) + 1
        first.setdefault(key, v)
    if not counts:
        return None
    best = max(counts, key=lambda key: counts[key])
    return _scalar(first[best])


def _builtin_list(values: NDArray[Any]) -> list[Any]:
    out: list[Any] = []
    for v in values.tolist():
        if isinstance(v, float) and not math.isfinite(v):
            out.append(None)  # JSON has no nan/inf; restored as nan
        else:
            out.append(v)
    return out


# ---------------------------------------------------------------- the explainer
class _Codec:
    """Numeric codes for mixed-type input frames (shap's maskers need numbers)."""

    def __init__(self, frame: Any) -> None:
        self.columns = list(frame.columns)
        self.dtypes = frame.dtypes.to_dict()
        from pandas.api.types import is_numeric_dtype

        self.numeric = [bool(is_numeric_dtype(t)) for t in frame.dtypes]
        self.vocab: list[dict[Any, int]] = [{} for _ in self.columns]
        self.values: list[list[Any]] = [[] for _ in self.columns]
        self.lock = threading.Lock()

    def encode(self, frame: Any) -> NDArray[np.float64]:
        out = np.empty((len(frame), len(self.columns)), dtype=np.float64)
        with self.lock:
            for j, col in enumerate(self.columns):
                values = frame[col].to_numpy()
                if self.numeric[j]:
                    out[:, j] = values.astype(np.float64)
                    continue
                vocab, vals = self.vocab[j], self.values[j]
                for i, v in enumerate(values.tolist()):
                    code = vocab.get(v)
                    if code is None:
                        code = vocab[v] = len(vals)
                        vals.append(v)
                    out[i, j] = code
        return out

    def decode(self, codes: NDArray[np.float64]) -> Any:
        import pandas as pd

        data: dict[Any, Any] = {}
        for j, col in enumerate(self.columns):
            if self.numeric[j]:
                data[col] = codes[:, j]
            else:
                lookup = np.asarray(self.values[j], dtype=object)
                data[col] = lookup[codes[:, j].astype(np.intp)]
        return pd.DataFrame(data).astype(self.dtypes)


class PermutationShap:
    """Antithetic permutation Shapley values drawn from a seeded ``Generator``.

    The algorithm of ``shap.PermutationExplainer`` (each permutation is walked
    forwards, switching features from the background to the row, and backwards,
    switching them off in the same order), without its use of numpy's global
    random generator (it seeds and shuffles ``np.random``, shap#2863). Every
    row's permutations come from ``numpy.random.default_rng(seed)``, so a row's
    explanation is a function of the row alone and nothing global is touched.
    Contributions add up exactly (up to rounding) to ``f(row) - base``, where
    ``base`` is the mean of ``f`` over the background rows.

    Parameters
    ----------
    f : callable
        Model output of a float matrix ``(n, M)``: shape ``(n,)`` or ``(n, K)``.
    background : ndarray of shape (B, M)
        Background rows (masked features take their values).
    seed : int
        Seed of each row's permutations.
    n_permutations : int, default=N_PERMUTATIONS
        Antithetic permutation pairs per row.

    Examples
    --------
    >>> f = lambda X: X[:, 0] * 2.0 + X[:, 1] * X[:, 2]
    >>> ex = PermutationShap(f, np.zeros((1, 3)), seed=0)
    >>> values, base = ex.explain_row(np.array([1.0, 2.0, 3.0]))
    >>> float(values[0]), float(values.sum() + base)
    (2.0, 8.0)
    """

    def __init__(
        self,
        f: Any,
        background: NDArray[np.float64],
        *,
        seed: int,
        n_permutations: int = N_PERMUTATIONS,
    ) -> None:
        self.f = f
        self.background = np.asarray(background, dtype=np.float64)
        self.seed = int(seed)
        self.n_permutations = int(n_permutations)

    def explain_row(self, row: NDArray[np.float64]) -> tuple[NDArray[np.float64], Any]:
        """Shapley values ``(n_feat,)`` or ``(n_feat, K)`` of one row, and the base value."""
        row = np.asarray(row, dtype=np.float64).reshape(-1)
        n_feat = len(row)
        bg = self.background
        n_bg = len(bg)
        rng = np.random.default_rng(self.seed)
        perms = np.array([rng.permutation(n_feat) for _ in range(self.n_permutations)])
        n_perm = len(perms)
        # masks: per permutation, forward states F_1..F_{n_feat-1} (first s features on)
        # and backward states B_1..B_{n_feat-1} (all on except the first s)
        steps = np.arange(1, n_feat)
        position = np.empty_like(perms)
        position[np.arange(n_perm)[:, None], perms] = np.arange(n_feat)[None, :]
        forward = position[:, None, :] < steps[None, :, None]  # (n_perm, n_feat-1, n_feat)
        masks = np.concatenate(
            [
                np.zeros((1, n_feat), dtype=bool),
                np.ones((1, n_feat), dtype=bool),
                forward.reshape(-1, n_feat),
                ~forward.reshape(-1, n_feat),
            ]
        )
        inputs = np.where(masks[:, None, :], row[None, None, :], bg[None, :, :])
        out = np.asarray(self.f(inputs.reshape(-1, n_feat)), dtype=np.float64)
        means = out.reshape(len(masks), n_bg, *out.shape[1:]).mean(axis=1)
        base, full = means[0], means[1]
        fwd = means[2 : 2 + n_perm * (n_feat - 1)].reshape(n_perm, n_feat - 1, *means.shape[1:])
        bwd = means[2 + n_perm * (n_feat - 1) :].reshape(n_perm, n_feat - 1, *means.shape[1:])
        # chain values v_0 .. v_M of the forward walk and of the backward walk
        v_f = np.concatenate(
            [
                np.broadcast_to(base, (n_perm, 1, *base.shape)),
                fwd,
                np.broadcast_to(full, (n_perm, 1, *base.shape)),
            ],
            axis=1,
        )
        v_b = np.concatenate(
            [
                np.broadcast_to(full, (n_perm, 1, *base.shape)),
                bwd,
                np.broadcast_to(base, (n_perm, 1, *base.shape)),
            ],
            axis=1,
        )
        step_gain = (v_f[:, 1:] - v_f[:, :-1]) + (v_b[:, :-1] - v_b[:, 1:])  # (n_perm, n_feat, ...)
        values = np.zeros((n_feat, *base.shape))
        for p in range(n_perm):
            values[perms[p]] += step_gain[p]
        return values / (2 * n_perm), base


class ModelExplainer:
    """Explain a fitted model's rows in its input columns, within a per-row budget.

    Parameters
    ----------
    model : estimator
        The fitted model or ``Pipeline`` the predictor wraps.
    state : ExplainerState
        Background sample and settings (see :meth:`ExplainerState.fit`).

    Notes
    -----
    The shap explainer is built on the first call to :meth:`explain` (or
    :meth:`prepare`), which also measures each candidate method's per-row cost
    on background rows and keeps the first (most faithful) one that fits the
    budget. Calls are serialised with a lock: shap explainers keep per-call
    state, so concurrent ``decide`` calls must not share one unguarded. No
    method draws from numpy's global random generator (the permutation method is
    :class:`PermutationShap`, seeded from ``random_state``). Why a method was
    not chosen (an error building or measuring it) is kept in
    ``state.errors``. The shap objects are dropped when pickling and rebuilt lazily.

    Examples
    --------
    >>> from sklearn.datasets import load_diabetes
    >>> from sklearn.linear_model import Ridge
    >>> X, y = load_diabetes(return_X_y=True)
    >>> model = Ridge().fit(X, y)
    >>> ex = ModelExplainer(model, ExplainerState.fit(X, task="regression"))
    >>> [e] = ex.explain(X[:1])[0]
    >>> e.method, e.output
    ('linear', 'prediction')
    >>> bool(abs(e.output_value - model.predict(X[:1])[0]) < 1e-6)
    True
    """

    def __init__(self, model: Any, state: ExplainerState) -> None:
        self.model = model
        self.state = state
        self._lock = threading.RLock()
        self._built: dict[str, Any] = {}

    # pickling: the shap objects and the lock are rebuilt lazily
    def __getstate__(self) -> dict[str, Any]:
        return {"model": self.model, "state": self.state}

    def __setstate__(self, data: dict[str, Any]) -> None:
        self.model = data["model"]
        self.state = data["state"]
        self._lock = threading.RLock()
        self._built = {}

    # ------------------------------------------------------------ building
    @property
    def method(self) -> str | None:
        """The chosen method (``None`` before first use)."""
        return self.state.method

    def prepare(self) -> str | None:
        """Choose (if needed) and build the explainer; return the chosen method.

        ``None`` means no method fits the budget (rows will be skipped).
        """
        with self._lock:
            state = self.state
            if state.method is not None:
                if state.method not in self._built:
                    self._built[state.method] = self._build(state.method)
                return self._fits(state.method)
            kind = model_kind(self.model)
            candidates = candidate_methods(kind, state.requested, len(state.feature_names))
            chosen: str | None = None
            for method in candidates:
                try:
                    self._built[method] = self._build(method)
                    cost = self._measure(method)
                except Exception as exc:  # a method that cannot handle this model: next one
                    state.errors[method] = f"{type(exc).__name__}: {exc}"[:300]
                    continue
                state.per_row_ms[method] = cost
                if state.budget_ms is None or cost <= state.budget_ms:
                    chosen = method
                    break
            if chosen is None and state.per_row_ms:
                state.method = min(state.per_row_ms, key=state.per_row_ms.__getitem__)
            else:
                state.method = chosen
            if state.method is not None:
                state.space = self._built[state.method].get("space")
            return chosen

    def _fits(self, method: str) -> str | None:
        budget = self.state.budget_ms
        cost = self.state.per_row_ms.get(method)
        if budget is not None and cost is not None and cost > budget:
            return None
        return method

    def _build(self, method: str) -> dict[str, Any]:
        shap = _shap()
        state = self.state
        background = state.background_data()
        pre, final = split_pipeline(self.model)
        groups = None
        if method in ("tree", "linear") and pre is not None:
            groups = feature_groups(pre, background)
            if groups is None:
                raise ConfigError(
                    f"the pipeline's preprocessing mixes input columns, so the {method} "
                    "explainer's contributions cannot be mapped back to them; use "
                    "explainer='auto' or 'permutation'."
                )
        if method == "tree":
            explainer = shap.TreeExplainer(final)
            return {"explainer": explainer, "pre": pre, "groups": groups, "codec": None}
        if method == "linear":
            bg = _dense(background if pre is None else pre.transform(background))
            weights = state.background_weights
            if weights is None:
                explainer = shap.LinearExplainer(final, bg)
            else:
                # interventional linear SHAP needs only the background's mean (and the
                # covariance for completeness): the weighted centroids give both
                w = np.asarray(weights, dtype=np.float64)
                mean = np.average(bg, axis=0, weights=w)
                cov = (
                    np.atleast_2d(np.cov(bg, rowvar=False, aweights=w))
                    if len(bg) > 1
                    else np.zeros((bg.shape[1], bg.shape[1]))
                )
                explainer = shap.LinearExplainer(final, (mean, cov))
            return {"explainer": explainer, "pre": pre, "groups": groups, "codec": None}
        # model-agnostic, in the input columns of the whole model
        codec = _Codec(background) if state.is_frame else None
        rng = np.random.default_rng(state.random_state if state.random_state is not None else 0)
        n_bg = len(background)
        take = np.arange(n_bg)
        if n_bg > AGNOSTIC_BACKGROUND_SIZE:  # a raw sample (centroids are fewer)
            take = np.sort(rng.choice(n_bg, size=AGNOSTIC_BACKGROUND_SIZE, replace=False))
        bg_rows = background.iloc[take] if state.is_frame else background[take]
        bg_num = codec.encode(bg_rows) if codec is not None else _dense(bg_rows)
        model = self.model
        fn_name = "predict_proba" if state.task == "classification" else "predict"
        fn = getattr(model, fn_name)
        names = list(state.feature_names)
        wants_frame = state.is_frame or hasattr(model, "feature_names_in_")

        def f(masked: NDArray[np.float64]) -> NDArray[np.float64]:
            if codec is not None:
                rows: Any = codec.decode(masked)
            elif wants_frame:
                import pandas as pd

                rows = pd.DataFrame(masked, columns=names)
            else:
                rows = masked
            return np.asarray(fn(rows), dtype=np.float64)

        seed = state.random_state if state.random_state is not None else 0
        if method == "exact":
            masker = shap.maskers.Independent(bg_num, max_samples=len(bg_num))
            agnostic: Any = shap.explainers.ExactExplainer(f, masker)
        else:
            agnostic = PermutationShap(f, bg_num, seed=seed)
        return {"explainer": agnostic, "pre": None, "groups": None, "codec": codec}

    def _measure(self, method: str) -> float:
        """Median per-row milliseconds of ``method`` on a few background rows.

        One warm-up row first (numba compilation, caches), then three single-row
        calls; also fixes which output space the method explains.

        Raises
        ------
        ValueError
            If the contributions do not add up to any model output (the method is
            not faithful for this model).
        """
        background = self.state.background_data()
        n = len(background)
        if n == 0:
            raise ValueError("no background rows to measure the explainer on")
        rows = [
            background.iloc[[i % n]] if self.state.is_frame else background[[i % n]]
            for i in range(4)
        ]
        self._raw(method, rows[0])
        times = []
        for row in rows[1:]:
            t = time.perf_counter()
            self._raw(method, row)
            times.append((time.perf_counter() - t) * 1000.0)
        space = self._detect_space(method, rows[0])
        if space is None:
            raise ValueError("contributions do not add up to the model's output")
        self._built[method]["space"] = space
        return float(np.median(times))

    def _detect_space(self, method: str, row: Any) -> str | None:
        """Which model output the method's contributions add up to."""
        values, base = self._raw(method, row)
        totals = np.asarray(values.sum(axis=1) + base, dtype=np.float64).reshape(len(row), -1)
        if self.state.task == "regression":
            pred = np.asarray(self.model.predict(row), dtype=np.float64).reshape(len(row), -1)
            return "prediction" if np.allclose(totals, pred, atol=1e-6, rtol=1e-6) else None
        proba = np.asarray(self.model.predict_proba(row), dtype=np.float64)
        cand: dict[str, NDArray[np.float64]] = {"proba": proba}
        margin = margin_output(self.model, row)
        if margin is not None:
            cand["margin"] = margin.reshape(len(row), -1)
        for space, ref in cand.items():
            if totals.shape[1] == 1 and ref.shape[1] == 2:
                ref = ref[:, 1:]
            if totals.shape == ref.shape and np.allclose(totals, ref, atol=1e-6, rtol=1e-6):
                return space
        return None

    def _raw(self, method: str, rows: Any) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Shap values ``(n, n_inputs[, n_outputs])`` and base values ``(n[, n_outputs])``."""
        built = self._built[method]
        explainer = built["explainer"]
        if built["codec"] is not None:
            data = built["codec"].encode(rows)
        elif built["pre"] is not None:
            data = _dense(built["pre"].transform(rows))
        else:
            data = _dense(rows)
        if method == "tree":
            result = explainer(data, check_additivity=False)
        elif method == "permutation":
            return self._permutation(explainer, data, built["groups"])
        elif method == "exact":
            result = explainer(data, silent=True)
        else:
            result = explainer(data)
        values = np.asarray(result.values, dtype=np.float64)
        base = np.asarray(result.base_values, dtype=np.float64)
        if base.ndim == 0:
            base = np.full(len(data), float(base))
        if base.ndim == 1 and values.ndim == 3:
            base = np.broadcast_to(base, (len(data), values.shape[2])).copy()
        groups = built["groups"]
        if groups is not None:
            n_in = len(self.state.feature_names)
            onehot = np.zeros((len(groups), n_in))
            onehot[np.arange(len(groups)), groups] = 1.0
            if values.ndim == 2:
                values = values @ onehot
            else:
                values = np.einsum("nko,kj->njo", values, onehot)
        return values, base

    def _permutation(
        self, explainer: Any, data: NDArray[np.float64], groups: Any
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Permutation values, one row at a time (see :class:`PermutationShap`)."""
        values, bases = [], []
        for i in range(len(data)):
            v, b = explainer.explain_row(data[i])
            values.append(v[None])
            bases.append(np.asarray(b, dtype=np.float64).reshape(1, -1))
        out = np.concatenate(values)
        base = np.concatenate(bases)
        if out.ndim == 2:
            base = base[:, 0]
        return out, base

    # ------------------------------------------------------------ explaining
    def explain(
        self, rows: Any, class_index: NDArray[np.intp] | None = None
    ) -> tuple[list[Explanation | None], list[str | None]]:
        """Explain ``rows`` (model input), each for its predicted class.

        Parameters
        ----------
        rows : array-like or DataFrame
            Rows as the model receives them.
        class_index : ndarray of int, optional
            Classification: index into ``classes`` of each row's predicted
            class. Default: the model's most probable class.

        Returns
        -------
        explanations : list of Explanation or None
            One per row; ``None`` where skipped.
        skipped : list of str or None
            The reason each skipped row was skipped (``explanation_skipped:budget``
            or ``explanation_skipped:error``), ``None`` where explained.
        """
        n = len(rows)
        if n == 0:
            return [], []
        try:
            method = self.prepare()
        except Exception:  # e.g. shap cannot be imported: the decision still stands
            return [None] * n, [SKIPPED_ERROR] * n
        if method is None:
            why = SKIPPED_ERROR if self.state.method is None else SKIPPED_BUDGET
            return [None] * n, [why] * n
        state = self.state
        if state.task == "classification" and class_index is None:
            class_index = np.argmax(np.asarray(self.model.predict_proba(rows)), axis=1)
        try:
            with self._lock:
                t = time.perf_counter()
                values, base = self._raw(method, rows)
                elapsed = (time.perf_counter() - t) * 1000.0 / n
                space = self._built[method].get("space", state.space)
            # keep the estimate current, so a budget that stops fitting is noticed
            old = state.per_row_ms.get(method, elapsed)
            state.per_row_ms[method] = 0.8 * old + 0.2 * elapsed
        except Exception:  # explaining must never fail the decision
            return [None] * n, [SKIPPED_ERROR] * n
        explained = self._package(method, space, values, base, rows, class_index)
        # a row whose contributions are not finite (e.g. a linear model on a row with
        # missing values) is not an explanation a reviewer can use
        return explained, [None if e is not None else SKIPPED_ERROR for e in explained]

    def _package(
        self,
        method: str,
        space: str | None,
        values: NDArray[np.float64],
        base: NDArray[np.float64],
        rows: Any,
        class_index: NDArray[np.intp] | None,
    ) -> list[Explanation | None]:
        state = self.state
        names = state.feature_names
        data = rows.to_numpy(dtype=object) if hasattr(rows, "to_numpy") else np.asarray(rows)
        out: list[Explanation | None] = []
        classes = state.classes
        for i in range(len(values)):
            if state.task == "regression" or class_index is None or classes is None:
                v = values[i].reshape(len(names), -1)[:, 0]
                b = float(np.ravel(base[i])[0])
                output = "prediction"
            else:
                k = int(class_index[i])
                label = classes[k]
                if values.ndim == 3:
                    v, b = values[i, :, k], float(base[i, k])
                else:  # one output: the positive class (index 1) of a binary model
                    v, b = values[i], float(np.ravel(base[i])[0])
                    if k == 0:
                        v, b = -v, (1.0 - b if space == "proba" else -b)
                if space == "proba":
                    output = f"proba[{label}]"
                elif len(classes) == 2:
                    output = f"log_odds[{label}]"
                else:
                    output = f"logit[{label}]"
            if not (np.isfinite(v).all() and math.isfinite(b)):
                out.append(None)
                continue
            out.append(
                Explanation(
                    method=method,
                    feature_names=names,
                    values=tuple(float(x) for x in v),
                    base_value=b,
                    output=output,
                    data=tuple(_scalar(x) for x in data[i]),
                )
            )
        return out

    # ------------------------------------------------------------ state
    def to_state(self) -> dict[str, Any]:
        """JSON-safe state (the model is not included)."""
        return self.state.to_state()

    @classmethod
    def from_state(cls, state: dict[str, Any], *, model: Any) -> ModelExplainer:
        """Rebuild from :meth:`to_state` output and the model."""
        return cls(model, ExplainerState.from_state(state))


def _scalar(x: Any) -> Any:
    return x.item() if isinstance(x, np.generic) else x


# ---------------------------------------------------------------- shap interop
def to_shap(explanation: Explanation) -> Any:
    """Convert an :class:`~safepredict.Explanation` to a ``shap.Explanation``.

    The result is one row (1-D ``values``), ready for ``shap.plots.waterfall``
    or ``shap.plots.bar``.

    Examples
    --------
    >>> e = Explanation("linear", ("a", "b"), (0.5, -0.25), 1.0, output="prediction")
    >>> s = to_shap(e)
    >>> s.values.tolist(), float(s.base_values), s.feature_names
    ([0.5, -0.25], 1.0, ['a', 'b'])
    """
    shap = _shap()
    data = None
    if explanation.data is not None:
        data = np.asarray(explanation.data, dtype=object)
        # mixed-type rows stay objects; plots print them as text
        with contextlib.suppress(TypeError, ValueError):
            data = data.astype(np.float64)
    return shap.Explanation(
        values=np.asarray(explanation.values, dtype=np.float64),
        base_values=float(explanation.base_value),
        data=data,
        feature_names=list(explanation.feature_names),
    )
