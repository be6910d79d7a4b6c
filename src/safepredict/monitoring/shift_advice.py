"""The monitor's shift view: when to adapt, and label-free error estimates per window.

Two additions to the :func:`~safepredict.monitoring.monitor.monitor` report:

* ``window["shift_advice"]``: when a window's drift statistics are flagged or
  its OOD guard rate reaches ``ood_threshold``, why, and the command to run:
  ``predictor.adapt_to(X_window, shift="covariate")`` (the docs page "When
  production differs from calibration" explains the choice of shift); the
  window's ``drift`` alert then carries the same ``command`` and says so in
  its ``detail``.
* ``window["label_free"]`` when outcomes are joined (``labels=``, ``queue=``,
  ``outcomes=``): per tier, the confidence-based estimate of the error rate
  read from the logged probabilities (``mean(1 - top probability)``, with its
  Poisson-binomial interval) next to the realized error rate of the rows whose
  outcomes arrived. The logs hold no calibration rows, so the probabilities
  are used as logged, not recalibrated (for recalibrated estimates call
  :meth:`SafePredictor.estimate_performance` on the inputs, or
  :func:`label_free_report` on logs without outcomes). Assumption: no concept
  shift, and calibrated probabilities. It costs a second, light pass over the
  logs; events without a tier or usable probabilities are left out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from safepredict._jsonl import iter_jsonl
from safepredict.monitoring import columnar

__all__ = [
    "ADAPT_COMMAND",
    "attach",
    "label_free_report",
    "label_free_windows",
    "shift_advice",
]

ADAPT_COMMAND = 'adapted = predictor.adapt_to(X_window, shift="covariate")'
_DECISION = "safepredict.decision"
_Z95 = 1.959963984540054


def _start(ts: Any, window_s: float) -> str | None:
    """ISO start of the window holding timestamp ``ts`` (as the monitor labels it)."""
    if not window_s:
        return None
    epoch = 0.0
    if isinstance(ts, str):
        try:
            parsed = datetime.fromisoformat(ts)
            if parsed.tzinfo is None:
                parsed = parsed.replace(tzinfo=UTC)
            epoch = parsed.timestamp()
        except ValueError:
            epoch = 0.0
    start = (epoch // window_s) * window_s
    return datetime.fromtimestamp(start, UTC).isoformat().replace("+00:00", "Z")


def _right(prediction: Any, outcome: Any) -> bool:
    if prediction is None:
        return False
    if str(prediction) == str(outcome):
        return True
    try:
        return float(prediction) == float(outcome)
    except (TypeError, ValueError):
        return False


def label_free_windows(
    events: Iterable[Mapping[str, Any]], window_s: float, joined: Mapping[str, Any]
) -> dict[str | None, dict[str, Any]]:
    """Per window start (``None``: one window) the per-tier label-free and realized error.

    Examples
    --------
    >>> evs = [{"event": "safepredict.decision", "timestamp": "2026-01-01T00:10:00Z",
    ...         "tier": "auto", "decision_id": "a", "prediction": 1,
    ...         "probabilities": {"0": 0.1, "1": 0.9}},
    ...        {"event": "safepredict.decision", "timestamp": "2026-01-01T00:20:00Z",
    ...         "tier": "auto", "decision_id": "b", "prediction": 0,
    ...         "probabilities": {"0": 0.7, "1": 0.3}}]
    >>> out = label_free_windows(evs, 3600.0, {"a": 1, "b": 1})
    >>> t = out["2026-01-01T00:00:00Z"]["tiers"]["auto"]
    >>> round(t["estimated_error"], 3), t["realized_error"], t["n_labelled"]
    (0.2, 0.5, 2)
    """
    acc: dict[str | None, dict[str, list[float]]] = {}
    for ev in events:
        if ev.get("event") != _DECISION:
            continue
        tier, proba = ev.get("tier"), ev.get("probabilities")
        if type(tier) is not str or not isinstance(proba, Mapping) or not proba:
            continue
        try:
            top = max(float(p) for p in proba.values())
        except (TypeError, ValueError):
            continue
        if not 0.0 <= top <= 1.0:
            continue
        row = acc.setdefault(_start(ev.get("timestamp"), window_s), {}).setdefault(
            tier, [0.0, 0.0, 0.0, 0.0, 0.0]
        )  # n, sum(1 - c), sum c (1 - c), n labelled, errors
        row[0] += 1
        row[1] += 1.0 - top
        row[2] += top * (1.0 - top)
        did = ev.get("decision_id")
        if type(did) is str and did in joined:
            row[3] += 1
            row[4] += not _right(ev.get("prediction"), joined[did])
    out: dict[str | None, dict[str, Any]] = {}
    for start, tiers in acc.items():
        rows: dict[str, Any] = {}
        for tier, (n, miss, var, n_lab, errors) in sorted(tiers.items()):
            est = miss / n
            half = _Z95 * math.sqrt(var) / n
            rows[tier] = {
                "n": int(n),
                "estimated_error": est,
                "interval": [max(0.0, est - half), min(1.0, est + half)],
                "n_labelled": int(n_lab),
                "realized_error": errors / n_lab if n_lab else None,
            }
        out[start] = {
            "assumption": "no concept shift; logged probabilities taken as calibrated",
            "tiers": rows,
        }
    return out


def shift_advice(
    window: Mapping[str, Any], *, ood_threshold: float = 0.05
) -> dict[str, Any] | None:
    """Why and how to adapt to a window whose drift is flagged or whose OOD rate is high.

    Examples
    --------
    >>> w = {"start": "2026-01-01T00:00:00Z", "n": 500, "drift": {"flagged": True, "psi": 0.4},
    ...      "guard_reason_rates": {"ood": 0.01}}
    >>> advice = shift_advice(w)
    >>> advice["why"], "adapt_to" in advice["command"]
    (['drift flagged (PSI=0.400)'], True)
    >>> shift_advice({**w, "drift": None}) is None
    True
    """
    drift = window.get("drift") or {}
    ood = float((window.get("guard_reason_rates") or {}).get("ood", 0.0))
    why = []
    if drift.get("flagged"):
        why.append(f"drift flagged (PSI={float(drift.get('psi') or 0.0):.3f})")
    if ood >= ood_threshold:
        why.append(f"OOD guard rate {ood:.3f} >= {ood_threshold}")
    if not why:
        return None
    return {
        "why": why,
        "command": ADAPT_COMMAND,
        "detail": (
            "production differs from calibration: sets and max_error certificates assume "
            f"exchangeable rows; re-weight them to this window's inputs with `{ADAPT_COMMAND}` "
            '(shift="label" if only the class mix moved) and check '
            "predictor.estimate_performance(X_window)."
        ),
    }


def _events(sources: Iterable[Path]) -> Iterable[Mapping[str, Any]]:
    for path in sources:
        try:
            if columnar.is_columnar(path):
                yield from columnar.read_events(path)
                continue
            for _, ev in iter_jsonl(path, bad=[]):
                yield ev
        except (EOFError, OSError):  # the monitor reports damaged files already
            continue


def label_free_report(
    paths: Iterable[str | Path],
    *,
    window_s: float = 3600.0,
    labels: Mapping[str, Any] | None = None,
) -> dict[str | None, dict[str, Any]]:
    """:func:`label_free_windows` of JSON-lines logs (``.gz`` too), outcomes optional.

    Windows are keyed by their ISO start (``None`` with ``window_s=0``: one window).
    """
    return label_free_windows(_events(Path(p) for p in paths), window_s, labels or {})


def attach(
    windows: list[dict[str, Any]],
    sources: Iterable[Path],
    window_s: float,
    joined: Mapping[str, Any],
    alerts: list[dict[str, Any]],
    *,
    ood_threshold: float = 0.05,
) -> None:
    """The monitor's call site: ``shift_advice`` (and ``label_free`` with outcomes) per window."""
    advised: set[str] = set()
    for w in windows:
        advice = shift_advice(w, ood_threshold=ood_threshold)
        w["shift_advice"] = advice
        if advice is not None:
            advised.add(w.get("start") or "all")
    for alert in alerts:
        if alert.get("kind") == "drift" and alert.get("window") in advised:
            alert["command"] = ADAPT_COMMAND
            alert["detail"] = f"{alert['detail']}; to correct for it: {ADAPT_COMMAND}"
    if joined:
        estimates = label_free_windows(_events(sources), window_s, joined)
        for w in windows:
            w["label_free"] = estimates.get(w.get("start") if window_s else None)
