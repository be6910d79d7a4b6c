"""The adapted predictor: a calibrated predictor re-weighted for a production batch.

:func:`adapt` is the body of :meth:`SafePredictor.adapt_to`, and
:func:`estimate_performance` of :meth:`SafePredictor.estimate_performance`.
Both need the calibration rows, which the predictor keeps **in memory only**
after :meth:`~SafePredictor.calibrate` (the trust contract: no calibration row
is ever saved). A predictor restored with ``load`` has none and refuses with
:class:`CalibrationRowsMissingError`: calibrate it in the process that adapts it.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from safepredict import pipeline
from safepredict._binomial import rows_needed
from safepredict.calibration import Core
from safepredict.config import TierPolicy
from safepredict.conformal import ClassificationConformal, RegressionConformal
from safepredict.exceptions import CalibrationError, ConfigError, NotCalibratedError
from safepredict.inputs import prepare
from safepredict.model import run_model
from safepredict.shift.label_shift import LabelShift, estimate_label_shift
from safepredict.shift.performance import CorrectnessMap, PerformanceEstimate, estimate_tiers
from safepredict.shift.regression_estimate import ToleranceErrors
from safepredict.shift.weighted import (
    WeightedClassificationConformal,
    WeightedRegressionConformal,
)
from safepredict.shift.weighted_tiers import calibrate_tiers_weighted
from safepredict.shift.weights import DomainWeights, effective_sample_size
from safepredict.tiers import TierCalibration

__all__ = [
    "CalibrationRowsMissingError",
    "ShiftReport",
    "ShiftTooLargeError",
    "adapt",
    "calibration_rows",
    "estimate_performance",
    "rows_needed_under_shift",
]

#: Attribute of a freshly calibrated predictor holding its calibration rows (memory only).
ROWS_ATTRIBUTE = "_calibration_rows"


class ShiftTooLargeError(CalibrationError):
    """The shift leaves too few effective calibration rows for the sets or the tiers."""


class CalibrationRowsMissingError(NotCalibratedError):
    """The predictor has no calibration rows in memory (it was loaded, not calibrated)."""


@dataclass(frozen=True)
class ShiftReport:
    """What :meth:`SafePredictor.adapt_to` estimated.

    Attributes
    ----------
    shift : {"covariate", "label"}
    n_calibration, n_production : int
        Rows compared.
    effective_sample_size : float
        Kish's ESS of the calibration weights: what the weighted calibration is worth.
    rows_needed : int
        Smallest ESS the sets and the ``max_error`` tiers need.
    max_weight : float
        Bound of the weights (the clip, or the largest prior ratio).
    n_clipped : int
        Rows whose covariate weight was clipped (0 for label shift).
    production_priors, calibration_priors : dict or None
        Label shift: class priors (production estimated).
    method : str
        ``"domain_classifier"``, ``"bbse"`` or ``"em"``.
    tiers : dict
        Per ``max_error`` tier, the weighted certification report.
    """

    shift: str
    n_calibration: int
    n_production: int
    effective_sample_size: float
    rows_needed: int
    max_weight: float
    n_clipped: int = 0
    production_priors: dict[str, float] | None = None
    calibration_priors: dict[str, float] | None = None
    method: str = "domain_classifier"
    tiers: dict[str, dict[str, Any]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return dataclasses.asdict(self)


def rows_needed_under_shift(policy: TierPolicy, confidence_level: float) -> int:
    """Smallest effective sample size for the conformal sets and every ``max_error`` tier.

    Sets at level ``L`` need ``(n + 1) L <= n`` for a finite quantile; a tier
    needs at least :func:`~safepredict.tiers.rows_needed` accepted rows at its
    share of ``delta`` even with no error.

    Examples
    --------
    >>> from safepredict.config import Tier, TierPolicy
    >>> policy = TierPolicy((Tier("auto", "accept", max_error=0.05), Tier("human", "review")),
    ...                     delta=0.1)
    >>> rows_needed_under_shift(policy, 0.9)
    45
    """
    alpha = 1.0 - confidence_level
    need = math.ceil((1.0 - alpha) / alpha - 1e-9)
    risk = policy.risk_controlled
    share = policy.delta / max(len(risk), 1)
    for tier in risk:
        assert tier.max_error is not None
        need = max(need, rows_needed(tier.max_error, share))
    return int(need)


def calibration_rows(predictor: Any, method: str) -> Core:
    """The predictor's calibration rows (memory only), or a clear error."""
    predictor._check_calibrated(method)
    core = predictor.__dict__.get(ROWS_ATTRIBUTE)
    if core is None:
        raise CalibrationRowsMissingError(
            f"{method} needs the calibration rows, which are kept in memory only after "
            "calibrate() and never saved (no calibration row is stored in a saved state). "
            "This predictor was loaded or copied: call calibrate(X_cal, y_cal) on it first."
        )
    assert isinstance(core, Core)
    return core


def _class_index(classes: NDArray[Any], y: NDArray[Any]) -> NDArray[np.intp]:
    index = {v: i for i, v in enumerate(classes.tolist())}
    return np.array([index[v] for v in y.tolist()], dtype=np.intp)


def _errors(
    core: Core, policy: TierPolicy, predicted: NDArray[np.intp] | None
) -> NDArray[np.bool_] | dict[str, NDArray[np.bool_]]:
    """Calibration rows the model gets wrong (as ``certify_tiers`` defines it)."""
    if core.classes is not None:
        assert predicted is not None
        return np.asarray((core.classes[predicted] != core.y) | core.failed, dtype=bool)
    residual = np.abs(np.asarray(core.y, dtype=np.float64) - core.values.reshape(-1))
    return {
        t.name: (residual > float(t.tolerance or 0.0)) | core.failed for t in policy.risk_controlled
    }


def adapt(
    predictor: Any,
    X_production: Any,
    *,
    shift: str = "covariate",
    domain_classifier: Any = None,
    max_weight: float = 10.0,
    label_method: str = "bbse",
) -> Any:
    """The body of :meth:`SafePredictor.adapt_to` (see there)."""
    if shift not in ("covariate", "label"):
        raise ConfigError(
            f"shift must be 'covariate' (inputs moved, labelling rule unchanged) or 'label' "
            f"(class priors moved); got {shift!r}."
        )
    fitted = getattr(predictor, "conformal_", None)  # the predictor's or the policy's keys
    conditional, smoothed = (getattr(fitted, k, None) for k in ("conditional", "smoothed"))
    if conditional is not None or smoothed:
        raise ConfigError(
            "adapt_to does not yet weight conditional (Mondrian) or smoothed conformal sets; "
            f"got conditional={conditional!r}, smoothed={smoothed!r}. "
            "Calibrate a predictor without them to adapt it."
        )
    core = calibration_rows(predictor, "adapt_to")
    stages = predictor._stages()
    if getattr(stages.schema, "modality", "table") != "table":
        raise ConfigError(
            "adapt_to needs tabular inputs (the domain classifier is fitted on the input "
            f"columns); this predictor takes {stages.schema.modality}. Use the monitor's OOD "
            "rate to watch text or array inputs instead."
        )
    task, policy = stages.task, stages.policy
    X_prod = prepare(X_production, stages.schema)
    ok = ~core.failed
    base = core.conformal
    conformal: ClassificationConformal | RegressionConformal
    priors: tuple[dict[str, float], dict[str, float]] | None = None
    n_clipped = 0
    if shift == "covariate":
        domain = DomainWeights.fit(
            core.X_model, X_prod, classifier=domain_classifier, max_weight=max_weight
        )
        weights, bound, n_clipped = domain.calibration_weights, float(max_weight), domain.n_clipped
        method = "domain_classifier"
        if isinstance(base, ClassificationConformal):
            assert core.classes is not None
            y_index = _class_index(core.classes, core.y)
            conformal = WeightedClassificationConformal.from_base(
                base, core.values[ok], y_index[ok], weights[ok], domain=domain
            )
        else:
            conformal = WeightedRegressionConformal.from_base(
                base,
                core.X_model,
                np.asarray(core.y, dtype=np.float64),
                core.values.reshape(-1),
                weights,
                domain=domain,
            )
    else:
        if not isinstance(base, ClassificationConformal) or core.classes is None:
            raise ConfigError(
                "shift='label' needs a classifier (class priors); for a regressor use "
                "shift='covariate'."
            )
        y_index = _class_index(core.classes, core.y)
        out = run_model(stages.model, task, X_prod, n_classes=len(core.classes))
        good = ~(out.raised | out.invalid | out.skipped)
        ls: LabelShift = estimate_label_shift(
            core.values[ok], y_index[ok], out.values[good], method=label_method
        )
        weights = ls.ratios[y_index]
        bound, method = float(ls.ratios.max()), label_method
        labels = [str(c) for c in core.classes.tolist()]
        priors = (
            dict(zip(labels, ls.production_priors.tolist(), strict=True)),
            dict(zip(labels, ls.calibration_priors.tolist(), strict=True)),
        )
        conformal = WeightedClassificationConformal.from_base(
            base, core.values[ok], y_index[ok], weights[ok], class_weights=ls.ratios
        )
    ess = effective_sample_size(weights[ok])
    need = rows_needed_under_shift(policy, float(base.confidence_level))
    if ess < need:
        raise ShiftTooLargeError(
            f"the shift is too large to correct: the weighted calibration rows are worth "
            f"{ess:.1f} rows (effective sample size of {int(ok.sum())} calibration rows), but "
            f"the conformal sets and the max_error tiers need at least {need}. Calibrate on "
            "rows that resemble production (recent labelled rows), or loosen max_error / delta."
        )
    tiers = TierCalibration()
    if policy.risk_controlled:
        scored = pipeline.score(
            task,
            conformal,
            core.X_model,
            core.values,
            core.failed,
            groups=pipeline.tier_groups(
                stages.group_columns, core.X_model, stages.schema.feature_names
            )
            if stages.group_columns
            else None,
        )
        errors = _errors(core, policy, scored.inputs.predicted_class)
        tiers = calibrate_tiers_weighted(
            policy,
            scored.inputs,
            errors,
            weights,
            max_weight=bound,
            n_classes=None if core.classes is None else len(core.classes),
            class_labels=None if core.classes is None else core.classes.tolist(),
        )
    report = ShiftReport(
        shift=shift,
        n_calibration=len(core.y),
        n_production=len(X_prod),
        effective_sample_size=float(ess),
        rows_needed=need,
        max_weight=bound,
        n_clipped=n_clipped,
        production_priors=None if priors is None else priors[0],
        calibration_priors=None if priors is None else priors[1],
        method=method,
        tiers={k: dict(v) for k, v in tiers.report.items()},
    )
    new = predictor.__class__.__new__(predictor.__class__)
    derived = ("_lock", "_events", "_events_key", "_cache", "_hot")
    new.__dict__.update({k: v for k, v in predictor.__dict__.items() if k not in derived})
    new.conformal_ = conformal
    new.tier_calibration_ = tiers
    new.shift_ = report
    return new


def _quiet_decide(predictor: Any, X: Any) -> Any:
    """``decide`` without side effects: no events, no routing, no explanations."""
    stages = dataclasses.replace(predictor._stages(), explainer=None)
    writers = dataclasses.replace(predictor._writers(), log="off", router=None)
    return pipeline.decide(stages, writers, X)


def estimate_performance(
    predictor: Any, X_unlabelled: Any, *, level: float = 0.95, recalibration: str = "isotonic"
) -> PerformanceEstimate:
    """The body of :meth:`SafePredictor.estimate_performance` (see there)."""
    core = calibration_rows(predictor, "estimate_performance")
    if not 0.0 < level < 1.0:
        raise ConfigError(f"level must be in (0, 1); got {level!r}. Use e.g. level=0.95.")
    if core.classes is None:
        return _estimate_regression(predictor, core, X_unlabelled, level, recalibration)
    ok = ~core.failed
    y_index = _class_index(core.classes, core.y)
    cmap = CorrectnessMap.fit(core.values[ok], y_index[ok], method=recalibration)
    draws = CorrectnessMap.bootstrap(core.values[ok], y_index[ok], method=recalibration)
    names = predictor._stages().tier_names
    cal = _quiet_decide(predictor, core.X_model)
    wrong = np.asarray(cal.predictions != core.y, dtype=bool)
    naive: dict[str, float | None] = {}
    for code, name in enumerate(names):
        rows = (cal.tier_codes == code) & ok
        naive[name] = float(wrong[rows].mean()) if rows.any() else None
    batch = _quiet_decide(predictor, X_unlabelled)
    proba = batch.probabilities
    correct = np.full(len(batch), np.nan)
    correct_draws = np.full((len(draws), len(batch)), np.nan)
    if proba is not None and len(batch):
        good = np.isfinite(proba).all(axis=1)
        correct[good] = cmap.correct(proba[good])
        for b, draw in enumerate(draws):
            correct_draws[b, good] = draw.correct(proba[good])
    return estimate_tiers(
        names,
        batch.tier_codes,
        correct,
        level=level,
        calibration_errors=naive,
        correct_draws=correct_draws,
        method=recalibration,
    )


def _width_score(decisions: Any) -> NDArray[np.float64]:
    """A regression tier's ranking score of each row: minus its interval width."""
    iv = decisions.intervals
    if iv is None:
        return np.full(len(decisions), np.nan)
    return np.asarray(-(iv[:, 1] - iv[:, 0]), dtype=np.float64)


def _estimate_regression(
    predictor: Any, core: Core, X_unlabelled: Any, level: float, recalibration: str
) -> PerformanceEstimate:
    """Per ``max_error`` tier of a regressor: mean ``P(|y - y_hat| > tolerance | score)``."""
    if recalibration != "isotonic":
        raise ConfigError(
            f"a regressor's estimate maps the tier's ranking score to P(|y - y_hat| > tolerance) "
            f"by isotonic regression; got recalibration={recalibration!r}. Use 'isotonic' "
            "('temperature' rescales class probabilities, which a regressor has none of)."
        )
    stages = predictor._stages()
    risk = stages.policy.risk_controlled
    if not risk:
        raise ConfigError(
            "estimate_performance of a regressor estimates the error rate of its max_error "
            "tiers, where an error is |y - y_hat| > tolerance; this policy has none. (The "
            "interval misses 1 - confidence_level of rows only on average and without shift, "
            "not per tier.) Add a tier with max_error and tolerance, e.g. "
            'Tier("auto", "accept", max_error=0.1, tolerance=5.0), and calibrate again.'
        )
    cal = _quiet_decide(predictor, core.X_model)
    y_hat = core.values.reshape(-1)
    residual = np.abs(np.asarray(core.y, dtype=np.float64) - y_hat)
    residual[core.failed] = np.nan
    errors = ToleranceErrors.fit(
        stages.tier_names,
        {t.name: float(t.tolerance or 0.0) for t in risk},
        _width_score(cal),
        residual,
        cal.tier_codes,
    )
    batch = _quiet_decide(predictor, X_unlabelled)
    return errors.estimate(_width_score(batch), batch.tier_codes, level=level)
