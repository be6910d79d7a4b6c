"""Per-feature drift (PSI / binned KS) from calibration bins, over many generated splits."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from safepredict.exceptions import ConfigError
from safepredict.monitoring.feature_drift import (
    feature_bins,
    feature_counts,
    feature_drift,
    merge_counts,
)

REPS, N_CAL, N_WIN, COLS, ALPHA = 400, 1000, 300, 5, 0.05


def _flag_rates(shift: float, rng: np.random.Generator) -> np.ndarray:
    """Share of windows flagged per column by KS alone (PSI threshold off)."""
    flagged = np.zeros(COLS)
    names = [f"c{j}" for j in range(COLS)]
    for _ in range(REPS):
        snap = feature_bins(rng.normal(size=(N_CAL, COLS)), names)
        window = rng.normal(size=(N_WIN, COLS))
        window[:, 0] += shift
        result = feature_drift(snap, feature_counts(window, snap, names),
                               psi_threshold=math.inf, ks_alpha=ALPHA)  # fmt: skip
        for d in result:
            flagged[names.index(d["feature"])] += d["flagged"]
    return flagged / REPS


def test_false_alarm_rate_and_power() -> None:
    rng = np.random.default_rng(11)
    null = _flag_rates(0.0, rng)
    # Under no drift the binned KS test is conservative: the false-alarm rate over all
    # REPS * COLS = 2000 windows is at most ALPHA plus three Monte-Carlo standard errors,
    # sqrt(ALPHA * (1 - ALPHA) / 2000) = 0.0049.
    bound = ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / (REPS * COLS))
    assert null.mean() <= bound
    # Negative control: a 0.3 sd shift of column 0 breaks that bound (the test can
    # fail) and is caught in most windows, while the other columns stay quiet.
    shifted = _flag_rates(0.3, rng)
    assert shifted[0] > bound
    assert shifted[0] >= 0.9
    assert shifted[1:].mean() <= ALPHA + 3 * math.sqrt(ALPHA * (1 - ALPHA) / (REPS * (COLS - 1)))


def test_snapshot_is_aggregated_json_and_counts_add_up() -> None:
    rng = np.random.default_rng(3)
    frame = pd.DataFrame({"age": rng.normal(40, 10, 500), "city": ["x"] * 500,
                          "income": rng.lognormal(size=500)})  # fmt: skip
    frame.loc[:9, "income"] = np.nan
    snap = feature_bins(frame)
    assert set(snap["columns"]) == {"age", "income"}  # text columns are not binned
    assert json.loads(json.dumps(snap)) == snap
    for col in snap["columns"].values():
        assert len(col["counts"]) == len(col["edges"]) + 1 <= 11
        assert sum(col["counts"]) + col["missing"] == col["n"] == 500
    assert snap["columns"]["income"]["missing"] == 10
    # No raw rows: nothing in the snapshot is a calibration value but the decile edges.
    assert len(json.dumps(snap)) < 2000
    a, b = feature_counts(frame.iloc[:200], snap), feature_counts(frame.iloc[200:], snap)
    assert merge_counts(a, b) == feature_counts(frame, snap)
    same = feature_drift(snap, feature_counts(frame, snap))
    assert all(d["psi"] < 1e-9 and d["ks_d"] == 0 and not d["flagged"] for d in same)


def test_a_column_going_missing_drifts() -> None:
    rng = np.random.default_rng(5)
    cal = pd.DataFrame({"a": rng.normal(size=800), "b": rng.normal(size=800)})
    snap = feature_bins(cal)
    window = pd.DataFrame({"a": rng.normal(size=300), "b": np.nan})
    worst, other = feature_drift(snap, feature_counts(window, snap))
    assert (worst["feature"], worst["flagged"], worst["missing_rate"]) == ("b", True, 1.0)
    assert not other["flagged"]


def test_bad_input_is_explained() -> None:
    with pytest.raises(ConfigError, match="2-d table"):
        feature_bins(np.zeros(5))
    with pytest.raises(ConfigError, match="one name per column"):
        feature_bins(np.zeros((5, 2)), ["a"])
