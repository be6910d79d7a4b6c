"""Batch and decision ids (layer 0): the one place that draws them.

A batch id is 64 random bits from a generator private to this module, seeded from the
operating system (``os.urandom``) at import and again in every forked child, so no
global random state is touched, forked workers never repeat each other, and a
``decide`` call makes no system call for its id; the decision id of row ``i`` is
``"<batch_id>-<i>"``.

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
import random
from typing import Any

import numpy as np
from numpy.typing import NDArray

__all__ = ["decision_id", "decision_ids", "new_batch_id"]


_source = random.Random(os.urandom(32))  # ids, not secrets


def _reseed() -> None:
    _source.seed(os.urandom(32))


if hasattr(os, "register_at_fork"):  # a forked child must not repeat its parent's ids
    os.register_at_fork(after_in_child=_reseed)


def new_batch_id() -> str:
    """16 hex characters (64 random bits) naming one ``decide`` call."""
    return _source.getrandbits(64).to_bytes(8, "big").hex()


def decision_id(batch_id: str, i: int) -> str:
    """The id of row ``i`` of batch ``batch_id``: ``"<batch_id>-<i>"``."""
    return f"{batch_id}-{i}"


def decision_ids(batch_id: str, n: int) -> NDArray[Any]:
    """The ids ``"<batch_id>-0" .. "<batch_id>-<n-1>"`` as an object array."""
    return np.array([decision_id(batch_id, i) for i in range(n)], dtype=object)
