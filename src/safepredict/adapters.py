"""Model adapters (layer 2): what a wrapped object is and how it is called.

:func:`adapt` turns what a user hands to :class:`~safepredict.SafePredictor`
into an object with the scikit-learn surface the stages call
(``predict_proba`` + ``classes_`` for classifiers, ``predict`` for regressors):

- a fitted scikit-learn estimator or ``Pipeline`` (and the scikit-learn wrappers
  of xgboost, lightgbm and catboost) is returned unchanged: no cost per call;
- an object with ``predict_proba`` but no ``classes_`` (a client for a remote
  model) gets the ``classes=`` given to the predictor;
- a plain callable ``fn(X)`` is the model's ``predict_proba`` (classification)
  or ``predict`` (regression).

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

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from safepredict._validation import describe
from safepredict.exceptions import ConfigError

__all__ = ["LABEL_LIKE_MAX_VALUES", "CallableModel", "adapt", "check_task", "model_classes"]

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


def _method(model: Any, task: str) -> Callable[[Any], Any] | None:
    name = "predict_proba" if task == "classification" else "predict"
    fn = getattr(model, name, None)
    if fn is None and callable(model) and not hasattr(model, "predict"):
        return model  # type: ignore[no-any-return]
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
    if fn is not model and (task != "classification" or hasattr(model, "classes_")):
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
