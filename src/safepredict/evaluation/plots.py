"""The benchmark report's plots, drawn with matplotlib's object API (layer 4).

Each ``plot_*`` function takes an :class:`~safepredict.evaluation.Evaluation` and
returns a :class:`matplotlib.figure.Figure` on the Agg canvas (no ``pyplot``, no
global backend change); :data:`PLOTS` names them for
:func:`safepredict.evaluation.report.write_report`.

Examples
--------
>>> from safepredict.evaluation import ScoredData, evaluate
>>> rng = np.random.default_rng(0)
>>> s = rng.uniform(size=300)
>>> ev = evaluate(ScoredData.from_arrays(rng.uniform(size=300) < 0.3 * (1 - s), {"top_prob": s}))
>>> sorted(PLOTS)
['calibration', 'conformal', 'cost_curve', 'risk_coverage', 'tier_mix']
>>> len(plot_tier_mix(ev).axes) >= 1
True
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np

from safepredict.evaluation import Evaluation

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "PLOTS",
    "plot_calibration",
    "plot_conformal",
    "plot_cost",
    "plot_risk_coverage",
    "plot_tier_mix",
]

_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#17becf")
_ACTION_COLORS = {"accept": "#2ca02c", "review": "#ff7f0e", "abstain": "#7f7f7f"}


def _figure(width: float = 7.0, height: float = 4.5) -> Figure:
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:  # matplotlib is the optional 'plots' extra
        raise ImportError(
            "safepredict reports need matplotlib: pip install 'safepredict[plots]'"
        ) from exc
    fig = Figure(figsize=(width, height), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _no_data(fig: Figure, text: str) -> Figure:
    ax = fig.add_subplot()
    ax.text(0.5, 0.5, text, ha="center", va="center", wrap=True)
    ax.set_axis_off()
    return fig


def plot_risk_coverage(ev: Evaluation, *, max_points: int = 400) -> Figure:
    """Selective risk vs coverage per score, with the pointwise confidence band.

    The naive (empirical) and certified operating points for the first error
    target are marked on each score's curve (realized on the test rows).
    """
    fig = _figure(9.5, 4.5)
    if not ev.curves:
        return _no_data(fig, "no risk-coverage curve (no errors defined)")
    ax = fig.add_subplot()
    for color, (name, curve) in zip(_COLORS, ev.curves.items(), strict=False):
        idx = curve.downsample(max_points)
        cov, risk = curve.coverage[idx], curve.risk[idx]
        label = f"{name} (AURC {curve.aurc:.4f}, E-AURC {curve.eaurc:.4f})"
        ax.plot(cov, risk, color=color, lw=1.6, label=label)
        ax.fill_between(
            cov, curve.risk_lower[idx], curve.risk_upper[idx], color=color, alpha=0.15, lw=0
        )
        first = [p for p in ev.operating_points if p["score"] == name][:1]
        for op in first:
            for kind, marker in (("empirical", "o"), ("certified", "*")):
                pt = op[kind]
                if pt["coverage"] and pt["risk"] is not None:
                    ax.plot(pt["coverage"], pt["risk"], marker, color=color, ms=9, mec="black")
    targets = sorted({p["max_error"] for p in ev.operating_points})[:1]
    for t in targets:
        ax.axhline(t, color="black", ls=":", lw=1, label=f"error target {t:g}")
    ax.plot([], [], "o", color="white", mec="black", label="naive empirical point")
    ax.plot([], [], "*", color="white", mec="black", ms=10, label="certified point")
    band = next(iter(ev.curves.values()))
    ax.set_xlabel("coverage (fraction of cases decided automatically)")
    ax.set_ylabel("selective error (error rate among accepted)")
    ax.set_title(
        f"Risk-coverage on {ev.n_test} test rows "
        f"({band.confidence:.0%} {band.band} band, pointwise)"
    )
    ax.set_xlim(0, 1)
    # The band is very wide where only a handful of rows are accepted; scale the axis to
    # the curves from 5% coverage on so that they stay readable.
    top = 0.0
    for curve in ev.curves.values():
        keep = curve.coverage >= 0.05
        if keep.any():
            top = max(top, float(np.nanmax(curve.risk_upper[keep])))
    ax.set_ylim(0, min(1.0, 1.15 * top) if top > 0 else 1.0)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return fig


def plot_conformal(ev: Evaluation) -> Figure:
    """Empirical coverage against mean set size across confidence levels."""
    fig = _figure()
    conf = ev.conformal
    sweep = conf.get("sweep")
    if sweep:
        ax = fig.add_subplot()
        size = [p["mean_set_size"] for p in sweep]
        cov = [p["coverage"] for p in sweep]
        ax.plot(size, cov, "o-", color=_COLORS[0], label="empirical coverage")
        ax.plot(
            size,
            [p["confidence_level"] for p in sweep],
            "s--",
            color="gray",
            ms=4,
            label="target level",
        )
        for p in sweep:
            ax.annotate(
                f"{p['confidence_level']:g}",
                (p["mean_set_size"], p["coverage"]),
                textcoords="offset points",
                xytext=(4, -10),
                fontsize=7,
            )
        if conf.get("coverage") is not None and conf.get("mean_set_size") is not None:
            ax.plot(
                conf["mean_set_size"],
                conf["coverage"],
                "*",
                color=_COLORS[1],
                ms=14,
                mec="black",
                label=f"predictor (level {conf.get('confidence_level')})",
            )
        ax.set_xlabel("mean prediction-set size")
        ax.set_ylabel("coverage (true label in the set)")
        ax.set_title("Conformal coverage vs set size")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
        return fig
    by_size = conf.get("coverage_by_set_size")
    counts = conf.get("set_size_counts")
    if by_size and counts:
        ax = fig.add_subplot()
        sizes = sorted(by_size, key=int)
        total = sum(counts.values())
        ax.bar(
            sizes, [counts[s] / total for s in sizes], color=_COLORS[0], alpha=0.5, label="share"
        )
        ax.plot(sizes, [by_size[s] for s in sizes], "o-", color=_COLORS[1], label="coverage")
        ax.set_xlabel("prediction-set size")
        ax.set_title(f"Coverage by set size (overall {conf.get('coverage', math.nan):.3f})")
        ax.set_ylim(0, 1.05)
        ax.legend(fontsize=8)
        return fig
    if conf.get("mean_interval_width") is not None:
        return _no_data(
            fig,
            f"interval coverage {conf.get('coverage', math.nan):.3f}, mean width "
            f"{conf['mean_interval_width']:.3g}",
        )
    return _no_data(fig, "no conformal sets in these data")


def plot_tier_mix(ev: Evaluation) -> Figure:
    """Share of accept / review / abstain per policy, with the accepted error."""
    results = ev.policies.results
    fig = _figure(7.0, max(2.5, 0.5 * len(results) + 1.5))
    if not results:
        return _no_data(fig, "no policy evaluated")
    ax = fig.add_subplot()
    names = [r.name for r in results]
    y = np.arange(len(results))
    left = np.zeros(len(results))
    for action, attr in (
        ("accept", "coverage"),
        ("review", "review_fraction"),
        ("abstain", "abstain_fraction"),
    ):
        share = np.array([getattr(r, attr) for r in results], dtype=float)
        ax.barh(y, share, left=left, color=_ACTION_COLORS[action], label=action)
        left += np.nan_to_num(share)
    for yi, r in zip(y, results, strict=True):
        err = "n/a" if math.isnan(r.accepted_error) else f"{r.accepted_error:.3f}"
        ax.text(1.01, float(yi), f"err {err}", va="center", fontsize=8)
    ax.set_yticks(y, names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1.18)
    ax.set_xlabel("share of cases")
    ax.set_title("Tier mix per policy (error = among accepted)")
    ax.legend(fontsize=8, ncols=3, loc="upper center", bbox_to_anchor=(0.5, -0.2), frameon=False)
    return fig


def plot_cost(ev: Evaluation) -> Figure:
    """Expected cost per 1,000 cases vs coverage per score; policies as points."""
    fig = _figure(9.0, 4.5)
    if not ev.cost_curves or ev.cost is None:
        return _no_data(fig, "no cost model given (pass --cost-error and --cost-review)")
    ax = fig.add_subplot()
    for color, (name, cc) in zip(_COLORS, ev.cost_curves.items(), strict=False):
        ax.plot(cc.coverage, cc.cost_per_1000, color=color, lw=1.4, label=name)
        j = cc.best
        ax.plot(cc.coverage[j], cc.cost_per_1000[j], "v", color=color, ms=9, mec="black")
    # Policies as numbered markers explained in the legend: names never overlap.
    markers = "DsP^XhpdoH"  # not "v": triangles down mark the optimum
    for i, r in enumerate(ev.policies.results):
        if not math.isnan(r.cost_per_1000):
            ax.plot(
                r.coverage,
                r.cost_per_1000,
                markers[i % len(markers)],
                color="black",
                mfc="white" if i % 2 else "black",
                ms=7,
                ls="none",
                label=f"policy: {r.name}",
            )
    ax.set_xlabel("coverage (fraction decided automatically)")
    ax.set_ylabel("expected cost per 1,000 cases")
    ax.set_title(
        f"Cost curve (error {ev.cost.cost_error:g}, review {ev.cost.cost_review:g}); "
        "triangles = optimum"
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return fig


def plot_calibration(ev: Evaluation) -> Figure:
    """Reliability diagram of the top-class probability."""
    fig = _figure(5.5, 4.5)
    rel = ev.reliability
    if not rel:
        return _no_data(fig, "no class probabilities in these data")
    ax = fig.add_subplot()
    lower = np.array(rel["bin_lower"])
    width = np.array(rel["bin_upper"]) - lower
    acc = np.array([np.nan if a is None else a for a in rel["accuracy"]], dtype=float)
    conf = np.array([np.nan if c is None else c for c in rel["mean_confidence"]], dtype=float)
    ax.bar(
        lower,
        acc,
        width=width,
        align="edge",
        color=_COLORS[0],
        alpha=0.6,
        ec="black",
        label="accuracy",
    )
    ax.plot(conf, acc, "o", color=_COLORS[1], label="(mean confidence, accuracy) per bin")
    ax.plot([0, 1], [0, 1], ls="--", color="gray", label="perfect calibration")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("top-class probability")
    ax.set_ylabel("accuracy")
    ax.set_title(f"Reliability diagram (ECE {rel['ece']:.3f})")
    ax.legend(fontsize=8, loc="upper left")
    return fig


#: The report's plots: file stem -> (title, function).
PLOTS: dict[str, tuple[str, Callable[[Evaluation], Figure]]] = {
    "risk_coverage": ("Risk-coverage curves", plot_risk_coverage),
    "conformal": ("Coverage vs set size", plot_conformal),
    "tier_mix": ("Tier mix per policy", plot_tier_mix),
    "cost_curve": ("Cost per 1,000 cases", plot_cost),
    "calibration": ("Calibration (reliability)", plot_calibration),
}
