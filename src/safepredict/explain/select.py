"""Which explainer fits a model: model kinds, candidate methods, the margin space."""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from safepredict._validation import check_one_of
from safepredict.exceptions import ConfigError
from safepredict.explain.groups import feature_groups
from safepredict.reasons import reason_code

__all__ = [
    "AGNOSTIC_BACKGROUND_SIZE",
    "BACKGROUNDS",
    "BACKGROUND_SIZE",
    "EXACT_MAX_FEATURES",
    "METHODS",
    "N_PERMUTATIONS",
    "REQUESTS",
    "SKIPPED_BUDGET",
    "SKIPPED_ERROR",
    "candidate_methods",
    "check_request",
    "margin_output",
    "model_kind",
    "split_pipeline",
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
