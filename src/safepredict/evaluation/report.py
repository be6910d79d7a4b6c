"""Plots and a self-contained HTML report of an offline benchmark (layer 4).

Figures are drawn with matplotlib's object API on the Agg canvas (no
``pyplot``, no global backend change), saved as PNG and embedded in
``report.html`` as base64 data, so the report is one file that opens anywhere,
offline, without scripts.

Examples
--------
>>> import tempfile
>>> import numpy as np
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
from typing import Any

from safepredict._version import __version__
from safepredict.evaluation import Evaluation
from safepredict.evaluation.plots import (
    PLOTS,
    plot_calibration,
    plot_conformal,
    plot_cost,
    plot_risk_coverage,
    plot_tier_mix,
)

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
