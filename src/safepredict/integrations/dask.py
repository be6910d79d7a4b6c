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
import json
from pathlib import Path
from typing import Any

import numpy as np

from safepredict.exceptions import ConfigError, NotCalibratedError
from safepredict.predictor import SafePredictor

__all__ = ["DECISION_COLUMNS", "decide_dask", "decisions_frame"]

#: Columns of the frame :func:`decide_dask` returns, in order.
DECISION_COLUMNS = (
    "decision_id",
    "prediction",
    "prediction_set",
    "interval_lower",
    "interval_upper",
    "confidence",
    "tier",
    "action",
    "reasons",
    "audit",
)


def _set_text(labels: tuple[Any, ...] | None) -> str | None:
    if labels is None:
        return None
    return json.dumps([v.item() if isinstance(v, np.generic) else v for v in labels])


def decisions_frame(decisions: Any, *, set_format: str = "string", regression: bool) -> Any:
    """A pandas DataFrame of decision columns with fixed dtypes (also Dask's ``meta``).

    Parameters
    ----------
    decisions : Decisions
        A batch from :meth:`SafePredictor.decide`.
    set_format : {"string", "list"}, default="string"
        Prediction sets (and reasons) as JSON text, or as Python lists.
    regression : bool
        Whether predictions are numbers (``float64``) or labels (``object``).

    Returns
    -------
    pandas.DataFrame
        Columns :data:`DECISION_COLUMNS`.
    """
    import pandas as pd

    n = len(decisions)
    sets = [decisions.prediction_set(i) for i in range(n)]
    if set_format == "string":
        set_col: list[Any] = [_set_text(s) for s in sets]
        reasons: list[Any] = [json.dumps(list(r)) for r in decisions.reasons]
    else:
        set_col = [None if s is None else list(s) for s in sets]
        reasons = [list(r) for r in decisions.reasons]
    intervals = decisions.intervals
    lower = intervals[:, 0] if intervals is not None else np.full(n, np.nan)
    upper = intervals[:, 1] if intervals is not None else np.full(n, np.nan)
    preds = decisions.predictions
    prediction = (
        np.array([np.nan if p is None else float(p) for p in preds], dtype=np.float64)
        if regression
        else pd.array(list(preds), dtype=object)
    )
    return pd.DataFrame(
        {
            "decision_id": pd.array(list(decisions.decision_ids), dtype=object),
            "prediction": prediction,
            "prediction_set": pd.array(set_col, dtype=object),
            "interval_lower": np.asarray(lower, dtype=np.float64),
            "interval_upper": np.asarray(upper, dtype=np.float64),
            "confidence": np.asarray(decisions.confidence, dtype=np.float64),
            "tier": pd.array(list(decisions.tiers), dtype=object),
            "action": pd.array(list(decisions.actions), dtype=object),
            "reasons": pd.array(reasons, dtype=object),
            "audit": np.asarray(decisions.audit, dtype=bool),
        }
    )


def _decide_partition(
    frame: Any,
    predictor: SafePredictor,
    set_format: str,
    events_dir: str | None,
    partition_info: dict[str, Any] | None = None,
) -> Any:
    regression = predictor.task_ == "regression"
    if events_dir is None:
        return decisions_frame(
            predictor.decide(frame), set_format=set_format, regression=regression
        )
    from safepredict.events import jsonl_file_logger

    number = 0 if partition_info is None else int(partition_info.get("number", 0))
    path = Path(events_dir) / f"part-{number:05d}.jsonl"
    worker = copy.copy(predictor)  # same fitted state, own logger
    with open(path, "w", encoding="utf-8") as fh:
        worker.logger = jsonl_file_logger(fh)
        if worker.log == "off":
            worker.log = "decision"
        decisions = worker.decide(frame)
    return decisions_frame(decisions, set_format=set_format, regression=regression)


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
    set_format : {"string", "list"}, default="string"
        Prediction sets and reasons as JSON text (``'[0, 2]'``) or Python lists.
    events_dir : str or path, optional
        Directory where each partition writes its decision events as
        ``part-<n>.jsonl`` (created if missing). Default: no events.
    client : distributed.Client, optional
        Client to scatter the predictor with. Default: the active client, if any.

    Returns
    -------
    dask.dataframe.DataFrame
        Columns :data:`DECISION_COLUMNS`, one row per input row, same partitions.

    Raises
    ------
    NotCalibratedError
        If the predictor is not calibrated.
    ConfigError
        If the predictor routes to a sink (route from the driver instead), or
        ``set_format`` is unknown.

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
    import dask
    from dask.delayed import delayed
    import pandas as pd

    if not hasattr(predictor, "conformal_"):
        raise NotCalibratedError(
            "decide_dask needs a calibrated predictor; call predictor.calibrate(X_cal, y_cal) "
            "first."
        )
    if set_format not in ("string", "list"):
        raise ConfigError(f"set_format must be 'string' or 'list'; got {set_format!r}.")
    if predictor.router is not None:
        raise ConfigError(
            "decide_dask does not route from workers: a worker may run on another machine, "
            "and a SQLite review queue must not be shared over a network file system. Use "
            "predictor.set_params(router=None) for the Dask run, then enqueue the rows whose "
            "action is not 'accept' (or audit is True) from the driver."
        )
    if events_dir is not None:
        Path(events_dir).mkdir(parents=True, exist_ok=True)
        events_dir = str(Path(events_dir).resolve())
    probe = copy.copy(predictor)  # decide on the empty meta frame, without events
    probe.log = "off"
    empty = probe.decide(ddf._meta)
    meta = decisions_frame(empty, set_format=set_format, regression=predictor.task_ == "regression")
    active = _active_client(client)
    shared: Any = (
        active.scatter(predictor, broadcast=True, hash=False)
        if active is not None
        else delayed(predictor, pure=False)
    )
    with dask.config.set({"dataframe.convert-string": False}):
        out = ddf.map_partitions(
            _decide_partition,
            shared,
            set_format,
            None if events_dir is None else str(events_dir),
            meta=meta,
            align_dataframes=False,
        )
    assert isinstance(meta, pd.DataFrame)
    return out
