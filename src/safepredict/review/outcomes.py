"""Outcome validation: a reviewer's or a feed's outcome must be a label or a finite number.

An *outcome space* says what a valid outcome is for the model whose cases sit in
a queue: one of its labels (classification) or a finite number (regression).
The predictor writes it into the queue when it routes; the queue, the CLI and the
console check every outcome against it with :func:`check_outcome` before storing.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from safepredict._validation import describe
from safepredict.exceptions import InvalidOutcomeError

__all__ = ["OutcomeSpace", "check_outcome", "outcome_space", "parse_outcome"]

#: Longest outcome text accepted from a form or a command line.
MAX_OUTCOME_CHARS = 10_000


@dataclass(frozen=True)
class OutcomeSpace:
    """What a valid outcome is: ``task`` and, for classification, the ``labels``.

    Parameters
    ----------
    task : {"classification", "regression"}
        The model's task.
    labels : sequence of str, int, float or bool, optional
        The model's classes (classification only).

    Examples
    --------
    >>> OutcomeSpace("classification", ("churn", "stay")).to_json()
    '{"labels": ["churn", "stay"], "task": "classification"}'
    """

    task: str
    labels: tuple[Any, ...] | None = None

    def to_json(self) -> str:
        """The space as canonical JSON text (stored in the queue's ``meta`` table)."""
        labels = None if self.labels is None else list(self.labels)
        return json.dumps({"labels": labels, "task": self.task}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> OutcomeSpace | None:
        """Parse :meth:`to_json` output; None when it is not a valid space.

        Examples
        --------
        >>> OutcomeSpace.from_json('{"task": "regression", "labels": null}').task
        'regression'
        >>> OutcomeSpace.from_json("[]") is None
        True
        """
        try:
            data = json.loads(text)
        except (ValueError, RecursionError):
            return None
        if not isinstance(data, dict):
            return None
        task, labels = data.get("task"), data.get("labels")
        if task == "regression":
            return cls("regression")
        if (
            task == "classification"
            and isinstance(labels, list)
            and all(_is_label(v) for v in labels)
        ):
            return cls("classification", tuple(labels))
        return None


def outcome_space(task: Any, classes: Any = None) -> OutcomeSpace | None:
    """The space of a fitted predictor's ``task_`` and ``classes_`` (None if unknown).

    Examples
    --------
    >>> import numpy as np
    >>> outcome_space("classification", np.array([0, 1]))
    OutcomeSpace(task='classification', labels=(0, 1))
    >>> outcome_space("regression")
    OutcomeSpace(task='regression', labels=None)
    """
    if task == "regression":
        return OutcomeSpace("regression")
    if task == "classification" and classes is not None:
        labels = tuple(v.item() if hasattr(v, "item") else v for v in list(classes))
        if all(_is_label(v) for v in labels):
            return OutcomeSpace("classification", labels)
    return None


def _is_label(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return isinstance(value, str | int | bool)


def parse_outcome(text: str) -> Any:
    """An outcome typed by a person: JSON if it parses as a scalar, else the text itself.

    ``"1"`` is the number 1, ``'"1"'`` the string "1", ``"stay"`` the string "stay".
    Containers, ``null``, ``NaN`` and ``Infinity`` stay text (they are refused by
    :func:`check_outcome`); so does anything nested too deeply to parse.

    Examples
    --------
    >>> parse_outcome("1"), parse_outcome("2.5"), parse_outcome("stay"), parse_outcome("NaN")
    (1, 2.5, 'stay', 'NaN')
    """
    text = text.strip()
    try:
        value = json.loads(text, parse_constant=lambda name: name)
    except (ValueError, RecursionError):
        return text
    if isinstance(value, str | bool | int) or (isinstance(value, float) and math.isfinite(value)):
        return value
    return text


def check_outcome(outcome: Any, space: OutcomeSpace | None) -> Any:
    """The outcome as it will be stored, or :class:`InvalidOutcomeError` saying what is valid.

    Classification: the outcome must equal one of ``space.labels`` (a string
    naming a label, e.g. ``"1"`` for the label 1, is turned into that label).
    Regression: a finite number (or a string holding one). Without a space
    (a queue no predictor has routed to yet): a string, a bool or a finite number.

    Examples
    --------
    >>> space = OutcomeSpace("classification", ("churn", "stay"))
    >>> check_outcome("stay", space)
    'stay'
    >>> check_outcome("stya", space)
    Traceback (most recent call last):
    ...
    safepredict.exceptions.InvalidOutcomeError: outcome 'stya' is not one of the model's labels; \
expected one of ['churn', 'stay'].
    >>> check_outcome("1", OutcomeSpace("classification", (0, 1)))
    1
    >>> check_outcome(float("nan"), OutcomeSpace("regression"))
    Traceback (most recent call last):
    ...
    safepredict.exceptions.InvalidOutcomeError: outcome nan is not a finite number; ...
    """
    if isinstance(outcome, str) and len(outcome) > MAX_OUTCOME_CHARS:
        raise InvalidOutcomeError(
            f"an outcome may have at most {MAX_OUTCOME_CHARS} characters; got {len(outcome)}."
        )
    if hasattr(outcome, "item") and callable(outcome.item):  # numpy scalars
        with contextlib.suppress(TypeError, ValueError):
            outcome = outcome.item()
    if space is not None and space.task == "classification" and space.labels is not None:
        return _check_label(outcome, space.labels)
    if space is not None and space.task == "regression":
        return _check_number(outcome)
    if isinstance(outcome, str | bool) or (
        isinstance(outcome, int | float) and math.isfinite(outcome)
    ):
        return outcome
    raise InvalidOutcomeError(
        f"an outcome must be a label (text, a number or a bool) or a finite number; got "
        f"{describe(outcome)}. Pass the true label or value."
    )


def _same(a: Any, b: Any) -> bool:
    # 1 == True == 1.0 in Python; labels of different types must not match each other
    return type(a) is type(b) and a == b


def _check_label(outcome: Any, labels: Sequence[Any]) -> Any:
    for label in labels:
        if _same(outcome, label):
            return label
    if isinstance(outcome, int | float) and not isinstance(outcome, bool):
        for label in labels:
            if isinstance(label, int | float) and not isinstance(label, bool) and label == outcome:
                return label
    if isinstance(outcome, str):
        for label in labels:
            if str(label) == outcome.strip() or (
                isinstance(label, bool) and outcome.strip().lower() == str(label).lower()
            ):
                return label
    raise InvalidOutcomeError(
        f"outcome {_show(outcome)} is not one of the model's labels; expected one of "
        f"{list(labels)!r}.",
        choices=labels,
    )


def _check_number(outcome: Any) -> float | int:
    value = outcome
    if isinstance(outcome, str):
        try:
            value = float(outcome.strip())
        except ValueError:
            value = None
    if isinstance(value, int) and not isinstance(value, bool):
        if abs(value) < 2**63:
            return value
        value = None
    if isinstance(value, float) and math.isfinite(value):
        return value
    raise InvalidOutcomeError(
        f"outcome {_show(outcome)} is not a finite number; a regression outcome is the true "
        "value, e.g. 12.5."
    )


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."
