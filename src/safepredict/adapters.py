"""Model adapters (layer 2): what a wrapped object is and how it is called.

:func:`adapt` turns what a user hands to :class:`~safepredict.SafePredictor`
into an object with the scikit-learn surface the stages call
(``predict_proba`` + ``classes_`` for classifiers, ``predict`` for regressors):

- a fitted scikit-learn estimator or ``Pipeline`` (and the scikit-learn wrappers
  of xgboost, lightgbm and catboost) is returned unchanged: no cost per call;
- an object with ``predict_proba`` but no ``classes_`` (a client for a remote
  model) gets the ``classes=`` given to the predictor;
- a plain callable ``fn(X)`` is the model's ``predict_proba`` (classification)
  or ``predict`` (regression);
- an ``async`` callable (a remote model) is awaited with a per-batch timeout and
  bounded retries (:class:`AsyncModel`); a batch still out of time fails closed
  (every row ``model_error:timeout``). Under
  :meth:`~safepredict.SafePredictor.adecide` it runs on the caller's event loop.

Task detection never guesses silently (:func:`check_task`): a model with only
``predict`` whose outputs look like class labels raises
:class:`~safepredict.ConfigError` asking for ``task=``.

Examples
--------
>>> import numpy as np
>>> fn = lambda X: np.tile([0.25, 0.75], (len(X), 1))
>>> model = adapt(fn, "classification", classes=["no", "yes"])
>>> model.classes_.tolist(), model.predict_proba(np.zeros((1, 3))).tolist()
(['no', 'yes'], [[0.25, 0.75]])
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import inspect
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from safepredict._validation import describe
from safepredict.exceptions import ConfigError

__all__ = [
    "LABEL_LIKE_MAX_VALUES",
    "AsyncModel",
    "CallableModel",
    "adapt",
    "caller_loop",
    "check_task",
    "model_classes",
]

#: The event loop :meth:`~safepredict.SafePredictor.adecide` was awaited on (the
#: worker thread running ``decide`` sends async model calls back to it).
caller_loop: contextvars.ContextVar[asyncio.AbstractEventLoop | None] = contextvars.ContextVar(
    "safepredict_caller_loop", default=None
)

#: A predict-only model whose outputs are integers (or strings) with at most this
#: many distinct values on the calibration rows looks like a classifier.
LABEL_LIKE_MAX_VALUES = 20


class CallableModel:
    """A model given as a function, or an object without ``classes_``.

    Parameters
    ----------
    fn : callable
        ``fn(X)`` returns probabilities ``(n, K)`` (classification) or
        predictions ``(n,)`` (regression).
    task : {"classification", "regression"}
    classes : sequence, optional
        The class labels, in the order of ``fn``'s probability columns.

    Examples
    --------
    >>> m = CallableModel(lambda X: X.sum(axis=1), "regression")
    >>> m.predict(np.ones((2, 3))).tolist()
    [3.0, 3.0]
    """

    def __init__(
        self, fn: Callable[[Any], Any], task: str, classes: Sequence[Any] | None = None
    ) -> None:
        self.fn = fn
        self.task = task
        if classes is not None:
            self.classes_ = np.asarray(classes)

    def predict_proba(self, X: Any) -> Any:
        """Class probabilities: the wrapped callable's output."""
        return self.fn(X)

    def predict(self, X: Any) -> Any:
        """Predictions (regression), or the most probable class (classification)."""
        out = self.fn(X)
        if self.task == "classification":
            return self.classes_[np.argmax(np.asarray(out), axis=1)]
        return out

    def __sklearn_is_fitted__(self) -> bool:
        return True


class AsyncModel:
    """An ``async`` model function, awaited with a timeout and bounded retries.

    Parameters
    ----------
    fn : async callable
        ``await fn(X)`` returns probabilities ``(n, K)`` or predictions ``(n,)``.
    timeout_s : float, default=10.0
        Time allowed for one call on a batch.
    retries : int, default=1
        Further attempts after a call that timed out or raised. When the last
        attempt times out, :class:`TimeoutError` is raised (the model stage fails
        every row of the batch closed as ``model_error:timeout``); when it
        raises, the exception propagates (rows are then scored one by one).

    Examples
    --------
    >>> async def remote(X):
    ...     return np.tile([0.5, 0.5], (len(X), 1))
    >>> AsyncModel(remote, timeout_s=1.0)(np.zeros((2, 1))).shape
    (2, 2)
    """

    def __init__(
        self, fn: Callable[[Any], Awaitable[Any]], *, timeout_s: float = 10.0, retries: int = 1
    ) -> None:
        if not timeout_s > 0 or not isinstance(retries, int) or retries < 0:
            raise ConfigError(
                f"AsyncModel needs timeout_s > 0 and an int retries >= 0; got "
                f"timeout_s={timeout_s!r}, retries={retries!r}."
            )
        self.fn = fn
        self.timeout_s = float(timeout_s)
        self.retries = retries

    def __call__(self, X: Any) -> Any:
        """Await the model on ``X`` (from synchronous code), retrying up to ``retries`` times."""
        for attempt in range(self.retries + 1):
            try:
                return self._once(X)
            except Exception:
                if attempt == self.retries:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _once(self, X: Any) -> Any:
        coro = asyncio.wait_for(self.fn(X), self.timeout_s)
        loop = caller_loop.get()
        if loop is not None and loop.is_running() and not _in_loop(loop):
            return asyncio.run_coroutine_threadsafe(coro, loop).result()
        if _in_loop(None):  # called synchronously from inside a running loop
            with concurrent.futures.ThreadPoolExecutor(1) as pool:
                return pool.submit(asyncio.run, coro).result()
        return asyncio.run(coro)


def _in_loop(loop: asyncio.AbstractEventLoop | None) -> bool:
    """Whether the current thread runs ``loop`` (any running loop when ``loop`` is None)."""
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        return False
    return loop is None or running is loop


def _is_async(fn: Any) -> bool:
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004  # an object with an async __call__
    )


def _method(model: Any, task: str) -> Callable[[Any], Any] | None:
    name = "predict_proba" if task == "classification" else "predict"
    fn = getattr(model, name, None)
    if fn is None and callable(model) and not hasattr(model, "predict"):
        fn = model
    if fn is not None and _is_async(fn):
        return AsyncModel(fn)
    return fn if callable(fn) else None


def model_classes(model: Any, classes: Sequence[Any] | None) -> NDArray[Any] | None:
    """The class labels: ``classes=`` when given, else the model's ``classes_``.

    Raises
    ------
    ConfigError
        ``classes=`` contradicts the model's own ``classes_``, or is not a list
        of distinct labels.

    Examples
    --------
    >>> model_classes(None, ["a", "b"]).tolist()
    ['a', 'b']
    """
    own = getattr(model, "classes_", None)
    if classes is None:
        return None if own is None else np.asarray(own)
    given = np.asarray(list(classes))
    if given.ndim != 1 or len(given) < 2 or len(set(given.tolist())) != len(given):
        raise ConfigError(
            f"classes must be a list of 2 or more distinct labels; got {list(classes)!r}. "
            "Pass the labels in the order of the model's probability columns."
        )
    if own is not None and np.asarray(own).tolist() != given.tolist():
        raise ConfigError(
            f"classes={given.tolist()} differs from the model's classes_ "
            f"{np.asarray(own).tolist()}; omit classes= (the model knows its classes)."
        )
    return given


def adapt(model: Any, task: str, classes: Sequence[Any] | None = None) -> Any:
    """The object the stages call for ``model`` (``model`` itself when it fits).

    Raises
    ------
    ConfigError
        The model has no method for ``task``, or a classifier has no classes
        (neither ``classes_`` nor ``classes=``).
    """
    fn = _method(model, task)
    if fn is None:
        need = "predict_proba" if task == "classification" else "predict"
        raise ConfigError(
            f"a {task} model needs {need} (or must be a plain callable); got "
            f"{describe(model)}. Pass a fitted model, or a function fn(X)."
        )
    labels = model_classes(model, classes) if task == "classification" else None
    if task == "classification" and labels is None:
        raise ConfigError(
            f"{describe(model)} has no classes_; pass classes=[...] to SafePredictor, in "
            "the order of its probability columns."
        )
    own_method = fn is not model and not isinstance(fn, AsyncModel)
    if own_method and (task != "classification" or hasattr(model, "classes_")):
        return model  # a scikit-learn-style model: called as it is
    assert labels is not None or task != "classification"
    return CallableModel(fn, task, None if labels is None else labels.tolist())


def check_task(model: Any, task: str, detected: str, X: Any) -> None:
    """Refuse to guess: a predict-only model with label-like outputs needs ``task=``.

    Parameters
    ----------
    model : object
    task : str
        What the user asked for (``"auto"`` means detected).
    detected : str
        The task detection picked.
    X : array-like
        Calibration rows, to look at the model's outputs.

    Raises
    ------
    ConfigError
        ``task="auto"`` detected regression for a model that is not a known
        regressor and whose outputs look like class labels.
    """
    if task != "auto" or detected != "regression":
        return
    if getattr(model, "_estimator_type", None) == "regressor" or _sk_regressor(model):
        return
    try:
        out = np.asarray(model.predict(X))
    except Exception:  # the calibration call reports a failing model
        return
    if out.dtype.kind in "OUSb":
        looks = True
    elif out.dtype.kind in "iu":
        looks = len(np.unique(out)) <= LABEL_LIKE_MAX_VALUES
    elif out.dtype.kind == "f" and out.size and np.isfinite(out).all():
        looks = bool(np.all(out == np.round(out))) and len(np.unique(out)) <= (
            LABEL_LIKE_MAX_VALUES
        )
    else:
        looks = False
    if looks:
        raise ConfigError(
            f"{describe(model)} has only predict and its outputs look like class labels "
            f"({np.unique(out)[:5].tolist()}...); safepredict will not guess. Pass "
            "task='classification' with a model that has predict_proba (and classes=), or "
            "task='regression' if these are numbers."
        )


def _sk_regressor(model: Any) -> bool:
    try:
        from sklearn.base import is_regressor

        return bool(is_regressor(model))
    except (AttributeError, TypeError):
        return False
