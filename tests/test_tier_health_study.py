"""Issue 22 "must show": the tier alarm and adaptive thresholds on bundled data, via the queue.

The study lives in ``benchmarks/study_tier_health_queue.py`` (it also prints the
tables of docs/keeping-the-promise.md); these tests run it. A few streams go end to
end through ``SafePredictor`` and a real ``SQLiteReviewQueue`` (route, claim,
resolve) with monitoring after every outcome, and must give the same alarm times
as :func:`safepredict._stats.betting_alarm_times` on the outcomes read back from the
queue; the many-run rates then use that function on outcome streams drawn from the
same pool of decided digits.

Tolerances: a rate ``p`` estimated from ``R`` runs is allowed three binomial
Monte-Carlo standard errors, ``3 * sqrt(p (1 - p) / R)`` (about a 0.1% chance of a
spurious failure); every claim has a negative control that shows it can fail.
"""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from safepredict._stats import betting_alarm_times


def _study() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "study_tier_health_queue.py"
    spec = importlib.util.spec_from_file_location("study_tier_health_queue", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


study = _study()
MAX_ERROR, DELTA = study.MAX_ERROR, study.DELTA


def three_se(p: float, runs: int) -> float:
    return 3.0 * math.sqrt(p * (1.0 - p) / runs)


@pytest.fixture(scope="module")
def pool() -> Any:
    return study.build_pool()


def test_scenarios_put_the_tier_error_where_they_say(pool: Any) -> None:
    errors = {name: pool.error(*study.scenario(pool, name)) for name in study.SCENARIOS}
    assert errors["none"] < MAX_ERROR
    assert errors["none"] < errors["label shift"] < MAX_ERROR  # the mix moved, promise kept
    assert errors["boundary"] == pytest.approx(MAX_ERROR)
    assert errors["label noise 2x"] == pytest.approx(2 * MAX_ERROR)
    assert errors["covariate 2x"] == pytest.approx(2 * MAX_ERROR)
    # the empirical error of drawn streams matches (3 SE of a mean of 0/1 over runs * n)
    rng = np.random.default_rng(2211)
    for name, e in errors.items():
        s = study.outcome_streams(pool, name, 50, 400, rng)
        assert abs(s.mean() - e) <= three_se(e, s.size)


@pytest.mark.slow
def test_queue_streams_alarm_when_the_vectorised_path_does(pool: Any, tmp_path: Path) -> None:
    # 2,500 rows give about 470 audited outcomes: about 2.5x the median delay at 2x
    for name, seed in (("none", 1), ("label noise 2x", 2)):
        run = study.queue_run(pool, name, 2500, 0.2, seed=seed, work=tmp_path)
        assert run["audited"] > 200
        assert set(run["weights"].tolist()) == {5.0}  # 1 / the stored audit probability
        vector = betting_alarm_times(run["errors"], run["weights"], threshold=MAX_ERROR,
                                     delta=DELTA, max_weight=5.0)  # fmt: skip
        assert run["alarm"] == int(vector)  # same statistic, same alarm time
        h = run["health"]
        assert h.lower <= run["true_error"] <= h.upper
        if name == "none":
            assert run["alarm"] == -1
        else:  # negative control: the doubled error is caught through the queue
            assert run["alarm"] > 0


def test_a_no_false_alarms_under_continuous_monitoring(pool: Any) -> None:
    """(a) P(ever alarm) <= delta / 2 when the promise holds, checked after every outcome."""
    rng = np.random.default_rng(2212)
    runs, n = 400, 2000
    for name in ("none", "label shift", "boundary"):
        streams = study.outcome_streams(pool, name, runs, n, rng)
        rate = float((study.sp_alarm_times(streams, MAX_ERROR) > 0).mean())
        assert rate <= DELTA / 2 + three_se(DELTA / 2, runs), name
    # negative control: a Clopper-Pearson bound at the same level, recomputed after every
    # outcome, alarms on streams that keep the promise (the boundary null) far too often
    cp = float((study.cp_alarm_times(streams, MAX_ERROR) > 0).mean())
    assert cp > DELTA / 2 + three_se(DELTA / 2, runs)


def test_b_detection_delay_at_twice_max_error(pool: Any) -> None:
    """(b) Doubled error (label noise or covariate shift): detected, with a finite delay."""
    rng = np.random.default_rng(2213)
    runs, n = 200, 1500
    for name in ("label noise 2x", "covariate 2x"):
        streams = study.outcome_streams(pool, name, runs, n, rng)
        times = study.sp_alarm_times(streams, MAX_ERROR)
        assert (times > 0).mean() >= 0.95
        hit = times[times > 0]
        median = float(np.median(hit))
        assert 50 < median < 600
        # in accepted rows the delay scales as 1 / audit rate (uniform audits)
        for rate in (0.01, 0.05, 0.2):
            rows = float(np.median(study.rows_delay(hit, rate, rng)))
            assert 0.8 < rows * rate / median < 1.2
    # negative control: the same number of outcomes at the promise detects (almost) never
    same = study.outcome_streams(pool, "none", runs, n, rng)
    assert (study.sp_alarm_times(same, MAX_ERROR) > 0).mean() < 0.05


@pytest.mark.slow
def test_c_adaptive_tier_keeps_the_realized_error_within_the_stated_bound(
    pool: Any, tmp_path: Path
) -> None:
    """(c) ``adapt = true`` through the queue: realized error within the stated bound.

    Every audited outcome is resolved and replayed (``adapt_thresholds``) before the
    next audited row is decided, as the bound assumes. The stated bound
    (:func:`safepredict.adaptive.realized_error_bound`) covers the realized error
    among *all* accepted rows with probability ``1 - 0.05`` over the audit draws; the
    weighted error over the audited outcomes keeps its deterministic part always.
    """
    res = study.adaptive_run(pool, n_rows=2500, seed=3, work=tmp_path)
    adaptive, static = res["adaptive"], res["static"]
    bound = adaptive["bound"]
    assert adaptive["late"] == 0  # the bound's assumption held on this run
    assert adaptive["audited"] > 100
    assert adaptive["weighted_error"] <= adaptive["weighted_bound"]  # deterministic
    assert adaptive["realized_error"] <= bound.total
    assert bound.sampling > 0  # 20% audits: the realized error needs the sampling term
    # negative control: the static certified threshold breaks the promise on this stream,
    # by more than the adaptive tier's realized error
    assert static["realized_error"] > MAX_ERROR + bound.deterministic
    assert static["realized_error"] > adaptive["realized_error"] + 0.03
    assert adaptive["acceptance"] < static["acceptance"]  # the price of keeping it
