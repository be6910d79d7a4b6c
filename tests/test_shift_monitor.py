"""The monitor's shift view: label-free estimates per window and the adapt_to advice."""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from tests.conftest import json_lines_logging

import safepredict as sp
from safepredict.monitoring.monitor import monitor
from safepredict.monitoring.shift_advice import ADAPT_COMMAND, label_free_report, shift_advice


@pytest.fixture(scope="module")
def logs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    X, y = load_digits(return_X_y=True)
    X_tr, X_rest, y_tr, y_rest = train_test_split(X, y, test_size=0.6, random_state=0)
    X_cal, X_te, y_cal, y_te = train_test_split(X_rest, y_rest, test_size=0.5, random_state=0)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(X_tr, y_tr)
    tmp = tmp_path_factory.mktemp("shift_logs")
    out: dict[str, Any] = {"y": y_te}
    for name, noise in (("same", 0.0), ("shifted", 1.0)):
        path = tmp / f"{name}.jsonl"
        with json_lines_logging(path):
            p = sp.SafePredictor(model, random_state=0).calibrate(X_cal, y_cal)
            rng = np.random.default_rng(1)  # pixel noise of `noise` training sds: a worse scanner
            X = X_te + noise * rng.normal(size=X_te.shape) * X_tr.std(0)
            out[name] = (path, p.decide(X))
    return out


def test_shift_advice_names_the_command_only_when_production_moved(
    logs: dict[str, Any],
) -> None:
    shifted = monitor(logs["shifted"][0], window="all")
    same = monitor(logs["same"][0], window="all")
    advice = shifted.windows[0]["shift_advice"]
    assert advice is not None
    assert advice["command"] == ADAPT_COMMAND
    assert any(why.startswith("drift flagged") for why in advice["why"])
    drift = [a for a in shifted.alerts if a["kind"] == "drift"]
    assert drift
    assert drift[0]["command"] == ADAPT_COMMAND
    assert "adapt_to" in drift[0]["detail"]
    assert same.windows[0]["shift_advice"] is None
    assert all("command" not in a for a in same.alerts)
    assert "label_free" not in same.windows[0]  # only next to outcomes
    json.dumps(shifted.to_dict())


def test_label_free_estimate_next_to_realized_error(logs: dict[str, Any]) -> None:
    path, d = logs["shifted"]
    y = logs["y"]
    labels = {i: int(t) for i, t in zip(d.decision_ids, y, strict=True)}
    report = monitor(path, window="all", labels=labels)
    tiers = report.windows[0]["label_free"]["tiers"]
    names = np.asarray(d.tier_names, dtype=object)[d.tier_codes]
    has_proba = np.isfinite(d.probabilities).all(axis=1)
    wrong = d.predictions != y
    for tier, row in tiers.items():
        rows = (names == tier) & has_proba
        assert row["n"] == int(rows.sum())
        assert row["n_labelled"] == int(rows.sum())
        assert row["realized_error"] == pytest.approx(float(wrong[rows].mean()))
        top = d.probabilities[rows].max(axis=1)
        assert row["estimated_error"] == pytest.approx(float((1 - top).mean()))
        assert row["interval"][0] <= row["estimated_error"] <= row["interval"][1]
    # without outcomes: the standalone report has the estimate, not the realized error
    bare = label_free_report([path], window_s=0.0)[None]["tiers"]
    assert all(r["realized_error"] is None and r["n"] == tiers[t]["n"] for t, r in bare.items())
    same = label_free_report([logs["same"][0]], window_s=0.0)[None]["tiers"]

    def overall(rows: dict[str, Any]) -> float:
        return sum(r["n"] * r["estimated_error"] for r in rows.values()) / sum(
            r["n"] for r in rows.values()
        )

    # pixel noise lowers the confidence: the estimated error over all rows rises
    assert overall(bare) > overall(same)


def test_shift_advice_from_the_ood_rate() -> None:
    quiet = {"start": None, "drift": {"flagged": False}, "guard_reason_rates": {"ood": 0.02}}
    loud = {**quiet, "guard_reason_rates": {"ood": 0.2}}
    assert shift_advice(quiet) is None
    assert shift_advice(quiet, ood_threshold=0.01) is not None
    advice = shift_advice(loud)
    assert advice is not None
    assert advice["why"] == ["OOD guard rate 0.200 >= 0.05"]


# ------------------------------------------------------------------ a regressor's logs
REG_TOLERANCES = {"auto": 1.0, "quick": 1.5}


def _regression_rows(g: np.random.Generator, n: int, shift: float) -> tuple[Any, Any]:
    """Heteroscedastic normal noise whose log-scale is linear in two inputs."""
    X = g.normal(size=(n, 4))
    X[:, 0] += shift
    sigma = 0.8 * np.exp(0.5 * X[:, 0] + 0.3 * X[:, 1])
    return X, X @ np.array([2.0, -1.0, 0.5, 1.0]) + sigma * g.normal(size=n)


@pytest.fixture(scope="module")
def regression_logs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    from sklearn.linear_model import LinearRegression

    g = np.random.default_rng(3)
    model = LinearRegression().fit(*_regression_rows(g, 2000, 0.0))
    policy = {
        "delta": 0.1,
        "tiers": [
            {"name": "auto", "action": "accept", "max_error": 0.05, "tolerance": 1.0},
            {"name": "quick", "action": "accept", "max_error": 0.15, "tolerance": 1.5},
            {"name": "human", "action": "review"},
        ],
    }
    X_cal, y_cal = _regression_rows(g, 3000, 0.0)
    tmp = tmp_path_factory.mktemp("shift_regression_logs")
    out: dict[str, Any] = {}
    for name, shift in (("same", 0.0), ("shifted", 1.0)):
        path = tmp / f"{name}.jsonl"
        X, y = _regression_rows(g, 3000, shift)
        with json_lines_logging(path):
            p = sp.SafePredictor(
                model,
                tiers=policy,
                guards="off",
                conformity_score="residual_normalized",
                random_state=0,
            ).calibrate(X_cal, y_cal)
            out[name] = (path, p.decide(X), y)
    return out


def test_label_free_estimate_of_a_regressor_next_to_realized_error(
    regression_logs: dict[str, Any],
) -> None:
    from statistics import NormalDist

    z = NormalDist().inv_cdf(0.95)  # the intervals' level is 0.9
    overall: dict[str, tuple[float, float]] = {}
    for name, (path, d, y) in regression_logs.items():
        labels = {i: float(t) for i, t in zip(d.decision_ids, y, strict=True)}
        window = monitor(path, window="all", labels=labels).windows[0]["label_free"]
        assert "normal" in window["assumption"]
        tiers = window["tiers"]
        assert set(tiers) == {"auto", "quick"}  # "human" has no tolerance: no error defined
        names = np.asarray(d.tier_names, dtype=object)[d.tier_codes]
        residual = np.abs(y - d.predictions.astype(float))
        sigma = (d.intervals[:, 1] - d.intervals[:, 0]) / (2 * z)
        n_all = est_all = real_all = 0.0
        for tier, row in tiers.items():
            rows = names == tier
            tolerance = REG_TOLERANCES[tier]
            assert row["n"] == row["n_labelled"] == int(rows.sum()) > 30
            realized = float((residual[rows] > tolerance).mean())
            assert row["realized_error"] == pytest.approx(realized)
            p = 2 * (1 - np.vectorize(NormalDist().cdf)(tolerance / sigma[rows]))
            assert row["estimated_error"] == pytest.approx(float(p.mean()))
            assert row["interval"][0] <= row["estimated_error"] <= row["interval"][1]
            # the noise is normal here: the realized rate is within 3 binomial standard
            # errors sqrt(sum p (1 - p)) / n of the estimate
            assert abs(realized - row["estimated_error"]) <= 3 * math.sqrt(
                float((p * (1 - p)).sum())
            ) / len(p)
            n_all += row["n"]
            est_all += row["n"] * row["estimated_error"]
            real_all += row["n"] * realized
        overall[name] = (est_all / n_all, real_all / n_all)
        bare = label_free_report([path], window_s=0.0)[None]["tiers"]  # without outcomes
        assert all(r["realized_error"] is None and r["n"] == tiers[t]["n"] for t, r in bare.items())
    print(f"\nregression label-free (estimate, realized) over the accepting tiers: {overall}")
    # the shift moves rows towards noisier inputs: the estimate rises with the realized error
    assert overall["shifted"][0] > overall["same"][0]
    assert overall["shifted"][1] > overall["same"][1]


def test_label_free_regression_events_skip_what_they_cannot_read() -> None:
    from statistics import NormalDist

    from safepredict.monitoring.shift_advice import label_free_windows

    cal = {
        "event": "safepredict.calibration",
        "calibration_id": "c1",
        "policy": {"tiers": [{"name": "auto", "tolerance": 1.0}, {"name": "human"}]},
    }
    good = {
        "event": "safepredict.decision",
        "calibration_id": "c1",
        "tier": "auto",
        "decision_id": "a",
        "prediction": 0.0,
        "conformal": {"confidence_level": 0.9, "interval": [-1.645, 1.645]},  # sigma = 1
    }
    bad = [
        {**good, "decision_id": "c", "conformal": {"confidence_level": 1.5, "interval": [0, 1]}},
        {**good, "decision_id": "d", "conformal": {"confidence_level": 0.9, "interval": ["x", 1]}},
        {**good, "decision_id": "e", "conformal": {"confidence_level": 0.9, "interval": [1, 1]}},
        {**good, "decision_id": "f", "conformal": {"confidence_level": True, "interval": [0, 1]}},
        {**good, "decision_id": "g", "tier": "human"},  # no tolerance: no error defined
    ]
    odd_id = {**good, "decision_id": "b", "calibration_id": ["x"]}  # read with the latest
    out = label_free_windows([cal, good, odd_id, *bad], 0.0, {"a": 2.5, "b": 0.0})[None]
    assert set(out["tiers"]) == {"auto"}
    row = out["tiers"]["auto"]
    sigma = 3.29 / (2 * NormalDist().inv_cdf(0.95))
    expected = 2 * (1 - NormalDist().cdf(1.0 / sigma))  # P(|N(0, 1)| > 1) ~ 0.317
    assert row["n"] == 2
    assert row["estimated_error"] == pytest.approx(expected)
    assert row["realized_error"] == 0.5  # |2.5 - 0| > 1, |0 - 0| <= 1
    assert "normal" in out["assumption"]
