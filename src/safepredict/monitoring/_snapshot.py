"""The calibration snapshot (layer 2 writer): a distribution summarised as the monitor's baseline.

:func:`confidence_snapshot` turns the calibration rows' confidence (or interval
widths) into quantiles, an exact CDF and PSI bins; the calibration event carries it
and the monitor compares live decisions against it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["PSI_LEVELS", "SNAPSHOT_LEVELS", "confidence_snapshot"]

SNAPSHOT_LEVELS = tuple(i / 100 for i in range(101))
#: Levels whose quantiles are the PSI bin edges (deciles).
PSI_LEVELS = tuple(i / 10 for i in range(1, 10))
#: Contributions listed in an event's explanation.


def confidence_snapshot(values: Any, *, metric: str = "confidence") -> dict[str, Any]:
    """Summarise a calibration distribution as the monitor's drift baseline.

    Parameters
    ----------
    values : array-like
        The metric on the calibration rows (``nan`` values are ignored).
    metric : str, default="confidence"
        What the values are (``"confidence"`` for classifiers,
        ``"interval_width"`` for regressors).

    Returns
    -------
    dict
        ``metric``, ``n``, ``quantiles`` (at levels 0, 0.01, ..., 1),
        ``cdf_points`` (the distinct quantiles) with ``cdf`` (the exact
        fraction of calibration values ``<=`` each point; the KS baseline), and
        ``psi_edges`` (distinct deciles) with ``psi_counts`` (calibration counts
        in the bins ``(-inf, e1], (e1, e2], ..., (ek, inf)``).

    Examples
    --------
    >>> snap = confidence_snapshot(np.linspace(0, 1, 101))
    >>> snap["n"], snap["quantiles"][50], snap["psi_counts"][0]
    (101, 0.5, 11)
    """
    v = np.asarray(values, dtype=np.float64).ravel()
    v = v[np.isfinite(v)]
    if metric != "confidence":
        # Interval widths are recomputed as hi - lo from the events: keep 10
        # significant digits (as the monitor does), so float noise in e.g. a
        # constant width cannot split it across bins. Confidence is computed
        # identically on both sides and kept exact.
        v = np.array([float(f"{x:.10g}") for x in v.tolist()])
    v = np.sort(v)
    n = len(v)
    if n == 0:
        return {
            "metric": metric,
            "n": 0,
            "quantiles": [],
            "cdf_points": [],
            "cdf": [],
            "psi_edges": [],
            "psi_counts": [],
        }
    quantiles = np.quantile(v, SNAPSHOT_LEVELS, method="inverted_cdf")
    points = np.unique(quantiles)
    cdf = np.searchsorted(v, points, side="right") / n
    edges = np.unique(np.quantile(v, PSI_LEVELS, method="inverted_cdf"))
    counts = np.bincount(np.searchsorted(edges, v, side="left"), minlength=len(edges) + 1)
    return {
        "metric": metric,
        "n": int(n),
        "quantiles": quantiles.tolist(),
        "cdf_points": points.tolist(),
        "cdf": cdf.tolist(),
        "psi_edges": edges.tolist(),
        "psi_counts": counts.tolist(),
    }
