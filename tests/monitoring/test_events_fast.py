"""The fast event writers write exactly the events of the reference rendering.

The reference is the per-row path every structlog logger still takes
(:func:`row_fields` merged into :func:`decision_head`, one ``dumps`` per event):
the one-row renderer (:class:`RowRenderer`) and the column-wise batch renderer
(:func:`decision_lines`) must give the same bytes for the same decisions, on real
models with the awkward cases made real (guard reasons, OOD scores with ``NaN``,
explanations, routes, unscorable rows, class labels with commas and quotes, text
UTF-8 cannot encode, regression intervals with ``NaN``, logged inputs with
redaction, structlog contextvars). Only the timestamp may differ (it is the time
of rendering), so it is normalized before the byte comparison.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import structlog
from sklearn.datasets import load_iris, make_classification
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier

import safepredict as sp
from safepredict._frames import input_rows, resolve_redact
from safepredict.monitoring._event_fields import (
    EventContext,
    decision_header,
    now_iso,
    row_fields,
)
from safepredict.monitoring._event_json import decision_head, decision_lines, dumps
from safepredict.monitoring._event_row import RowRenderer, timestamp
from safepredict.monitoring.columnar import SMALL_CALL, read_events
from safepredict.monitoring.events import EventEmitter
from safepredict.monitoring.monitor import monitor

TIMESTAMP = re.compile(rb'"timestamp":"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z"')
LONE = json.loads('"bad \\ud800 name"')  # a lone surrogate: UTF-8 cannot encode it


def normalized(data: bytes) -> bytes:
    """``data`` with every timestamp replaced by one fixed value (checked to be there)."""
    out, count = TIMESTAMP.subn(b'"timestamp":"T"', data)
    assert count == data.count(b"\n")  # one well-formed timestamp per line
    return out


def reference(
    d: sp.Decisions,
    ctx: EventContext,
    request_id: str | None,
    context_vars: dict[str, Any],
    inputs: list[Any] | None,
) -> bytes:
    """The events as the per-row reference path renders them."""
    head = decision_head(decision_header(d, ctx, request_id), context_vars)
    return b"".join(dumps({**head, **f}) + b"\n" for f in row_fields(d, ctx, inputs))


def strict_lines(data: bytes) -> list[dict[str, Any]]:
    """Parse JSON lines, refusing ``NaN`` / ``Infinity`` (not JSON) and invalid UTF-8."""

    def refuse(name: str) -> None:
        raise ValueError(f"non-JSON constant {name}")

    return [json.loads(line.decode("utf-8"), parse_constant=refuse) for line in data.splitlines()]


def awkward(d: sp.Decisions) -> sp.Decisions:
    """``d`` with guard reasons, OOD scores (one NaN), an explanation and a route."""
    n = len(d)
    d.guard_flagged[: min(3, n)] = True
    d.ood_scores = np.linspace(0.0, 1.0, n)
    d.ood_scores[n // 2] = np.nan
    d.reasons[0] = ("out_of_range:x2", "out_of_range:x3", "ood", f"note:{LONE}")
    d.explanations = [None] * n
    d.explanations[-1] = sp.Explanation("linear", ("x0", "x1"), (0.25, -1.5), 0.5)
    d.route = [None] * n
    d.route[n // 3] = {"sink": "callable", "status": "queued", "audit": False}
    return d


@pytest.fixture(scope="module")
def cases(iris_lr: Any, diabetes_rf: Any) -> list[tuple[sp.Decisions, EventContext, Any]]:
    """Real decisions of a classifier, a classifier with text labels, a regressor."""
    out = []
    p = sp.SafePredictor(iris_lr.model, log="off", model_name=LONE).calibrate(
        iris_lr.X_cal, iris_lr.y_cal
    )
    X = np.vstack([iris_lr.X_test, iris_lr.X_test + 3.0])
    X[1, 2] = np.nan  # a row the model cannot score: null probabilities and prediction
    out.append((awkward(p.decide(X)), p._event_context(), X))
    Xi, yi = load_iris(return_X_y=True)
    names = np.array(["setosa, the small one", 'versi"color', "virginica ü"])[yi]
    s = sp.SafePredictor(LogisticRegression(max_iter=1000).fit(Xi[::2], names[::2]), log="off")
    s.calibrate(Xi[1::2], names[1::2])
    out.append((s.decide(Xi[:40]), s._event_context(), Xi[:40]))
    r = sp.SafePredictor(diabetes_rf.model, log="off").calibrate(
        diabetes_rf.X_cal, diabetes_rf.y_cal
    )
    dr = r.decide(diabetes_rf.X_test)
    dr.intervals[2] = np.nan
    dr.intervals[3, 1] = np.inf
    out.append((awkward(dr), r._event_context(), diabetes_rf.X_test))
    return out


CONTEXTS = [(None, {}), ("req-7", {"tenant": "acme", "request_id": "ignored", "tier": "x"})]


@pytest.mark.parametrize(("request_id", "context_vars"), CONTEXTS)
def test_one_row_line_is_byte_identical_to_the_reference(
    cases: list[tuple[sp.Decisions, EventContext, Any]],
    request_id: str | None,
    context_vars: dict[str, Any],
) -> None:
    renderer = RowRenderer()  # one renderer across predictors: its caches must follow
    checked = 0
    for d, ctx, _ in cases:
        for i in range(len(d)):
            one = d[i : i + 1]
            got = renderer.line(one, ctx, request_id, context_vars, None)
            want = reference(one, ctx, request_id, context_vars, None)
            assert normalized(got) == normalized(want)
            checked += 1
    assert checked > 100
    # negative control: a one-field change in the decision is a different line
    one = cases[0][0][5:6]
    one.tier_codes[0] = (one.tier_codes[0] + 1) % len(one.tier_names)
    changed = renderer.line(one, cases[0][1], None, {}, None)
    assert normalized(changed) != normalized(
        reference(cases[0][0][5:6], cases[0][1], None, {}, None)
    )


@pytest.mark.parametrize(("request_id", "context_vars"), CONTEXTS)
def test_batch_lines_are_byte_identical_to_the_reference(
    cases: list[tuple[sp.Decisions, EventContext, Any]],
    request_id: str | None,
    context_vars: dict[str, Any],
) -> None:
    for d, ctx, _ in cases:
        head = decision_head(decision_header(d, ctx, request_id), context_vars)
        got = decision_lines(d, ctx, head, None)
        assert normalized(got) == normalized(reference(d, ctx, request_id, context_vars, None))
        assert len(strict_lines(got)) == len(d)
    # negative control: one changed row in the batch is seen
    d, ctx, _ = cases[1]
    head = decision_head(decision_header(d, ctx, request_id), context_vars)
    want = normalized(reference(d, ctx, request_id, context_vars, None))
    d.audit[7] = not d.audit[7]
    try:
        assert normalized(decision_lines(d, ctx, head, None)) != want
    finally:
        d.audit[7] = not d.audit[7]


def test_many_classes_and_hand_built_reason_lists_render_like_the_reference(
    tmp_path: Path,
) -> None:
    """Beyond 62 classes sets are rendered row by row; reasons may be lists, not tuples."""
    X, y = make_classification(
        n_samples=3000,
        n_features=12,
        n_informative=10,
        n_classes=70,
        n_clusters_per_class=1,
        random_state=0,
    )
    model = DecisionTreeClassifier(max_depth=10, random_state=0).fit(X[:1500], y[:1500])
    p = sp.SafePredictor(model, log="off").calibrate(X[1500:2500], y[1500:2500])
    d = p.decide(X[2500:2600])
    assert d.set_mask is not None
    assert d.set_mask.shape[1] == 70
    d.reasons = [list(r) for r in d.reasons]
    ctx = p._event_context()
    head = decision_head(decision_header(d, ctx, None), {})
    assert normalized(decision_lines(d, ctx, head, None)) == normalized(
        reference(d, ctx, None, {}, None)
    )
    sizes = [e["conformal"]["set_size"] for e in strict_lines(decision_lines(d, ctx, head, None))]
    assert sizes == d.set_mask.sum(axis=1).tolist()


def test_timestamp_has_the_format_and_time_of_now_iso() -> None:
    pattern = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")
    from datetime import datetime

    for _ in range(3):
        before, ours, after = now_iso(), timestamp(), now_iso()
        assert pattern.match(ours), ours
        parse = [datetime.fromisoformat(t.replace("Z", "+00:00")) for t in (before, ours, after)]
        # now_iso rounds to the microsecond, timestamp() truncates: at most 1 us apart
        assert (parse[0] - parse[1]).total_seconds() <= 1e-6
        assert (parse[1] - parse[2]).total_seconds() <= 1e-6


@pytest.mark.parametrize("logger", ["events.jsonl", "decisions.arrows"])
def test_redacted_inputs_never_reach_the_file_single_rows_or_batches(
    secret_split: dict[str, Any], tmp_path: Path, logger: str
) -> None:
    X, y = secret_split["X"], secret_split["y"]
    p = sp.SafePredictor(
        secret_split["model"], logger=tmp_path / logger, log_inputs=True, redact=["ssn"]
    ).calibrate(X.iloc[1::3], y.iloc[1::3])
    rows = X.iloc[2::3]
    p.decide(rows)  # a batch
    p.decide(rows.iloc[:SMALL_CALL])  # a small call
    for i in range(5):
        p.decide_one(rows.iloc[i])
    files = (
        [tmp_path / logger] if logger.endswith(".jsonl") else list((tmp_path / logger).iterdir())
    )
    raw = b"".join(f.read_bytes() for f in files)
    for value in X["ssn"]:
        assert str(int(value)).encode() not in raw
    events = [e for f in files if f.suffix == ".jsonl" for e in strict_lines(f.read_bytes())]
    events += [e for f in files if f.suffix == ".arrows" for e in read_events(f)]
    decisions = [e for e in events if e["event"] == "safepredict.decision"]
    assert len(decisions) == len(rows) + SMALL_CALL + 5
    assert all("ssn" not in e["inputs"] and len(e["inputs"]) == 4 for e in decisions)
    # negative control: without redaction the secret is in the file
    q = sp.SafePredictor(secret_split["model"], logger=tmp_path / "open.jsonl", log_inputs=True)
    q.calibrate(X.iloc[1::3], y.iloc[1::3]).decide_one(rows.iloc[0])
    assert str(int(rows["ssn"].iloc[0])).encode() in (tmp_path / "open.jsonl").read_bytes()


def test_emitter_single_rows_equal_the_reference_with_inputs_and_contextvars(
    secret_split: dict[str, Any], tmp_path: Path
) -> None:
    X, y = secret_split["X"], secret_split["y"]
    p = sp.SafePredictor(secret_split["model"], log="off").calibrate(X.iloc[1::3], y.iloc[1::3])
    ctx = p._event_context()
    emitter = EventEmitter(tmp_path / "e.jsonl", log_inputs=True, redact=["ssn"])
    hidden = resolve_redact(["ssn"], ctx.feature_names)
    want = []
    structlog.contextvars.bind_contextvars(request_id="ctx-1", tenant="acme")
    try:
        for i in range(12):
            row = X.iloc[[3 * i + 2]]
            d = p.decide(row)
            assert emitter.decisions(d, ctx, X_model=row) == 1
            inputs = input_rows(row, None, ctx.feature_names, hidden)
            want.append(reference(d, ctx, "ctx-1", {"tenant": "acme"}, inputs))
    finally:
        structlog.contextvars.clear_contextvars()
    assert normalized((tmp_path / "e.jsonl").read_bytes()) == normalized(b"".join(want))
    assert emitter.stats() == {"emitted": 12, "dropped": 0}


def test_columnar_log_small_calls_are_json_lines_the_monitor_reads(
    iris_lr: Any, tmp_path: Path
) -> None:
    arrows, jsonl = tmp_path / "decisions.arrows", tmp_path / "events.jsonl"
    predictors = [
        sp.SafePredictor(iris_lr.model, logger=path, random_state=0).calibrate(
            iris_lr.X_cal, iris_lr.y_cal
        )
        for path in (arrows, jsonl)
    ]
    for p in predictors:
        p.decide(iris_lr.X_test)  # a record batch
        for i in range(4):
            p.decide_one(iris_lr.X_test[i])  # four JSON lines beside the stream
        p.decide(iris_lr.X_test[:SMALL_CALL])
    (stream,) = arrows.glob("*.arrows")
    assert len(list(read_events(stream))) == len(iris_lr.X_test)
    (sidecar,) = arrows.glob("*.jsonl")
    side = [e for e in strict_lines(sidecar.read_bytes()) if e["event"] == "safepredict.decision"]
    assert len(side) == 4 + SMALL_CALL
    assert all(e["inputs_hash"] is None for e in side)  # as in the stream: not computed
    one = monitor(jsonl, window="all", min_window=5).to_dict()
    two = monitor(arrows, window="all", min_window=5).to_dict()
    assert one["events"]["decision"] == two["events"]["decision"] == len(iris_lr.X_test) + 4 + 32


def test_one_renderer_across_labels_that_compare_equal(iris_lr: Any) -> None:
    """Classes 0, 1, 2 and 0.0, 1.0, 2.0 compare equal but render differently."""
    Xi, yi = load_iris(return_X_y=True)
    renderer = RowRenderer()
    lines = []
    for labels in (yi, yi.astype(float), yi, yi.astype(bool)):
        model = LogisticRegression(max_iter=1000).fit(Xi[::2], labels[::2])
        p = sp.SafePredictor(model, log="off").calibrate(Xi[1::2], labels[1::2])
        one, ctx = p.decide(Xi[100:101]), p._event_context()
        got = renderer.line(one, ctx, None, {}, None)
        assert normalized(got) == normalized(reference(one, ctx, None, {}, None))
        lines.append(strict_lines(got)[0]["conformal"]["set"])
    assert any(isinstance(v, float) for v in lines[1])


def test_reason_cache_is_bounded_and_stays_exact(
    cases: list[tuple[sp.Decisions, EventContext, Any]],
) -> None:
    d, ctx, _ = cases[0]
    renderer = RowRenderer()
    one = d[3:4]
    for i in range(5000):  # free-text reasons: every row distinct
        one.reasons[0] = (f"model_error:case {i}", "out_of_range:x1")
        got = renderer.line(one, ctx, None, {}, None)
        if i % 997 == 0:
            assert normalized(got) == normalized(reference(one, ctx, None, {}, None))
    assert len(renderer._reasons) <= 4096
    assert strict_lines(got)[0]["guard"]["reasons"] == ["out_of_range:x1"]
