"""Exceptions raised by safepredict.

Every exception derives from :class:`SafePredictError`, and each also inherits the
built-in exception a caller would naturally catch (``ValueError`` for bad values,
``AttributeError`` for state that does not exist yet), so code written against
scikit-learn conventions keeps working.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "CalibrationError",
    "CaseNotFoundError",
    "ConfigError",
    "InputSchemaError",
    "InvalidOutcomeError",
    "MissingExtraError",
    "NotCalibratedError",
    "PersistenceError",
    "QueueCorruptError",
    "QueueFullError",
    "QueueLockedError",
    "QueueReadOnlyError",
    "QueueVersionError",
    "ReviewQueueError",
    "SafePredictError",
]


class SafePredictError(Exception):
    """Root of every error raised by safepredict."""


class ConfigError(SafePredictError, ValueError):
    """A tier policy, guard configuration or parameter is invalid.

    The message names the offending key (and tier, for policies), what was
    expected and what was given.
    """


class NotCalibratedError(SafePredictError, ValueError, AttributeError):
    """A method that needs calibration was called before ``calibrate``."""


class CalibrationError(SafePredictError, ValueError):
    """The calibration data cannot be used (too few rows, unknown labels, ...)."""


class PersistenceError(SafePredictError, ValueError):
    """A saved calibration file cannot be loaded safely."""


class ReviewQueueError(SafePredictError, ValueError):
    """A review-queue operation is not allowed in the case's current state.

    For example resolving a case claimed by another reviewer, or claiming a case
    that is already resolved. The message says who holds the case and what to do.
    """


class CaseNotFoundError(ReviewQueueError, KeyError):
    """No case with the given ``decision_id`` is in the review queue."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class QueueLockedError(ReviewQueueError):
    """Another connection held the review queue's write lock longer than the busy timeout."""


class QueueReadOnlyError(ReviewQueueError):
    """The review queue file (or its directory) cannot be written."""


class QueueFullError(ReviewQueueError):
    """The disk (or quota) holding the review queue is full."""


class QueueCorruptError(ReviewQueueError):
    """The file is not a SQLite database, or its pages are damaged."""


class QueueVersionError(ReviewQueueError):
    """The queue's schema version is newer than this safepredict understands."""


class InvalidOutcomeError(SafePredictError, ValueError):
    """An outcome is not one of the model's labels (classification) or not a finite number.

    Parameters
    ----------
    message : str
        What was expected, what came, how to fix it.
    choices : sequence, optional
        The valid labels, when the label set is known.

    Examples
    --------
    >>> err = InvalidOutcomeError("unknown label 'stya'", choices=["churn", "stay"])
    >>> err.choices
    ('churn', 'stay')
    """

    def __init__(self, message: str, *, choices: Sequence[object] = ()) -> None:
        super().__init__(message)
        self.choices: tuple[object, ...] = tuple(choices)


class MissingExtraError(SafePredictError, ImportError):
    """An optional feature's dependency is not installed; the message names the extra."""


class InputSchemaError(SafePredictError, ValueError):
    """A batch does not have the structure the predictor was calibrated on.

    This is a caller bug (wrong columns, wrong number of features), so it raises
    instead of abstaining. The differences are listed in the message and kept as
    attributes so a service can return them to its client.

    Parameters
    ----------
    message : str
        Human-readable description, including how to fix it.
    missing : sequence of str, optional
        Columns the predictor expects that the batch lacks.
    extra : sequence of str, optional
        Columns the batch has that the predictor does not know.
    problems : sequence of str, optional
        Other structural problems (feature count, order, dimensionality).

    Examples
    --------
    >>> err = InputSchemaError("bad batch", missing=["age"], extra=["agee"])
    >>> err.missing, err.extra
    (('age',), ('agee',))
    >>> isinstance(err, ValueError)
    True
    """

    def __init__(
        self,
        message: str,
        *,
        missing: Sequence[str] = (),
        extra: Sequence[str] = (),
        problems: Sequence[str] = (),
    ) -> None:
        super().__init__(message)
        self.missing: tuple[str, ...] = tuple(missing)
        self.extra: tuple[str, ...] = tuple(extra)
        self.problems: tuple[str, ...] = tuple(problems)
