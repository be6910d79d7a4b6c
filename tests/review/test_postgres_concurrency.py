"""PostgreSQL review queue under load: 8 processes routing, 4 claiming, a killed claimer."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import make_classification
from sklearn.linear_model import LogisticRegression
from tests.review.conftest import LIVE_TTL, sleep_past

import safepredict
from safepredict import SafePredictor
from safepredict.review import PostgresReviewQueue

SRC = str(Path(safepredict.__file__).resolve().parents[1])
ENV = {**os.environ, "PYTHONPATH": SRC}
CTX = mp.get_context("fork")  # children inherit the fitted predictor; no connection is open yet


def route(sp: SafePredictor, X: np.ndarray, out: Any) -> None:
    ids: list[str] = []
    statuses: list[str] = []
    for batch in np.array_split(X, 20):  # 20 decide calls of 100 rows
        d = sp.decide(batch)
        ids.extend(d.decision_ids.tolist())
        statuses.extend(r["status"] for r in d.route or [])
    out.put(("route", ids, statuses))


def claim(dsn: str, name: str, batch: int, routing_done: Any, out: Any) -> None:
    """Claim until routing is over and nothing is left (single claims, or batches)."""
    q = PostgresReviewQueue(dsn)
    got: list[str] = []
    idle_after_done = 0
    while idle_after_done < 3:
        cases = q.claim_many(name, batch, ttl=60)
        if not cases:
            if routing_done.is_set():
                idle_after_done += 1
            time.sleep(0.05)
            continue
        got.extend(c["decision_id"] for c in cases)
        if len(got) % 97 == 0:  # now and then a reviewer answers too
            q.resolve(cases[0]["decision_id"], cases[0]["prediction"], name)
    out.put(("claim", name, got))


@pytest.mark.slow
def test_eight_routers_and_four_claimers_lose_and_duplicate_nothing(postgres_dsn: str) -> None:
    # audit_rate=1 routes every row, so 8 processes x 2,000 decisions are 16,000 cases
    X, y = make_classification(n_samples=4000, n_features=5, random_state=0)
    model = LogisticRegression(max_iter=500).fit(X[:1000], y[:1000])
    policy = {
        "audit_rate": 1.0,
        "tiers": [
            {"name": "auto", "action": "accept", "max_set_size": 1},
            {"name": "human", "action": "abstain"},
        ],
    }
    sp = SafePredictor(model, log="off", tiers=policy, router=postgres_dsn)
    sp.calibrate(X[1000:2000], y[1000:2000])
    rng = np.random.default_rng(0)
    out = CTX.Queue()
    done = CTX.Event()
    routers = [
        CTX.Process(target=route, args=(sp, X[2000:] + rng.normal(0, 0.01, (2000, 5)), out))
        for _ in range(8)
    ]
    claimers = [
        CTX.Process(target=claim, args=(postgres_dsn, f"r{k}", batch, done, out))
        for k, batch in enumerate((1, 1, 20, 20))
    ]
    for p in (*routers, *claimers):
        p.start()
    results = [out.get(timeout=240) for _ in range(8)]
    done.set()
    results += [out.get(timeout=240) for _ in range(4)]
    for p in (*routers, *claimers):
        p.join(timeout=60)
        assert p.exitcode == 0
    routed = [i for kind, *rest in results if kind == "route" for i in rest[0]]
    statuses = {s for kind, *rest in results if kind == "route" for s in rest[1]}
    claimed = {rest[0]: rest[1] for kind, *rest in results if kind == "claim"}
    assert len(routed) == len(set(routed)) == 16_000
    assert statuses == {"queued"}  # no write failed, none spooled
    every_claim = [i for got in claimed.values() for i in got]
    assert len(every_claim) == len(set(every_claim))  # never claimed twice
    assert set(every_claim) == set(routed)  # none lost
    assert sum(bool(got) for got in claimed.values()) >= 2  # the claimers really competed
    q = PostgresReviewQueue(postgres_dsn)
    assert len(q) == 16_000  # none duplicated
    counts = q.counts()["*"]
    assert counts["pending"] == 0
    assert counts["claimed"] + counts["resolved"] == 16_000
    assert counts["resolved"] > 0
    for name, got in claimed.items():
        assert {c["decision_id"] for c in q.cases() if c["reviewer"] == name} == set(got)
    assert q.integrity_check() == "ok"


KILLED = """
import sys, time
from safepredict.review import PostgresReviewQueue
from tests.review.conftest import LIVE_TTL, sleep_past
q = PostgresReviewQueue(sys.argv[1])
case = q.claim("doomed", ttl={ttl})
print(case["decision_id"], flush=True)
time.sleep(600)
"""


def test_a_killed_claimers_lease_expires_and_another_reviewer_claims(postgres_dsn: str) -> None:
    q = PostgresReviewQueue(postgres_dsn)
    q.write_batch([{"decision_id": "only", "tier": "human", "action": "abstain"}])
    proc = subprocess.Popen(
        [sys.executable, "-c", KILLED.replace("{ttl}", str(LIVE_TTL)), postgres_dsn],
        stdout=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    assert proc.stdout is not None
    assert proc.stdout.readline().strip() == "only"
    os.kill(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=30)
    assert q.claim("heir") is None  # the lease is still live
    sleep_past(q.get("only")["lease_expires_at"])  # type: ignore[index]
    case = q.claim("heir")
    assert case is not None
    assert (case["decision_id"], case["previous_reviewer"]) == ("only", "doomed")
    assert q.resolve("only", 1, "heir")["status"] == "resolved"
    assert q.integrity_check() == "ok"
