"""Cases: the JSON-safe record of one routed decision (what a reviewer sees)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray

from safepredict._jsonl import to_builtin
from safepredict.decisions import Decisions


def utc_now() -> str:
    """The current UTC time as ISO 8601 with microseconds (sorts as text).

    Examples
    --------
    >>> utc_now().endswith("+00:00")
    True
    """
    return datetime.now(UTC).isoformat(timespec="microseconds")


# ---------------------------------------------------------------------- cases
def build_cases(
    decisions: Decisions,
    rows: NDArray[np.intp],
    *,
    model_name: str | None = None,
    model_version: str | None = None,
    inputs: Sequence[Mapping[str, Any]] | None = None,
    inputs_hash: Sequence[str] | NDArray[Any] | None = None,
    top_k: int = 5,
    audit_rates: NDArray[np.float64] | None = None,
) -> list[dict[str, Any]]:
    """One JSON-safe case per routed row: what the human review queue receives.

    Keys: ``decision_id, created_at, model_name, model_version, tier, action,
    reasons, prediction, prediction_set, interval, confidence, explanation``
    (the ``top_k`` contributions, or None), ``inputs`` (only when given, i.e.
    opted in), ``inputs_hash``, ``audit`` and ``audit_probability``: for an audit
    sample, the probability it was sampled with (``audit_rates`` by tier code, as
    the pipeline's audit stage used them), so tier health can weight its outcome
    by the inverse even after the policy's rates change; None otherwise.

    Examples
    --------
    >>> d = Decisions(
    ...     predictions=np.array([1, 0], dtype=object), tier_codes=np.array([0, 1]),
    ...     tier_names=("auto", "human"), actions=np.array(["accept", "abstain"], dtype=object),
    ...     reasons=[(), ("empty_set",)], confidence=np.array([0.99, np.nan]), batch_id="b")
    >>> case = build_cases(d, np.array([1]), model_name="m")[0]
    >>> case["decision_id"], case["action"], case["reasons"], case["confidence"]
    ('b-1', 'abstain', ['empty_set'], None)
    """
    now = utc_now()
    cases: list[dict[str, Any]] = []
    for k, i in enumerate(np.asarray(rows, dtype=np.intp).tolist()):
        d = decisions[i]
        explanation = None
        if d.explanation is not None:
            explanation = d.explanation.to_dict(top_k=top_k)
        cases.append(
            {
                "decision_id": d.decision_id,
                "created_at": now,
                "model_name": model_name,
                "model_version": model_version,
                "tier": d.tier,
                "action": d.action,
                "reasons": list(d.reasons),
                "prediction": to_builtin(d.prediction),
                "prediction_set": to_builtin(d.prediction_set),
                "interval": to_builtin(d.interval),
                "confidence": to_builtin(d.confidence),
                "explanation": explanation,
                "inputs": None if inputs is None else dict(inputs[k]),
                "inputs_hash": None if inputs_hash is None else str(inputs_hash[k]),
                "audit": d.audit,
                "audit_probability": (
                    float(audit_rates[decisions.tier_codes[i]])
                    if d.audit and audit_rates is not None
                    else None
                ),
            }
        )
    return cases
