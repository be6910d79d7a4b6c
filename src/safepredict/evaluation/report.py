"""Plots and a self-contained HTML report of an offline benchmark (layer 4).

Figures are drawn with matplotlib's object API on the Agg canvas (no
``pyplot``, no global backend change), saved as PNG and embedded in
``report.html`` as base64 data, so the report is one file that opens anywhere,
offline, without scripts.

Examples
--------
>>> import tempfile
>>> from safepredict.evaluation import ScoredData, evaluate
>>> rng = np.random.default_rng(0)
>>> s = rng.uniform(size=500)
>>> data = ScoredData.from_arrays(rng.uniform(size=500) < 0.3 * (1 - s), {"top_prob": s})
>>> out = write_report(evaluate(data), tempfile.mkdtemp())
>>> out.name
'report.html'
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from safepredict._version import __version__
from safepredict.evaluation import Evaluation

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "PLOTS",
    "REPORT_CSS",
    "plot_calibration",
    "plot_conformal",
    "plot_cost",
    "plot_risk_coverage",
    "plot_tier_mix",
    "write_report",
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


# --------------------------------------------------------------------------- HTML
def _fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if math.isinf(value):
            return "∞"
        return f"{value:.4g}"
    return html.escape(str(value))


def _table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_fmt(r.get(k))}</td>" for k, _ in columns) + "</tr>" for r in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


#: The stylesheet of every safepredict HTML report (bench, monitor).
REPORT_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;
max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{border-bottom:1px solid #ddd;padding-bottom:.2em;
margin-top:1.6em}table{border-collapse:collapse;margin:.6em 0;font-size:.9em}
td,th{border:1px solid #ccc;padding:.3em .6em;text-align:right}th{background:#f3f3f3}
td:first-child,th:first-child{text-align:left}.kpi{display:flex;gap:1em;flex-wrap:wrap}
.kpi div{background:#f6f8fa;border:1px solid #ddd;border-radius:6px;padding:.6em 1em}
.kpi b{display:block;font-size:1.4em}img{max-width:100%;border:1px solid #eee}
.note{color:#555;font-size:.9em}.warn{color:#a00}
.rec{background:#eef7ee;border:1px solid #9c9;border-radius:8px;padding:.2em 1em 1em}
.rec.none{background:#fbeeee;border-color:#d99}.rec h2{border:none}
details{margin:.4em 0}summary{cursor:pointer;color:#246}
"""


def _img(images: dict[str, bytes], stem: str) -> str:
    if stem not in images:
        return ""
    label = html.escape(PLOTS[stem][0])
    data = base64.b64encode(images[stem]).decode("ascii")
    return f"<figure><img alt='{label}' src='data:image/png;base64,{data}'></figure>"


def _recommendation_html(ev: Evaluation) -> list[str]:
    """The recommendation card, what ``current`` is, and tiers that certify nothing."""
    parts: list[str] = []
    meta = ev.meta
    constraints = {k: v for k, v in (meta.get("constraints") or {}).items() if v is not None}
    rec = meta.get("recommendation")
    if rec is not None:
        certified = ", ".join(rec["certified_tiers"]) or "none (no max_error tier)"
        cards = [
            ("accepted", _pct(rec["coverage"])),
            ("reviewed", _pct(rec["review_fraction"])),
            ("abstained", _pct(rec["abstain_fraction"])),
            ("error among accepted", _fmt(rec["accepted_error"])),
            ("upper (95%)", _fmt(rec["accepted_error_upper"])),
            ("cost / 1,000", _fmt(rec["cost_per_1000"])),
        ]
        parts.append(
            "<section class='rec' id='recommendation'><h2>Recommendation: "
            f"<code>{html.escape(rec['policy'])}</code></h2>"
            f"<p>{html.escape(rec['criterion'])}. Certified tiers: {html.escape(certified)}.</p>"
            "<div class='kpi'>"
            + "".join(f"<div>{html.escape(k)}<b>{v}</b></div>" for k, v in cards)
            + "</div></section>"
        )
    elif constraints:
        wanted = " and ".join(f"{k.replace('_', ' ')} {v:g}" for k, v in constraints.items())
        parts.append(
            "<section class='rec none' id='recommendation'><h2>No recommendation</h2>"
            f"<p class='warn'>No compared policy meets {html.escape(wanted)}. Loosen a "
            "constraint, compare more policies or calibrate on more rows.</p></section>"
        )
    if meta.get("current"):
        parts.append(f"<p class='note' id='current-note'>{html.escape(str(meta['current']))}</p>")
    gaps = meta.get("uncertified") or []
    if gaps:
        parts.append("<h3 id='uncertified'>Tiers that certify nothing</h3>")
        parts.append(
            _table(
                gaps,
                [
                    ("policy", "policy"),
                    ("tier", "tier"),
                    ("reason", "why"),
                    ("rows_available", "rows reaching it"),
                    ("rows_needed", "rows needed"),
                    ("calibration_rows_needed", "calibration rows needed"),
                ],
            )
        )
        parts.append(
            "<p class='note'>'budget': even with zero errors, fewer rows reach the tier than "
            "certifying its max_error at its delta needs; it accepts nothing until calibrated "
            "on that many rows (or with a higher max_error or delta). 'not_certified': no "
            "threshold keeps the error provably below max_error.</p>"
        )
    return parts


def _pct(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{float(value):.1%}"


def _html(ev: Evaluation, images: dict[str, bytes], title: str) -> str:
    summary = ev.to_dict()
    kpis = [
        ("test rows", ev.n_test),
        ("calibration rows", ev.n_calibration),
        ("model error rate", ev.error_rate),
        ("conformal coverage", ev.conformal.get("coverage")),
        ("mean set size", ev.conformal.get("mean_set_size")),
        ("mean interval width", ev.conformal.get("mean_interval_width")),
    ]
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title><style>{REPORT_CSS}</style></head><body>",
        f"<h1>{html.escape(title)}</h1>",
        f"<p class='note'>safepredict {html.escape(__version__)} · task {ev.task} · "
        f"source {html.escape(str(ev.meta.get('source', 'arrays')))}</p>",
        "<div class='kpi'>"
        + "".join(f"<div>{html.escape(k)}<b>{_fmt(v)}</b></div>" for k, v in kpis if v is not None)
        + "</div>",
    ]
    if ev.in_sample:
        parts.append(
            "<p class='warn'>No separate calibration rows: thresholds were chosen on the test "
            "rows themselves, so the operating points below are optimistic.</p>"
        )
    parts.extend(_recommendation_html(ev))
    parts.append("<h2>Scores: how well each one ranks errors last</h2>")
    parts.append(_img(images, "risk_coverage"))
    parts.append(
        _table(
            [{"score": k, **v} for k, v in summary["scores"].items()],
            [
                ("score", "score"),
                ("aurc", "AURC"),
                ("eaurc", "E-AURC"),
                ("optimal_aurc", "oracle AURC"),
            ],
        )
    )
    parts.append(
        "<p class='note'>AURC: area under the risk-coverage curve (lower is better). E-AURC: "
        "excess over an oracle that ranks every correct case above every error.</p>"
    )
    parts.append("<h2>Guaranteed vs naive operating points</h2>")
    rows = []
    for op in summary["operating_points"]:
        naive, cert = op["empirical"], op["certified"]
        rows.append(
            {
                "score": op["score"],
                "max_error": op["max_error"],
                "naive_coverage": naive["coverage"],
                "naive_risk": naive["risk"],
                "naive_ok": None if naive["risk"] is None else naive["risk"] <= op["max_error"],
                "cert_threshold": cert["threshold"],
                "cert_coverage": cert["coverage"],
                "cert_risk": cert["risk"],
                "cert_upper": cert["risk_upper"],
            }
        )
    columns = [
        ("score", "score"),
        ("max_error", "error target"),
        ("naive_coverage", "naive: coverage"),
        ("naive_risk", "naive: test error"),
        ("naive_ok", "naive meets target"),
        ("cert_threshold", "certified: threshold"),
        ("cert_coverage", "certified: coverage"),
        ("cert_risk", "certified: test error"),
        ("cert_upper", "upper (95%)"),
    ]
    first_score = rows[0]["score"] if rows else None
    parts.append(_table([r for r in rows if r["score"] == first_score], columns))
    if len(rows) > sum(r["score"] == first_score for r in rows):
        parts.append(
            "<details><summary>Every score</summary>" + _table(rows, columns) + "</details>"
        )
    parts.append(
        f"<p class='note'>Both thresholds are chosen on the calibration rows and applied to "
        f"the test rows. The certified one holds its target with probability at least "
        f"{1 - ev.delta:g} (Learn-then-Test); the naive one (largest coverage whose observed "
        "error meets the target) carries no guarantee.</p>"
    )
    parts.append("<h2>Selective error at fixed coverage</h2>")
    at_columns = [
        ("score", "score"),
        ("target", "target coverage"),
        ("coverage", "coverage"),
        ("risk", "selective error"),
        ("risk_upper", "upper (95%)"),
        ("threshold", "threshold"),
    ]
    at_rows = summary["at_coverage"]
    first = [r for r in at_rows if r["score"] == (at_rows[0]["score"] if at_rows else None)]
    parts.append(_table(first, at_columns))
    if len(first) < len(at_rows):
        parts.append(
            "<details><summary>Every score</summary>" + _table(at_rows, at_columns) + "</details>"
        )
    if ev.policies.results:
        parts.append("<h2>Policies side by side</h2>")
        parts.append(
            _table(
                [r.summary() for r in ev.policies.results],
                [
                    ("policy", "policy"),
                    ("coverage", "accepted"),
                    ("review_fraction", "review"),
                    ("abstain_fraction", "abstain"),
                    ("accepted_error", "error among accepted"),
                    ("accepted_error_upper", "upper (95%)"),
                    ("cost_per_1000", "cost / 1,000"),
                ],
            )
        )
        parts.append(_img(images, "tier_mix"))
        parts.append("<h3>Per tier</h3>")
        parts.append(
            _table(
                [t.to_dict() for r in ev.policies.results for t in r.tiers],
                [
                    ("policy", "policy"),
                    ("tier", "tier"),
                    ("action", "action"),
                    ("n", "rows"),
                    ("fraction", "share"),
                    ("error_rate", "realized error"),
                    ("error_upper", "upper (95%)"),
                    ("max_error", "max_error"),
                    ("certified", "certified"),
                    ("cost_per_1000", "cost / 1,000"),
                ],
            )
        )
    if ev.cost_curves and ev.cost is not None:
        parts.append("<h2>Cost-optimal thresholds</h2>")
        parts.append(_img(images, "cost_curve"))
        parts.append(
            _table(
                [{"score": k, **c.optimal()} for k, c in ev.cost_curves.items()],
                [
                    ("score", "score"),
                    ("threshold", "threshold"),
                    ("coverage", "coverage"),
                    ("cost_per_1000", "cost / 1,000"),
                ],
            )
        )
    parts.append("<h2>Conformal sets and calibration</h2>")
    parts.append(_img(images, "conformal"))
    parts.append(_img(images, "calibration"))
    parts.append("</body></html>")
    return "\n".join(parts)


def write_report(
    ev: Evaluation,
    out_dir: str | Path,
    *,
    title: str = "safepredict abstention benchmark",
    progress: Callable[[str], None] | None = None,
) -> Path:
    """Write ``report.html``, ``summary.json`` and one PNG per plot into ``out_dir``.

    Parameters
    ----------
    ev : Evaluation
        What :func:`safepredict.evaluation.evaluate` (or ``benchmark`` /
        ``replay``) returned.
    out_dir : path
        Directory to write to (created if needed).
    title : str
        Title of the report.
    progress : callable, optional
        Called with each plot's name as it is drawn.

    Returns
    -------
    Path
        The path of ``report.html``.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    images: dict[str, bytes] = {}
    for stem, (_, plot) in PLOTS.items():
        if progress is not None:
            progress(stem)
        fig = plot(ev)
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        images[stem] = buf.getvalue()
        (out / f"{stem}.png").write_bytes(images[stem])
    (out / "summary.json").write_text(
        json.dumps(ev.to_dict(), indent=2, allow_nan=False), encoding="utf-8"
    )
    path = out / "report.html"
    path.write_text(_html(ev, images, title), encoding="utf-8")
    return path
