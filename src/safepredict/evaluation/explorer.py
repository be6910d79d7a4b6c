"""The policy explorer: one self-contained HTML page to try tier thresholds and costs (layer 4).

The page embeds the risk-coverage curve of the conformal confidence on the test
rows (thresholds with the cumulative rows and errors at or above each) and
recomputes, in the browser, what a tiered policy would do: share accepted, error
among accepted (with a Wilson 95% upper bound), reviews per day and cost per
1,000 cases. It needs no server and loads nothing from the network (inline CSS
and JavaScript); the product owner copies the resulting TOML.

Examples
--------
>>> import tempfile
>>> import numpy as np
>>> from safepredict.evaluation import ScoredData, evaluate
>>> rng = np.random.default_rng(0)
>>> s = rng.uniform(size=500)
>>> data = ScoredData.from_arrays(rng.uniform(size=500) < 0.3 * (1 - s), {"conformal": s})
>>> out = write_explorer(evaluate(data), tempfile.mkdtemp())
>>> out.name
'explorer.html'
"""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from safepredict.config import TierPolicy
from safepredict.evaluation import Evaluation
from safepredict.exceptions import ConfigError

__all__ = ["DEFAULT_TIERS", "explorer_data", "explorer_tiers", "write_explorer"]

#: Tiers the explorer starts from when no policy is given: (name, action, threshold).
DEFAULT_TIERS: tuple[tuple[str, str, float | None], ...] = (
    ("auto", "accept", 0.95),
    ("suggest", "review", 0.8),
    ("human", "abstain", None),
)

_MAX_POINTS = 5000


def explorer_tiers(policy: TierPolicy | None) -> list[tuple[str, str, float | None]]:
    """The explorer's tiers from a policy: each tier but the last as a confidence threshold.

    A tier with ``min_confidence`` starts at that value; other conditions
    (``max_set_size``, ``max_error``) start at the default of its position, since
    the explorer models every tier by a minimum confidence.

    Examples
    --------
    >>> explorer_tiers(TierPolicy.default("classification"))
    [('auto', 'accept', 0.95), ('human', 'abstain', None)]
    """
    if policy is None or len(policy.tiers) < 2:
        return list(DEFAULT_TIERS)
    out: list[tuple[str, str, float | None]] = []
    previous = 1.0
    for i, tier in enumerate(policy.tiers[:-1]):
        start = tier.min_confidence
        if start is None:
            start = DEFAULT_TIERS[min(i, len(DEFAULT_TIERS) - 2)][2] or 0.5
        start = min(float(start), previous)
        out.append((tier.name, tier.action, start))
        previous = start
    last = policy.tiers[-1]
    out.append((last.name, last.action, None))
    return out


def explorer_data(
    ev: Evaluation,
    *,
    tiers: Sequence[tuple[str, str, float | None]] = DEFAULT_TIERS,
    cost_error: float | None = None,
    cost_review: float | None = None,
    cost_abstain: float | None = None,
    daily_volume: int = 1000,
) -> dict[str, Any]:
    """The JSON the page embeds: the conformal-confidence curve, tiers, costs, volume.

    Raises
    ------
    ConfigError
        If the evaluation has no conformal-confidence curve (regression, or no
        errors defined), or the tiers are not ordered as a policy.
    """
    curve = ev.curves.get("conformal")
    if ev.task != "classification" or curve is None:
        raise ConfigError(
            "the policy explorer needs a classifier's conformal confidence curve; this "
            f"evaluation is a {ev.task} one with curves {sorted(ev.curves)}. Explore a "
            "classification benchmark."
        )
    if len(tiers) < 2 or tiers[-1][2] is not None or any(t[2] is None for t in tiers[:-1]):
        raise ConfigError(
            "tiers must be at least two (name, action, threshold) triples, every one with a "
            f"threshold but the last (the fallback, threshold None); got {list(tiers)!r}."
        )
    idx = np.arange(len(curve.thresholds))
    if len(idx) > _MAX_POINTS:  # evenly spaced in coverage, always keeping the last point
        idx = np.unique(np.r_[np.linspace(0, len(idx) - 1, _MAX_POINTS).round().astype(int)])
    cost = ev.cost
    return {
        "n": int(curve.n),
        "thresholds": [round(float(t), 6) for t in curve.thresholds[idx]],
        "n_accepted": curve.n_accepted[idx].astype(int).tolist(),
        "n_errors": curve.n_errors[idx].astype(int).tolist(),
        "n_errors_total": int(curve.n_errors[-1]) if len(curve.n_errors) else 0,
        "tiers": [
            {"name": n, "action": a, "threshold": None if t is None else float(t)}
            for n, a, t in tiers
        ],
        "costs": {
            "error": cost_error if cost_error is not None else (cost.cost_error if cost else 50.0),
            "review": cost_review
            if cost_review is not None
            else (cost.cost_review if cost else 2.0),
            "abstain": cost_abstain
            if cost_abstain is not None
            else (cost.per_row("abstain") if cost else 2.0),
        },
        "volume": int(daily_volume),
    }


def write_explorer(
    ev: Evaluation,
    out_dir: str | Path,
    *,
    policy: TierPolicy | None = None,
    title: str = "safepredict policy explorer",
    daily_volume: int = 1000,
) -> Path:
    """Write ``explorer.html`` into ``out_dir`` and return its path.

    Parameters
    ----------
    ev : Evaluation
        A classification benchmark (:func:`safepredict.evaluation.benchmark`).
    out_dir : path
        Directory to write to (created if needed).
    policy : TierPolicy, optional
        Starting tiers (see :func:`explorer_tiers`); default :data:`DEFAULT_TIERS`.
    title : str
        Page title.
    daily_volume : int, default=1000
        Cases per day the page starts with (for the review load).

    Returns
    -------
    Path
    """
    data = explorer_data(ev, tiers=explorer_tiers(policy), daily_volume=daily_volume)
    template = (
        resources.files("safepredict.evaluation")
        .joinpath("templates/explorer.html")
        .read_text(encoding="utf-8")
    )
    # "</" cannot end the JSON script block early once escaped.
    payload = json.dumps(data, allow_nan=False).replace("</", "<\\/")
    page = template.replace("__TITLE__", html.escape(title)).replace("__DATA__", payload)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "explorer.html"
    path.write_text(page, encoding="utf-8")
    return path
