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
  shift, and calibrated probabilities. A regressor's ``max_error`` tiers (an
  error is ``|y - y_hat| > tolerance``, the tolerance read from the logged
  calibration's policy) get ``P(|y - y_hat| > tolerance)`` of a normal residual
  whose spread is read off the logged conformal interval: ``sigma = width /
  (2 z)`` with ``z`` the normal quantile of the interval's level; assumption:
  no concept shift, and that normal residual. It costs a second, light pass
  over the logs; events without a tier, usable probabilities or (regression) a
  tolerance and an interval are left out.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from statistics import NormalDist
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
_CALIBRATION = "safepredict.calibration"
_ASSUMPTIONS = {
    "classification": "no concept shift; logged probabilities taken as calibrated",
    "regression": (
        "no concept shift; residuals taken as normal, with the spread of the logged "
        "conformal interval (width / (2 z) at its level)"
    ),
}
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
    tasks: dict[str | None, set[str]] = {}
    tolerances: dict[str | None, dict[str, float]] = {}  # calibration_id -> tier -> tolerance
    latest: dict[str, float] = {}
    for ev in events:
        kind = ev.get("event")
        cid = ev.get("calibration_id")
        cid = cid if type(cid) is str else None  # a malformed id: the latest calibration
        if kind == _CALIBRATION:
            latest = tolerances[cid] = _tolerances(ev)
            continue
        tier = ev.get("tier")
        if kind != _DECISION or type(tier) is not str:
            continue
        proba, prediction = ev.get("probabilities"), ev.get("prediction")
        tolerance: float | None = None
        if isinstance(proba, Mapping) and proba:
            miss, task = _top_miss(proba), "classification"
        else:
            tolerance = tolerances.get(cid, latest).get(tier)
            miss, task = _exceed(ev.get("conformal"), tolerance), "regression"
        if miss is None:
            continue
        start = _start(ev.get("timestamp"), window_s)
        tasks.setdefault(start, set()).add(task)
        row = acc.setdefault(start, {}).setdefault(
            tier, [0.0, 0.0, 0.0, 0.0, 0.0]
        )  # n, sum(1 - c), sum c (1 - c), n labelled, errors
        row[0] += 1
        row[1] += miss
        row[2] += miss * (1.0 - miss)
        did = ev.get("decision_id")
        if type(did) is str and did in joined:
            row[3] += 1
            row[4] += (
                not _right(prediction, joined[did])
                if tolerance is None
                else _beyond(prediction, joined[did], tolerance)
            )
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
            "assumption": "; ".join(_ASSUMPTIONS[t] for t in sorted(tasks[start])),
            "tiers": rows,
        }
    return out


def _tolerances(calibration: Mapping[str, Any]) -> dict[str, float]:
    """Tier -> ``tolerance`` of a calibration event's regression ``max_error`` tiers."""
    policy = calibration.get("policy")
    tiers = policy.get("tiers") if isinstance(policy, Mapping) else None
    out: dict[str, float] = {}
    for t in tiers if isinstance(tiers, list) else ():
        if isinstance(t, Mapping) and type(t.get("name")) is str and _finite(t.get("tolerance")):
            out[t["name"]] = float(t["tolerance"])
    return out


def _finite(v: Any) -> bool:
    return type(v) in (int, float) and math.isfinite(v)


def _top_miss(proba: Mapping[str, Any]) -> float | None:
    """``1 -`` the top logged probability, or ``None`` when it is not one."""
    try:
        top = max(float(p) for p in proba.values())
    except (TypeError, ValueError):
        return None
    return 1.0 - top if 0.0 <= top <= 1.0 else None


def _exceed(conformal: Any, tolerance: float | None) -> float | None:
    """``P(|residual| > tolerance)`` of a normal residual with the logged interval's spread."""
    if tolerance is None or not isinstance(conformal, Mapping):
        return None
    iv: Any = conformal.get("interval")
    level: Any = conformal.get("confidence_level")
    if not (isinstance(iv, list) and len(iv) == 2 and _finite(iv[0]) and _finite(iv[1])):
        return None
    if not (_finite(level) and 0.0 < level < 1.0) or not iv[1] > iv[0]:
        return None
    sigma = (iv[1] - iv[0]) / (2.0 * NormalDist().inv_cdf(0.5 + level / 2.0))
    return math.erfc(tolerance / (sigma * math.sqrt(2.0)))


def _beyond(prediction: Any, outcome: Any, tolerance: float) -> bool:
    """A regression error: ``|outcome - prediction| > tolerance`` (non-numbers count as errors)."""
    try:
        return abs(float(outcome) - float(prediction)) > tolerance
    except (TypeError, ValueError):
        return True


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
