"""Self-contained HTML rendering of a monitor report (layer 4).

Plots are drawn with matplotlib's object API (no pyplot, no global backend) and
embedded as base64 PNGs, so the file can be mailed or attached to a ticket.
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any

from safepredict._extras import require
from safepredict.monitoring.monitor import MonitorReport

__all__ = ["render_html"]


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _figures(report: MonitorReport) -> list[tuple[str, str]]:
    require("matplotlib", "plots", "the HTML monitor report (monitor --html)")
    from matplotlib.figure import Figure

    out: list[tuple[str, str]] = []
    windows = report.windows
    if not windows:
        return out
    labels = [w["start"] or "all" for w in windows]
    x = list(range(len(windows)))

    fig = Figure(figsize=(8, 3))
    ax = fig.add_subplot(1, 1, 1)
    bottom = [0.0] * len(windows)
    for action, color in (("accept", "#2e7d32"), ("review", "#f9a825"), ("abstain", "#c62828")):
        vals = [w["actions"].get(action, 0) for w in windows]
        ax.bar(x, vals, bottom=bottom, color=color, label=action)
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    ax.set_ylabel("decisions")
    ax.set_title("Volume and action mix per window")
    ax.legend(loc="upper left", fontsize=8)
    ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=7)
    out.append(("Volume and action mix", _png(fig)))

    fig = Figure(figsize=(8, 3))
    ax = fig.add_subplot(1, 1, 1)
    ax.plot(x, [w["abstain_rate"] or 0.0 for w in windows], marker="o", label="abstain rate")
    base = [(w["abstention"] or {}).get("baseline") for w in windows]
    if any(b is not None for b in base):
        ax.plot(x, [b if b is not None else float("nan") for b in base], "--", label="calibration")
    ax.set_ylim(0, 1)
    ax.set_title("Abstention rate")
    ax.legend(fontsize=8)
    ax.set_xticks(x, labels, rotation=30, ha="right", fontsize=7)
    out.append(("Abstention rate", _png(fig)))

    drift = [w["drift"] for w in windows if w.get("drift")]
    if drift:
        fig = Figure(figsize=(8, 3))
        ax1 = fig.add_subplot(1, 2, 1)
        ax1.plot(
            x,
            [w["drift"]["psi"] if w.get("drift") else float("nan") for w in windows],
            marker="o",
        )
        ax1.axhline(0.2, color="#c62828", linestyle="--", linewidth=1)
        ax1.set_title("PSI vs calibration")
        ax1.set_xticks(x, labels, rotation=30, ha="right", fontsize=6)
        ax2 = fig.add_subplot(1, 2, 2)
        first = drift[0]
        ax2.step(first["cdf_points"], first["cdf_calibration"], where="post", label="calibration")
        for w in windows:
            d = w.get("drift")
            if d:
                ax2.step(d["cdf_points"], d["cdf_window"], where="post", alpha=0.6)
        ax2.set_title(f"CDF of {first['metric']}")
        ax2.legend(fontsize=7)
        out.append(("Drift", _png(fig)))

    hist = [0] * len(windows[0]["confidence"]["hist"])
    for w in windows:
        hist = [a + b for a, b in zip(hist, w["confidence"]["hist"], strict=True)]
    if sum(hist):
        fig = Figure(figsize=(5, 3))
        ax = fig.add_subplot(1, 1, 1)
        width = 1.0 / len(hist)
        ax.bar([i * width for i in range(len(hist))], hist, width=width, align="edge")
        ax.set_title("Confidence (all windows)")
        out.append(("Confidence", _png(fig)))

    if report.outcomes and report.outcomes["tiers"]:
        rows = [r for r in report.outcomes["tiers"] if r["error_rate"] is not None]
        if rows:
            fig = Figure(figsize=(6, 3))
            ax = fig.add_subplot(1, 1, 1)
            xs = list(range(len(rows)))
            rates = [r["error_rate"] for r in rows]
            low = [r["error_rate"] - r["ci_low"] for r in rows]
            high = [r["ci_high"] - r["error_rate"] for r in rows]
            ax.errorbar(xs, rates, yerr=[low, high], fmt="o", capsize=4)
            for i, r in enumerate(rows):
                if r["max_error"] is not None:
                    ax.hlines(r["max_error"], i - 0.3, i + 0.3, colors="#c62828")
            ax.set_xticks(xs, [str(r["tier"]) for r in rows])
            ax.set_title("Realized error per tier (Clopper-Pearson)")
            out.append(("Realized error", _png(fig)))
    return out


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(v: Any, spec: str = ".3f") -> str:
    return "-" if v is None else format(v, spec)


def render_html(report: MonitorReport) -> str:
    """The report as one self-contained HTML page (tables plus embedded PNG plots).

    Examples
    --------
    >>> from safepredict.monitoring.monitor import MonitorReport
    >>> page = render_html(MonitorReport([], 3600.0, {}, [], [], None, []))
    >>> page.startswith("<!doctype html>")
    True
    """
    alerts = (
        "<ul>" + "".join(f"<li>{html.escape(a['detail'])}</li>" for a in report.alerts) + "</ul>"
        if report.alerts
        else "<p>No alerts.</p>"
    )
    windows = _table(
        ["window", "n", "accept", "review", "abstain", "abstain rate", "PSI", "KS D", "KS p"],
        [
            [
                w["start"] or "all",
                w["n"],
                w["actions"].get("accept", 0),
                w["actions"].get("review", 0),
                w["actions"].get("abstain", 0),
                _fmt(w["abstain_rate"]),
                _fmt((w["drift"] or {}).get("psi")),
                _fmt((w["drift"] or {}).get("ks_d")),
                _fmt((w["drift"] or {}).get("ks_pvalue"), ".2g"),
            ]
            for w in report.windows
        ],
    )
    outcomes = ""
    if report.outcomes:
        outcomes = "<h2>Realized error per tier</h2>" + _table(
            ["tier", "n", "errors", "error rate", "CI low", "CI high", "max_error", "flag"],
            [
                [
                    r["tier"],
                    r["scored"],
                    r["errors"],
                    _fmt(r["error_rate"]),
                    _fmt(r["ci_low"]),
                    _fmt(r["ci_high"]),
                    "-" if r["max_error"] is None else r["max_error"],
                    "ABOVE" if r["flagged"] else "",
                ]
                for r in report.outcomes["tiers"]
            ],
        )
    figures = "".join(
        f'<h3>{html.escape(title)}</h3><img alt="{html.escape(title)}" '
        f'src="data:image/png;base64,{data}">'
        for title, data in _figures(report)
    )
    counts = ", ".join(f"{k}: {v}" for k, v in report.events.items())
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>safepredict monitor</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 8px;font-size:13px}</style></head><body>"
        f"<h1>safepredict monitor</h1><p>{html.escape(', '.join(report.sources))}</p>"
        f"<p>events: {html.escape(counts)}</p><h2>Alerts</h2>{alerts}"
        f"<h2>Windows</h2>{windows}{outcomes}<h2>Plots</h2>{figures}</body></html>"
    )
