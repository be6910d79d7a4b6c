"""Batch and decision ids (layer 0): the one place that draws them.

A batch id is 64 random bits from the operating system (``os.urandom``, so no global
random state is touched and forked workers never repeat each other); the decision id
of row ``i`` is ``"<batch_id>-<i>"``.

Examples
--------
>>> batch = new_batch_id()
>>> len(batch), batch == new_batch_id()
(16, False)
>>> decision_ids("ab12", 3).tolist()
['ab12-0', 'ab12-1', 'ab12-2']
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["decision_id", "decision_ids", "new_batch_id"]


def new_batch_id() -> str:
    """16 hex characters (64 random bits) naming one ``decide`` call."""
    return os.urandom(8).hex()


def decision_id(batch_id: str, i: int) -> str:
    """The id of row ``i`` of batch ``batch_id``: ``"<batch_id>-<i>"``."""
    return f"{batch_id}-{i}"


def decision_ids(batch_id: str, n: int) -> NDArray[Any]:
    """The ids ``"<batch_id>-0" .. "<batch_id>-<n-1>"`` as an object array."""
    return np.array([decision_id(batch_id, i) for i in range(n)], dtype=object)
