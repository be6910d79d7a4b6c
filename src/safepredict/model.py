"""The model stage of ``decide`` (layer 2): the one place that calls the wrapped model.

The model-adapter seam. :func:`run_model` calls ``predict_proba`` (classifiers)
or ``predict`` (regressors), fails closed per row and checks the **output
contract** (DESIGN.md, trust contract 3):

- classifier output is ``(n, K)`` with ``K = len(classes)``, every value finite
  and in ``[0, 1]`` and every row summing to 1 within :data:`PROBA_SUM_TOL`;
- regressor output is ``(n,)`` (or ``(n, 1)``) and finite.

Rows that break it are ``invalid`` (reason ``invalid_output``); rows on which
the model raises are ``raised`` (reason ``model_error``). If the whole batch
raises, or its output has the wrong type, shape or length, every row is scored
on its own, so one bad row never costs the batch. The check is vectorized: a
few reductions over the output (well under a microsecond a row; see
``benchmarks/bench_output_contract.py``). Nothing here logs or writes.

Examples
--------
>>> import numpy as np
>>> from sklearn.linear_model import LogisticRegression
>>> X = np.array([[0.0], [1.0], [2.0], [3.0]])
>>> model = LogisticRegression().fit(X, [0, 0, 1, 1])
>>> out = run_model(model, "classification", X, n_classes=2)
>>> out.values.shape, bool(out.raised.any()), bool(out.invalid.any())
((4, 2), False, False)
>>> out = run_model(lambda X: np.full((len(X), 2), 0.7), "classification", X, n_classes=2)
>>> out.invalid.tolist()
[True, True, True, True]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from safepredict._frames import take_rows
from safepredict.exceptions import ConfigError

__all__ = [
    "PROBA_SUM_TOL",
    "QUANTILE_ORDER_MAJORITY",
    "ModelOutput",
    "check_output",
    "check_quantile_order",
    "from_output",
    "model_method",
    "run_model",
]

#: A classifier row is valid when its probabilities sum to 1 within this absolute
#: tolerance (and each lies in ``[-PROBA_SUM_TOL, 1 + PROBA_SUM_TOL]``). 1e-5 admits
#: float32 softmax outputs with hundreds of classes (rounding ~K * 6e-8) and rejects
#: margins, scaled or shifted probabilities.
PROBA_SUM_TOL = 1e-5

#: ``quantile_models`` are refused when their order is broken on more than this
#: share of the calibration rows. Quantile regressors fitted one by one cross on
#: some rows (that is noise, and CQR's conformal correction stays valid); on most
#: rows it is the order the caller passed them in.
QUANTILE_ORDER_MAJORITY = 0.5


@dataclass(frozen=True)
class ModelOutput:
    """The model's output on a batch, with the rows it could not give.

    Attributes
    ----------
    values : ndarray of shape (n, K) or (n,)
        Probabilities (classification) or predictions (regression); ``nan`` on
        every row that is not valid.
    raised : ndarray of bool, shape (n,)
        The model raised on the row (reason ``model_error``).
    invalid : ndarray of bool, shape (n,)
        The row's output broke the output contract (reason ``invalid_output``).
    skipped : ndarray of bool, shape (n,)
        Rows not sent to the model (the guards kept them away).
    """

    values: NDArray[np.float64]
    raised: NDArray[np.bool_]
    invalid: NDArray[np.bool_]
    skipped: NDArray[np.bool_]
    any_failed: bool = True
    timed_out: NDArray[np.bool_] | None = None  # raised rows whose model call timed out

    @property
    def failed(self) -> NDArray[np.bool_]:
        """Rows without a valid output (raised, invalid or skipped)."""
        if not self.any_failed:
            return self.raised  # all False (the common case, without a copy)
        return self.raised | self.invalid | self.skipped


def model_method(task: str) -> str:
    """The model method a task calls.

    Examples
    --------
    >>> model_method("classification")
    'predict_proba'
    """
    return "predict_proba" if task == "classification" else "predict"


def _call(model: Any, method: str, X: Any) -> Any:
    fn = getattr(model, method, None)
    if fn is None and callable(model):  # a plain callable is the method itself
        fn = model
    if fn is None:
        raise TypeError(f"the model has no {method}")
    return fn(X)


def _as_float(raw: Any) -> NDArray[np.float64] | None:
    """``raw`` as a float64 array, or ``None`` when it is not numeric."""
    if raw is None:
        return None
    try:
        if isinstance(raw, np.ma.MaskedArray):
            return np.ma.filled(raw.astype(np.float64), np.nan)
        return np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError, OverflowError):
        return None


def check_output(
    out: NDArray[np.float64], task: str, n_classes: int | None = None
) -> NDArray[np.bool_]:
    """The rows of a well-shaped output that break the output contract.

    Parameters
    ----------
    out : ndarray of shape (n, K) or (n,)
        The model's output, already known to have the batch's shape.
    task : {"classification", "regression"}
    n_classes : int, optional
        ``K`` (only for the docstring of the shape; the caller checked it).

    Returns
    -------
    ndarray of bool, shape (n,)
        True where the row is invalid.

    Examples
    --------
    >>> check_output(np.array([[0.2, 0.8], [-0.5, 1.5], [np.nan, 1.0]]), "classification")
    array([False,  True,  True])
    >>> check_output(np.array([1.0, np.inf]), "regression")
    array([False,  True])
    """
    if task != "classification":
        if out.ndim == 1 and out.size <= _SMALL:  # a few rows: plain Python is cheaper
            return np.array([not math.isfinite(v) for v in out.tolist()], dtype=bool)
        with np.errstate(over="ignore", invalid="ignore"):  # a finite sum: every value is
            total = float(np.add.reduce(out, axis=None))  # (inf and nan poison it; one pass)
        if math.isfinite(total):
            return np.zeros(out.shape[0], dtype=bool)
        return np.asarray(~np.isfinite(out), dtype=bool)
    n = out.shape[0]
    if n == 0:
        return np.zeros(0, dtype=bool)
    if out.size <= _SMALL:  # a few rows: plain Python beats numpy's per-call overhead
        return np.array([_bad_row(row) for row in out.tolist()], dtype=bool)
    lo, hi = float(out.min()), float(out.max())
    sums = out @ np.ones(out.shape[1])  # a matrix-vector product: ~15x out.sum(axis=1)
    bad = np.abs(sums - 1.0) > PROBA_SUM_TOL
    if not (lo >= -PROBA_SUM_TOL and hi <= 1.0 + PROBA_SUM_TOL):  # nan / inf land here too
        with np.errstate(invalid="ignore"):
            inside = (out >= -PROBA_SUM_TOL) & (out <= 1.0 + PROBA_SUM_TOL)
        bad |= ~inside.all(axis=1)
    return np.asarray(bad, dtype=bool)


_SMALL = 64  # output cells below which the row check runs in Python
_LO, _HI = -PROBA_SUM_TOL, 1.0 + PROBA_SUM_TOL


def _bad_row(row: list[float]) -> bool:
    """One probability row breaks the contract (nan fails every comparison)."""
    return not (all(_LO <= p <= _HI for p in row) and abs(sum(row) - 1.0) <= PROBA_SUM_TOL)


def _shape(task: str, n: int, n_classes: int | None) -> tuple[int, ...]:
    return (n, int(n_classes or 0)) if task == "classification" else (n,)


def _fit_shape(
    out: NDArray[np.float64] | None, task: str, n: int, n_classes: int | None
) -> NDArray[np.float64] | None:
    """``out`` in the contract's shape, or ``None`` when its shape is wrong."""
    if out is None:
        return None
    if task == "classification":
        ok = out.ndim == 2 and out.shape == (n, n_classes)
        return out if ok else None
    if out.ndim == 2 and out.shape == (n, 1):
        return out.reshape(-1)
    return out if out.ndim == 1 and out.shape[0] == n else None


def run_model(
    model: Any,
    task: str,
    X: Any,
    *,
    n_classes: int | None = None,
    skip: NDArray[np.bool_] | None = None,
) -> ModelOutput:
    """Call the model on ``X`` (fail closed per row) and check its output contract.

    Parameters
    ----------
    model : object
        The wrapped model (``predict_proba`` / ``predict``, or a plain callable).
    task : {"classification", "regression"}
    X : ndarray or DataFrame
        The batch as the model receives it.
    n_classes : int, optional
        Number of classes (classification): the output must have this many columns.
    skip : ndarray of bool, optional
        Rows not to send to the model (they come back ``skipped``).

    Returns
    -------
    ModelOutput
        Never raises for anything the model does.
    """
    n = len(X)
    shape = _shape(task, n, n_classes)
    raised = np.zeros(n, dtype=bool)
    skipped = raised if skip is None else np.asarray(skip, dtype=bool)  # raised: never written
    if n == 0:
        return ModelOutput(np.zeros(shape), raised, raised, raised, any_failed=False)
    if skipped is not raised and skipped.any():
        values = np.full(shape, np.nan)
        invalid = np.zeros(n, dtype=bool)
        keep = np.flatnonzero(~skipped)
        timed_out = None
        if len(keep):
            sub = run_model(model, task, take_rows(X, keep), n_classes=n_classes)
            values[keep] = sub.values
            raised[keep] = sub.raised
            invalid[keep] = sub.invalid
            if sub.timed_out is not None:
                timed_out = np.zeros(n, dtype=bool)
                timed_out[keep] = sub.timed_out
        return ModelOutput(values, raised, invalid, skipped, timed_out=timed_out)
    try:
        raw = _call(model, model_method(task), X)
    except TimeoutError:  # a remote model out of time (after its retries): every row fails
        everything = np.ones(n, dtype=bool)
        return ModelOutput(
            np.full(shape, np.nan),
            everything,
            np.zeros(n, dtype=bool),
            skipped,
            timed_out=everything,
        )
    except Exception:  # any model failure: score row by row, never crash the batch
        return _row_by_row(model, task, X, n_classes, skipped)
    return from_output(model, task, X, raw, n_classes=n_classes)


def from_output(
    model: Any, task: str, X: Any, raw: Any, *, n_classes: int | None = None
) -> ModelOutput:
    """Check the model's output ``raw`` on the whole batch ``X`` (see :func:`run_model`).

    For a caller that already has the batch output (calibration): a wrong type,
    shape or length falls back to scoring ``X`` row by row.

    Examples
    --------
    >>> X = np.zeros((2, 1))
    >>> from_output(None, "regression", X, [1.0, 2.0]).values.tolist()
    [1.0, 2.0]
    """
    n = len(X)
    skipped = np.zeros(n, dtype=bool)
    try:
        out = _fit_shape(_as_float(raw), task, n, n_classes)
    except Exception:  # an output object that breaks numpy: treat as a bad shape
        out = None
    if out is None:
        return _row_by_row(model, task, X, n_classes, skipped)
    invalid = check_output(out, task, n_classes)
    if not invalid.any():
        return ModelOutput(out, skipped, skipped, skipped, any_failed=False)
    out = out.copy()
    out[invalid] = np.nan
    return ModelOutput(out, np.zeros(n, dtype=bool), invalid, skipped)


def _row_by_row(
    model: Any,
    task: str,
    X: Any,
    n_classes: int | None,
    skipped: NDArray[np.bool_],
) -> ModelOutput:
    """Score every row on its own: rows that raise or return a bad shape fail alone."""
    n = len(X)
    method = model_method(task)
    values = np.full(_shape(task, n, n_classes), np.nan)
    raised = np.zeros(n, dtype=bool)
    invalid = np.zeros(n, dtype=bool)
    for i in range(n):
        try:
            raw = _call(model, method, take_rows(X, slice(i, i + 1)))
        except Exception:  # this row fails closed as model_error
            raised[i] = True
            continue
        out = _fit_shape(_as_float(raw), task, 1, n_classes)
        if out is None or check_output(out, task, n_classes)[0]:
            invalid[i] = True
            continue
        values[i] = out[0]
    return ModelOutput(values, raised, invalid, skipped)


def check_quantile_order(quantile_models: Any, X: Any) -> None:
    """Refuse CQR quantile models that are not given as ``(lower, median, upper)``.

    The check runs the three models on the calibration rows ``X``: the lower
    model above the upper one, or the median model above the upper one or below
    the lower one, on more than :data:`QUANTILE_ORDER_MAJORITY` of the rows means
    the models were passed in another order. Models that fail or give
    non-numeric output are left to the conformal stage, which reports them.

    Parameters
    ----------
    quantile_models : sequence of three estimators
        The fitted ``(lower, median, upper)`` quantile regressors.
    X : array-like
        Calibration rows, as the models take them.

    Raises
    ------
    ConfigError
        The order is broken on most rows; the message says which models to swap.

    Examples
    --------
    >>> X = np.arange(10.0).reshape(-1, 1)
    >>> low, mid, high = (lambda X: X[:, 0] - 1), (lambda X: X[:, 0]), (lambda X: X[:, 0] + 1)
    >>> check_quantile_order((low, mid, high), X)
    >>> check_quantile_order((high, mid, low), X)
    Traceback (most recent call last):
    ...
    safepredict.exceptions.ConfigError: quantile_models: the lower model (first) is above ...
    """
    preds = []
    for m in quantile_models:
        try:
            out = _as_float(_call(m, "predict", X))
        except Exception:  # the conformal stage reports a model that cannot predict
            return
        if out is None or out.size != len(X):
            return
        preds.append(out.reshape(-1))
    lo, med, up = preds
    ok = np.isfinite(lo) & np.isfinite(med) & np.isfinite(up)
    if not ok.any():
        return
    lo, med, up = lo[ok], med[ok], up[ok]
    fix = (
        "Pass quantile_models=(lower, median, upper): regressors fitted at the quantiles "
        "(1 - confidence_level) / 2, 0.5 and (1 + confidence_level) / 2, in that order."
    )
    crossed = float(np.mean(lo > up))
    if crossed > QUANTILE_ORDER_MAJORITY:
        raise ConfigError(
            f"quantile_models: the lower model (first) is above the upper model (third) on "
            f"{crossed:.0%} of the calibration rows, so they look reversed. {fix}"
        )
    # One side at a time: near-equal quantiles (a low confidence_level) put the
    # median outside [lower, upper] on many rows, but on both sides at random.
    for share, side in ((float(np.mean(med > up)), "above the upper model (third)"),
                        (float(np.mean(med < lo)), "below the lower model (first)")):  # fmt: skip
        if share > QUANTILE_ORDER_MAJORITY:
            raise ConfigError(
                f"quantile_models: the median model (second) is {side}, outside [lower, "
                f"upper], on {share:.0%} of the calibration rows, so the models look out of "
                f"order. {fix}"
            )
