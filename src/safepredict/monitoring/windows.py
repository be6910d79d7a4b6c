"""Time windows of the monitor: parsing their length, and testing each for drift (layer 4).

A window's decisions are summarised into rates (actions, guard flags by reason), a
confidence histogram and, against the calibration snapshot, the population
stability index and a Kolmogorov-Smirnov test of the confidence (or interval
width) distribution, plus a one-sided test of the abstention rate.

Examples
--------
>>> parse_window("15m")
900.0
>>> round(psi_from_snapshot({"psi_counts": [50, 50]}, [90, 10]), 3)
0.879
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from safepredict.exceptions import ConfigError
from safepredict.monitoring.feature_drift import feature_drift

__all__ = [
    "HIST_BINS",
    "Window",
    "feature_summary",
    "ks_from_snapshot",
    "parse_window",
    "psi_from_snapshot",
    "summarise_window",
]

#: Confidence histogram bins of each window ([0, 1] in 20 equal bins).
HIST_BINS = 20
_WINDOW_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_UNITS = {"": 1.0, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}


def parse_window(window: str | float | None) -> float:
    """Window length in seconds from ``"90s"``, ``"15m"``, ``"1h"``, ``"1d"`` or ``"all"``.

    ``"all"`` (or ``None`` / ``0``) puts every event in one window.

    Examples
    --------
    >>> parse_window("1h"), parse_window("15m"), parse_window("all")
    (3600.0, 900.0, 0.0)
    """
    if window is None or window == "all":
        return 0.0
    if isinstance(window, int | float) and not isinstance(window, bool):
        if window < 0 or not math.isfinite(window):
            raise ConfigError(f"window must be >= 0 seconds; got {window!r}.")
        return float(window)
    match = _WINDOW_RE.match(str(window))
    if not match:
        raise ConfigError(
            f"window must look like '30s', '15m', '1h', '1d' or 'all'; got {window!r}."
        )
    return float(match.group(1)) * _UNITS[match.group(2)]


def psi_from_snapshot(snapshot: Mapping[str, Any], counts: Sequence[int]) -> float:
    """Population stability index of window ``counts`` vs the snapshot's PSI bins.

    ``counts`` are the window's counts in the bins ``(-inf, e1], ..., (ek, inf)``
    of ``snapshot["psi_edges"]``. Empty bins are floored at 1e-4 (the usual
    convention) so the index stays finite.

    Examples
    --------
    >>> snap = {"psi_counts": [50, 50]}
    >>> psi_from_snapshot(snap, [50, 50]), round(psi_from_snapshot(snap, [90, 10]), 3)
    (0.0, 0.879)
    """
    expected = [float(c) for c in snapshot["psi_counts"]]
    n_e, n_a = sum(expected), float(sum(counts))
    if n_e <= 0 or n_a <= 0:
        return math.nan
    psi = 0.0
    for e, a in zip(expected, counts, strict=True):
        pe, pa = max(e / n_e, 1e-4), max(a / n_a, 1e-4)
        psi += (pa - pe) * math.log(pa / pe)
    return psi


def ks_from_snapshot(snapshot: Mapping[str, Any], counts: Sequence[int]) -> tuple[float, float]:
    """Two-sample KS statistic and asymptotic p-value vs the calibration snapshot.

    ``counts`` are the window's counts in the bins ``(-inf, p1], (p1, p2], ...,
    (pk, inf)`` of ``snapshot["cdf_points"]``; both empirical CDFs are compared at
    those points (the distinct calibration percentiles), which is exact for the
    calibration side and resolves the supremum to 1/100 of the calibration mass.
    The p-value uses the Kolmogorov limit distribution with the effective size
    ``n m / (n + m)`` (conservative for tied, discrete confidences).

    Examples
    --------
    >>> snap = {"n": 100, "cdf_points": [0.5, 1.0], "cdf": [0.5, 1.0]}
    >>> d, p = ks_from_snapshot(snap, [50, 50, 0])
    >>> d, p > 0.5
    (0.0, True)
    """
    from scipy.special import kolmogorov

    m = int(snapshot["n"])
    n = int(sum(counts))
    if m <= 0 or n <= 0:
        return math.nan, math.nan
    d = 0.0
    below = 0
    for c, f_cal in zip(counts, snapshot["cdf"], strict=False):
        below += c
        d = max(d, abs(below / n - float(f_cal)))
    en = math.sqrt(n * m / (n + m))
    return d, float(kolmogorov(d * en))


@dataclass
class Window:
    """The counters of one time window (starting at ``start``, epoch seconds)."""

    start: float
    n: int = 0
    tiers: Counter[str] = field(default_factory=Counter)
    actions: Counter[str] = field(default_factory=Counter)
    guard: Counter[str] = field(default_factory=Counter)
    reasons: Counter[str] = field(default_factory=Counter)
    routes: Counter[str] = field(default_factory=Counter)
    guard_flagged: int = 0
    conf_n: int = 0
    conf_sum: float = 0.0
    hist: list[int] = field(default_factory=lambda: [0] * HIST_BINS)
    # calibration_id -> (cdf-point counts, psi-bin counts)
    drift: dict[str, tuple[list[int], list[int]]] = field(default_factory=dict)
    ids: Counter[str | None] = field(default_factory=Counter)
    latency_sum: float = 0.0
    batches: set[str] = field(default_factory=set)
    # calibration_id -> per input column, counts in the calibration's feature bins
    features: dict[str, dict[str, list[int]]] = field(default_factory=dict)


def summarise_window(
    w: Window,
    window_s: float,
    calibrations: Mapping[str, Mapping[str, Any]],
    alerts: list[dict[str, Any]],
    *,
    psi_threshold: float,
    ks_alpha: float,
    abstain_alpha: float,
    abstain_margin: float,
    min_window: int,
) -> dict[str, Any]:
    """JSON-safe summary of a window; its drift and abstention alerts go to ``alerts``."""
    n = w.n
    start = datetime.fromtimestamp(w.start, UTC).isoformat().replace("+00:00", "Z")
    end = (
        datetime.fromtimestamp(w.start + window_s, UTC).isoformat().replace("+00:00", "Z")
        if window_s
        else None
    )
    label = start if window_s else "all"
    cal_id = w.ids.most_common(1)[0][0] if w.ids else None
    cal = calibrations.get(cal_id) if cal_id is not None else None
    abstain = w.actions.get("abstain", 0)
    out: dict[str, Any] = {
        "start": start if window_s else None,
        "end": end,
        "n": n,
        "batches": len(w.batches),
        "tiers": dict(w.tiers.most_common()),
        "actions": dict(w.actions.most_common()),
        "abstain_rate": abstain / n if n else None,
        "review_rate": w.actions.get("review", 0) / n if n else None,
        "guard_flag_rate": w.guard_flagged / n if n else None,
        "guard_reason_rates": {k: c / n for k, c in w.guard.most_common()} if n else {},
        "reasons": dict(w.reasons.most_common(10)),
        "routes": dict(w.routes),
        "latency_s_mean_per_batch": w.latency_sum / len(w.batches) if w.batches else None,
        "confidence": {
            "n": w.conf_n,
            "mean": w.conf_sum / w.conf_n if w.conf_n else None,
            "hist": list(w.hist),
        },
        "calibration_id": cal_id,
        "drift": None,
        "abstention": None,
        "features": None,
    }
    slot = w.drift.get(cal_id) if cal_id is not None else None
    if cal is not None and slot is not None:
        base = cal["baseline"]
        m = int(sum(slot[0]))
        psi = psi_from_snapshot(base, slot[1])
        ks_d, ks_p = ks_from_snapshot(base, slot[0])
        tested = m >= min_window
        flagged = tested and (psi >= psi_threshold or ks_p < ks_alpha)
        window_cdf, below = [], 0
        for c in slot[0][:-1]:
            below += c
            window_cdf.append(below / m if m else None)
        out["drift"] = {
            "metric": base["metric"],
            "n": m,
            "psi": psi,
            "ks_d": ks_d,
            "ks_pvalue": ks_p,
            "tested": tested,
            "flagged": flagged,
            "cdf_points": base["cdf_points"],
            "cdf_calibration": base["cdf"],
            "cdf_window": window_cdf,
        }
        if flagged:
            alerts.append(
                {
                    "kind": "drift",
                    "window": label,
                    "detail": (
                        f"{base['metric']} drift vs calibration {cal_id}: PSI={psi:.3f} "
                        f"(threshold {psi_threshold}), KS D={ks_d:.3f} p={ks_p:.2g}"
                    ),
                }
            )
    if cal is not None and cal["baseline"].get("action_rates") and n:
        from scipy.stats import fisher_exact  # only with a baseline: keeps startup light

        r0 = float(cal["baseline"]["action_rates"].get("abstain", 0.0))
        n0 = int(cal["baseline"].get("n") or 0)
        k0 = round(r0 * n0)
        rate = abstain / n
        # One-sided Fisher exact test of "window rate > calibration rate": both are
        # samples, so the baseline's own noise is accounted for.
        p = float(fisher_exact([[abstain, n - abstain], [k0, n0 - k0]], "greater")[1])
        tested = n >= min_window
        flagged = tested and rate - r0 >= abstain_margin and p < abstain_alpha
        out["abstention"] = {
            "baseline": r0,
            "rate": rate,
            "pvalue": p,
            "tested": tested,
            "flagged": flagged,
        }
        if flagged:
            alerts.append(
                {
                    "kind": "abstention",
                    "window": label,
                    "detail": (
                        f"abstention rate {rate:.3f} vs {r0:.3f} at calibration "
                        f"(binomial p={p:.2g}, {abstain}/{n})"
                    ),
                }
            )
    counts = w.features.get(cal_id) if cal_id is not None else None
    snapshot = (cal["baseline"].get("features") if cal is not None else None) or None
    if snapshot is not None and counts:
        out["features"] = feature_summary(
            snapshot, counts, label, alerts, psi_threshold=psi_threshold, ks_alpha=ks_alpha,
            min_window=min_window,
        )  # fmt: skip
    return out


#: How many of the worst columns an alert names.
WORST = 3


def feature_summary(
    snapshot: Mapping[str, Any],
    counts: Mapping[str, Sequence[int]],
    label: str,
    alerts: list[dict[str, Any]],
    *,
    psi_threshold: float,
    ks_alpha: float,
    min_window: int,
) -> dict[str, Any]:
    """Per-feature drift of one window (worst column first); one alert names the worst.

    A column is flagged when its PSI is at least ``psi_threshold`` and its KS
    p-value is below ``ks_alpha`` divided by the number of columns (Bonferroni).

    Examples
    --------
    >>> snap = {"columns": {"age": {"edges": [1.0], "counts": [50, 50], "missing": 0, "n": 100},
    ...                     "pay": {"edges": [1.0], "counts": [50, 50], "missing": 0, "n": 100}}}
    >>> alerts = []
    >>> out = feature_summary(snap, {"age": [50, 50, 0], "pay": [95, 5, 0]}, "w1", alerts,
    ...                       psi_threshold=0.2, ks_alpha=0.001, min_window=50)
    >>> out["flagged"], out["columns"][0]["feature"], alerts[0]["window"]
    (['pay'], 'pay', 'w1')
    """
    rows = feature_drift(
        snapshot, counts, psi_threshold=psi_threshold, ks_alpha=ks_alpha, min_rows=min_window
    )
    columns = [
        {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in r.items()}
        for r in rows
    ]
    # Many columns are tested at once: a column is flagged when its shift is material
    # (PSI at or above the threshold) *and* significant after Bonferroni over the
    # columns (KS p < ks_alpha / columns), so an unshifted window flags any column with
    # probability at most ks_alpha, however many columns there are.
    level = ks_alpha / max(len(columns), 1)
    for c in columns:
        c["flagged"] = bool(
            c["tested"]
            and c["psi"] is not None
            and c["psi"] >= psi_threshold
            and c["ks_pvalue"] is not None
            and c["ks_pvalue"] < level
        )
    flagged = [c["feature"] for c in columns if c["flagged"]]
    if flagged:
        worst = [
            f"{c['feature']} (PSI={_fmt(c['psi'])}, KS p={_fmt(c['ks_pvalue'], '.2g')})"
            for c in columns
            if c["flagged"]
        ][:WORST]
        alerts.append(
            {
                "kind": "feature_drift",
                "window": label,
                "features": flagged,
                "detail": (
                    f"{len(flagged)} of {len(columns)} input columns drifted vs calibration; "
                    f"worst: {', '.join(worst)}"
                ),
            }
        )
    return {"n_columns": len(columns), "flagged": flagged, "columns": columns}


def _fmt(v: Any, spec: str = ".2f") -> str:
    return "-" if v is None else format(v, spec)
