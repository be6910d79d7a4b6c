"""The review queue under concurrent writers, concurrent claimers and a killed writer."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression

import safepredict
from safepredict import SafePredictor, SQLiteReviewQueue

SRC = str(Path(safepredict.__file__).resolve().parents[1])
ENV = {**os.environ, "PYTHONPATH": SRC}


def fresh_integrity(path: Path) -> str:
    conn = sqlite3.connect(path)
    try:
        return str(conn.execute("PRAGMA integrity_check").fetchone()[0])
    finally:
        conn.close()


@pytest.mark.slow
def test_eight_threads_deciding_into_one_queue(tmp_path: Path) -> None:
    # audit_rate=1 routes every row (accepted rows are all audited), so 8 threads x 2,000
    # decisions must leave exactly 16,000 distinct cases.
    X, y = make_classification(n_samples=3000, n_features=5, random_state=0)
    model = LogisticRegression(max_iter=500).fit(X[:1000], y[:1000])
    policy = {
        "audit_rate": 1.0,
        "tiers": [
            {"name": "auto", "action": "accept", "max_set_size": 1},
            {"name": "human", "action": "abstain"},
        ],
    }
    path = tmp_path / "reviews.db"
    sp = SafePredictor(model, log="off", tiers=policy, router=str(path))
    sp.calibrate(X[1000:2000], y[1000:2000])
    rng = np.random.default_rng(0)
    data = [X[2000:] + rng.normal(scale=0.01, size=(1000, 5)) for _ in range(8)]
    ids: list[list[str]] = [[] for _ in range(8)]
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            rows = np.vstack([data[k], data[k]])  # 2,000 rows per thread
            for batch in np.array_split(rows, 40):  # 40 decide calls of 50 rows
                d = sp.decide(batch)
                assert all(r is not None and r["status"] == "queued" for r in d.route or [])
                ids[k].extend(d.decision_ids.tolist())
        except BaseException as exc:  # reported to the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sp.router_instance is not None
    assert sp.router_instance.failures == 0
    expected = {i for part in ids for i in part}
    assert len(expected) == 16_000
    conn = sqlite3.connect(path)
    stored = [r[0] for r in conn.execute("SELECT decision_id FROM cases")]
    conn.close()
    assert len(stored) == 16_000  # none duplicated (also the primary key)
    assert set(stored) == expected  # none lost
    assert fresh_integrity(path) == "ok"


CLAIMER = """
import sys
import time
from safepredict import SQLiteReviewQueue
q = SQLiteReviewQueue(sys.argv[1])
name = sys.argv[2]
sys.stdout.write("ready\\n"); sys.stdout.flush()
sys.stdin.readline()  # start together
while (case := q.claim(name)) is not None:
    sys.stdout.write(case["decision_id"] + "\\n")
    time.sleep(0.002)  # a reviewer's pace: on a loaded machine one process must not drain all
sys.stdout.flush()
"""


@pytest.mark.slow
def test_two_processes_never_claim_the_same_case(tmp_path: Path) -> None:
    path = tmp_path / "reviews.db"
    q = SQLiteReviewQueue(path)
    n = 1000
    q.write_batch(
        [
            {"decision_id": f"case-{i}", "tier": "human", "action": "abstain", "reasons": []}
            for i in range(n)
        ]
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CLAIMER, str(path), name],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=ENV,
        )
        for name in ("ana", "bob")
    ]
    for p in procs:
        assert p.stdout is not None
        assert p.stdout.readline().strip() == "ready"
    for p in procs:
        assert p.stdin is not None
        p.stdin.write("go\n")
        p.stdin.flush()
    got = {}
    for p, name in zip(procs, ("ana", "bob"), strict=True):
        out, _ = p.communicate(timeout=120)
        assert p.returncode == 0
        got[name] = out.split()
    ana, bob = set(got["ana"]), set(got["bob"])
    assert len(ana) == len(got["ana"])  # no case twice to one reviewer
    assert len(bob) == len(got["bob"])
    assert ana.isdisjoint(bob)  # never the same case to both
    assert ana | bob == {f"case-{i}" for i in range(n)}  # none lost
    assert got["ana"]
    assert got["bob"]
    for name, mine in (("ana", ana), ("bob", bob)):
        assert {c["decision_id"] for c in q.cases("claimed") if c["reviewer"] == name} == mine
    assert q.counts()["*"] == {"pending": 0, "claimed": n, "resolved": 0}
    assert fresh_integrity(path) == "ok"


WRITER = """
import sys
import time
from safepredict import SQLiteReviewQueue
q = SQLiteReviewQueue(sys.argv[1])
i = 0
while True:
    if i % 3 == 0:
        batch = [{"decision_id": f"w-{i}-{k}", "tier": "human", "action": "abstain",
                  "reasons": ["x" * 200]} for k in range(20)]
        q.write_batch(batch)
        ids = [c["decision_id"] for c in batch]
    else:
        q.enqueue({"decision_id": f"w-{i}", "tier": "human", "action": "abstain"})
        ids = [f"w-{i}"]
    sys.stdout.write("\\n".join(ids) + "\\n")  # acknowledged only after the write returned
    sys.stdout.flush()
    i += 1
"""


@pytest.mark.slow
@pytest.mark.parametrize("durable", [True, False])
def test_sigkill_mid_stream_loses_no_acknowledged_case(tmp_path: Path, durable: bool) -> None:
    path = tmp_path / "reviews.db"
    SQLiteReviewQueue(path, durable=durable).enqueue(
        {"decision_id": "seed", "tier": "t", "action": "abstain"}
    )
    code = WRITER.replace(
        "SQLiteReviewQueue(sys.argv[1])", f"SQLiteReviewQueue(sys.argv[1], durable={durable})"
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", code, str(path)], stdout=subprocess.PIPE, text=True, env=ENV
    )
    assert proc.stdout is not None
    acked: list[str] = []
    deadline = time.monotonic() + 60
    while len(acked) < 600 and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        acked.append(line.strip())
    os.kill(proc.pid, signal.SIGKILL)  # in the middle of the stream of enqueues
    rest, _ = proc.communicate(timeout=30)
    acked.extend(rest.split())
    assert proc.returncode == -signal.SIGKILL
    assert len(acked) >= 600
    assert fresh_integrity(path) == "ok"
    q = SQLiteReviewQueue(path)
    stored = {c["decision_id"] for c in q.cases()}
    assert set(acked) <= stored  # every acknowledged case survived
    assert "seed" in stored
    q.enqueue({"decision_id": "after", "tier": "t", "action": "abstain"})  # still writable
    assert q.get("after") is not None
