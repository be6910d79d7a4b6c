"""Agreement between reviewers: consensus, Cohen's kappa, Krippendorff's alpha, gold accuracy.

Pure functions over answers (any hashable labels); the queues feed them their
``reviews`` table (see ``queue.reviewer_stats()``).
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from itertools import combinations
from typing import Any

from safepredict.exceptions import ConfigError

__all__ = ["cohen_kappa", "krippendorff_alpha", "majority", "reviewer_stats"]


def majority(answers: Sequence[Hashable]) -> Hashable | None:
    """The answer more reviewers gave than any other, or None on a tie (adjudicate).

    Examples
    --------
    >>> majority(["cat", "dog", "cat"])
    'cat'
    >>> majority(["cat", "dog"]) is None
    True
    """
    if not answers:
        return None
    ranked = Counter(answers).most_common(2)
    if len(ranked) > 1 and ranked[0][1] == ranked[1][1]:
        return None
    return ranked[0][0]


def cohen_kappa(a: Sequence[Hashable], b: Sequence[Hashable]) -> float:
    """Cohen's kappa of two reviewers' answers on the same items.

    ``(p_o - p_e) / (1 - p_e)`` with ``p_o`` the observed agreement and ``p_e``
    the agreement expected from each reviewer's own label frequencies (Cohen,
    1960). Equals :func:`sklearn.metrics.cohen_kappa_score`; 1.0 when both
    always give the same single label (``p_e = 1``, no disagreement).

    Examples
    --------
    >>> round(cohen_kappa([0, 1, 1, 0], [0, 1, 0, 0]), 4)
    0.5
    """
    if len(a) != len(b) or not a:
        raise ConfigError(
            f"cohen_kappa needs two equally long, non-empty answer lists; got {len(a)} and "
            f"{len(b)} answers. Pass the two reviewers' answers on the items both answered."
        )
    n = len(a)
    observed = sum(x == y for x, y in zip(a, b, strict=True)) / n
    count_a, count_b = Counter(a), Counter(b)
    expected = sum(count_a[k] * count_b.get(k, 0) for k in count_a) / (n * n)
    if expected == 1.0:
        return 1.0
    return (observed - expected) / (1.0 - expected)


def krippendorff_alpha(units: Iterable[Sequence[Hashable]]) -> float | None:
    """Krippendorff's alpha for nominal answers, over units answered by any reviewers.

    Each unit is the list of answers it got (missing answers simply absent);
    units with fewer than two answers are not pairable and are skipped. With the
    coincidence matrix ``o[c, k] = sum over units of (pairs c-k in the unit) /
    (m_u - 1)``, its margins ``n_c`` and ``n = sum n_c``::

        alpha = 1 - (n - 1) * sum_{c != k} o[c, k] / sum_{c != k} n_c * n_k

    (Krippendorff 2011, "Computing Krippendorff's Alpha-Reliability", section
    C). None when fewer than two pairable answers exist; 1.0 when every answer
    is the same label (no variation to disagree on).

    Examples
    --------
    >>> krippendorff_alpha([["a", "a"], ["b", "b"], ["a", "b"]])
    0.4444444444444444
    """
    coincidence: dict[tuple[Hashable, Hashable], float] = defaultdict(float)
    for unit in units:
        m = len(unit)
        if m < 2:
            continue
        counts = Counter(unit)
        for c, nc in counts.items():
            for k, nk in counts.items():
                pairs = nc * (nk - 1) if c == k else nc * nk
                coincidence[(c, k)] += pairs / (m - 1)
    margins: dict[Hashable, float] = defaultdict(float)
    for (c, _k), value in coincidence.items():
        margins[c] += value
    n = sum(margins.values())
    if n < 2:
        return None
    disagree = sum(v for (c, k), v in coincidence.items() if c != k)
    chance = n * n - sum(v * v for v in margins.values())  # sum over c != k of n_c n_k
    if chance == 0:
        return 1.0
    return 1.0 - (n - 1) * disagree / chance


def reviewer_stats(
    reviews: Iterable[Mapping[str, Any]], gold: Mapping[str, Hashable]
) -> dict[str, Any]:
    """Per-reviewer answers and gold accuracy, per-pair kappa, overall alpha.

    Parameters
    ----------
    reviews : iterable of mapping
        Answers: ``{"decision_id", "reviewer", "outcome"}`` each (first-stage
        answers; adjudications are not votes).
    gold : mapping
        Known outcomes by ``decision_id`` (audited accepted rows whose realized
        outcome arrived from outside the queue).

    Returns
    -------
    dict
        ``{"reviewers": {name: {"answers", "gold_n", "gold_correct",
        "accuracy"}}, "pairs": [{"a", "b", "n", "kappa"}], "alpha",
        "units"}``; ``accuracy``/``kappa`` are None without data.

    Examples
    --------
    >>> rows = [{"decision_id": "d1", "reviewer": "ana", "outcome": 1},
    ...         {"decision_id": "d1", "reviewer": "bo", "outcome": 1}]
    >>> stats = reviewer_stats(rows, {"d1": 1})
    >>> stats["reviewers"]["bo"]["accuracy"], stats["pairs"][0]["kappa"]
    (1.0, 1.0)
    """
    by_case: dict[str, dict[str, Hashable]] = defaultdict(dict)
    for row in reviews:
        by_case[str(row["decision_id"])][str(row["reviewer"])] = _key(row["outcome"])
    people: dict[str, dict[str, Any]] = {}
    for case_id, answers in by_case.items():
        for name, answer in answers.items():
            entry = people.setdefault(
                name, {"answers": 0, "gold_n": 0, "gold_correct": 0, "accuracy": None}
            )
            entry["answers"] += 1
            if case_id in gold:
                entry["gold_n"] += 1
                entry["gold_correct"] += int(answer == _key(gold[case_id]))
    for entry in people.values():
        if entry["gold_n"]:
            entry["accuracy"] = entry["gold_correct"] / entry["gold_n"]
    pairs = []
    for a, b in combinations(sorted(people), 2):
        shared = [ans for ans in by_case.values() if a in ans and b in ans]
        kappa = cohen_kappa([s[a] for s in shared], [s[b] for s in shared]) if shared else None
        pairs.append({"a": a, "b": b, "n": len(shared), "kappa": kappa})
    units = [list(ans.values()) for ans in by_case.values()]
    return {
        "reviewers": dict(sorted(people.items())),
        "pairs": pairs,
        "alpha": krippendorff_alpha(units),
        "units": sum(len(u) > 1 for u in units),
    }


def _key(outcome: Any) -> Hashable:
    """Outcomes compare as their JSON text's value: lists become tuples (hashable)."""
    if isinstance(outcome, list):
        return tuple(_key(v) for v in outcome)
    return outcome  # type: ignore[no-any-return]
