"""Offline abstention benchmark: risk-coverage curves, operating points, tiers and costs.

The data scientist's question: *if the model decides only when it is confident,
how many cases does it handle, how often is it wrong there, and what does that
cost?* This module answers it from a calibrated :class:`~safepredict.SafePredictor`
and labelled test data, from raw arrays of scores and errors, or from a production
decision log joined with outcomes (see :func:`replay`).

Conventions
-----------
* A *score* is higher for more confident rows. Accepting at threshold ``t``
  accepts **every** row with ``score >= t`` (rows with tied scores are accepted
  or rejected together), so a curve has one point per distinct score.
* *Coverage* is the fraction of rows accepted; *selective risk* is the error
  rate among them.
* Every curve sorts the scores once and uses cumulative sums: ``O(n log n)``.

Examples
--------
>>> import numpy as np
>>> scores = np.array([0.9, 0.8, 0.8, 0.3])
>>> errors = np.array([False, False, True, True])
>>> curve = risk_coverage(scores, errors)
>>> curve.coverage.tolist(), curve.risk.round(3).tolist()
([0.25, 0.75, 1.0], [0.0, 0.333, 0.5])
>>> round(curve.aurc, 4)
0.2917
"""

from __future__ import annotations

from safepredict._binomial import binomial_interval
from safepredict.evaluation._costs import CostCurve, CostModel, cost_curve
from safepredict.evaluation._curves import (
    CLASSIFICATION_SCORES,
    OperatingPoint,
    RiskCoverageCurve,
    apply_threshold,
    certified_threshold,
    certify_threshold,
    curve_from_counts,
    risk_coverage,
)
from safepredict.evaluation._data import ScoredData, score_predictor
from safepredict.evaluation._evaluate import Evaluation, benchmark, evaluate, reliability
from safepredict.evaluation._policies import (
    PolicyComparison,
    PolicyResult,
    TierRow,
    calibrate_policy,
    compare_policies,
    evaluate_policy,
    threshold_policies,
)
from safepredict.evaluation._replay import load_decision_log, replay

__all__ = [
    "CLASSIFICATION_SCORES",
    "CostCurve",
    "CostModel",
    "Evaluation",
    "OperatingPoint",
    "PolicyComparison",
    "PolicyResult",
    "RiskCoverageCurve",
    "ScoredData",
    "TierRow",
    "apply_threshold",
    "benchmark",
    "binomial_interval",
    "calibrate_policy",
    "certified_threshold",
    "certify_threshold",
    "compare_policies",
    "cost_curve",
    "curve_from_counts",
    "evaluate",
    "evaluate_policy",
    "load_decision_log",
    "reliability",
    "replay",
    "risk_coverage",
    "score_predictor",
    "threshold_policies",
]
