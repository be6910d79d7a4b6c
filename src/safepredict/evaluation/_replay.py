"""Replay: the benchmark from a decision log joined with outcomes."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from safepredict._jsonl import iter_jsonl
from safepredict._validation import check_fraction
from safepredict.config import TierPolicy
from safepredict.evaluation._costs import CostModel
from safepredict.evaluation._data import ScoredData, probability_scores
from safepredict.evaluation._evaluate import Evaluation, evaluate
from safepredict.evaluation._policies import PolicyComparison, logged_result
from safepredict.exceptions import InputSchemaError
from safepredict.merge import MODEL_FAILURES


# --------------------------------------------------------------------------- replay
def _canon(value: Any) -> str:
    """A label's canonical text, so ``1``, ``1.0`` and ``"1"`` compare equal."""
    if value is None:
        return "\x00none"
    if isinstance(value, bool):
        return str(value).lower()
    try:
        f = float(value)
    except (TypeError, ValueError):
        return str(value).strip()
    return repr(f) if math.isfinite(f) else str(value)


def _read_jsonl(path: str | Path) -> list[tuple[int, dict[str, Any]]]:
    bad: list[str] = []
    records = list(iter_jsonl(path, bad=bad))
    if bad:
        shown = "; ".join(bad[:10]) + (f"; ... ({len(bad)} in all)" if len(bad) > 10 else "")
        raise InputSchemaError(
            f"{path}: {len(bad)} line(s) are not JSON objects ({shown}). Each line must be one "
            "JSON object.",
            problems=bad,
        )
    return records


def _read_outcomes(outcomes: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(outcomes, Mapping):
        return {str(k): v for k, v in outcomes.items()}
    path = Path(outcomes)
    if path.suffix in (".jsonl", ".json", ".ndjson"):
        rows = [obj for _, obj in _read_jsonl(path)]
    else:
        import csv

        with path.open(encoding="utf-8", newline="") as fh:
            rows = list(csv.DictReader(fh))
    out: dict[str, Any] = {}
    for i, row in enumerate(rows, start=1):
        if "decision_id" not in row or "y_true" not in row:
            raise InputSchemaError(
                f"{path}: record {i} lacks 'decision_id' or 'y_true' (has {sorted(row)}); each "
                "outcome needs both.",
                missing=[k for k in ("decision_id", "y_true") if k not in row],
            )
        out[str(row["decision_id"])] = row["y_true"]
    return out


def load_decision_log(
    log: str | Path | Iterable[Mapping[str, Any]],
    outcomes: str | Path | Mapping[str, Any],
    *,
    tolerance: float | None = None,
) -> ScoredData:
    """Join ``safepredict.decision`` events with their outcomes.

    Parameters
    ----------
    log : path or iterable of dict
        A JSONL file with one decision event (schema v1) per line, or the
        events themselves. Other events (e.g. calibration) are skipped.
    outcomes : path or dict
        CSV or JSONL with ``decision_id`` and ``y_true`` columns, or a dict
        ``decision_id -> y_true``. Decisions without an outcome are left out.
    tolerance : float, optional
        Regression: an error is ``|y - y_hat| > tolerance``.

    Returns
    -------
    ScoredData
        With the logged tiers and actions, and the scores the log carries
        (conformal confidence, and from ``probabilities``: top-class
        probability, margin, entropy).

    Raises
    ------
    InputSchemaError
        If a line is not JSON, an event lacks a required field, or no decision
        has an outcome.
    """
    records = (
        _read_jsonl(log)
        if isinstance(log, str | Path)
        else [(i, dict(e)) for i, e in enumerate(log, start=1)]
    )
    truth = _read_outcomes(outcomes)
    events = []
    for lineno, ev in records:
        name = ev.get("event", "safepredict.decision")
        if name != "safepredict.decision":
            continue
        missing = [k for k in ("decision_id", "prediction", "tier", "action") if k not in ev]
        if missing:
            raise InputSchemaError(
                f"decision log line {lineno}: the event lacks {missing}; expected a "
                "safepredict.decision event (schema v1).",
                missing=missing,
            )
        if str(ev["decision_id"]) in truth:
            events.append(ev)
    if not events:
        raise InputSchemaError(
            f"none of the {len(records)} logged decisions has an outcome; the outcomes must be "
            "keyed by the events' decision_id.",
            problems=["no matching decision_id"],
        )
    n = len(events)
    y_true = [truth[str(ev["decision_id"])] for ev in events]
    ids = np.array([str(ev["decision_id"]) for ev in events], dtype=object)
    tiers = np.array([str(ev["tier"]) for ev in events], dtype=object)
    actions = np.array([str(ev["action"]) for ev in events], dtype=object)
    conformal = [ev.get("conformal") or {} for ev in events]
    level = next((c.get("confidence_level") for c in conformal if c.get("confidence_level")), None)
    blocked = np.array(
        [
            a if (a != "accept" and (ev.get("guard") or {}).get("status") == "flag") else ""
            for ev, a in zip(events, actions, strict=True)
        ],
        dtype=object,
    )
    model_error = np.array(
        [bool(MODEL_FAILURES & set(ev.get("reasons") or [])) for ev in events], dtype=bool
    )
    blocked[model_error & (blocked == "")] = "abstain"
    common: dict[str, Any] = {
        "blocked_action": blocked,
        "logged_tier": tiers,
        "logged_action": actions,
        "confidence_level": None if level is None else float(level),
        "ids": ids,
    }
    probas = [ev.get("probabilities") for ev in events]
    if any(p for p in probas):
        classes = list(next(p for p in probas if p))
        index = {c: i for i, c in enumerate(classes)}
        proba = np.full((n, len(classes)), np.nan)
        for i, p in enumerate(probas):
            for c, v in (p or {}).items():
                if c in index and v is not None:
                    proba[i, index[c]] = float(v)
        failed = ~np.isfinite(proba).all(axis=1) | model_error
        canon_classes = {_canon(c): i for i, c in enumerate(classes)}
        pred = [_canon(ev["prediction"]) for ev in events]
        canon_y = [_canon(v) for v in y_true]
        errors = np.array([p != t for p, t in zip(pred, canon_y, strict=True)]) | failed
        scores = {
            "conformal": np.array(
                [
                    np.nan if ev.get("confidence") is None else float(ev["confidence"])
                    for ev in events
                ]
            )
        }
        scores.update(probability_scores(np.where(failed[:, None], 0.0, proba)))
        for v in scores.values():
            v[failed] = np.nan
        sets = [c.get("set") for c in conformal]
        covered = np.array(
            [
                s is not None and t in {_canon(x) for x in s}
                for s, t in zip(sets, canon_y, strict=True)
            ]
        )
        set_size = np.array(
            [c.get("set_size", len(c.get("set") or [])) if c else 0 for c in conformal],
            dtype=np.intp,
        )
        predicted_class = np.array([canon_classes.get(p, 0) for p in pred], dtype=np.intp)
        return ScoredData(
            task="classification",
            errors=np.asarray(errors, dtype=bool),
            scores=scores,
            set_size=set_size,
            covered=covered,
            predicted_class=predicted_class,
            n_classes=len(classes),
            **common,
        )
    y = np.array([float(v) for v in y_true])
    y_hat = np.array(
        [np.nan if ev["prediction"] is None else float(ev["prediction"]) for ev in events]
    )
    bounds = np.array(
        [c.get("interval") or [np.nan, np.nan] for c in conformal], dtype=np.float64
    ).reshape(n, 2)
    width = bounds[:, 1] - bounds[:, 0]
    residual = np.abs(y - y_hat)
    residual[~np.isfinite(residual)] = np.inf
    return ScoredData(
        task="regression",
        errors=None if tolerance is None else np.asarray(residual > tolerance, dtype=bool),
        scores={"interval": -width},
        covered=np.asarray((bounds[:, 0] <= y) & (y <= bounds[:, 1]), dtype=bool),
        width=width,
        abs_residual=residual,
        **common,
    )


def replay(
    log: str | Path | Iterable[Mapping[str, Any]],
    outcomes: str | Path | Mapping[str, Any],
    *,
    policies: Mapping[str, TierPolicy] | Sequence[TierPolicy] | None = None,
    cost: CostModel | None = None,
    calibration_fraction: float = 0.5,
    seed: int = 0,
    tolerance: float | None = None,
    **kwargs: Any,
) -> Evaluation:
    """What-if analysis on production traffic: the benchmark from a decision log.

    The logged decisions (joined with their outcomes) are split at random: a
    ``calibration_fraction`` share certifies the ``max_error`` tiers and chooses
    thresholds, the rest reports. The tiers and actions the rows actually got are
    listed as the policy ``"as logged"`` next to ``policies``.

    Parameters
    ----------
    log : path or iterable of dict
        Decision events (JSONL, schema v1).
    outcomes : path or dict
        ``decision_id -> y_true`` (CSV / JSONL / dict).
    policies : dict of str to TierPolicy, or sequence, optional
        The policies to try on the logged traffic.
    cost : CostModel, optional
        Prices errors and human work.
    calibration_fraction : float, default=0.5
        Share of the logged rows used for calibration; 0 uses the same rows for
        both (optimistic, marked ``in_sample``).
    seed : int, default=0
        Seed of the split.
    tolerance : float, optional
        Regression: an error is ``|y - y_hat| > tolerance``.
    **kwargs
        Passed to :func:`evaluate`.

    Returns
    -------
    Evaluation
    """
    data = load_decision_log(log, outcomes, tolerance=tolerance)
    check_fraction(calibration_fraction, "calibration_fraction", low_open=False)
    n = len(data)
    if calibration_fraction > 0:
        perm = np.random.default_rng(seed).permutation(n)
        n_cal = round(n * calibration_fraction)
        cal, test = data.take(np.sort(perm[:n_cal])), data.take(np.sort(perm[n_cal:]))
    else:
        cal, test = None, data
    ev = evaluate(test, calibration=cal, policies=policies, cost=cost, **kwargs)
    logged = logged_result(test, cost)
    if logged is not None:
        ev.policies = PolicyComparison((logged, *ev.policies.results))
    ev.meta["source"] = "decision log"
    return ev
