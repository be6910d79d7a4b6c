"""The decide pipeline (layer 3): the stages composed, and the scoring glue.

``decide`` is a pipeline of stage functions over arrays (DESIGN.md "Layers")::

    inputs.prepare -> guards.check -> model.run_model -> score (conformal) ->
    tiers.assign_tiers -> merge -> post (explain, audit, route, emit)

The stage modules are pure and never import one another; this module is the one
place that composes them, and the one place (with the facade that calls it) that
writes: routed cases and events. The :class:`~safepredict.Decisions` of a batch
is built once, after explanations and audit samples are known; routing returns
the route status of each row, recorded in a copy made with
:func:`dataclasses.replace`; no stage writes into a built ``Decisions``.

Three different numbers were once all called "scores"; here each has one name:
*conformity scores* live in :mod:`safepredict.conformal`; **ranking scores**
(:func:`ranking_scores`) are what a ``max_error`` tier thresholds (higher means
more confident; ``TierInputs.scores``); evaluation scores belong to
:mod:`safepredict.evaluation`.

Examples
--------
>>> from sklearn.datasets import load_iris
>>> from sklearn.linear_model import LogisticRegression
>>> from safepredict import SafePredictor
>>> X, y = load_iris(return_X_y=True)
>>> model = LogisticRegression(max_iter=500).fit(X[::3], y[::3])
>>> sp = SafePredictor(model, log="off").calibrate(X[1::3], y[1::3])
>>> d = decide(sp._stages(), sp._writers(), X[:4])
>>> d.actions.tolist() == sp.decide(X[:4]).actions.tolist()
True
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from safepredict._frames import input_rows, is_frame, resolve_redact, take_rows
from safepredict._hashing import row_hashes, unit_interval
from safepredict._ids import new_batch_id
from safepredict.config import TierPolicy
from safepredict.conformal import ClassificationConformal, RegressionConformal
from safepredict.decisions import Decisions, Explanation
from safepredict.exceptions import ConfigError
from safepredict.inputs import prepare
from safepredict.merge import block_ranks, merge_actions, merge_reasons
from safepredict.model import ModelOutput, run_model
from safepredict.review import build_cases
from safepredict.review.outcomes import outcome_space
from safepredict.stages import Scored, Stages, Writers
from safepredict.tiers import TierInputs, assign_tiers

__all__ = [
    "Scored",
    "Stages",
    "Writers",
    "audit_rows",
    "decide",
    "emit",
    "explain_rows",
    "ranking_scores",
    "route_rows",
    "score",
]

#: An interval whose width is at most this many float spacings of its bounds has
#: been collapsed by rounding (e.g. a prediction of 1e308): its output is invalid.
COLLAPSE_ULPS = 64

#: Batches of at most this many rows check their intervals in plain Python.
SMALL_BATCH = 8


# ------------------------------------------------------------------ scoring
def ranking_scores(
    task: str,
    *,
    proba: NDArray[np.float64] | None = None,
    confidence: NDArray[np.float64] | None = None,
    width: NDArray[np.float64] | None = None,
) -> dict[str, NDArray[np.float64]]:
    """The ranking scores a ``max_error`` tier may threshold (higher = surer).

    Classification: ``conformal`` (the confidence), ``top_prob`` and ``margin``
    (top minus second probability); regression: ``conformal`` = minus the
    interval width.

    Examples
    --------
    >>> r = ranking_scores("classification", proba=np.array([[0.7, 0.2, 0.1]]),
    ...                    confidence=np.array([0.95]))
    >>> sorted(r), round(float(r["margin"][0]), 6)
    (['conformal', 'margin', 'top_prob'], 0.5)
    """
    if task != "classification":
        assert width is not None
        return {"conformal": -np.asarray(width, dtype=np.float64)}
    assert proba is not None
    assert confidence is not None
    if proba.shape[1] >= 2:
        top2 = np.partition(proba, -2, axis=1)[:, -2:]
        top, second = top2[:, 1], top2[:, 0]
    else:
        top = proba[:, 0] if proba.shape[1] else np.zeros(len(proba))
        second = np.zeros_like(top)
    return {"conformal": confidence, "top_prob": top, "margin": top - second}


def tier_groups(
    columns: Sequence[str], X_model: Any, feature_names: Sequence[str]
) -> dict[str, NDArray[Any]]:
    """Each row's value of every ``group_by`` column (the tiers' ``TierInputs.groups``).

    The one place the tiers read raw input columns: ``group_by`` names an input
    feature (a DataFrame column, or a feature name such as ``x3`` for arrays).

    Examples
    --------
    >>> tier_groups(["x1"], np.array([[0.0, 7.0], [1.0, 8.0]]), ["x0", "x1"])["x1"].tolist()
    [7.0, 8.0]
    """
    names = list(feature_names)
    out: dict[str, NDArray[Any]] = {}
    for column in columns:
        if column not in names:
            raise ConfigError(
                f"group_by = {column!r} is not an input column; the inputs have "
                f"{names[:10]}{' ...' if len(names) > 10 else ''}. Name one of them."
            )
        if is_frame(X_model) and column in X_model.columns:
            out[column] = X_model[column].to_numpy()
        else:
            out[column] = np.asarray(X_model)[:, names.index(column)]
    return out


def score(
    task: str,
    conformal: ClassificationConformal | RegressionConformal,
    X_model: Any,
    values: NDArray[np.float64],
    failed: NDArray[np.bool_],
    *,
    needs_ranking: bool = True,
    any_failed: bool | None = None,
    groups: Mapping[str, NDArray[Any]] | None = None,
) -> Scored:
    """Conformal sets / intervals and the tier inputs: the one rule of decide and calibrate.

    Failed rows get an empty set / ``nan`` interval, ``nan`` confidence and
    ``nan`` ranking scores. ``groups`` are the rows' ``group_by`` column values
    (:func:`tier_groups`).
    """
    groups = {} if groups is None else groups
    bind = getattr(conformal, "bind_rows", None)  # shift-weighted state: the rows' weights
    if bind is not None:
        conformal = bind(X_model)
    n = len(values)
    none = np.zeros(n, dtype=bool)
    if any_failed is None:
        any_failed = bool(failed.any())
    if task == "classification":
        assert isinstance(conformal, ClassificationConformal)
        safe = np.where(failed[:, None], 0.0, values) if any_failed else values
        predicted_class = safe.argmax(axis=1)
        set_mask, confidence, credibility = conformal.set_confidence_credibility(
            safe, predicted_class, groups=groups
        )
        notes = conformal.stratum_reasons(groups, n) if conformal.conditional else {}
        if any_failed:
            set_mask[failed] = False
            confidence[failed] = np.nan
            credibility[failed] = np.nan
        ranking = ranking_scores(task, proba=safe, confidence=confidence) if needs_ranking else {}
        if any_failed:
            ranking = {k: np.where(failed, np.nan, v) for k, v in ranking.items()}
        inputs = TierInputs(
            "classification",
            confidence,
            set_size=set_mask.sum(axis=1),
            scores=ranking,
            predicted_class=predicted_class,
            credibility=credibility,
            groups=groups,
        )
        return Scored(inputs, set_mask, None, none, none, notes=notes)
    assert isinstance(conformal, RegressionConformal)
    y_pred = values.reshape(-1)
    if n <= SMALL_BATCH and not any_failed and conformal.method == "absolute":
        bounds = conformal.absolute_interval_rows(y_pred.tolist())
        positive = float(conformal.quantile) > 0
        if not any(_collapsed_row(lo, hi, positive) for lo, hi in bounds):  # the common case
            intervals = np.array(bounds, dtype=np.float64).reshape(n, 2)
            widths = np.array([hi - lo for lo, hi in bounds], dtype=np.float64)
            return _regression_scored(intervals, widths, none, none, False, needs_ranking, groups)
    intervals, raised = _intervals(conformal, X_model, y_pred)
    with np.errstate(over="ignore", invalid="ignore"):  # a width past 1.8e308 is inf
        widths = intervals[:, 1] - intervals[:, 0]
    collapsed = _collapsed(intervals, conformal, widths)
    aux_failed = bool(raised.any())
    if any_failed or aux_failed or collapsed.any():  # else nothing to mask (the common case)
        collapsed &= ~failed & ~raised
        bad = failed | raised | collapsed
        if bad.any():
            intervals[bad] = np.nan
            widths[bad] = np.nan
        aux_failed = aux_failed or bool(collapsed.any())
    return _regression_scored(
        intervals, widths, raised, collapsed, aux_failed, needs_ranking, groups
    )


def _regression_scored(
    intervals: NDArray[np.float64],
    widths: NDArray[np.float64],
    raised: NDArray[np.bool_],
    collapsed: NDArray[np.bool_],
    aux_failed: bool,
    needs_ranking: bool,
    groups: Mapping[str, NDArray[Any]],
) -> Scored:
    """The regression :class:`Scored` of intervals whose failed rows are ``nan`` already."""
    ranking = ranking_scores("regression", width=widths) if needs_ranking else {}
    inputs = TierInputs(
        "regression", np.full(len(widths), np.nan), width=widths, scores=ranking, groups=groups
    )
    return Scored(inputs, None, intervals, raised, collapsed, aux_failed)


def _intervals(
    conformal: RegressionConformal, X_model: Any, y_pred: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """Conformal intervals, and the rows where an auxiliary model (CQR, residual) raised."""
    raised = np.zeros(len(y_pred), dtype=bool)
    if conformal.method == "absolute":
        if len(y_pred) <= SMALL_BATCH:  # plain Python floats: no error-state context needed
            rows = conformal.absolute_interval_rows(y_pred.tolist())
            return np.array(rows, dtype=np.float64).reshape(len(rows), 2), raised
        with np.errstate(over="ignore", invalid="ignore"):
            return conformal.interval(X_model, y_pred), raised
    try:
        with np.errstate(over="ignore", invalid="ignore"):
            return conformal.interval(X_model, y_pred), raised
    except Exception:  # an auxiliary model failing fails closed per row, never the batch
        bounds = np.full((len(y_pred), 2), np.nan)
        for i in range(len(y_pred)):
            try:
                with np.errstate(over="ignore", invalid="ignore"):
                    bounds[i] = conformal.interval(
                        take_rows(X_model, slice(i, i + 1)), y_pred[i : i + 1]
                    )[0]
            except Exception:  # this row fails closed as model_error
                raised[i] = True
        return bounds, raised


def _collapsed(
    intervals: NDArray[np.float64],
    conformal: RegressionConformal,
    widths: NDArray[np.float64] | None = None,
) -> NDArray[np.bool_]:
    """Rows whose interval is not finite or that float rounding collapsed.

    A width of at most :data:`COLLAPSE_ULPS` spacings of the larger bound is
    rounding, not information, unless the calibration quantile itself is 0 (a
    model exact on every calibration row legitimately gives points). ``widths``:
    ``hi - lo`` when the caller has it.
    """
    positive = float(conformal.quantile) > 0
    if len(intervals) <= SMALL_BATCH:  # plain Python floats: numpy's per-call cost dominates
        rows = [_collapsed_row(lo, hi, positive) for lo, hi in intervals.tolist()]
        return np.array(rows, dtype=bool).reshape(len(intervals))
    lo, hi = intervals[:, 0], intervals[:, 1]
    with np.errstate(invalid="ignore", over="ignore"):
        if len(lo) and positive:
            # Fast exact path: spacing() grows with the magnitude, so when the
            # narrowest interval is wider than COLLAPSE_ULPS spacings of the largest
            # bound (and every bound is finite) no row is collapsed.
            # max |bound| without an abs() copy; numpy's max and min are both nan when
            # any bound is nan, so a nan never hides behind the other extreme
            widest = max(float(intervals.max()), -float(intervals.min()))
            narrowest = float((hi - lo if widths is None else widths).min())
            if math.isfinite(widest) and narrowest > COLLAPSE_ULPS * math.ulp(widest):
                return np.zeros(len(lo), dtype=bool)
        finite = np.isfinite(lo) & np.isfinite(hi)
        if not positive:
            return np.asarray(~finite, dtype=bool)
        magnitude = np.maximum(np.abs(lo), np.abs(hi))
        thin = (hi - lo) <= COLLAPSE_ULPS * np.spacing(np.where(finite, magnitude, 0.0))
    return np.asarray(~finite | thin, dtype=bool)


def _collapsed_row(lo: float, hi: float, positive: bool) -> bool:
    """:func:`_collapsed` of one interval (``math.ulp`` is ``np.spacing`` of a finite ``>= 0``)."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return True
    return positive and hi - lo <= COLLAPSE_ULPS * math.ulp(max(abs(lo), abs(hi)))


# ------------------------------------------------------------------ decide
def decide(
    stages: Stages,
    writers: Writers,
    X: Any,
    *,
    request_id: str | None = None,
) -> Decisions:
    """Run the stages on one batch: the body of :meth:`SafePredictor.decide`."""
    t0 = time.perf_counter()
    X_model = prepare(X, stages.schema)
    n = len(X_model)
    policy = stages.policy
    latency: dict[str, float] = {}

    t = time.perf_counter()
    guard_reasons: Mapping[int, tuple[str, ...]] = {}
    guard_rank, ood, skip = None, None, None
    if stages.guards is not None:
        checked = stages.guards.check(X_model)
        guard_reasons, ood = checked.reasons, checked.ood
        if guard_reasons:
            guard_rank, skip = checked.rank, checked.skip
    t_model = time.perf_counter()
    latency["guard"] = t_model - t

    n_classes = None if stages.classes is None else len(stages.classes)
    out = run_model(stages.model, stages.task, X_model, n_classes=n_classes, skip=skip)
    t = time.perf_counter()
    latency["model"] = t - t_model

    failed, any_failed = out.failed, out.any_failed
    scored = score(
        stages.task,
        stages.conformal,
        X_model,
        out.values,
        failed,
        needs_ranking=stages.needs_ranking,
        any_failed=any_failed,
        groups=(
            tier_groups(stages.group_columns, X_model, stages.schema.feature_names)
            if stages.group_columns
            else None
        ),
    )
    raised, invalid = out.raised, out.invalid
    if scored.any_failed:  # an auxiliary model raised / an interval collapsed
        raised, invalid = raised | scored.raised, invalid | scored.collapsed
        failed, any_failed = failed | raised | invalid, True
    predictions, probabilities = _predictions(stages, out, scored, failed, any_failed)
    latency["conformal"] = time.perf_counter() - t

    tier_codes, tier_reasons = assign_tiers(policy, scored.inputs, stages.tier_calibration)
    if scored.notes:  # conditional conformal sets: small / unseen strata (tiers2)
        tier_reasons = {
            row: (*scored.notes.get(row, ()), *tier_reasons.get(row, ()))
            for row in {*scored.notes, *tier_reasons}
        }
    block = guard_rank
    if any_failed:
        no_block = np.zeros(n, dtype=np.intp)
        block = block_ranks(no_block if guard_rank is None else guard_rank, raised | invalid)
    codes, actions = merge_actions(tier_codes, stages.tier_actions, block)
    reasons = merge_reasons(
        n,
        tier_reasons,
        guard_reasons,
        out.skipped,
        raised,
        invalid,
        any_failed=any_failed,
        timed_out=out.timed_out,
    )
    guard_flagged = np.zeros(n, dtype=bool)
    if guard_reasons:
        guard_flagged[list(guard_reasons)] = True

    t = time.perf_counter()
    explanations = explain_rows(stages, X_model, actions, codes, failed, probabilities, reasons)
    latency["explain"] = time.perf_counter() - t
    if stages.audits:
        audit, inputs_hash = audit_rows(policy, X_model, actions, codes, stages.audit_rates)
    else:
        audit, inputs_hash = np.zeros(n, dtype=bool), None
    decisions = Decisions(
        predictions=predictions,
        tier_codes=codes,
        tier_names=stages.tier_names,
        actions=actions,
        reasons=reasons,
        confidence=scored.inputs.confidence,
        batch_id=new_batch_id(),
        set_mask=scored.set_mask,
        classes=stages.classes,
        intervals=scored.intervals,
        probabilities=probabilities,
        explanations=explanations,
        audit=audit,
        guard_flagged=guard_flagged,
        ood_scores=ood,
        inputs_hash=inputs_hash,
        latency_s=latency,
    )
    route = route_rows(writers, stages, X_model, decisions)
    if route is not None:  # before the events, so they carry the route status
        decisions = dataclasses.replace(decisions, route=route)
    latency["total"] = time.perf_counter() - t0
    emit(writers, X_model, decisions, request_id=request_id)
    return decisions


def _predictions(
    stages: Stages, out: ModelOutput, scored: Scored, failed: NDArray[np.bool_], any_failed: bool
) -> tuple[NDArray[Any], NDArray[np.float64] | None]:
    """Point predictions (``None`` where failed) and the probabilities (classification)."""
    if scored.set_mask is not None:
        assert stages.class_labels is not None
        assert scored.inputs.predicted_class is not None
        predictions = stages.class_labels[scored.inputs.predicted_class]
        probabilities: NDArray[np.float64] | None = out.values
    else:
        predictions = out.values.reshape(-1).astype(object)
        probabilities = None
    if any_failed:
        predictions[failed] = None
        if probabilities is not None:
            probabilities = np.where(failed[:, None], np.nan, probabilities)
    return predictions, probabilities


# ------------------------------------------------------------------ post stages
def explain_rows(
    stages: Stages,
    X_model: Any,
    actions: NDArray[Any],
    codes: NDArray[np.intp],
    failed: NDArray[np.bool_],
    probabilities: NDArray[np.float64] | None,
    reasons: list[tuple[str, ...]],
) -> list[Explanation | None] | None:
    """Explanations of the rows in the policy's explain tiers (``None``: no explainer).

    Default (policy ``explain`` unset): every row that is not accepted. Rows the
    model could not score cost nothing; rows whose explanation would exceed the
    budget get ``explanation_skipped:budget`` appended to ``reasons`` (the list
    being assembled for the batch, before ``Decisions`` is built).
    """
    explainer = stages.explainer
    n = len(actions)
    if explainer is None or n == 0:
        return None
    policy = stages.policy
    if policy.explain is None:
        wanted = actions != "accept"
    else:
        names = np.array(stages.tier_names, dtype=object)[codes]
        wanted = np.isin(names, np.array(policy.explain, dtype=object))
    rows = np.flatnonzero(wanted & ~failed)
    explanations: list[Explanation | None] = [None] * n
    if len(rows) == 0:
        return explanations
    class_index = None
    if probabilities is not None:
        class_index = np.argmax(probabilities[rows], axis=1)
    explained, skipped = explainer.explain(take_rows(X_model, rows), class_index)
    for row, explanation, why in zip(rows.tolist(), explained, skipped, strict=True):
        explanations[row] = explanation
        if why is not None:
            reasons[row] = (*reasons[row], why)
    return explanations


def audit_rows(
    policy: TierPolicy,
    X_model: Any,
    actions: NDArray[Any],
    codes: NDArray[np.intp],
    rates: NDArray[np.float64],
) -> tuple[NDArray[np.bool_], NDArray[Any] | None]:
    """A deterministic sample of accepted rows for audit, and the row hashes it used.

    A row of tier code ``c`` is audited with probability ``rates[c]`` (the tier's
    ``audit_rate``, or the policy's when the tier sets none); tier health reads
    the same rates back as the rows' audit probabilities.
    """
    n = len(actions)
    audit = np.zeros(n, dtype=bool)
    if n == 0 or not (rates > 0).any():
        return audit, None
    accepted = np.flatnonzero(actions == "accept")
    if len(accepted) == 0:
        return audit, None
    hashes = row_hashes(X_model)
    u = unit_interval(hashes[accepted], policy.audit_seed)
    audit[accepted[u < rates[codes[accepted]]]] = True
    return audit, hashes


def route_rows(
    writers: Writers, stages: Stages, X_model: Any, decisions: Decisions
) -> list[Mapping[str, Any] | None] | None:
    """Hand review/abstain rows and audit samples to the router, as one batch.

    Returns the route status of every row (``None`` for rows not routed), or
    ``None`` without a router. A sink failure never fails the decision.
    """
    router = writers.router
    if router is None:
        return None
    route: list[Mapping[str, Any] | None] = [None] * len(decisions)
    rows = np.flatnonzero((decisions.actions != "accept") | decisions.audit)
    if len(rows) == 0:
        return route
    try:
        names = list(stages.schema.feature_names)
        if decisions.inputs_hash is not None:
            hashes = decisions.inputs_hash[rows]
        else:
            hashes = row_hashes(take_rows(X_model, rows))
        inputs = (
            input_rows(X_model, rows, names, resolve_redact(writers.redact, names))
            if writers.log_inputs
            else None
        )
        cases = build_cases(
            decisions,
            rows,
            model_name=writers.model_name,
            model_version=writers.model_version,
            inputs=inputs,
            inputs_hash=hashes,
            audit_rates=stages.audit_rates,
        )
        # what a valid outcome is, and the tiers' rules, for the queue's reviewers
        router.set_context(
            outcome_space(stages.task, stages.classes),
            stages.policy.to_dict()["tiers"],
            stages.policy.review_priority,
        )
        statuses = router.route(cases)
    except Exception as exc:  # building the cases must not fail the decision either
        statuses = router.report_failure(decisions.audit[rows].tolist(), exc)
    for i, status in zip(rows.tolist(), statuses, strict=True):
        route[i] = status
    return route


def emit(
    writers: Writers, X_model: Any, decisions: Decisions, *, request_id: str | None = None
) -> None:
    """Log one event per decision (or one per batch); never raises."""
    if writers.log == "off":
        return
    emitter = writers.emitter()
    try:
        emitter.decisions(
            decisions,
            writers.context(),
            X_model=X_model,
            request_id=request_id,
            mode=writers.log,
        )
    except Exception:  # a failing logger never fails a decision; count the batch
        emitter._count(0, 1 if writers.log == "summary" else len(decisions))
