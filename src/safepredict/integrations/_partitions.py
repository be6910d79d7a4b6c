"""What every partitioned engine shares (layer 4): shipping, per-partition events, statistics.

:mod:`safepredict.integrations.dask` and :mod:`safepredict.integrations.spark`
differ only in how they hand partitions to workers. This module holds the rest,
once:

- :func:`shippable` checks the predictor and returns the copy that travels (no
  driver logger, no router); :func:`events_directory` prepares the event
  directory of one run; :func:`partition_worker` gives a partition its own
  event file.
- :func:`partition_stats`, :func:`combine` and :func:`build_benchmark` are the
  sufficient-statistics benchmark: each partition reduces its rows to counts,
  the counts are summed, and curves and policy results are built from totals.
  :func:`stats_rows` / :func:`totals_from_rows` flatten the counts into a plain
  table for engines that aggregate tables rather than Python objects.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from safepredict.config import TierPolicy
from safepredict.evaluation import (
    CostModel,
    PolicyResult,
    RiskCoverageCurve,
    ScoredData,
    cost_curve,
    curve_from_counts,
)
from safepredict.evaluation._policies import (
    policy_codes,
    policy_result_from_counts,
    tier_counts,
)
from safepredict.exceptions import ConfigError, NotCalibratedError
from safepredict.predictor import SafePredictor
from safepredict.tiers import TierCalibration

__all__ = [
    "STATS_COLUMNS",
    "PartitionBenchmark",
    "Plan",
    "benchmark_plan",
    "build_benchmark",
    "combine",
    "events_directory",
    "partition_stats",
    "partition_worker",
    "shippable",
    "stats_rows",
    "totals_from_rows",
]

Plan = dict[str, tuple[TierPolicy, TierCalibration | None]]
_B = TypeVar("_B", bound="PartitionBenchmark")


# ------------------------------------------------------------------ batch decisions
def shippable(predictor: SafePredictor, where: str, *, events: bool) -> SafePredictor:
    """The copy of ``predictor`` that travels to workers.

    Refuses an uncalibrated predictor and one with a router (workers may run on
    other machines, and a SQLite queue must not be shared over a network file
    system). The copy has no ``logger`` (the driver's may hold an open file or a
    socket) and logs nothing unless the run writes ``events``.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> X, y = load_iris(return_X_y=True)
    >>> model = LogisticRegression(max_iter=500).fit(X[::2], y[::2])
    >>> sp = SafePredictor(model, log="decision").calibrate(X[1::2], y[1::2])
    >>> shippable(sp, "decide_spark", events=False).log
    'off'
    """
    if not hasattr(predictor, "conformal_"):
        raise NotCalibratedError(
            f"{where} needs a calibrated predictor; call predictor.calibrate(X_cal, y_cal) first."
        )
    if predictor.router is not None:
        raise ConfigError(
            f"{where} does not route from workers: a worker may run on another machine, "
            "and a SQLite review queue must not be shared over a network file system. Use "
            f"predictor.set_params(router=None) for the {where} run, then enqueue the rows "
            "whose action is not 'accept' (or audit is True) from the driver."
        )
    shipped = copy.copy(predictor)
    shipped.logger = None
    if not events:
        shipped.log = "off"
    return shipped


def events_directory(events_dir: str | Path | None) -> str | None:
    """Resolve and create one run's event directory; refuse one holding another run's files.

    Examples
    --------
    >>> events_directory(None) is None
    True
    """
    if events_dir is None:
        return None
    path = Path(events_dir).resolve()
    old = sorted(path.glob("part-*.jsonl"))
    if old:
        raise ConfigError(
            f"events_dir {str(path)!r} already holds {len(old)} part-*.jsonl files "
            "from another run, which the monitor would count with this one. Pass a new "
            "directory per run (e.g. events/<date>/) or delete the old files."
        )
    path.mkdir(parents=True, exist_ok=True)
    return str(path)


@contextmanager
def partition_worker(
    predictor: SafePredictor, events_dir: str | None, number: int
) -> Iterator[SafePredictor]:
    """The predictor a partition decides with: its events go to ``part-<number>.jsonl``.

    The file is opened with ``"w"``: a retried task rewrites it, so the events
    always match the rows the engine kept. Without ``events_dir`` the shipped
    predictor itself is used (it logs nothing).

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> X, y = load_iris(return_X_y=True)
    >>> model = LogisticRegression(max_iter=500).fit(X[::2], y[::2])
    >>> sp = SafePredictor(model, log="off").calibrate(X[1::2], y[1::2])
    >>> with partition_worker(sp, None, 0) as worker:
    ...     len(worker.decide(X[:3]))
    3
    """
    if events_dir is None:
        yield predictor
        return
    from safepredict.monitoring.events import jsonl_file_logger

    worker = copy.copy(predictor)  # same fitted state, own logger
    if worker.log == "off":
        worker.log = "decision"
    with open(Path(events_dir) / f"part-{number:05d}.jsonl", "w", encoding="utf-8") as fh:
        worker.logger = jsonl_file_logger(fh)
        yield worker


# ------------------------------------------------------------------ offline benchmark
@dataclass
class PartitionBenchmark:
    """Risk-coverage curves and policy results computed partition by partition.

    Attributes
    ----------
    n : int
        Rows analysed.
    curves : dict of str to RiskCoverageCurve
        One curve per score column.
    policies : dict of str to PolicyResult
        Per-tier acceptance, realized error and cost of each policy.
    costs : dict of str to CostCurve
        Cost per 1,000 cases along each curve (when a cost model is given).
    """

    n: int
    curves: dict[str, RiskCoverageCurve]
    policies: dict[str, PolicyResult] = field(default_factory=dict)
    costs: dict[str, Any] = field(default_factory=dict)


def benchmark_plan(
    columns: Sequence[str],
    error: str,
    scores: Sequence[str] | None,
    policies: Mapping[str, TierPolicy] | None,
    calibration: Mapping[str, TierCalibration] | None,
) -> tuple[list[str], Plan]:
    """Check the columns; return the score columns and each policy with its calibration.

    Examples
    --------
    >>> benchmark_plan(["error", "conformal", "margin"], "error", None, None, None)
    (['conformal', 'margin'], {})
    """
    columns = list(columns)
    if error not in columns:
        raise ConfigError(
            f"the frame has no {error!r} column (whether each answer was wrong); columns are "
            f"{columns}. Pass error=<column name>."
        )
    if scores is None:
        scores = [s for s in ("conformal", "top_prob", "margin", "entropy") if s in columns]
    missing = [s for s in scores if s not in columns]
    if missing or not scores:
        raise ConfigError(
            f"score columns {missing or list(scores)} are not in the frame (columns: {columns}); "
            "pass scores=[...] naming columns where higher means more confident."
        )
    found = dict(calibration or {})
    return list(scores), {name: (p, found.get(name)) for name, p in (policies or {}).items()}


def _scored(frame: Any, scores: Sequence[str], error: str) -> ScoredData:
    set_size = frame["set_size"].to_numpy() if "set_size" in frame.columns else None
    predicted = frame["predicted_class"].to_numpy() if "predicted_class" in frame.columns else None
    return ScoredData.from_arrays(
        frame[error].to_numpy(),
        {s: frame[s].to_numpy() for s in scores},
        set_size=set_size,
        predicted_class=predicted,
    )


def partition_stats(frame: Any, scores: Sequence[str], error: str, plan: Plan) -> dict[str, Any]:
    """Sufficient statistics of one partition: per-score value counts, per-policy tier counts.

    Examples
    --------
    >>> import pandas as pd
    >>> frame = pd.DataFrame({"error": [False, True, True], "conformal": [0.9, 0.5, 0.5]})
    >>> partition_stats(frame, ["conformal"], "error", {})["curves"]["conformal"]["sum"].tolist()
    [0, 2]
    """
    import pandas as pd

    if frame[error].isna().any():
        raise ConfigError(
            f"column {error!r} has rows without an outcome (null); the benchmark needs "
            f"whether each answer was wrong. Drop the rows without one first (e.g. "
            f"ddf.dropna(subset=[{error!r}]))."
        )
    errors = frame[error].to_numpy().astype(bool)
    out: dict[str, Any] = {"n": len(frame), "curves": {}, "policies": {}}
    for s in scores:
        values = frame[s].to_numpy(dtype=np.float64)
        values = np.where(np.isnan(values), -np.inf, values)  # as risk_coverage ranks nan
        grouped = (
            pd.DataFrame({"v": values, "e": errors.astype(np.int64)})
            .groupby("v", sort=False)["e"]
            .agg(["size", "sum"])
        )
        out["curves"][s] = grouped
    if plan:
        data = _scored(frame, scores, error)
        for name, (policy, calibration) in plan.items():
            codes, labels = policy_codes(policy, data, calibration)
            out["policies"][name] = tier_counts(codes, errors, len(labels))
    return out


def combine(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """Sum the statistics of several partitions.

    Examples
    --------
    >>> import pandas as pd
    >>> a = pd.DataFrame({"error": [False], "conformal": [0.9]})
    >>> b = pd.DataFrame({"error": [True], "conformal": [0.9]})
    >>> parts = [partition_stats(f, ["conformal"], "error", {}) for f in (a, b)]
    >>> combine(parts)["curves"]["conformal"]["size"].tolist()
    [2]
    """
    import pandas as pd

    first = parts[0]
    curves = {
        s: pd.concat([p["curves"][s] for p in parts]).groupby(level=0).sum()
        for s in first["curves"]
    }
    policies = {
        name: (
            np.sum([p["policies"][name][0] for p in parts], axis=0),
            np.sum([p["policies"][name][1] for p in parts], axis=0),
        )
        for name in first["policies"]
    }
    return {"n": sum(p["n"] for p in parts), "curves": curves, "policies": policies}


STATS_COLUMNS = ("kind", "key", "value", "n", "errors")
"""Columns of :func:`stats_rows`: ``kind`` is ``"rows"``, ``"curve"`` or ``"policy"``."""


def stats_rows(stats: Mapping[str, Any]) -> Any:
    """One partition's statistics as a flat table (columns :data:`STATS_COLUMNS`).

    Rows: ``("rows", "", 0.0, n, 0)``; per score and distinct value
    ``("curve", score, value, rows, errors)``; per policy and tier index
    ``("policy", name, index, rows, errors)``. Summing ``n`` and ``errors`` by
    ``(kind, key, value)`` over partitions gives the totals.

    Examples
    --------
    >>> import pandas as pd
    >>> frame = pd.DataFrame({"error": [False, True], "conformal": [0.9, 0.9]})
    >>> stats_rows(partition_stats(frame, ["conformal"], "error", {})).values.tolist()
    [['rows', '', 0.0, 2, 0], ['curve', 'conformal', 0.9, 2, 1]]
    """
    import pandas as pd

    kinds, keys, values, ns, errs = ["rows"], [""], [0.0], [int(stats["n"])], [0]
    for score, table in stats["curves"].items():
        kinds += ["curve"] * len(table)
        keys += [score] * len(table)
        values += table.index.to_numpy(dtype=np.float64).tolist()
        ns += table["size"].to_numpy(dtype=np.int64).tolist()
        errs += table["sum"].to_numpy(dtype=np.int64).tolist()
    for name, (counts, wrong) in stats["policies"].items():
        kinds += ["policy"] * len(counts)
        keys += [name] * len(counts)
        values += [float(i) for i in range(len(counts))]
        ns += np.asarray(counts, dtype=np.int64).tolist()
        errs += np.asarray(wrong, dtype=np.int64).tolist()
    return pd.DataFrame(
        {
            "kind": pd.array(kinds, dtype=object),
            "key": pd.array(keys, dtype=object),
            "value": np.asarray(values, dtype=np.float64),
            "n": np.asarray(ns, dtype=np.int64),
            "errors": np.asarray(errs, dtype=np.int64),
        },
        columns=list(STATS_COLUMNS),
    )


def totals_from_rows(table: Any, scores: Sequence[str], plan: Plan) -> dict[str, Any]:
    """Totals (as :func:`combine` returns them) from summed :func:`stats_rows` tables.

    Examples
    --------
    >>> import pandas as pd
    >>> frame = pd.DataFrame({"error": [False, True], "conformal": [0.9, 0.5]})
    >>> rows = stats_rows(partition_stats(frame, ["conformal"], "error", {}))
    >>> totals_from_rows(rows, ["conformal"], {})["n"]
    2
    """
    import pandas as pd

    summed = table.groupby(["kind", "key", "value"], sort=True)[["n", "errors"]].sum()
    n = int(summed["n"].get(("rows", "", 0.0), 0))
    curves: dict[str, Any] = {}
    for s in scores:
        values, sizes, sums = np.zeros(0), np.zeros(0, np.int64), np.zeros(0, np.int64)
        if n:
            part = summed.xs(("curve", s), level=("kind", "key"))
            values = part.index.to_numpy(dtype=np.float64)
            sizes = part["n"].to_numpy(dtype=np.int64)
            sums = part["errors"].to_numpy(dtype=np.int64)
        curves[s] = pd.DataFrame({"size": sizes, "sum": sums}, index=pd.Index(values, name="v"))
    policies: dict[str, Any] = {}
    for name, (policy, _) in plan.items():
        width = len(policy.tiers)
        counts = np.zeros(width, dtype=np.int64)
        wrong = np.zeros(width, dtype=np.int64)
        if n:
            part = summed.xs(("policy", name), level=("kind", "key"))
            index = part.index.to_numpy(dtype=np.float64).astype(np.int64)
            keep = index < width
            counts[index[keep]] = part["n"].to_numpy()[keep]
            wrong[index[keep]] = part["errors"].to_numpy()[keep]
        policies[name] = (counts, wrong)
    return {"n": n, "curves": curves, "policies": policies}


def build_benchmark(
    total: Mapping[str, Any],
    plan: Plan,
    *,
    cost: CostModel | None,
    band: str,
    confidence: float,
    kind: type[_B],
) -> _B:
    """Curves, policy results and cost curves from summed statistics, as a ``kind``.

    Examples
    --------
    >>> import pandas as pd
    >>> frame = pd.DataFrame({"error": [False, True], "conformal": [0.9, 0.5]})
    >>> total = combine([partition_stats(frame, ["conformal"], "error", {})])
    >>> build_benchmark(total, {}, cost=None, band="wilson", confidence=0.95,
    ...                 kind=PartitionBenchmark).n
    2
    """
    curves = {
        s: curve_from_counts(
            table.index.to_numpy(),
            table["size"].to_numpy(),
            table["sum"].to_numpy(),
            name=s,
            band=band,
            confidence=confidence,
        )
        for s, table in total["curves"].items()
    }
    results: dict[str, PolicyResult] = {}
    for name, (policy, cal) in plan.items():
        counts, errs = total["policies"][name]
        labels = [(t.name, t.action, t) for t in policy.tiers]
        results[name] = policy_result_from_counts(
            name,
            counts[: len(labels)],
            errs[: len(labels)],
            labels,
            cost,
            calibration=cal,
            policy_hash=policy.policy_hash,
            confidence=confidence,
        )
    costs = {} if cost is None else {s: cost_curve(c, cost) for s, c in curves.items()}
    return kind(n=int(total["n"]), curves=curves, policies=results, costs=costs)
