"""Out-of-distribution detectors with conformal p-values, and the marginal transform.

Two detectors score a row's numeric features; both turn the score into a
conformal p-value on held-out reference rows, so that for a row drawn like
the reference ``P(p <= alpha) <= alpha``:

* :class:`CentroidDetector` (default, ``ood_method="centroids"``): the distance
  to the nearest of a few k-means centroids, each the mean of at least
  :data:`~safepredict._cluster.MIN_GROUP` reference rows. It stores **no
  reference row** and nothing that rebuilds one: aggregated per-column knots
  (:class:`MarginalScores`, each the mean of >= 20 values), the centroids (each
  the mean of >= 20 rows, with their member counts) and one scalar score per
  held-out row.
* :class:`KnnDetector` (opt-in, ``ood_method="knn"``): the mean distance to the
  ``k`` nearest reference rows. It **stores up to** ``ood_reference_size``
  **transformed reference rows** (the transform is invertible, so they are the
  rows); saved states name them ``raw_reference_rows``.

The module is pure (no logging, no other stage imported) and never touches
numpy's global random generator.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from safepredict.ood.centroids import CentroidDetector
from safepredict.ood.knn import KnnDetector
from safepredict.ood.marginal import BLOCK_ROWS, MarginalScores, conformal_pvalues

__all__ = [
    "BLOCK_ROWS",
    "CentroidDetector",
    "KnnDetector",
    "MarginalScores",
    "conformal_pvalues",
    "detector_from_state",
]


def detector_from_state(state: Mapping[str, Any]) -> CentroidDetector | KnnDetector:
    """Restore either detector; a state without ``kind`` (safepredict 0.1.0) is a kNN one."""
    if state.get("kind", "knn") == "centroids":
        return CentroidDetector.from_state(state)
    return KnnDetector.from_state(state)
