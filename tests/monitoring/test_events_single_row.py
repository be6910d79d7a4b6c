"""The one-row JSON line says exactly what the batch path and the previous renderer say.

The single-row path (``decide_one``, a service request) lays its line out from a
cached template and hashes its row with ``row_hash``; the batch path renders column
by column and hashes with ``row_hashes``; the previous renderer built one dict per
event. On real decisions (default guards with their reasons and OOD scores,
conformal sets, SHAP-style linear explanations, a regressor's intervals, a
multiclass model with string labels that need escaping, a frame with odd column
names, logged inputs with a redacted column) every event parsed from the one-row
path must equal, as a dict, the batch path's event for the same row, and its bytes
the previous renderer's; and the properties hold for any request id and structlog
contextvars, including values the fast path must hand to the cleaning dict path.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import structlog
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris, load_wine
from sklearn.linear_model import LogisticRegression, Ridge
from tests.monitoring.test_events_fast import reference as previous  # one dict per event
from tests.test_explain import explain_all

import safepredict as sp
from safepredict._frames import input_rows, resolve_redact
from safepredict.monitoring._event_fields import EventContext
from safepredict.monitoring._event_row import RowRenderer
from safepredict.monitoring.events import EventEmitter
from safepredict.monitoring.monitor import monitor

TIMESTAMP = re.compile(rb'"timestamp": ?"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z"')
#: Odd column names: a space, a comma, a quote, non-ASCII, a format directive.
ODD = ["a b", "x,y", 'q"uote', "é", "%s", "ssn"]
SECRET = "ssn"


def normalized(data: bytes) -> bytes:
    out, count = TIMESTAMP.subn(b'"timestamp":"T"', data)
    assert count == data.count(b"\n")
    return out


def parse(data: bytes) -> list[dict[str, Any]]:
    def refuse(name: str) -> None:
        raise ValueError(f"non-JSON constant {name}")

    return [json.loads(line.decode("utf-8"), parse_constant=refuse) for line in data.splitlines()]


class Case:
    """A calibrated predictor's decisions on a test set (with some out-of-range rows)."""

    def __init__(self, name: str, p: sp.SafePredictor, X: Any, cal: tuple[Any, Any]) -> None:
        self.name, self.p, self.X, self.cal = name, p, X, cal
        self.d = p.decide(X)
        self.ctx = p._event_context()

    def rows(self, i: int) -> Any:
        return self.X.iloc[i : i + 1] if hasattr(self.X, "iloc") else self.X[i : i + 1]


@pytest.fixture(scope="module")
def cases() -> list[Case]:
    out = []
    # a frame with odd column names (one a secret), multiclass, explained, shifted rows
    Xw, yw = load_wine(return_X_y=True, as_frame=True)
    Xw = Xw.iloc[:, : len(ODD)].set_axis(ODD, axis=1)
    Xw = (Xw - Xw.mean()) / Xw.std()  # standardized: the model converges in a few steps
    Xw[SECRET] = 0.31415926 + np.arange(len(Xw)) * 1.3e-6  # distinctive values to look for
    model = LogisticRegression(max_iter=5000).fit(Xw.iloc[::3], yw.iloc[::3])
    p = sp.SafePredictor(
        model, log="off", explainer="linear", tiers=explain_all("classification"), random_state=0
    )
    cal = (Xw.iloc[1::3], yw.iloc[1::3])
    p.calibrate(*cal)
    test = Xw.iloc[2::3].copy()
    test.iloc[:4, 0] += 20.0  # out of range: guard reasons and OOD scores
    out.append(Case("wine frame", p, test, cal))
    # string labels that need escaping, and unicode
    Xi, yi = load_iris(return_X_y=True)
    names = np.array(["setosa, small", 'versi"color', "virginica ü %d"])[yi]
    s = sp.SafePredictor(LogisticRegression(max_iter=1000).fit(Xi[::2], names[::2]), log="off")
    cal = (Xi[1::2], names[1::2])
    s.calibrate(*cal)
    out.append(Case("iris labels", s, np.vstack([Xi[1::4], Xi[:3] + 9.0]), cal))
    # a regressor: intervals, explained
    Xd, yd = load_diabetes(return_X_y=True)
    r = sp.SafePredictor(
        Ridge().fit(Xd[::2], yd[::2]),
        log="off",
        explainer="linear",
        tiers=explain_all("regression"),
    )
    cal = (Xd[1::4], yd[1::4])
    r.calibrate(*cal)
    out.append(Case("diabetes ridge", r, Xd[3::8], cal))
    # binary, integer labels
    Xc, yc = load_breast_cancer(return_X_y=True)
    c = sp.SafePredictor(LogisticRegression(max_iter=5000).fit(Xc[::2], yc[::2]), log="off")
    cal = (Xc[1::4], yc[1::4])
    c.calibrate(*cal)
    out.append(Case("cancer binary", c, Xc[3::8], cal))
    return out


def test_the_cases_cover_what_the_events_can_hold(cases: list[Case]) -> None:
    """Guard reasons, OOD scores, sets, intervals and explanations are all really there."""
    ds = [c.d for c in cases]
    assert any(any(r for r in d.reasons) for d in ds)
    assert any(d.guard_flagged.any() for d in ds)
    assert all(d.ood_scores is not None for d in ds)
    assert any(d.intervals is not None for d in ds)
    assert any(d.set_mask is not None and (d.set_mask.sum(axis=1) > 1).any() for d in ds)
    assert any(
        d.explanations is not None and any(e is not None for e in d.explanations) for d in ds
    )


@pytest.mark.parametrize("log_inputs", [False, True])
def test_single_row_events_equal_the_batch_events_and_the_previous_renderer(
    cases: list[Case], tmp_path: Path, log_inputs: bool
) -> None:
    structlog.contextvars.clear_contextvars()  # the emitters read them; the reference has none
    checked = 0
    for k, case in enumerate(cases):
        redact = [SECRET] if SECRET in case.ctx.feature_names else []
        single = EventEmitter(tmp_path / f"one{k}.jsonl", log_inputs=log_inputs, redact=redact)
        batch = EventEmitter(tmp_path / f"all{k}.jsonl", log_inputs=log_inputs, redact=redact)
        hidden = resolve_redact(redact, case.ctx.feature_names)
        want = []
        for i in range(len(case.d)):
            one = case.d[i : i + 1]
            assert single.decisions(one, case.ctx, X_model=case.rows(i)) == 1
            inputs = input_rows(case.rows(i), None, case.ctx.feature_names, hidden)
            want.append(previous(one, case.ctx, None, {}, inputs if log_inputs else None))
        assert batch.decisions(case.d, case.ctx, X_model=case.X) == len(case.d)
        got = (tmp_path / f"one{k}.jsonl").read_bytes()
        assert normalized(got) == normalized(b"".join(want))
        ones, alls = parse(got), parse((tmp_path / f"all{k}.jsonl").read_bytes())
        assert len(ones) == len(alls) == len(case.d)
        for a, b in zip(ones, alls, strict=True):
            assert a.pop("batch_size") == 1
            assert b.pop("batch_size") == len(case.d)
            a.pop("timestamp"), b.pop("timestamp")
            assert a == b
            assert a["inputs_hash"] is not None  # hashed by the twin and by the batch hash
            if log_inputs:
                assert SECRET not in a["inputs"]
                assert len(a["inputs"]) > 0
            checked += 1
        assert single.stats() == {"emitted": len(case.d), "dropped": 0}
    assert checked > 100
    # negative control: a one-field change in one decision is seen by the comparison
    case = cases[1]
    one = case.d[2:3]
    one.audit[0] = not one.audit[0]
    line = RowRenderer().line(one, case.ctx, None, {}, None)
    assert normalized(line) != normalized(previous(case.d[2:3], case.ctx, None, {}, None))


def test_the_fast_template_is_taken_for_clean_values(cases: list[Case]) -> None:
    """No fallback to the dict path (which would make the properties above vacuous)."""
    renderer = RowRenderer()
    for case in cases:
        for i in range(0, len(case.d), 5):
            one = case.d[i : i + 1]
            got = renderer._fast_line(one, case.ctx, "req-1", {"tenant": "a,b"}, None)
            want = previous(one, case.ctx, "req-1", {"tenant": "a,b"}, None)
            assert normalized(got) == normalized(want)


IDS = st.one_of(
    st.none(), st.text(max_size=12), st.text(st.characters(categories=["Cs"]), max_size=2)
)
JSONISH = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(-(2**70), 2**70),  # beyond 64 bits: the whole line takes the stdlib
        st.floats(allow_nan=True, allow_infinity=True),
        st.text(max_size=6),
        st.text(st.characters(categories=["Cs"]), max_size=2),  # UTF-8 cannot encode
    ),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=6,
)
CONTEXT = st.dictionaries(
    st.one_of(st.sampled_from(["tier", "request_id", "timestamp", "user"]), st.text(max_size=6)),
    JSONISH,
    max_size=4,
)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(row=st.integers(0, 10_000), request_id=IDS, context_vars=CONTEXT, model_name=IDS)
def test_any_request_id_and_contextvars_render_like_the_previous_renderer(
    cases: list[Case],
    row: int,
    request_id: str | None,
    context_vars: dict[str, Any],
    model_name: Any,
) -> None:
    case = cases[row % len(cases)]
    i = row % len(case.d)
    one = case.d[i : i + 1]
    ctx = EventContext(**{**vars(case.ctx), "model_name": model_name})
    got = RowRenderer().line(one, ctx, request_id, context_vars, None)
    assert normalized(got) == normalized(previous(one, ctx, request_id, context_vars, None))
    assert len(parse(got)) == 1


def test_decide_one_to_a_file_is_read_by_the_monitor_and_keeps_secrets(
    cases: list[Case], tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    case = cases[0]
    path = tmp_path / "events.jsonl"
    p = sp.SafePredictor(case.p.model, logger=path, log_inputs=True, redact=[SECRET])
    p.calibrate(*case.cal)
    for i in range(len(case.X)):
        p.decide_one(case.X.iloc[i])
    assert capfd.readouterr() == ("", "")  # quiet: nothing on stdout or stderr
    raw = path.read_bytes()
    for value in case.X[SECRET]:
        assert json.dumps(float(value)).encode() not in raw
    events = [e for e in parse(raw) if e["event"] == "safepredict.decision"]
    assert len(events) == len(case.X)
    assert all(SECRET not in e["inputs"] and len(e["inputs"]) == len(ODD) - 1 for e in events)
    report = monitor(path, window="all", min_window=5).to_dict()
    assert report["events"]["decision"] == len(case.X)
    # negative control: without redaction the secret value is in the file
    q = sp.SafePredictor(case.p.model, logger=tmp_path / "open.jsonl", log_inputs=True)
    q.calibrate(*case.cal).decide_one(case.X.iloc[0])
    secret = json.dumps(float(case.X[SECRET].iloc[0])).encode()
    assert secret in (tmp_path / "open.jsonl").read_bytes()
