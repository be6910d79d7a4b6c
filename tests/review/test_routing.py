"""Routing: sinks, the SQLite review queue, the reviewer API and the predictor wiring."""

from __future__ import annotations

import csv
import io
import json
import pickle
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

import safepredict
from safepredict import (
    CaseNotFoundError,
    ConfigError,
    JSONLSink,
    ReviewQueueError,
    Router,
    SafePredictor,
    SQLiteReviewQueue,
)
from safepredict._hashing import row_hashes
from safepredict.exceptions import CalibrationError
from safepredict.review import CallableSink

SRC = str(Path(safepredict.__file__).resolve().parents[1])

POLICY = {
    "audit_rate": 0.2,
    "tiers": [
        {"name": "auto", "action": "accept", "max_set_size": 1},
        {"name": "suggest", "action": "review", "max_set_size": 2},
        {"name": "human", "action": "abstain"},
    ],
}


def case(decision_id: str, **kw: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "decision_id": decision_id,
        "tier": "human",
        "action": "abstain",
        "reasons": ["empty_set"],
        "prediction": 1,
        "prediction_set": [],
        "confidence": None,
        "audit": False,
    }
    base.update(kw)
    return base


@pytest.fixture
def queue(tmp_path: Path) -> SQLiteReviewQueue:
    return SQLiteReviewQueue(tmp_path / "reviews.db")


def routed_predictor(split: Any, router: Any, **kw: Any) -> SafePredictor:
    return SafePredictor(split.model, log="off", tiers=POLICY, router=router, **kw).calibrate(
        split.X_cal, split.y_cal
    )


# ------------------------------------------------------------------ predictor wiring
def test_decide_routes_non_accepted_and_audited_rows(iris_lr: Any, tmp_path: Path) -> None:
    sp = routed_predictor(iris_lr, str(tmp_path / "reviews.db"))
    d = sp.decide(np.vstack([iris_lr.X_test, iris_lr.X_test + 0.05]))
    routed = (d.actions != "accept") | d.audit
    assert routed.any()
    assert d.audit.any()  # the policy audits 20% of accepted rows
    assert d.route is not None
    assert [r is not None for r in d.route] == routed.tolist()
    q = sp.router_instance.queue
    assert q is not None
    assert len(q) == int(routed.sum())
    for i in np.flatnonzero(routed):
        status = d.route[i]
        sink = f"sqlite:{tmp_path / 'reviews.db'}"
        assert status == {"sink": sink, "status": "queued", "audit": bool(d.audit[i])}
        stored = q.get(d.decision_ids[i])
        assert stored is not None
        dec = d[int(i)]
        assert (stored["tier"], stored["action"], stored["audit"]) == (
            dec.tier,
            dec.action,
            dec.audit,
        )
        assert stored["reasons"] == list(dec.reasons)
        assert stored["prediction"] == dec.prediction
        assert stored["prediction_set"] == list(dec.prediction_set or ())
        assert stored["status"] == "pending"
        assert stored["inputs"] is None  # not opted in
        assert len(stored["inputs_hash"]) == 16
    # audited rows are accepted rows, flagged audit=True in the queue
    flagged = [c for c in q.cases() if c["audit"]]
    assert len(flagged) == int(d.audit.sum())
    assert {c["action"] for c in flagged} == {"accept"}


def test_one_transaction_per_decide_call(iris_lr: Any, tmp_path: Path) -> None:
    q = SQLiteReviewQueue(tmp_path / "reviews.db")
    sp = routed_predictor(iris_lr, q)
    statements: list[str] = []
    q._conn().set_trace_callback(statements.append)  # the connection of this thread
    d = sp.decide(iris_lr.X_test)
    n_routed = sum(r is not None for r in d.route or [])
    assert n_routed > 1
    assert sum(s.startswith("BEGIN") for s in statements) == 1
    assert sum(s.startswith("COMMIT") for s in statements) == 1
    assert len(q) == n_routed


def test_callable_batch_sink_gets_one_call_per_decide(iris_lr: Any) -> None:
    calls: list[list[dict[str, Any]]] = []
    sp = routed_predictor(iris_lr, Router(CallableSink(calls.append, batch=True)))
    d = sp.decide(iris_lr.X_test)
    assert len(calls) == 1
    assert [c["decision_id"] for c in calls[0]] == [
        d.decision_ids[i] for i, r in enumerate(d.route or []) if r is not None
    ]
    json.dumps(calls[0])  # cases are JSON-safe


def test_plain_callable_receives_each_case(iris_lr: Any) -> None:
    got: list[dict[str, Any]] = []
    sp = routed_predictor(iris_lr, got.append)
    d = sp.decide(iris_lr.X_test)
    assert len(got) == sum(r is not None for r in d.route or [])
    assert all(r["status"] == "queued" for r in d.route or [] if r is not None)


def test_no_router_leaves_route_empty(iris_lr: Any) -> None:
    sp = routed_predictor(iris_lr, None)
    d = sp.decide(iris_lr.X_test)
    assert d.route is None
    assert sp.router_instance is None


def test_inputs_logged_only_when_opted_in_and_redacted(wine_hgb: Any, tmp_path: Path) -> None:
    sp = routed_predictor(
        wine_hgb, str(tmp_path / "r.db"), log_inputs=True, redact=["alcohol", "magnesium"]
    )
    d = sp.decide(wine_hgb.X_test)
    q = sp.router_instance.queue
    assert q is not None
    assert len(q) > 0
    row_of = {d.decision_ids[i]: i for i in range(len(d))}
    for c in q.cases():
        assert "alcohol" not in c["inputs"]
        assert "magnesium" not in c["inputs"]
        row = wine_hgb.X_test.iloc[row_of[c["decision_id"]]]
        assert c["inputs"]["proline"] == pytest.approx(float(row["proline"]))
        assert len(c["inputs"]) == wine_hgb.X_test.shape[1] - 2


@pytest.mark.parametrize(
    ("path", "kind"),
    [("q.db", SQLiteReviewQueue), ("q.sqlite", SQLiteReviewQueue), ("q.jsonl", JSONLSink)],
)
def test_router_accepts_paths(path: str, kind: type, tmp_path: Path) -> None:
    assert isinstance(Router.coerce(str(tmp_path / path)).sink, kind)


def test_router_rejects_unknown_things(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown suffix.*\.db"):
        Router.coerce(str(tmp_path / "q.txt"))
    with pytest.raises(ConfigError, match="router must be"):
        Router.coerce(42)
    with pytest.raises(ConfigError, match="retries"):
        Router(lambda c: None, retries=-1)


def test_jsonl_sink_appends_one_object_per_case(iris_lr: Any, tmp_path: Path) -> None:
    path = tmp_path / "cases.jsonl"
    sp = routed_predictor(iris_lr, str(path))
    d1 = sp.decide(iris_lr.X_test)
    d2 = sp.decide(iris_lr.X_cal)
    lines = path.read_text(encoding="utf-8").splitlines()
    expected = [d.decision_ids[i] for d in (d1, d2) for i, r in enumerate(d.route or []) if r]
    assert [json.loads(line)["decision_id"] for line in lines] == expected
    # outcomes for a JSONL router land next to it
    assert sp.record_outcome(expected[0], 2) == "external"
    rows = JSONLSink(path).outcomes_path.read_text().splitlines()
    assert json.loads(rows[0])["outcome"] == 2
    assert json.loads(rows[0])["decision_id"] == expected[0]


# ------------------------------------------------------------------ failures
class Flaky:
    """A sink that fails its first ``n`` writes."""

    def __init__(self, n: int) -> None:
        self.n = n
        self.calls = 0
        self.got: list[dict[str, Any]] = []

    def __call__(self, case: dict[str, Any]) -> None:
        self.calls += 1
        if self.calls <= self.n:
            raise ConnectionError("review service unavailable")
        self.got.append(case)


def test_transient_failure_is_retried(iris_lr: Any) -> None:
    sink = Flaky(1)
    router = Router(sink, retries=2, retry_delay_s=0.0)
    sp = routed_predictor(iris_lr, router)
    d = sp.decide(iris_lr.X_test)
    statuses = [r["status"] for r in d.route or [] if r]
    assert statuses
    assert set(statuses) == {"queued"}
    assert router.failures == 0


def test_persistent_failure_spools_and_never_fails_decide(iris_lr: Any, tmp_path: Path) -> None:
    sink = Flaky(10**9)
    spool = tmp_path / "spool.jsonl"
    router = Router(sink, retries=2, retry_delay_s=0.0, spool=spool)
    sp = routed_predictor(iris_lr, router)
    d = sp.decide(iris_lr.X_test)
    routed = [r for r in d.route or [] if r]
    assert routed
    assert {r["status"] for r in routed} == {"spooled"}
    assert "ConnectionError" in routed[0]["error"]
    assert sink.calls == 3  # 1 + 2 retries for the one batch
    assert router.failures == len(routed) == router.spooled
    assert len(router.spooled_cases()) == len(routed)
    # the service comes back: replay the spool
    sink.n = 0
    assert router.flush_spool() == len(routed)
    assert [c["decision_id"] for c in sink.got] == [
        d.decision_ids[i] for i, r in enumerate(d.route or []) if r
    ]
    assert router.spooled_cases() == []
    assert router.flush_spool() == 0


def test_failure_without_spool_is_marked_failed(iris_lr: Any) -> None:
    router = Router(Flaky(10**9), retries=0)
    sp = routed_predictor(iris_lr, router)
    d = sp.decide(iris_lr.X_test)
    routed = [r for r in d.route or [] if r]
    assert routed
    assert {r["status"] for r in routed} == {"failed"}
    assert router.failures == len(routed)
    assert len(d) == len(iris_lr.X_test)


def test_unwritable_queue_spools_next_to_it(iris_lr: Any, tmp_path: Path) -> None:
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("x")
    router = Router(SQLiteReviewQueue(blocked / "reviews.db"), spool=tmp_path / "s.jsonl")
    sp = routed_predictor(iris_lr, router)
    d = sp.decide(iris_lr.X_test)
    assert {r["status"] for r in d.route or [] if r} == {"spooled"}
    assert router.failures > 0


def test_spool_replay_into_queue_is_idempotent(tmp_path: Path) -> None:
    q = SQLiteReviewQueue(tmp_path / "reviews.db")
    router = Router(q)
    assert router.spool == tmp_path / "reviews.db.spool.jsonl"
    q.enqueue(case("a"))
    # a case both in the queue and in the spool (e.g. a timeout after commit) is kept once
    router.spool.write_text(json.dumps(case("a")) + "\n" + json.dumps(case("b")) + "\n")
    assert router.flush_spool() == 2
    assert sorted(c["decision_id"] for c in q.cases()) == ["a", "b"]


# ------------------------------------------------------------------ pickling
def test_predictor_with_router_pickles_and_reopens(iris_lr: Any, tmp_path: Path) -> None:
    sp = routed_predictor(iris_lr, str(tmp_path / "reviews.db"))
    d1 = sp.decide(iris_lr.X_test)  # connections are open now
    clone = pickle.loads(pickle.dumps(sp))
    d2 = clone.decide(iris_lr.X_test)
    n1 = sum(r is not None for r in d1.route or [])
    n2 = sum(r is not None for r in d2.route or [])
    assert n1 == n2 > 0  # audit sampling is deterministic in the inputs
    assert len(SQLiteReviewQueue(tmp_path / "reviews.db")) == n1 + n2


def test_queue_pickles_without_connections(queue: SQLiteReviewQueue) -> None:
    queue.enqueue(case("a"))
    again = pickle.loads(pickle.dumps(queue))
    assert again.get("a") is not None
    assert again.path == queue.path


# ------------------------------------------------------------------ reviewer API
def test_pending_is_oldest_first_with_filters(queue: SQLiteReviewQueue) -> None:
    old = (datetime.now(UTC) - timedelta(hours=2)).isoformat(timespec="microseconds")
    queue.write_batch(
        [
            case("c", reasons=["ood"]),
            case("a", created_at=old, tier="suggest", reasons=["out_of_range:age"]),
            case("b", reasons=["empty_set"]),
        ]
    )
    assert [c["decision_id"] for c in queue.pending()] == ["a", "c", "b"]
    assert [c["decision_id"] for c in queue.pending(limit=1)] == ["a"]
    assert [c["decision_id"] for c in queue.pending(tier="human")] == ["c", "b"]
    assert [c["decision_id"] for c in queue.pending(reason="out_of_range")] == ["a"]
    assert [c["decision_id"] for c in queue.pending(reason="out_of_range:age")] == ["a"]
    assert [c["decision_id"] for c in queue.pending(reason="ood")] == ["c"]
    assert [c["decision_id"] for c in queue.pending(older_than=timedelta(hours=1))] == ["a"]
    assert [c["decision_id"] for c in queue.pending(older_than=3600.0)] == ["a"]
    with pytest.raises(ConfigError, match="older_than"):
        queue.pending(older_than="yesterday")
    with pytest.raises(ConfigError, match="limit"):
        queue.pending(limit=-1)


def test_claim_resolve_lifecycle(queue: SQLiteReviewQueue) -> None:
    queue.write_batch([case("a"), case("b", tier="suggest", action="review"), case("c")])
    first = queue.claim("ana")
    assert first is not None
    assert first["decision_id"] == "a"
    assert (first["status"], first["reviewer"]) == ("claimed", "ana")
    assert first["claimed_at"] is not None
    assert queue.claim("bob", tier="suggest")["decision_id"] == "b"  # type: ignore[index]
    assert queue.claim("bob", tier="suggest") is None

    with pytest.raises(ReviewQueueError, match=r"claimed by 'ana'.*only that reviewer"):
        queue.resolve("a", outcome=1, reviewer="bob")
    with pytest.raises(ReviewQueueError, match="pending: claim it first"):
        queue.resolve("c", outcome=1, reviewer="ana")
    with pytest.raises(CaseNotFoundError, match="no case with decision_id 'zzz'") as err:
        queue.resolve("zzz", outcome=1, reviewer="ana")
    assert isinstance(err.value, KeyError)

    done = queue.resolve("a", outcome={"label": 2}, reviewer="ana", note="checked")
    assert (done["status"], done["outcome"], done["note"]) == ("resolved", {"label": 2}, "checked")
    assert done["resolved_at"] >= done["claimed_at"]
    with pytest.raises(ReviewQueueError, match="already resolved by 'ana'"):
        queue.resolve("a", outcome=1, reviewer="ana")
    with pytest.raises(ReviewQueueError, match="cannot be claimed"):
        queue.claim_case("a", "bob")

    assert queue.claim_case("c", "bob")["status"] == "claimed"
    assert queue.claim_case("c", "bob")["status"] == "claimed"  # idempotent for the holder
    with pytest.raises(ReviewQueueError, match="claimed by 'bob'"):
        queue.claim_case("c", "ana")
    with pytest.raises(ReviewQueueError, match="only the reviewer who claimed"):
        queue.release("c", "ana")
    assert queue.release("c", "bob")["status"] == "pending"
    with pytest.raises(ConfigError, match="reviewer must be a non-empty string"):
        queue.claim("  ")

    counts = queue.counts()
    assert counts["human"] == {"pending": 1, "claimed": 0, "resolved": 1}
    assert counts["suggest"] == {"pending": 0, "claimed": 1, "resolved": 0}
    assert counts["*"] == {"pending": 1, "claimed": 1, "resolved": 1}

    (out,) = list(queue.outcomes())
    assert out["decision_id"] == "a"
    assert out["outcome"] == {"label": 2}
    assert {"tier", "action", "audit", "prediction", "confidence", "resolved_at"} <= set(out)
    assert queue.get("nope") is None


def test_record_outcome_resolves_case_or_keeps_external(queue: SQLiteReviewQueue) -> None:
    queue.write_batch([case("a", audit=True, action="accept", tier="auto")])
    assert queue.record_outcome("a", 0) == "case"
    assert queue.get("a")["status"] == "resolved"  # type: ignore[index]
    assert queue.record_outcome("never-routed", 1) == "external"
    assert [o["decision_id"] for o in queue.outcomes()] == ["a"]
    assert [o["outcome_source"] for o in queue.outcomes(include_external=True)] == [
        "external",
        "external",
    ]
    assert [o["decision_id"] for o in queue.outcomes(audited_only=True)] == ["a"]


def test_predictor_record_outcome(iris_lr: Any, tmp_path: Path) -> None:
    sp = routed_predictor(iris_lr, str(tmp_path / "r.db"))
    d = sp.decide(iris_lr.X_test)
    i = next(i for i, r in enumerate(d.route or []) if r)
    assert sp.record_outcome(d.decision_ids[i], np.int64(iris_lr.y_test[i])) == "case"
    stored = sp.router_instance.queue.get(d.decision_ids[i])  # type: ignore[union-attr]
    assert stored["outcome"] == int(iris_lr.y_test[i])
    assert stored["outcome_source"] == "record_outcome"
    with pytest.raises(ConfigError, match="no router"):
        routed_predictor(iris_lr, None).record_outcome("x", 1)
    with pytest.raises(ConfigError, match="cannot store outcomes"):
        routed_predictor(iris_lr, print).record_outcome("x", 1)


def test_export_jsonl_and_csv(queue: SQLiteReviewQueue, tmp_path: Path) -> None:
    queue.write_batch([case("a", prediction_set=[0, 2]), case("b")])
    queue.claim("ana")
    queue.resolve("a", 2, "ana", note='say "hi", ok')
    assert queue.export(tmp_path / "out.jsonl") == 2
    rows = [json.loads(x) for x in (tmp_path / "out.jsonl").read_text().splitlines()]
    assert rows[0]["prediction_set"] == [0, 2]
    assert rows[0]["note"] == 'say "hi", ok'
    buf = io.StringIO()
    assert queue.export(buf, format="csv") == 2
    parsed = list(csv.DictReader(io.StringIO(buf.getvalue())))
    assert parsed[0]["decision_id"] == "a"
    assert json.loads(parsed[0]["outcome"]) == 2
    assert parsed[0]["note"] == 'say "hi", ok'
    with pytest.raises(ConfigError, match="format"):
        queue.export(buf, format="xml")


# ------------------------------------------------------------------ security
NASTY = [
    "'; DROP TABLE cases; --",
    'quote " double',
    "Robert'); DELETE FROM cases WHERE ('1'='1",
    "ünïcödé ✓ 决定 🚑",
    "tab\tnew\nline\x00nul",
    "%_ like wildcards \\",
]


@pytest.mark.parametrize("text", NASTY)
def test_ids_and_notes_are_stored_verbatim(queue: SQLiteReviewQueue, text: str) -> None:
    queue.write_batch([case("plain"), case(text, reasons=[text], tier=text)])
    assert queue.get(text)["decision_id"] == text  # type: ignore[index]
    assert [c["decision_id"] for c in queue.pending(reason=text)] == [text]
    assert [c["decision_id"] for c in queue.pending(tier=text)] == [text]
    assert queue.claim_case(text, text)["reviewer"] == text
    resolved = queue.resolve(text, outcome=text, reviewer=text, note=text)
    assert (resolved["note"], resolved["outcome"], resolved["reviewer"]) == (text, text, text)
    assert queue.get("plain") is not None  # nothing else touched
    assert len(queue) == 2
    assert queue.integrity_check() == "ok"


def test_like_wildcards_in_reason_do_not_match_others(queue: SQLiteReviewQueue) -> None:
    queue.write_batch([case("a", reasons=["ood"]), case("b", reasons=["out_of_range:x"])])
    assert queue.pending(reason="%") == []
    assert queue.pending(reason="o%") == []


# ------------------------------------------------------------------ closing the loop
def test_recalibrate_from_audited_cases(tmp_path: Path) -> None:
    X, y = make_classification(n_samples=3000, n_features=6, n_informative=4, random_state=3)
    model = LogisticRegression(max_iter=500).fit(X[:1000], y[:1000])
    policy = {**POLICY, "audit_rate": 0.5}
    sp = SafePredictor(
        model, log="off", tiers=policy, router=str(tmp_path / "r.db"), log_inputs=True
    ).calibrate(X[1000:1500], y[1000:1500])
    with pytest.raises(CalibrationError, match="no resolved audited cases"):
        sp.recalibrate_from(sp.router_instance)

    d = sp.decide(X[1500:])
    truth = dict(zip(d.decision_ids.tolist(), y[1500:].tolist(), strict=True))
    q = sp.router_instance.queue
    assert q is not None
    while (c := q.claim("ana")) is not None:
        q.resolve(c["decision_id"], truth[c["decision_id"]], "ana")
    n_audited = int(d.audit.sum())
    assert n_audited > 100
    sp.recalibrate_from(q)
    assert sp.calibration_size_ == n_audited
    sp.recalibrate_from(str(tmp_path / "r.db"), audited_only=False)
    assert sp.calibration_size_ == len(q)

    # without logged inputs the cases cannot be re-scored
    bare = SafePredictor(model, log="off", tiers=policy, router=str(tmp_path / "b.db"))
    bare.calibrate(X[1000:1500], y[1000:1500])
    db = bare.decide(X[1500:1600])
    bq = bare.router_instance.queue
    assert bq is not None
    for i in np.flatnonzero(db.audit):
        bq.record_outcome(db.decision_ids[i], int(y[1500 + i]))
    with pytest.raises(CalibrationError, match="log_inputs=True"):
        bare.recalibrate_from(bq)

    # redacted features make it impossible too
    red = SafePredictor(
        model, log="off", tiers=policy, router=str(tmp_path / "c.db"), log_inputs=True,
        redact=["x2"],
    ).calibrate(X[1000:1500], y[1000:1500])  # fmt: skip
    dr = red.decide(X[1500:1600])
    for i in np.flatnonzero(dr.audit):
        red.record_outcome(dr.decision_ids[i], int(y[1500 + i]))
    with pytest.raises(CalibrationError, match=r"lack the features \['x2'\]"):
        red.recalibrate_from(red.router_instance)
    with pytest.raises(ConfigError, match="recalibrate_from needs"):
        red.recalibrate_from(print)


# ------------------------------------------------------------------ audit sampling
def audited_hashes(sp: SafePredictor, X: np.ndarray) -> set[str]:
    d = sp.decide(X)
    if d.inputs_hash is None:  # only computed when some row is accepted
        assert not d.audit.any()
        return set()
    return set(d.inputs_hash[d.audit].tolist())


def test_audit_sample_is_deterministic_across_order_and_batch_size(iris_lr: Any) -> None:
    sp = routed_predictor(iris_lr, None)
    X = np.vstack([iris_lr.X_test, iris_lr.X_cal, iris_lr.X_train])
    whole = audited_hashes(sp, X)
    assert whole
    perm = np.random.default_rng(1).permutation(len(X))
    assert audited_hashes(sp, X[perm]) == whole
    chunks: set[str] = set()
    for part in np.array_split(X, 7):
        chunks |= audited_hashes(sp, part)
    assert chunks == whole
    one_by_one = {h for x in X[:40] for h in audited_hashes(sp, x[None, :])}
    assert one_by_one == whole & set(row_hashes(X[:40]).tolist())


def test_audit_sample_is_the_same_in_another_process(iris_lr: Any) -> None:
    sp = routed_predictor(iris_lr, None)
    X = np.vstack([iris_lr.X_test, iris_lr.X_cal, iris_lr.X_train])
    mine = audited_hashes(sp, X)
    blob = pickle.dumps((sp, X))
    code = (
        "import pickle, sys\n"
        "sp, X = pickle.loads(sys.stdin.buffer.read())\n"
        "d = sp.decide(X)\n"
        "print('\\n'.join(sorted(d.inputs_hash[d.audit].tolist())))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        input=blob,
        capture_output=True,
        check=True,
        env={"PYTHONPATH": SRC, "PYTHONHASHSEED": "123"},
    )
    assert set(out.stdout.decode().split()) == mine


@pytest.mark.slow
@pytest.mark.parametrize("rate", [0.01, 0.1, 0.5])
def test_audit_rate_is_close_to_the_policy(rate: float) -> None:
    # Every row is accepted (single tier), so the audited count over n distinct rows is
    # Binomial(n, rate) if the keyed hash behaves as a uniform draw. Its standard
    # deviation is sqrt(rate * (1 - rate) / n) as a fraction; across the 3 rates x 4 seeds
    # = 12 checks a 4.5-sigma band keeps the family-wise false-alarm rate below
    # 12 * 6.8e-6 < 1e-4, while a biased sampler (e.g. off by 10% relative at rate 0.1,
    # i.e. 0.01 absolute vs a band of 4.5 * 0.0021 = 0.0095) is caught.
    n = 20_000
    X = np.random.default_rng(7).normal(size=(n, 4))
    y = (X[:, 0] > 0).astype(int)
    model = LogisticRegression().fit(X[:2000], y[:2000])
    for seed in range(4):
        policy = {
            "audit_rate": rate,
            "audit_seed": seed,
            "tiers": [{"name": "auto", "action": "accept"}],
        }
        # guards off: this test is about the audit sampler, and every row must be accepted
        sp = SafePredictor(model, log="off", tiers=policy, guards="off")
        d = sp.calibrate(X[:500], y[:500]).decide(X)
        assert (d.actions == "accept").all()
        observed = float(d.audit.mean())
        band = 4.5 * np.sqrt(rate * (1 - rate) / n)
        assert abs(observed - rate) < band, (rate, seed, observed, band)


def test_audit_seed_changes_the_sample(iris_lr: Any) -> None:
    X = np.vstack([iris_lr.X_test, iris_lr.X_cal, iris_lr.X_train])
    a = audited_hashes(routed_predictor(iris_lr, None), X)
    other = SafePredictor(iris_lr.model, log="off", tiers={**POLICY, "audit_seed": 99}).calibrate(
        iris_lr.X_cal, iris_lr.y_cal
    )
    assert audited_hashes(other, X) != a


def test_sqlite_file_is_a_plain_database(queue: SQLiteReviewQueue) -> None:
    queue.enqueue(case("a"))
    conn = sqlite3.connect(queue.path)
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT decision_id, status FROM cases").fetchall() == [("a", "pending")]
    conn.close()


def test_row_hash_does_not_depend_on_the_batch_dtypes() -> None:
    import pandas as pd

    clean = pd.DataFrame({"x": [1.5, 2.0], "c": ["a", "b"]})
    # another row holds None, so the column becomes object dtype in this batch
    mixed = pd.DataFrame({"x": pd.Series([1.5, None], dtype=object), "c": ["a", "b"]})
    assert row_hashes(clean)[0] == row_hashes(mixed)[0]
    numeric = pd.DataFrame({"x": [1.5, 2.0]})
    as_object = pd.DataFrame({"x": pd.Series([1.5, "n/a"], dtype=object)})
    assert row_hashes(numeric)[0] == row_hashes(as_object)[0] == row_hashes(np.array([[1.5]]))[0]
    assert row_hashes(numeric)[1] != row_hashes(as_object)[1]
    assert row_hashes(pd.DataFrame({"c": ["1.5"]}))[0] != row_hashes(np.array([[1.5]]))[0]


def test_audit_sample_same_for_object_dtype_batches(wine_hgb: Any) -> None:
    sp = routed_predictor(wine_hgb, None)
    X = wine_hgb.X_test
    assert audited_hashes(sp, X) == audited_hashes(sp, X.astype(object))


def test_locked_queue_spools_then_recovers(iris_lr: Any, tmp_path: Path) -> None:
    q = SQLiteReviewQueue(tmp_path / "r.db", timeout=0.05)
    q.enqueue(case("x"))
    blocker = sqlite3.connect(q.path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")  # another writer holds the lock
    router = Router(q, retries=1, retry_delay_s=0.0)
    sp = routed_predictor(iris_lr, router)
    d = sp.decide(iris_lr.X_test)
    routed = [r for r in d.route or [] if r]
    assert {r["status"] for r in routed} == {"spooled"}
    assert "locked" in routed[0]["error"]
    blocker.execute("ROLLBACK")
    blocker.close()
    assert router.flush_spool() == len(routed)
    assert len(q) == len(routed) + 1
    d2 = sp.decide(iris_lr.X_test)  # the connection is usable again (no open transaction)
    assert {r["status"] for r in d2.route or [] if r} == {"queued"}
