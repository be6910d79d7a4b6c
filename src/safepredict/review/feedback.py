"""Outcome feedback: resolved review cases as a new calibration set.

:meth:`SafePredictor.recalibrate_from` delegates here: the resolved cases of a
review queue, with their logged inputs and outcomes, become rows and targets.

Examples
--------
>>> import tempfile, pathlib
>>> from safepredict.review.queue import SQLiteReviewQueue
>>> q = SQLiteReviewQueue(pathlib.Path(tempfile.mkdtemp()) / "q.db")
>>> calibration_rows(q, ["x0"])
Traceback (most recent call last):
...
safepredict.exceptions.CalibrationError: the queue has no resolved audited cases ...
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from safepredict._validation import describe
from safepredict.exceptions import CalibrationError, ConfigError
from safepredict.review.router import Router

__all__ = ["calibration_rows"]


def calibration_rows(
    queue: Any, feature_names: Sequence[str], *, audited_only: bool = True
) -> tuple[list[list[Any]], list[Any]]:
    """Inputs (in ``feature_names`` order) and outcomes of a queue's resolved cases.

    Parameters
    ----------
    queue : SQLiteReviewQueue, Router or path
        Where the resolved cases are.
    feature_names : sequence of str
        The predictor's inputs; every case must have logged all of them.
    audited_only : bool, default=True
        Use only audit-sampled cases.

    Returns
    -------
    rows : list of list
        One list of input values per case.
    outcomes : list
        The recorded outcome of each case.

    Raises
    ------
    ConfigError
        ``queue`` cannot list outcomes.
    CalibrationError
        No resolved case, or cases without logged (or with redacted) inputs.
    """
    source = Router.coerce(queue).sink if not hasattr(queue, "outcomes") else queue
    outcomes = getattr(source, "outcomes", None)
    if outcomes is None:
        raise ConfigError(
            "recalibrate_from needs a review queue (SQLiteReviewQueue, PostgresReviewQueue, "
            f"a .db path or a postgresql:// URL); got {describe(queue)}."
        )
    items = [o for o in outcomes(audited_only=audited_only) if o.get("outcome") is not None]
    kind = "audited " if audited_only else ""
    if not items:
        hint = " (or pass audited_only=False, see the caveat)" if audited_only else ""
        raise CalibrationError(
            f"the queue has no resolved {kind}cases with an outcome; resolve some cases "
            f"first{hint}."
        )
    no_inputs = [o["decision_id"] for o in items if not o.get("inputs")]
    if no_inputs:
        raise CalibrationError(
            f"{len(no_inputs)} of {len(items)} resolved {kind}cases have no logged inputs "
            f"(e.g. {no_inputs[0]!r}), so they cannot be re-scored. Route with "
            "SafePredictor(log_inputs=True) to make recalibration from the queue possible."
        )
    names = [str(c) for c in feature_names]
    absent = sorted({c for o in items for c in names if c not in o["inputs"]})
    if absent:
        raise CalibrationError(
            f"resolved cases lack the features {absent} (redacted or renamed); "
            "recalibration needs every calibration feature. Drop them from redact=."
        )
    rows = [[o["inputs"][c] for c in names] for o in items]
    return rows, [o["outcome"] for o in items]
