"""The calibrate pipeline (layer 3): parameters resolved, stages fitted, tiers certified.

:meth:`SafePredictor.calibrate` calls these functions in order and keeps what
they return as its fitted attributes:

1. :func:`resolve_task`, :func:`resolve_policy`, :func:`resolve_score` — the
   constructor parameters made concrete for the model;
2. :func:`fit_core` — the input schema, the model's output on the calibration
   rows (through the model stage's output contract), the conformal state and the
   calibration rows scored by :func:`safepredict.pipeline.score`, the rule
   ``decide`` applies;
3. :func:`certify_tiers` — the ``max_error`` thresholds;
4. :func:`fit_guards`, :func:`fit_explainer`;
5. :func:`calibration_baseline` — the monitor's drift baseline for the
   calibration event.

Examples
--------
>>> from sklearn.datasets import load_iris
>>> from sklearn.linear_model import LogisticRegression
>>> X, y = load_iris(return_X_y=True)
>>> model = LogisticRegression(max_iter=500).fit(X[::3], y[::3])
>>> resolve_task(model, "auto"), resolve_score("auto", "classification", None)
('classification', 'lac')
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.base import is_classifier, is_regressor

from safepredict._hashing import row_hashes
from safepredict._validation import check_fraction, check_one_of, describe
from safepredict.config import GuardConfig, TierPolicy
from safepredict.conformal import (
    CLASSIFICATION_SCORES,
    REGRESSION_SCORES,
    ClassificationConformal,
    RegressionConformal,
)
from safepredict.exceptions import CalibrationError, ConfigError
from safepredict.explain import ExplainerState, ModelExplainer, TokenExplainer, check_request
from safepredict.guards import ArrayGuards, InputGuards, TextGuards
from safepredict.inputs import ARRAY, TEXT, InputSchema, prepare, schema_from_calibration
from safepredict.model import check_quantile_order, from_output, model_method
from safepredict.monitoring.events import confidence_snapshot
from safepredict.monitoring.feature_drift import feature_bins
from safepredict.pipeline import score, tier_groups
from safepredict.stages import group_columns
from safepredict.tiers import TierCalibration, TierInputs, assign_tiers, calibrate_tiers

__all__ = [
    "Core",
    "calibration_baseline",
    "calibration_hash",
    "certify_tiers",
    "check_params",
    "feature_baseline",
    "fit_core",
    "fit_explainer",
    "fit_guards",
    "resolve_policy",
    "resolve_score",
    "resolve_task",
]


# ------------------------------------------------------------------ parameters
def resolve_task(model: Any, task: str) -> str:
    """The task: as given, or detected from the model's methods."""
    task = check_one_of(task, "task", ("auto", "classification", "regression"))
    if task != "auto":
        return str(task)
    if _sklearn_kind(model, is_classifier) or (
        hasattr(model, "predict_proba")
        and (hasattr(model, "classes_") or not hasattr(model, "predict"))
    ):
        return "classification"
    if _sklearn_kind(model, is_regressor) or hasattr(model, "predict"):
        return "regression"
    if callable(model):
        raise ConfigError(
            f"a plain callable ({describe(model)}) does not say what it returns; pass "
            "task='classification' (with classes=[...]) or task='regression'."
        )
    raise ConfigError(
        f"model must have predict_proba (classification) or predict (regression); got "
        f"{describe(model)}. Pass a fitted estimator."
    )


def resolve_policy(tiers: Any, guards: Any, task: str) -> TierPolicy:
    """The tier policy (with a ``GuardConfig`` given as ``guards``), checked for the task."""
    policy = TierPolicy.default(task) if tiers is None else TierPolicy.coerce(tiers)
    if isinstance(guards, GuardConfig | Mapping):
        guards = GuardConfig.coerce(guards)
        policy = TierPolicy(
            tiers=policy.tiers,
            delta=policy.delta,
            explain=policy.explain,
            audit_rate=policy.audit_rate,
            audit_seed=policy.audit_seed,
            guard_tier=policy.guard_tier,
            guards=guards,
        )
    elif guards not in ("auto", "off", None):
        raise ConfigError(
            "guards must be 'auto', 'off', a GuardConfig or a dict of its fields (e.g. "
            f'{{"ood": "review"}}); got {describe(guards)}.'
        )
    for tier in policy.tiers:
        if task == "classification" and tier.max_interval_width is not None:
            raise ConfigError(
                f"tier {tier.name!r}: max_interval_width applies to regression; this "
                "predictor is a classifier (use min_confidence or max_set_size)."
            )
        if task == "regression" and (
            tier.min_confidence is not None
            or tier.max_set_size is not None
            or tier.min_credibility is not None
        ):
            raise ConfigError(
                f"tier {tier.name!r}: min_confidence/min_credibility/max_set_size apply to "
                "classification; "
                "this predictor is a regressor (use max_interval_width or max_error)."
            )
        if task == "regression" and tier.max_error is not None and tier.tolerance is None:
            raise ConfigError(
                f"tier {tier.name!r}: a regression max_error tier needs 'tolerance' (an "
                "error is |y - y_hat| > tolerance), e.g. tolerance = 5.0."
            )
    return policy


def resolve_score(conformity_score: str, task: str, quantile_models: Any) -> str:
    """The conformity score, ``"auto"`` resolved."""
    options = CLASSIFICATION_SCORES if task == "classification" else REGRESSION_SCORES
    if conformity_score == "auto":
        if task == "regression" and quantile_models is not None:
            return "cqr"
        return "lac" if task == "classification" else "absolute"
    return str(check_one_of(conformity_score, "conformity_score", options))


def check_params(
    confidence_level: Any,
    log: Any,
    explainer: Any,
    explain_budget_ms: Any,
    explainer_background: Any = "kmeans",
) -> None:
    """Constructor parameters that calibration does not check elsewhere."""
    check_fraction(confidence_level, "confidence_level")
    check_one_of(log, "log", ("decision", "summary", "off"))
    if explainer is not None:
        check_one_of(explainer, "explainer", ("auto", "tree", "linear", "permutation"))
    check_one_of(explainer_background, "explainer_background", ("kmeans", "sample"))
    if explain_budget_ms is not None and not (
        isinstance(explain_budget_ms, int | float) and explain_budget_ms > 0
    ):
        raise ConfigError(
            f"explain_budget_ms must be a positive number; got {describe(explain_budget_ms)}."
        )


def _sklearn_kind(model: Any, check: Any) -> bool:
    """``is_classifier``/``is_regressor`` that tolerates objects without sklearn tags."""
    try:
        return bool(check(model))
    except (AttributeError, TypeError):
        return False


# ------------------------------------------------------------------ fitting
@dataclass(frozen=True)
class Core:
    """What calibration learned from the calibration rows (before the tiers).

    Attributes
    ----------
    schema : InputSchema
    X_model : ndarray or DataFrame
        The calibration rows as the model receives them.
    y : ndarray
        The targets, 1-D.
    classes : ndarray or None
    conformal : ClassificationConformal or RegressionConformal
    values : ndarray
        The model's output on the calibration rows (``nan`` where failed).
    failed : ndarray of bool
        Rows without a valid output.
    inputs : TierInputs or None
        The rows scored as ``decide`` scores them (only for a policy with
        ``max_error`` tiers).
    """

    schema: InputSchema
    X_model: Any
    y: NDArray[Any]
    classes: NDArray[Any] | None
    conformal: ClassificationConformal | RegressionConformal
    values: NDArray[np.float64]
    failed: NDArray[np.bool_]
    inputs: TierInputs | None


def fit_core(
    model: Any,
    X: Any,
    y: Any,
    *,
    task: str,
    policy: TierPolicy,
    method: str,
    confidence_level: float,
    random_state: int | None = None,
    quantile_models: Any = None,
    feature_names: Sequence[str] | None = None,
    conditional: str | None = None,
    smoothed: bool = False,
) -> Core:
    """Schema, model output, conformal state and scored rows of a calibration set.

    Raises
    ------
    CalibrationError
        ``y`` does not match ``X``, the model raises on the batch, or labels
        the model does not know.
    InputSchemaError
        ``X`` is not a 2-D table, or ``feature_names`` does not fit it.
    """
    y_arr = np.asarray(y)
    if y_arr.ndim != 1:
        y_arr = y_arr.ravel() if y_arr.ndim == 2 and 1 in y_arr.shape else y_arr
    if y_arr.ndim != 1 or len(y_arr) != len(X):
        raise CalibrationError(
            f"y must be 1-D with one target per row of X ({len(X)} rows); got shape {np.shape(y)}."
        )
    schema = schema_from_calibration(X, model, feature_names)
    X_model = prepare(X, schema)
    name = model_method(task)
    try:  # a model that cannot score the calibration rows is the caller's to fix
        raw = getattr(model, name)(X_model)
    except Exception as exc:
        raise CalibrationError(
            f"the model failed on the calibration rows ({name} raised "
            f"{type(exc).__name__}: {exc}). Calibrate on rows with the columns and types "
            "the model was trained on."
        ) from exc
    common: dict[str, Any] = {
        "method": method,
        "confidence_level": float(confidence_level),
        "random_state": random_state,
    }
    classes = None
    conformal: ClassificationConformal | RegressionConformal
    if task == "classification":
        classes = np.asarray(model.classes_)
        unknown = set(np.unique(y_arr).tolist()) - set(classes.tolist())
        if unknown:
            raise CalibrationError(
                f"calibration labels {sorted(map(str, unknown))} are not among the model's "
                f"classes {classes.tolist()}; calibrate on the labels the model knows."
            )
        if method != "lac" and len(classes) == 2:
            raise ConfigError(
                f"conformity_score={method!r} needs 3 or more classes; binary targets support "
                "'lac' only. Use conformity_score='lac'."
            )
        conformal = ClassificationConformal.calibrate(
            model,
            X_model,
            y_arr,
            **common,
            **conditional_options(conditional, smoothed, X_model, schema.feature_names),
        )
    elif conditional is not None or smoothed:
        raise ConfigError(
            "conditional and smoothed apply to classifiers' conformal sets; regression "
            f"intervals take neither (got conditional={conditional!r}, smoothed={smoothed!r})."
        )
    else:
        if method == "cqr" and quantile_models is not None and len(quantile_models) == 3:
            check_quantile_order(quantile_models, X_model)
        conformal = RegressionConformal.calibrate(
            model, X_model, y_arr.astype(np.float64), quantile_models=quantile_models, **common
        )
    n_classes = None if classes is None else len(classes)
    out = from_output(model, task, X_model, raw, n_classes=n_classes)
    failed = out.failed
    inputs = None
    if policy.risk_controlled:
        columns = {*group_columns(policy)}
        if conditional not in (None, "class"):  # conditional conformal sets read it too
            columns.add(str(conditional))
        groups = tier_groups(sorted(columns), X_model, schema.feature_names)
        scored = score(task, conformal, X_model, out.values, failed, groups=groups)
        failed = failed | scored.raised | scored.collapsed
        inputs = scored.inputs
    return Core(schema, X_model, y_arr, classes, conformal, out.values, failed, inputs)


def conditional_options(
    conditional: str | None, smoothed: bool, X_model: Any, feature_names: Sequence[str]
) -> dict[str, Any]:
    """``ClassificationConformal.calibrate``'s conditional / smoothed arguments."""
    if conditional is not None and not isinstance(conditional, str):
        raise ConfigError(
            f'conditional must be "class" or an input column name; got {describe(conditional)}.'
        )
    if not isinstance(smoothed, bool):
        raise ConfigError(f"smoothed must be True or False; got {describe(smoothed)}.")
    groups = None
    if conditional not in (None, "class"):
        assert conditional is not None
        groups = tier_groups([conditional], X_model, feature_names)[conditional]
    return {"conditional": conditional, "groups": groups, "smoothed": smoothed}


def fit_guards(
    reference: Any,
    schema: InputSchema,
    config: GuardConfig | None,
    random_state: int | None = None,
    *,
    model: Any = None,
    featurizer: Callable[[Any], Any] | None = None,
) -> InputGuards | TextGuards | ArrayGuards | None:
    """Guards that learned normal inputs from ``reference`` (``None`` when off).

    One guard set per input modality: :class:`InputGuards` for tables,
    :class:`TextGuards` for text (tokens and feature space from ``model``'s
    pipeline, or ``featurizer``), :class:`ArrayGuards` for N-D arrays.
    """
    if config is None:
        return None
    ref = prepare(reference, schema)  # the structural checks decide() applies
    if schema.modality == TEXT:
        return TextGuards.fit(
            ref, config, model=model, featurizer=featurizer, random_state=random_state
        )
    if schema.modality == ARRAY:
        return ArrayGuards.fit(ref, config, featurizer=featurizer, random_state=random_state)
    return InputGuards.fit(
        ref,
        config,
        feature_names=list(schema.feature_names),
        random_state=random_state,
    )


def fit_explainer(
    model: Any,
    X_model: Any,
    *,
    requested: str | None,
    task: str,
    classes: Any,
    budget_ms: float | None,
    random_state: int | None,
    background: str = "kmeans",
    modality: str = "table",
) -> ModelExplainer | TokenExplainer | None:
    """The explainer's state (its shap explainer is built lazily); ``None`` when off.

    Text and array inputs get a :class:`TokenExplainer`: tokens for a linear text
    pipeline, ``explanation_skipped:unsupported`` otherwise.
    """
    if requested is None:
        return None
    if modality != "table":
        return TokenExplainer.fit(model, modality, str(requested), task=task, classes=classes)
    # an explicit explainer that cannot explain this model fails here, not in decide
    check_request(model, str(requested), X_model)
    state = ExplainerState.fit(
        X_model,
        task=task,
        requested=str(requested),
        classes=classes,
        budget_ms=budget_ms,
        random_state=random_state,
        background=background,
    )
    explainer = ModelExplainer(model, state)
    if requested in ("tree", "linear"):  # an explicit method that cannot explain: say why now
        try:
            explainer.prepare()
        except ConfigError:
            raise
        except Exception as exc:  # e.g. shap not installed
            state.errors.setdefault(str(requested), f"{type(exc).__name__}: {exc}"[:300])
        if state.method is None:
            why = state.errors.get(str(requested), "no reason given")
            raise ConfigError(
                f"explainer={requested!r} cannot explain this model ({why}). Use "
                "explainer='auto' (falls back to 'permutation') or 'permutation'."
            )
    return explainer


# ------------------------------------------------------------------ tiers, baseline
def certify_tiers(
    policy: TierPolicy,
    task: str,
    classes: NDArray[Any] | None,
    y: NDArray[Any],
    values: NDArray[np.float64],
    failed: NDArray[np.bool_],
    inputs: TierInputs | None,
) -> TierCalibration:
    """Certify thresholds for the risk-controlled (``max_error``) tiers.

    ``values``, ``failed`` and ``inputs`` are the calibration rows run through
    :func:`safepredict.pipeline.score`, the rule ``decide`` applies. Marks the
    rows the model gets wrong (classification: wrong label or failed;
    regression: ``|y - y_hat| > tolerance`` of each tier, or failed) and runs
    :func:`safepredict.tiers.calibrate_tiers`.
    """
    if not policy.risk_controlled or inputs is None:
        return TierCalibration()
    if task == "classification":
        assert inputs.predicted_class is not None
        assert classes is not None
        errors = (classes[inputs.predicted_class] != y) | failed
        return calibrate_tiers(
            policy, inputs, errors, n_classes=len(classes), class_labels=classes.tolist()
        )
    residual = np.abs(np.asarray(y, dtype=np.float64) - values.reshape(-1))
    by_tier = {
        t.name: (residual > float(t.tolerance or 0.0)) | failed for t in policy.risk_controlled
    }
    return calibrate_tiers(policy, inputs, by_tier)


def calibration_baseline(
    policy: TierPolicy,
    task: str,
    tier_calibration: TierCalibration,
    inputs: TierInputs,
    failed: NDArray[np.bool_],
) -> dict[str, Any]:
    """Confidence (or interval width) snapshot and action mix on the calibration rows.

    The monitor's drift baseline; rows the model failed on are left out.
    """
    ok = ~failed
    if task == "classification":
        values, metric = inputs.confidence[ok], "confidence"
    else:
        assert inputs.width is not None
        values, metric = inputs.width[ok], "interval_width"
    codes = assign_tiers(policy, inputs, tier_calibration)[0][ok]
    n = max(len(codes), 1)
    tiers = np.bincount(codes, minlength=len(policy.tiers))
    actions: dict[str, float] = {}
    for tier, count in zip(policy.tiers, tiers.tolist(), strict=True):
        actions[tier.action] = actions.get(tier.action, 0.0) + count / n
    snapshot = confidence_snapshot(values, metric=metric)
    snapshot["tier_rates"] = {
        t.name: c / n for t, c in zip(policy.tiers, tiers.tolist(), strict=True)
    }
    snapshot["action_rates"] = {a: actions.get(a, 0.0) for a in ("accept", "review", "abstain")}
    return snapshot


def feature_baseline(
    X_model: Any, names: Sequence[str], hidden: Collection[str] = ()
) -> dict[str, Any]:
    """Per-column calibration bins for the monitor's per-feature drift (no raw rows kept).

    The deciles of each numeric input column and the calibration rows' counts in
    them (:func:`safepredict.monitoring.feature_drift.feature_bins`); columns in
    ``hidden`` (redacted) are left out.

    Examples
    --------
    >>> X = np.arange(200.0).reshape(100, 2)
    >>> snap = feature_baseline(X, ["a", "b"], hidden={"b"})
    >>> sorted(snap["columns"]), sum(snap["columns"]["a"]["counts"])
    (['a'], 100)
    """
    snapshot = feature_bins(X_model, list(names))
    snapshot["columns"] = {k: v for k, v in snapshot["columns"].items() if k not in hidden}
    return snapshot


def calibration_hash(X: Any, y: NDArray[Any]) -> str:
    """Identifier of a calibration set (rows and targets), 16 hex digits.

    Examples
    --------
    >>> len(calibration_hash(np.zeros((2, 2)), np.array([0, 1])))
    16
    """
    h = hashlib.sha256()
    for digest in row_hashes(X):
        h.update(digest.encode())
    h.update(json.dumps([str(v) for v in np.asarray(y).tolist()]).encode())
    return h.hexdigest()[:16]
