"""Scale out on Spark: batch decisions and offline benchmarks on a Spark DataFrame.

Install the ``spark`` extra (``pyspark``, ``pandas``, ``pyarrow``; Spark itself
needs a Java runtime).

- :func:`decide_spark` runs :meth:`SafePredictor.decide` on every Arrow batch of a
  Spark DataFrame with ``mapInPandas`` and returns a Spark DataFrame whose schema
  is exactly that of :meth:`Decisions.to_frame` (plus any ``keep`` columns). The
  predictor travels once, as a Spark broadcast variable: each executor's Python
  worker unpacks it once and reuses it for every partition it runs.
- Each partition can write its decision events to its own JSONL file under
  ``events_dir``; the monitor reads the directory.
- Routing to a review queue from executors is refused, as on Dask: route from
  the driver (see :func:`decide_spark`).
- :func:`benchmark_spark` is the sufficient-statistics benchmark of
  :func:`~safepredict.integrations.dask.benchmark_dask`: partitions reduce their
  rows to counts, Spark sums them, the driver builds curves from the totals.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from safepredict._extras import require
from safepredict._validation import describe
from safepredict.config import TierPolicy
from safepredict.decisions import FRAME_COLUMNS
from safepredict.evaluation import CostModel
from safepredict.exceptions import ConfigError, InputSchemaError
from safepredict.integrations._partitions import (
    STATS_COLUMNS,
    PartitionBenchmark,
    Plan,
    benchmark_plan,
    build_benchmark,
    events_directory,
    partition_stats,
    partition_worker,
    shippable,
    stats_rows,
    totals_from_rows,
)
from safepredict.predictor import SafePredictor
from safepredict.tiers import TierCalibration

__all__ = ["SparkBenchmark", "benchmark_spark", "decide_spark", "spark_schema"]

_STATS_SCHEMA = "kind string, key string, value double, n long, errors long"


def _check_spark_frame(sdf: Any, where: str) -> None:
    from pyspark.sql import DataFrame

    if not isinstance(sdf, DataFrame):
        raise ConfigError(
            f"{where} needs a pyspark.sql.DataFrame; got {describe(sdf)}. Convert with "
            "spark.createDataFrame(frame) or read one with spark.read.parquet(path)."
        )


def _spark_type(dtype: Any, column: str) -> Any:
    """The Spark type that holds a pandas column of ``dtype`` without loss."""
    import pandas as pd
    from pyspark.sql import types as st

    if isinstance(dtype, pd.StringDtype):
        return st.StringType()
    if pd.api.types.is_bool_dtype(dtype):
        return st.BooleanType()
    if pd.api.types.is_integer_dtype(dtype):
        return st.LongType()
    if pd.api.types.is_float_dtype(dtype):
        return st.DoubleType()
    raise ConfigError(
        f"column {column!r} has dtype {dtype} (class labels that are not integers, booleans, "
        "floats or strings), which has no exact Spark type. Encode the labels as integers "
        "or strings (e.g. with LabelEncoder) before calibrating."
    )


def spark_schema(meta: Any, set_format: str = "string") -> Any:
    """The Spark schema of a :meth:`Decisions.to_frame` table.

    Parameters
    ----------
    meta : pandas.DataFrame
        A (possibly empty) ``Decisions.to_frame(set_format=set_format)`` table.
    set_format : {"string", "list"}, default="string"
        ``"string"``: sets and reasons as JSON text (``StringType``);
        ``"list"``: as ``ArrayType`` of the label type and of ``StringType``.

    Returns
    -------
    pyspark.sql.types.StructType
        ``decision_id``, ``tier``, ``action``: string; ``prediction``: the
        label's type (long, boolean, double or string) or double for a regressor;
        ``interval_*`` and ``confidence``: double; ``audit``: boolean.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> X, y = load_iris(return_X_y=True)
    >>> model = LogisticRegression(max_iter=500).fit(X[::2], y[::2])
    >>> sp = SafePredictor(model, log="off").calibrate(X[1::2], y[1::2])
    >>> meta = sp.decide(X[:0]).to_frame(set_format="string")
    >>> print(spark_schema(meta).simpleString())  # doctest: +NORMALIZE_WHITESPACE
    struct<decision_id:string,prediction:bigint,prediction_set:string,interval_lower:double,\
interval_upper:double,confidence:double,tier:string,action:string,reasons:string,\
audit:boolean>
    """
    require("pyspark", "spark", "spark_schema")
    from pyspark.sql import types as st

    if set_format not in ("string", "list"):
        raise ConfigError(
            f"set_format must be 'string' or 'list' on Spark; got {set_format!r}. Spark has no "
            "tuple type: use 'list' (ArrayType columns) or 'string' (JSON text)."
        )
    prediction = _spark_type(meta["prediction"].dtype, "prediction")
    fields = []
    for name in FRAME_COLUMNS:
        if name in ("prediction_set", "reasons") and set_format == "list":
            element = prediction if name == "prediction_set" else st.StringType()
            kind: Any = st.ArrayType(element, containsNull=False)
        elif name == "prediction":
            kind = prediction
        else:
            kind = _spark_type(meta[name].dtype, name)
        fields.append(st.StructField(name, kind, nullable=True))
    return st.StructType(fields)


def _shared(session: Any, shipped: SafePredictor) -> Callable[[], SafePredictor]:
    """A getter for the predictor on executors: a broadcast variable where Spark has one."""
    try:
        context = session.sparkContext
    except Exception:  # Spark Connect has no SparkContext: the predictor rides in the plan
        return functools.partial(_identity, shipped)
    return functools.partial(_broadcast_value, context.broadcast(shipped))


def _identity(predictor: SafePredictor) -> SafePredictor:
    return predictor


def _broadcast_value(variable: Any) -> SafePredictor:
    value: SafePredictor = variable.value  # unpacked once per Python worker, then cached
    return value


def _partition_number() -> int:
    from pyspark import TaskContext

    context = TaskContext.get()
    return 0 if context is None else int(context.partitionId())


def _decide_batches(
    batches: Iterator[Any],
    *,
    predictor: Callable[[], SafePredictor],
    set_format: str,
    events_dir: str | None,
    keep: Sequence[str],
) -> Iterator[Any]:
    import pandas as pd

    with partition_worker(predictor(), events_dir, _partition_number()) as worker:
        for batch in batches:
            rows = batch.drop(columns=list(keep)) if keep else batch
            out = worker.decide(rows).to_frame(set_format=set_format)
            if keep:
                out = pd.concat([batch[list(keep)].reset_index(drop=True), out], axis=1)
            yield out


def _empty_rows(schema: Any) -> Any:
    """An empty pandas frame with the columns (and numeric dtypes) Arrow hands the workers."""
    import pandas as pd
    from pyspark.sql import types as st

    def dtype(kind: Any) -> Any:
        if isinstance(kind, st.BooleanType):
            return bool
        if isinstance(kind, st.ByteType | st.ShortType | st.IntegerType | st.LongType):
            return "int64"
        if isinstance(kind, st.FloatType | st.DoubleType | st.DecimalType):
            return "float64"
        return object

    return pd.DataFrame({f.name: pd.Series([], dtype=dtype(f.dataType)) for f in schema.fields})


def decide_spark(
    predictor: SafePredictor,
    sdf: Any,
    *,
    set_format: str = "string",
    events_dir: str | Path | None = None,
    keep: Sequence[str] = (),
) -> Any:
    """Decide on every row of a Spark DataFrame; returns a lazy Spark DataFrame of decisions.

    Parameters
    ----------
    predictor : SafePredictor
        A calibrated predictor. Its ``router`` must be None (see Notes).
    sdf : pyspark.sql.DataFrame
        Rows with the calibration columns (plus the ``keep`` columns).
    set_format : {"string", "list"}, default="string"
        Prediction sets and reasons as JSON text (``'[0, 2]'``) or arrays.
    events_dir : str or path, optional
        Directory where each partition writes its decision events as
        ``part-<partition>.jsonl`` (created if missing; one directory per run),
        at the predictor's ``log`` level (``"decision"`` if it is ``"off"``).
        It must be reachable from every executor (a local path for ``local[*]``,
        a shared mount on a cluster). The events are written when an action
        (``write``, ``collect``, ``count``) runs the plan.
    keep : sequence of str, default=()
        Input columns copied in front of the decision columns (e.g. a row key),
        and not passed to the model.

    Returns
    -------
    pyspark.sql.DataFrame
        The ``keep`` columns, then the columns of :meth:`Decisions.to_frame`, one
        row per input row, with the schema of :func:`spark_schema`.

    Raises
    ------
    NotCalibratedError
        If the predictor is not calibrated.
    ConfigError
        If the predictor routes to a sink (route from the driver instead),
        ``events_dir`` holds another run's files, ``set_format`` is unknown or
        a ``keep`` column is missing or clashes with a decision column.

    Notes
    -----
    Routing from executors is refused because an executor may run on another
    machine and SQLite must not be shared over a network file system. Compute
    the decisions, then hand the rows whose ``action`` is not ``"accept"`` (or
    with ``audit``) to the queue from the driver.

    Examples
    --------
    >>> from pyspark.sql import SparkSession  # doctest: +SKIP
    >>> spark = SparkSession.builder.master("local[2]").getOrCreate()  # doctest: +SKIP
    >>> out = decide_spark(sp, spark.createDataFrame(X_new))  # doctest: +SKIP
    >>> out.columns[:3]  # doctest: +SKIP
    ['decision_id', 'prediction', 'prediction_set']
    """
    require("pyspark", "spark", "decide_spark")
    _check_spark_frame(sdf, "decide_spark")
    keep = [str(c) for c in keep]
    missing = [c for c in keep if c not in sdf.columns]
    clashing = [c for c in keep if c in FRAME_COLUMNS]
    if missing or clashing:
        raise ConfigError(
            f"keep={keep} names columns that are not in the frame ({missing}) or that are "
            f"decision columns ({clashing}); the frame has {sdf.columns}. Rename them first "
            "(sdf.withColumnRenamed(old, new))."
        )
    shipped = shippable(predictor, "decide_spark", events=events_dir is not None)
    events = events_directory(events_dir)
    probe = copy.copy(shipped)  # decide on an empty frame, without events
    probe.log = "off"
    rows = _empty_rows(sdf.schema).drop(columns=keep)
    try:
        meta = probe.decide(rows).to_frame(set_format=set_format)  # checks columns, set_format
    except InputSchemaError as exc:
        raise InputSchemaError(
            f"{exc} Columns to carry through (a row key) go in keep=[...]."
        ) from exc
    schema = spark_schema(meta, set_format)
    if keep:
        from pyspark.sql import types as st

        kept = [sdf.schema[c] for c in keep]
        schema = st.StructType([*kept, *schema.fields])
    job = functools.partial(
        _decide_batches,
        predictor=_shared(sdf.sparkSession, shipped),
        set_format=set_format,
        events_dir=events,
        keep=keep,
    )
    return sdf.mapInPandas(job, schema)


# ------------------------------------------------------------------ offline benchmark
@dataclass
class SparkBenchmark(PartitionBenchmark):
    """Risk-coverage curves and policy results computed on a Spark DataFrame.

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


def _stats_batches(
    batches: Iterator[Any], *, scores: Sequence[str], error: str, plan: Plan
) -> Iterator[Any]:
    for batch in batches:
        yield stats_rows(partition_stats(batch, scores, error, plan))


def benchmark_spark(
    sdf: Any,
    *,
    error: str = "error",
    scores: Sequence[str] | None = None,
    policies: Mapping[str, TierPolicy] | None = None,
    calibration: Mapping[str, TierCalibration] | None = None,
    cost: CostModel | None = None,
    band: str = "wilson",
    confidence: float = 0.95,
) -> SparkBenchmark:
    """The offline abstention benchmark on a Spark DataFrame of scores and outcomes.

    Each Arrow batch reduces its rows to sufficient statistics (rows and errors
    per distinct score, rows and errors per tier) as a small table; Spark sums
    the tables with a ``groupBy``, and the driver builds the curves and policy
    results from the totals. Counts are exactly those of the in-memory
    :func:`~safepredict.evaluation.risk_coverage` /
    :func:`~safepredict.evaluation.evaluate_policy` on the same rows.

    Parameters
    ----------
    sdf : pyspark.sql.DataFrame
        One row per decision: a boolean ``error`` column, score columns (higher
        is more confident), optionally ``set_size`` and ``predicted_class``.
    error, scores, policies, calibration, cost, band, confidence
        As in :func:`~safepredict.integrations.dask.benchmark_dask`.

    Returns
    -------
    SparkBenchmark

    Examples
    --------
    >>> frame = pd.DataFrame({"error": [False, True, False, True],
    ...                       "conformal": [0.99, 0.6, 0.9, 0.9]})  # doctest: +SKIP
    >>> result = benchmark_spark(spark.createDataFrame(frame))  # doctest: +SKIP
    >>> result.curves["conformal"].n_accepted.tolist()  # doctest: +SKIP
    [1, 3, 4]
    """
    require("pyspark", "spark", "benchmark_spark")
    from pyspark.sql import functions as sf

    _check_spark_frame(sdf, "benchmark_spark")
    score_columns, plan = benchmark_plan(list(sdf.columns), error, scores, policies, calibration)
    extra = [c for c in ("set_size", "predicted_class") if c in sdf.columns and plan]
    needed = list(dict.fromkeys([error, *score_columns, *extra]))
    job = functools.partial(_stats_batches, scores=score_columns, error=error, plan=plan)
    stats = sdf.select(*needed).mapInPandas(job, _STATS_SCHEMA)
    keys = list(STATS_COLUMNS[:3])
    summed = (
        stats.groupBy(*keys)
        .agg(sf.sum("n").alias("n"), sf.sum("errors").alias("errors"))
        .toPandas()
    )
    total = totals_from_rows(summed, score_columns, plan)
    return build_benchmark(
        total, plan, cost=cost, band=band, confidence=confidence, kind=SparkBenchmark
    )
