"""Scale out on Dask: batch decisions and offline benchmarks beyond one machine.

Install the ``dask`` extra (``dask[dataframe]``, ``distributed``, ``cloudpickle``).

- :func:`decide_dask` runs :meth:`SafePredictor.decide` on every partition of a
  Dask DataFrame with ``map_partitions`` and returns a Dask DataFrame of decision
  columns. The predictor is sent to the workers once (``Client.scatter`` with
  ``broadcast=True`` when a distributed client is active, otherwise a single
  graph node shared by every partition), never re-pickled per partition.
- Each partition can write its decision events to its own JSONL file under
  ``events_dir`` (no file handle is shared across processes); the monitor reads
  the directory.
- Routing to a review queue from workers is refused: workers may run on other
  machines, and SQLite must not be shared over a network file system. Route from
  the driver instead (see :func:`decide_dask`).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from safepredict._extras import require
from safepredict._validation import describe
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

__all__ = ["DaskBenchmark", "benchmark_dask", "decide_dask"]


def _decide_partition(
    frame: Any,
    predictor: SafePredictor,
    set_format: str,
    events_dir: str | None,
    partition_info: dict[str, Any] | None = None,
) -> Any:
    if events_dir is None:
        decisions = predictor.decide(frame)
    else:
        from safepredict.monitoring.events import jsonl_file_logger

        number = 0 if partition_info is None else int(partition_info.get("number", 0))
        worker = copy.copy(predictor)  # same fitted state, own logger
        if worker.log == "off":
            worker.log = "decision"
        # "w": a retried task rewrites its file, so the events match the returned rows.
        with open(Path(events_dir) / f"part-{number:05d}.jsonl", "w", encoding="utf-8") as fh:
            worker.logger = jsonl_file_logger(fh)
            decisions = worker.decide(frame)
    out = decisions.to_frame(set_format=set_format)
    out.index = frame.index  # the partition's index, so the divisions still hold
    return out


def _check_dask_frame(ddf: Any, where: str) -> None:
    import dask.dataframe as dd

    if not isinstance(ddf, dd.DataFrame):
        raise ConfigError(
            f"{where} needs a dask.dataframe.DataFrame; got {describe(ddf)}. Convert with "
            "dd.from_pandas(frame, npartitions=...) or dd.from_dask_array(array, "
            "columns=[...])."
        )


def _active_client(client: Any) -> Any:
    if client is not None:
        return client
    try:
        from distributed import get_client
    except ImportError:  # distributed not installed: use the local scheduler
        return None
    try:
        return get_client()
    except ValueError:  # no client is running
        return None


def decide_dask(
    predictor: SafePredictor,
    ddf: Any,
    *,
    set_format: str = "string",
    events_dir: str | Path | None = None,
    client: Any = None,
) -> Any:
    """Decide on every row of a Dask DataFrame; returns a lazy Dask DataFrame of decisions.

    Parameters
    ----------
    predictor : SafePredictor
        A calibrated predictor. Its ``router`` must be None (see Notes).
    ddf : dask.dataframe.DataFrame
        Rows with the calibration columns.
    set_format : {"string", "list", "tuple"}, default="string"
        Prediction sets and reasons as JSON text (``'[0, 2]'``), lists or tuples
        (see :meth:`Decisions.to_frame`).
    events_dir : str or path, optional
        Directory where each partition writes its decision events as
        ``part-<n>.jsonl`` (created if missing; one directory per run: it must
        not hold ``part-*.jsonl`` files already), at the predictor's ``log``
        level (``"decision"`` if it is ``"off"``). Without it the workers emit no
        events. The predictor's own ``logger`` is never sent to the workers.
    client : distributed.Client, optional
        Client to scatter the predictor with. Default: the active client, if any.

    Returns
    -------
    dask.dataframe.DataFrame
        The columns of :meth:`Decisions.to_frame`, one row per input row, same
        partitions and index.

    Raises
    ------
    NotCalibratedError
        If the predictor is not calibrated.
    ConfigError
        If the predictor routes to a sink (route from the driver instead),
        ``events_dir`` holds another run's files, or ``set_format`` is unknown.

    Notes
    -----
    Routing from workers is refused because a worker may run on another machine
    and SQLite must not be shared over a network file system. Compute the
    decisions, then hand the rows whose ``action`` is not ``"accept"`` (or with
    ``audit``) to the queue from the driver.

    Examples
    --------
    >>> import dask.dataframe as dd
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> X, y = load_iris(return_X_y=True, as_frame=True)
    >>> model = LogisticRegression(max_iter=500).fit(X[::3], y[::3])
    >>> sp = SafePredictor(model, log="off").calibrate(X[1::3], y[1::3])
    >>> out = decide_dask(sp, dd.from_pandas(X[2::3], npartitions=2)).compute()
    >>> len(out), list(out.columns)[:3]
    (50, ['decision_id', 'prediction', 'prediction_set'])
    """
    require("dask.dataframe", "dask", "decide_dask")
    import dask
    from dask.delayed import delayed

    _check_dask_frame(ddf, "decide_dask")
    if not hasattr(predictor, "conformal_"):
        raise NotCalibratedError(
            "decide_dask needs a calibrated predictor; call predictor.calibrate(X_cal, y_cal) "
            "first."
        )
    if predictor.router is not None:
        raise ConfigError(
            "decide_dask does not route from workers: a worker may run on another machine, "
            "and a SQLite review queue must not be shared over a network file system. Use "
            "predictor.set_params(router=None) for the Dask run, then enqueue the rows whose "
            "action is not 'accept' (or audit is True) from the driver."
        )
    if events_dir is not None:
        events_dir = Path(events_dir).resolve()
        old = sorted(events_dir.glob("part-*.jsonl"))
        if old:
            raise ConfigError(
                f"events_dir {str(events_dir)!r} already holds {len(old)} part-*.jsonl files "
                "from another run, which the monitor would count with this one. Pass a new "
                "directory per run (e.g. events/<date>/) or delete the old files."
            )
        events_dir.mkdir(parents=True, exist_ok=True)
    probe = copy.copy(predictor)  # decide on the empty meta frame, without events
    probe.log = "off"
    meta = probe.decide(ddf._meta).to_frame(set_format=set_format)  # checks set_format
    # What travels: the fitted state without the driver's logger (it may hold an open
    # file or a socket); workers log only to events_dir.
    shipped = copy.copy(predictor)
    shipped.logger = None
    if events_dir is None:
        shipped.log = "off"
    active = _active_client(client)
    shared: Any = (
        active.scatter(shipped, broadcast=True, hash=False)
        if active is not None
        else delayed(shipped, pure=False)
    )
    with dask.config.set({"dataframe.convert-string": False}):
        return ddf.map_partitions(
            _decide_partition,
            shared,
            set_format,
            None if events_dir is None else str(events_dir),
            meta=meta,
            align_dataframes=False,
        )


# ------------------------------------------------------------------ offline benchmark
@dataclass
class DaskBenchmark:
    """Risk-coverage curves and policy results computed on a Dask DataFrame.

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


def _scored(frame: Any, scores: Sequence[str], error: str) -> ScoredData:
    set_size = frame["set_size"].to_numpy() if "set_size" in frame.columns else None
    predicted = frame["predicted_class"].to_numpy() if "predicted_class" in frame.columns else None
    return ScoredData.from_arrays(
        frame[error].to_numpy(),
        {s: frame[s].to_numpy() for s in scores},
        set_size=set_size,
        predicted_class=predicted,
    )


def _partition_stats(
    frame: Any,
    scores: Sequence[str],
    error: str,
    policies: Mapping[str, tuple[TierPolicy, TierCalibration | None]],
) -> dict[str, Any]:
    """Sufficient statistics of one partition: per-score value counts, per-policy tier counts."""
    import pandas as pd

    if frame[error].isna().any():
        raise ConfigError(
            f"column {error!r} has rows without an outcome (null); the benchmark needs "
            f"whether each answer was wrong. Drop them first: ddf.dropna(subset=[{error!r}])."
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
    if policies:
        data = _scored(frame, scores, error)
        for name, (policy, calibration) in policies.items():
            codes, labels = policy_codes(policy, data, calibration)
            out["policies"][name] = tier_counts(codes, errors, len(labels))
    return out


def _combine(parts: list[dict[str, Any]]) -> dict[str, Any]:
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


def benchmark_dask(
    ddf: Any,
    *,
    error: str = "error",
    scores: Sequence[str] | None = None,
    policies: Mapping[str, TierPolicy] | None = None,
    calibration: Mapping[str, TierCalibration] | None = None,
    cost: CostModel | None = None,
    band: str = "wilson",
    confidence: float = 0.95,
) -> DaskBenchmark:
    """The offline abstention benchmark on a Dask DataFrame of scores and outcomes.

    Each partition reduces its rows to sufficient statistics (rows and errors per
    distinct score, rows and errors per tier), which are summed; the curves and
    policy results are then built from the totals. Counts are exactly those of
    the in-memory :func:`~safepredict.evaluation.risk_coverage` /
    :func:`~safepredict.evaluation.evaluate_policy` on the same rows.

    Parameters
    ----------
    ddf : dask.dataframe.DataFrame
        One row per decision: a boolean ``error`` column, score columns (higher
        is more confident), optionally ``set_size`` and ``predicted_class``.
    error : str, default="error"
        Column saying whether the answer was wrong.
    scores : sequence of str, optional
        Score columns; default: those of ``conformal, top_prob, margin, entropy``
        present.
    policies : dict of str to TierPolicy, optional
        Policies to compare (tier conditions read ``conformal`` as confidence).
    calibration : dict of str to TierCalibration, optional
        Certified thresholds of each policy's ``max_error`` tiers (e.g. from
        :func:`safepredict.evaluation.calibrate_policy` on calibration rows).
    cost : CostModel, optional
        Prices curves and tiers.
    band, confidence
        Pointwise confidence band of the curves.

    Returns
    -------
    DaskBenchmark

    Examples
    --------
    >>> import dask.dataframe as dd, pandas as pd
    >>> frame = pd.DataFrame({"error": [False, True, False, True],
    ...                       "conformal": [0.99, 0.6, 0.9, 0.9]})
    >>> result = benchmark_dask(dd.from_pandas(frame, npartitions=2))
    >>> result.curves["conformal"].n_accepted.tolist()
    [1, 3, 4]
    """
    require("dask.dataframe", "dask", "benchmark_dask")
    from dask.base import compute
    from dask.delayed import delayed

    _check_dask_frame(ddf, "benchmark_dask")
    columns = list(ddf.columns)
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
    calibration = dict(calibration or {})
    plan = {name: (p, calibration.get(name)) for name, p in (policies or {}).items()}
    parts = ddf.to_delayed()
    stats = [delayed(_partition_stats)(part, list(scores), error, plan) for part in parts]
    (total,) = compute(delayed(_combine)(stats))  # type: ignore[no-untyped-call]  # dask is untyped
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
    return DaskBenchmark(n=int(total["n"]), curves=curves, policies=results, costs=costs)
