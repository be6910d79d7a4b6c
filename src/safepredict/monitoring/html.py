"""Self-contained HTML rendering of a monitor report (layer 4).

Styled like the benchmark report (:data:`safepredict.evaluation.report.REPORT_CSS`):
summary cards, alerts that name their window, a guard section, tables per window
and per tier, and plots. Plots are drawn with matplotlib's object API (no pyplot,
no global backend) and embedded as base64 PNGs, so the file can be mailed or
attached to a ticket; it loads nothing from the network.
"""

from __future__ import annotations

import base64
import html
import io
import math
from datetime import datetime
from typing import Any

from safepredict._extras import require
from safepredict._version import __version__
from safepredict.evaluation.report import REPORT_CSS
from safepredict.monitoring.monitor import MonitorReport

__all__ = ["feature_rows", "guard_summary", "render_html", "window_times"]

_ACTION_COLORS = {"accept": "#2ca02c", "review": "#ff7f0e", "abstain": "#7f7f7f"}


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _figure(width: float, height: float) -> Any:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def window_times(report: MonitorReport) -> list[datetime] | None:
    """Start of each window as a datetime (``None`` for a single ``all`` window).

    Examples
    --------
    >>> window_times(MonitorReport([], 0.0, {}, [], [{"start": None}], None, [])) is None
    True
    """
    starts = [w.get("start") for w in report.windows]
    if not starts or any(s is None for s in starts):
        return None
    return [datetime.fromisoformat(str(s).replace("Z", "+00:00")) for s in starts]


def _time_axis(ax: Any, report: MonitorReport) -> list[Any]:
    """Positions of the windows, with a concise date axis (or one 'all' tick)."""
    times = window_times(report)
    if times is None:
        ax.set_xticks(range(len(report.windows)), ["all"] * len(report.windows))
        return list(range(len(report.windows)))
    from matplotlib.dates import AutoDateLocator, ConciseDateFormatter

    locator = AutoDateLocator(minticks=3, maxticks=8)  # type: ignore[no-untyped-call]
    ax.xaxis.set_major_locator(locator)
    ax.xaxis.set_major_formatter(ConciseDateFormatter(locator))  # type: ignore[no-untyped-call]
    ax.set_xlabel("window start (UTC)")
    return [t.timestamp() / 86400.0 for t in times]  # matplotlib date numbers (1970 epoch)


def _bar_width(report: MonitorReport, x: list[Any]) -> float:
    if len(x) > 1 and window_times(report) is not None:
        return 0.8 * report.window_s / 86400.0  # date numbers are in days
    return 0.8


def _figures(report: MonitorReport) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    windows = report.windows
    if not windows:
        return out

    fig = _figure(8, 3.2)
    ax = fig.add_subplot(1, 1, 1)
    x = _time_axis(ax, report)
    width = _bar_width(report, x)
    bottom = [0.0] * len(windows)
    for action, color in _ACTION_COLORS.items():
        vals = [w["actions"].get(action, 0) for w in windows]
        ax.bar(x, vals, bottom=bottom, color=color, label=action, width=width)
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    ax.set_ylabel("decisions")
    ax.set_title("Volume and action mix per window")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    out.append(("Volume and action mix", _png(fig)))

    fig = _figure(8, 3.2)
    ax = fig.add_subplot(1, 1, 1)
    x = _time_axis(ax, report)
    rates = [w["abstain_rate"] if w["abstain_rate"] is not None else math.nan for w in windows]
    ax.plot(x, rates, marker="o", label="abstain rate")
    flags = [
        w["guard_flag_rate"] if w["guard_flag_rate"] is not None else math.nan for w in windows
    ]
    ax.plot(x, flags, marker="s", color="#9467bd", label="rows flagged by guards")
    base = [(w["abstention"] or {}).get("baseline") for w in windows]
    if any(b is not None for b in base):
        ax.plot(x, [b if b is not None else math.nan for b in base], "--", label="calibration")
    top = max([v for v in [*rates, *flags] if not math.isnan(v)] + [0.05])
    ax.set_ylim(0, min(1.0, 1.2 * top))  # the interesting range, not always [0, 1]
    ax.set_ylabel("share of rows")
    ax.set_title("Abstention and guard flags")
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8)
    out.append(("Abstention and guard flags", _png(fig)))

    drift = [w for w in windows if w.get("drift")]
    if drift:
        fig = _figure(9, 3.4)
        ax1 = fig.add_subplot(1, 2, 1)
        x = _time_axis(ax1, report)
        ax1.plot(
            x, [w["drift"]["psi"] if w.get("drift") else math.nan for w in windows], marker="o"
        )
        ax1.axhline(0.2, color="#c62828", linestyle="--", linewidth=1, label="alert (0.2)")
        ax1.set_title("PSI vs calibration")
        ax1.legend(fontsize=7)
        ax2 = fig.add_subplot(1, 2, 2)
        first = drift[0]["drift"]
        points = first["cdf_points"]
        ax2.step(points, first["cdf_calibration"], where="post", color="black", label="calibration")
        for w in drift:
            d = w["drift"]
            label = "all" if w["start"] is None else str(w["start"])[:16].replace("T", " ")
            ax2.step(points[: len(d["cdf_window"])], d["cdf_window"], where="post", alpha=0.6,
                     label=label if len(drift) <= 6 else None)  # fmt: skip
        if points:  # zoom from the calibration's 1st percentile: confidence piles up near 1
            cal_cdf = first["cdf_calibration"]
            lo = next((float(x) for x, f in zip(points, cal_cdf, strict=False) if f >= 0.01),
                      float(min(points)))  # fmt: skip
            hi = float(max(points))
            ax2.set_xlim(lo - 0.05 * (hi - lo + 1e-9), hi + 0.05 * (hi - lo + 1e-9))
        ax2.set_title(f"CDF of {first['metric']}")
        ax2.legend(fontsize=7, loc="upper left")
        out.append(("Drift", _png(fig)))

    hist = [0] * len(windows[0]["confidence"]["hist"])
    for w in windows:
        hist = [a + b for a, b in zip(hist, w["confidence"]["hist"], strict=True)]
    if sum(hist):
        fig = _figure(6, 3)
        ax = fig.add_subplot(1, 1, 1)
        width = 1.0 / len(hist)
        ax.bar([i * width for i in range(len(hist))], hist, width=width, align="edge",
               color="#1f77b4", ec="white")  # fmt: skip
        # From the bin holding the 1st percentile: a few guard-blocked rows at 0 must
        # not squash the bulk of the distribution against 1.0.
        total, below, first = sum(hist), 0, 0
        for i, h in enumerate(hist):
            below += h
            if below >= 0.01 * total:
                first = i
                break
        ax.set_xlim(max(0.0, (first - 1) * width), 1.0)
        ax.set_yscale("log")
        ax.set_ylabel("decisions (log scale)")
        ax.set_xlabel("confidence")
        ax.set_title("Confidence (all windows)")
        out.append(("Confidence", _png(fig)))

    if report.outcomes and report.outcomes["tiers"]:
        rows = [r for r in report.outcomes["tiers"] if r["error_rate"] is not None]
        if rows:
            fig = _figure(6, 3)
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


def _table(headers: list[str], rows: list[list[Any]], css: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    cls = f" class='{css}'" if css else ""
    return f"<table{cls}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _fmt(v: Any, spec: str = ".3f") -> str:
    return "-" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)


def _pct(v: Any) -> str:
    return _fmt(None if v is None else 100 * v, ".1f") + ("%" if v is not None else "")


def _window_label(w: dict[str, Any]) -> str:
    if w.get("start") is None:
        return "all"
    start = str(w["start"]).replace("T", " ").replace("Z", "")
    end = str(w.get("end") or "").replace("T", " ").replace("Z", "")
    return f"{start} to {end[11:] if end[:10] == start[:10] else end} UTC"


def guard_summary(report: MonitorReport) -> dict[str, Any]:
    """Rows the guards flagged (a row counts once) and reason codes by kind.

    A flagged row can carry several reason codes (one ``out_of_range`` per
    column), so codes are counted as codes, never presented as shares of rows.

    Examples
    --------
    >>> rep = MonitorReport([], 0.0, {}, [], [{"n": 10, "guard_flag_rate": 0.2,
    ...     "guard_reason_rates": {"out_of_range": 0.5}}], None, [])
    >>> guard_summary(rep)
    {'rows': 10, 'flagged_rows': 2, 'flagged_share': 0.2, 'codes': {'out_of_range': 5}}
    """
    rows = sum(int(w.get("n") or 0) for w in report.windows)
    flagged = sum(
        round((w.get("guard_flag_rate") or 0.0) * (w.get("n") or 0)) for w in report.windows
    )
    codes: dict[str, int] = {}
    for w in report.windows:
        for k, rate in (w.get("guard_reason_rates") or {}).items():
            codes[k] = codes.get(k, 0) + round(rate * (w.get("n") or 0))
    return {
        "rows": rows,
        "flagged_rows": flagged,
        "flagged_share": flagged / rows if rows else None,
        "codes": dict(sorted(codes.items(), key=lambda kv: -kv[1])),
    }


def _cards(report: MonitorReport, guards: dict[str, Any]) -> str:
    rows = guards["rows"]
    actions: dict[str, int] = {}
    conf_n = conf_sum = 0.0
    for w in report.windows:
        for k, v in w["actions"].items():
            actions[k] = actions.get(k, 0) + v
        c = w.get("confidence") or {}
        if c.get("mean") is not None:
            conf_n += c["n"]
            conf_sum += c["mean"] * c["n"]
    share = {k: (actions.get(k, 0) / rows if rows else None) for k in _ACTION_COLORS}
    cards = [
        ("decisions", f"{rows:,}"),
        ("windows", f"{len(report.windows)}"),
        ("accepted", _pct(share["accept"])),
        ("reviewed", _pct(share["review"])),
        ("abstained", _pct(share["abstain"])),
        ("rows flagged by guards", _pct(guards["flagged_share"])),
        ("mean confidence", _fmt(conf_sum / conf_n if conf_n else None)),
        ("alerts", f"{len(report.alerts)}"),
    ]
    return (
        "<div class='kpi' id='cards'>"
        + "".join(
            f"<div{' class=alert' if k == 'alerts' and report.alerts else ''}>"
            f"{html.escape(k)}<b>{html.escape(v)}</b></div>"
            for k, v in cards
        )
        + "</div>"
    )


def _alerts(report: MonitorReport) -> str:
    if not report.alerts:
        return "<p id='alerts' class='ok'>No alerts.</p>"
    labels = {w.get("start") or "all": _window_label(w) for w in report.windows}
    rows = []
    for a in report.alerts:
        if "window" in a:
            where = labels.get(a["window"], str(a["window"]))
        elif "tier" in a:
            where = f"tier {a['tier']} (all windows)"
        else:
            where = "all windows"
        rows.append([where, a["kind"], a["detail"]])
    return _table(["window", "kind", "detail"], rows, css="alerts")


def _guards(guards: dict[str, Any]) -> str:
    if not guards["rows"]:
        return "<p>No decisions.</p>"
    head = (
        f"<p id='guard-summary'><b>{guards['flagged_rows']:,}</b> of {guards['rows']:,} rows "
        f"({_pct(guards['flagged_share'])}) were flagged by an input guard.</p>"
    )
    if not guards["codes"]:
        return head
    table = _table(
        ["reason", "codes", "per flagged row"],
        [
            [
                k,
                f"{v:,}",
                _fmt(v / guards["flagged_rows"] if guards["flagged_rows"] else None, ".2f"),
            ]
            for k, v in guards["codes"].items()
        ],
        css="guards",
    )
    return (
        head
        + table
        + "<p class='note'>A row can carry several reason codes (one per column out of "
        "range, say): codes are counted, and the share of rows is the line above.</p>"
    )


def feature_rows(report: MonitorReport, worst: int = 3) -> list[list[str]]:
    """Per window with per-feature drift: window, rows, columns flagged, worst columns.

    Examples
    --------
    >>> w = {"start": None, "features": {"n_columns": 2, "flagged": ["pay"], "columns": [
    ...     {"feature": "pay", "n": 80, "psi": 0.91, "ks_pvalue": 1e-9, "flagged": True},
    ...     {"feature": "age", "n": 80, "psi": 0.01, "ks_pvalue": 0.9, "flagged": False}]}}
    >>> feature_rows(MonitorReport([], 0.0, {}, [], [w], None, []))
    [['all', '80', '1 of 2', 'pay PSI 0.91 (p 1e-09) ⚠, age PSI 0.01 (p 0.9)']]
    """
    out = []
    for w in report.windows:
        f = w.get("features")
        if not f:
            continue
        cols = f["columns"]
        top = ", ".join(
            f"{c['feature']} PSI {_fmt(c['psi'], '.2f')} (p {_fmt(c['ks_pvalue'], '.2g')})"
            + (" ⚠" if c["flagged"] else "")
            for c in cols[:worst]
        )
        n = max((c["n"] for c in cols), default=0)
        out.append([_window_label(w), f"{n:,}", f"{len(f['flagged'])} of {f['n_columns']}", top])
    return out


def _features(report: MonitorReport) -> str:
    rows = feature_rows(report)
    if not rows:
        return ""
    return (
        "<h2 id='feature-drift'>Input drift per feature</h2>"
        + _table(["window", "rows", "columns drifted", "worst columns"], rows, css="features")
        + "<p class='note'>Each logged input column (log_inputs=True; redacted columns are "
        "never logged) counted in the calibration rows' deciles, stored at calibration as "
        "counts (no raw rows). A column is flagged (⚠) when its PSI is at or above the "
        "threshold and its KS p-value is below alpha divided by the number of columns "
        "(Bonferroni: an unshifted window flags any column with probability at most alpha); "
        "worst column first.</p>"
    )


def _tier_health(report: MonitorReport) -> str:
    health = report.tier_health
    if not health or not health["tiers"]:
        return ""
    table = _table(
        ["tier", "audited outcomes", "errors", "weighted error", "lower", "upper", "max_error",
         "alarm"],
        [
            [
                h["tier"],
                f"{h['n_outcomes']:,}",
                f"{h['n_errors']:,}",
                _fmt(h["estimate"]),
                _fmt(h["lower"]),
                _fmt(h["upper"]),
                "-" if h["max_error"] is None else h["max_error"],
                "ALARM" if h["alarm"] else "",
            ]
            for h in health["tiers"]
        ],
        css="tier-health",
    )  # fmt: skip
    return (
        "<h2 id='tier-health'>Tier health (anytime-valid)</h2>"
        + table
        + f"<p class='note'>From {health['n_audited']:,} audited outcomes in arrival order, "
        "each weighted by 1 / its audit probability, so the estimate is of the error of "
        f"<i>all</i> rows the tier accepted. The bounds hold at every time at once (level "
        f"{1 - health['delta']:.0%}): looking after every outcome does not inflate false "
        "alarms. ALARM: the lower bound is above the tier's max_error.</p>"
    )


def _review_sla(report: MonitorReport) -> str:
    sla = report.review_sla
    if not sla:
        return ""

    def secs(v: Any) -> str:
        return "-" if v is None else f"{float(v):,.0f} s"

    rows = [
        [
            "all tiers" if tier == "*" else tier,
            secs(sla[tier].get("oldest_pending_s")),
            secs(sla[tier].get("claim_s")),
            secs(sla[tier].get("resolve_s")),
            f"{int(sla[tier].get('adjudication', 0)):,}",
        ]
        for tier in sorted(sla, key=lambda k: (k == "*", k))
    ]
    table = _table(
        ["tier", "oldest pending", "median to claim", "median to resolve", "in adjudication"],
        rows,
        css="review-sla",
    )
    return (
        "<h2 id='review-sla'>Review queue service levels</h2>"
        + table
        + "<p class='note'>Read from the review queue when the report was made: the age "
        "of the oldest pending case, and medians over each tier's last resolved cases.</p>"
    )


def _shift(report: MonitorReport) -> str:
    """Per window: why and how to adapt (``shift_advice``), then the label-free table."""
    advice = [(w, w["shift_advice"]) for w in report.windows if w.get("shift_advice")]
    out = ""
    if advice:
        out += (
            "<h2 id='shift-advice'>Shift advice</h2>"
            + _table(
                ["window", "why", "command"],
                [
                    [
                        _window_label(w),
                        "; ".join(a["why"]),
                        a["command"],
                    ]
                    for w, a in advice
                ],
                css="shift-advice",
            )
            + (
                "<p class='note'>Sets and max_error certificates assume production rows are "
                "exchangeable with the calibration rows; the command re-weights the calibration "
                "rows to the window's inputs (see the docs page on shift).</p>"
            )
        )
    rows = [
        [
            _window_label(w),
            tier,
            f"{t['n']:,}",
            _fmt(t["estimated_error"]),
            f"{_fmt(t['interval'][0])} to {_fmt(t['interval'][1])}",
            f"{t['n_labelled']:,}",
            _fmt(t["realized_error"]),
        ]
        for w in report.windows
        for tier, t in ((w.get("label_free") or {}).get("tiers") or {}).items()
    ]
    if rows:
        assumption = next(
            w["label_free"]["assumption"] for w in report.windows if w.get("label_free")
        )
        out += (
            "<h2 id='label-free'>Label-free error per tier</h2>"
            + _table(
                [
                    "window",
                    "tier",
                    "rows",
                    "estimated error",
                    "95% interval",
                    "labelled",
                    "realized error",
                ],
                rows,
                css="label-free",
            )
            + (
                "<p class='note'>Estimated from the logged probabilities (mean of 1 - top "
                "probability) next to the realized error of the rows whose outcomes arrived. "
                f"Assumption: {html.escape(assumption)}.</p>"
            )
        )
    return out


_EXTRA_CSS = """
.kpi .alert{background:#fbeeee;border-color:#d99}.ok{color:#2a7d2a}
table.alerts td:first-child{white-space:nowrap}
table.alerts td:last-child,table.features td:last-child{text-align:left}
table.shift-advice td{text-align:left}
table.shift-advice td:last-child{font-family:monospace}
"""


def render_html(report: MonitorReport, *, title: str = "safepredict monitor") -> str:
    """The report as one self-contained HTML page (cards, tables and embedded PNG plots).

    Examples
    --------
    >>> from safepredict.monitoring.monitor import MonitorReport
    >>> page = render_html(MonitorReport([], 3600.0, {}, [], [], None, []))
    >>> page.startswith("<!doctype html>")
    True
    """
    require("matplotlib", "plots", "the HTML monitor report (monitor --html)")
    guards = guard_summary(report)
    windows = _table(
        ["window", "n", "accept", "review", "abstain", "abstain (cal)", "guard flags",
         "conf. mean", "PSI", "KS D", "KS p", "alert"],
        [
            [
                _window_label(w),
                w["n"],
                _pct(w["actions"].get("accept", 0) / w["n"] if w["n"] else None),
                _pct(w["review_rate"]),
                _pct(w["abstain_rate"]),
                _pct((w["abstention"] or {}).get("baseline")),
                _pct(w["guard_flag_rate"]),
                _fmt((w.get("confidence") or {}).get("mean")),
                _fmt((w["drift"] or {}).get("psi")),
                _fmt((w["drift"] or {}).get("ks_d")),
                _fmt((w["drift"] or {}).get("ks_pvalue"), ".2g"),
                ", ".join(
                    [k for k in ("drift", "abstention") if ((w.get(k) or {}).get("flagged"))]
                    + (["features"] if (w.get("features") or {}).get("flagged") else [])
                ),
            ]
            for w in report.windows
        ],
    )  # fmt: skip
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
        f"<figure><img alt='{html.escape(t)}' src='data:image/png;base64,{data}'></figure>"
        for t, data in _figures(report)
    )
    counts = ", ".join(f"{k}: {v}" for k, v in report.events.items())
    return (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        f"<title>{html.escape(title)}</title><style>{REPORT_CSS}{_EXTRA_CSS}</style></head><body>"
        f"<h1>{html.escape(title)}</h1>"
        f"<p class='note'>safepredict {html.escape(__version__)} · "
        f"{html.escape(', '.join(report.sources))} · events: {html.escape(counts)}</p>"
        f"{_cards(report, guards)}<h2>Alerts</h2>{_alerts(report)}"
        f"<h2>Guards</h2>{_guards(guards)}"
        f"<h2>Windows</h2>{windows}{_features(report)}{outcomes}{_shift(report)}"
        f"{_tier_health(report)}{_review_sla(report)}"
        f"<h2>Plots</h2>{figures}</body></html>"
    )
