"""Tier assignment and risk-controlled tier calibration (pure numpy/scipy).

The first tier whose conditions a row meets wins; the last tier is the fallback.
Every condition reads one documented per-row number (confidence, credibility,
set size, interval width, a certified score threshold), so the tier a row lands
in never contradicts what is shown for it. An empty conformal set is reported
(reason ``empty_set``: the row is less typical than the calibration rows), not
silently abstained; a policy that wants typicality says so with
``min_credibility``.

A ``max_error`` tier is certified with Learn-then-Test (Angelopoulos et al.,
2021): fixed-sequence testing over an ordered, label-free grid of score
thresholds with exact (by default randomized) binomial tests (see
:func:`certify_threshold`).

One module per job: :mod:`~safepredict.tiers.certify` (Learn-then-Test for one
threshold), :mod:`~safepredict.tiers.planner` (calibration sizes),
:mod:`~safepredict.tiers.state` (per-row inputs, certified thresholds),
:mod:`~safepredict.tiers.conditions` (a tier's conditions on rows),
:mod:`~safepredict.tiers.calibrate` (a policy's tiers certified in order) and
:mod:`~safepredict.tiers.assign` (rows to tiers).
"""

from __future__ import annotations

from safepredict._binomial import binomial_p_value, clopper_pearson, rows_needed
from safepredict.tiers.assign import assign_tiers
from safepredict.tiers.calibrate import calibrate_tiers
from safepredict.tiers.certify import (
    ACCEPT_ALL,
    CertifiedThreshold,
    accept_at,
    certify_threshold,
    ranking_keys,
    sort_keys,
)
from safepredict.tiers.conditions import probability_tie_breaks, tier_keys
from safepredict.tiers.planner import certification_power, plan_calibration
from safepredict.tiers.state import TierCalibration, TierInputs, group_labels

__all__ = [
    "ACCEPT_ALL",
    "CertifiedThreshold",
    "TierCalibration",
    "TierInputs",
    "accept_at",
    "assign_tiers",
    "binomial_p_value",
    "calibrate_tiers",
    "certification_power",
    "certify_threshold",
    "clopper_pearson",
    "group_labels",
    "plan_calibration",
    "probability_tie_breaks",
    "ranking_keys",
    "rows_needed",
    "sort_keys",
    "tier_keys",
]
