"""Input guards: what a row must look like before the model's answer can be trusted.

One guard set per input modality (:mod:`safepredict.inputs`), each fitted on
reference data and returning a :class:`GuardResult` of per-row reason codes:

* :class:`InputGuards` (:mod:`~safepredict.guards.tabular`) -- table rows:
  ``missing:<col>``, ``non_finite:<col>``, ``type:<col>``,
  ``unseen_category:<col>``, ``out_of_range:<col>`` and ``ood``.
* :class:`TextGuards` (:mod:`~safepredict.guards.text`) -- one string per row:
  ``missing:text``, ``type:text``, ``empty:text``, ``length:text``,
  ``oov:text`` and ``ood`` in the model's own feature space.
* :class:`ArrayGuards` (:mod:`~safepredict.guards.arrays`) -- one N-D array per
  row: ``non_finite:array``, ``type:array``, ``out_of_range:array`` and ``ood``
  on a featurizer.

The OOD p-values come from :mod:`safepredict.ood` (false-alarm rate at most
``ood_alpha`` on rows like the reference). The package is pure: it never logs,
routes or imports other layer-2 stage modules.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> guards = InputGuards.fit(rng.normal(size=(500, 3)), random_state=0)
>>> result = guards.check(np.array([[0.1, 0.2, 0.3], [np.nan, 0.0, 99.0]]))
>>> result.reasons[1]
('missing:x0', 'out_of_range:x2', 'ood')
>>> result.rank.tolist(), result.skip.tolist()
([0, 2], [False, True])
"""

from __future__ import annotations

from safepredict.guards.arrays import ArrayGuards
from safepredict.guards.result import GuardResult
from safepredict.guards.tabular import InputGuards
from safepredict.guards.text import TextGuards
from safepredict.ood import CentroidDetector, KnnDetector

__all__ = [
    "ArrayGuards",
    "CentroidDetector",
    "GuardResult",
    "InputGuards",
    "KnnDetector",
    "TextGuards",
]
