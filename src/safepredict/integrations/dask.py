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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safepredict._extras import require
from safepredict._validation import describe
from safepredict.config import TierPolicy
from safepredict.evaluation import CostModel
from safepredict.exceptions import ConfigError
from safepredict.integrations._partitions import (
    PartitionBenchmark,
    benchmark_plan,
    build_benchmark,
    combine,
    events_directory,
    partition_stats,
    partition_worker,
    shippable,
)
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
    number = 0 if partition_info is None else int(partition_info.get("number", 0))
    with partition_worker(predictor, events_dir, number) as worker:
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
    # What travels: the fitted state without the driver's logger (it may hold an open
    # file or a socket); workers log only to events_dir.
    shipped = shippable(predictor, "decide_dask", events=events_dir is not None)
    events = events_directory(events_dir)
    probe = copy.copy(shipped)  # decide on the empty meta frame, without events
    probe.log = "off"
    meta = probe.decide(ddf._meta).to_frame(set_format=set_format)  # checks set_format
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
            events,
            meta=meta,
            align_dataframes=False,
        )


# ------------------------------------------------------------------ offline benchmark
@dataclass
class DaskBenchmark(PartitionBenchmark):
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
    score_columns, plan = benchmark_plan(list(ddf.columns), error, scores, policies, calibration)
    parts = ddf.to_delayed()
    stats = [delayed(partition_stats)(part, score_columns, error, plan) for part in parts]
    (total,) = compute(delayed(combine)(stats))  # type: ignore[no-untyped-call]  # dask is untyped
    return build_benchmark(
        total, plan, cost=cost, band=band, confidence=confidence, kind=DaskBenchmark
    )
