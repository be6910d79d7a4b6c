"""The reviewer console over real HTTP (uvicorn) and in a real browser (Playwright + chromium)."""

from __future__ import annotations

import re
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest
import uvicorn

from safepredict.review import SQLiteReviewQueue
from safepredict.review.console import create_app, describe_reason, realized_error
from safepredict.review.outcomes import OutcomeSpace

TOKEN = "test-token-123456"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def queue(tmp_path: Path) -> SQLiteReviewQueue:
    q = SQLiteReviewQueue(tmp_path / "reviews.db")
    cases = [
        {
            "decision_id": f"d-{i:03d}",
            "tier": "human" if i % 2 else "suggest",
            "action": "abstain" if i % 2 else "review",
            "reasons": ["out_of_range:age"] if i % 3 == 0 else ["empty_set"],
            "prediction": i % 3,
            "prediction_set": [i % 3, (i + 1) % 3],
            "confidence": 0.5 + i / 100,
            "explanation": {
                "method": "tree",
                "base_value": 0.3,
                "output": "proba[1]",
                "top": [["age", 0.25], ["income", -0.1]],
            },
        }
        for i in range(20)
    ]
    q.write_batch(cases)
    q.enqueue(
        {
            "decision_id": "evil",
            "tier": "human",
            "action": "abstain",
            "reasons": ["<script>alert(1)</script>"],
            "prediction": "<script>alert(2)</script>",
            "inputs": {"name": "<script>alert(3)</script>"},
        }
    )
    return q


@pytest.fixture
def server(queue: SQLiteReviewQueue) -> Iterator[str]:
    port = _free_port()
    config = uvicorn.Config(
        create_app(queue, TOKEN), host="127.0.0.1", port=port, log_level="warning"
    )
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not srv.started:
        if time.monotonic() > deadline:
            raise RuntimeError("console did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}"
    srv.should_exit = True
    thread.join(timeout=10)


_CLIENTS: list[httpx.Client] = []


@pytest.fixture(autouse=True)
def _close_clients() -> Iterator[None]:
    yield
    while _CLIENTS:
        _CLIENTS.pop().close()


def _login(base: str, reviewer: str) -> httpx.Client:
    client = httpx.Client(base_url=base, follow_redirects=True, timeout=30)
    _CLIENTS.append(client)
    r = client.get("/", params={"token": TOKEN, "reviewer": reviewer})
    assert r.status_code == 200
    return client


def _csrf(html: str) -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', html)
    assert m is not None
    return m.group(1)


def test_every_page_needs_the_token(server: str) -> None:
    with httpx.Client(base_url=server, timeout=30) as c:
        for method, path in [
            ("GET", "/"),
            ("GET", "/case/d-001"),
            ("POST", "/claim"),
            ("POST", "/case/d-001/resolve"),
            ("POST", "/case/d-001/claim"),
            ("POST", "/reviewer"),
        ]:
            assert c.request(method, path).status_code == 401, path
        assert c.get("/", params={"token": "wrong-token-xxxx"}).status_code == 401
        assert c.get("/", headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_post_without_csrf_is_refused(server: str, queue: SQLiteReviewQueue) -> None:
    client = _login(server, "ana")
    r = client.post("/claim", data={"csrf": "forged"})
    assert r.status_code == 403
    assert queue.counts()["*"]["claimed"] == 0


def test_claim_resolve_next_in_one_submit(server: str, queue: SQLiteReviewQueue) -> None:
    client = _login(server, "ana")
    page = client.post("/claim", data={"csrf": _csrf(client.get("/").text)})
    assert "/case/d-000" in str(page.url)
    assert "outside the range seen in the reference data" in page.text  # plain words
    nxt = client.post(
        "/case/d-000/resolve",
        data={"csrf": _csrf(page.text), "outcome": "2", "note": "ok", "next": "1"},
    )
    assert "/case/d-001" in str(nxt.url)  # moved on to the next case, already claimed
    assert queue.get("d-000")["outcome"] == 2
    assert queue.get("d-001")["status"] == "claimed"
    listing = client.get("/").text
    assert ">d-000<" not in listing


def test_only_the_claimer_can_resolve(server: str, queue: SQLiteReviewQueue) -> None:
    ana, bob = _login(server, "ana"), _login(server, "bob")
    ana.post("/case/d-005/claim", data={"csrf": _csrf(ana.get("/").text)})
    r = bob.post("/case/d-005/resolve", data={"csrf": _csrf(bob.get("/").text), "outcome": "1"})
    assert "claimed by" in r.text
    assert queue.get("d-005")["status"] == "claimed"


def test_script_in_queue_renders_as_text(server: str) -> None:
    client = _login(server, "ana")
    html = client.get("/case/evil").text
    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(3)&lt;/script&gt;" in html


def test_two_reviewers_never_get_the_same_case_over_http(
    server: str, queue: SQLiteReviewQueue
) -> None:
    clients = [_login(server, f"rev{i}") for i in range(4)]
    tokens = [_csrf(c.get("/").text) for c in clients]

    def grab(i: int) -> list[str]:
        got = []
        for _ in range(8):
            r = clients[i].post("/claim", data={"csrf": tokens[i]})
            m = re.search(r"/case/([^/?]+)$", str(r.url))
            if m:
                got.append(m.group(1))
        return got

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(grab, range(4)))
    claimed = [d for r in results for d in r]
    assert len(claimed) == len(set(claimed)) == 21  # all 21 cases, each exactly once
    owners = {c["decision_id"]: c["reviewer"] for c in queue.cases("claimed")}
    for i, ids in enumerate(results):
        assert all(owners[d] == f"rev{i}" for d in ids)


def _pair_case(queue: SQLiteReviewQueue) -> None:
    """A case of a tier that needs two reviewers."""
    tiers = [{"name": "pair", "action": "review", "reviews_required": 2}]
    queue.set_context(OutcomeSpace("classification", (0, 1, 2)), tiers)
    queue.enqueue({"decision_id": "k2", "tier": "pair", "action": "review", "prediction": 1})


def test_claim_shows_the_lease_countdown(server: str, queue: SQLiteReviewQueue) -> None:
    client = _login(server, "ana")
    page = client.post("/claim", data={"csrf": _csrf(client.get("/").text)})
    m = re.search(r'id="lease-countdown" data-seconds="(\d+)">(\d+):(\d\d)<', page.text)
    assert m is not None
    left = int(m.group(1))
    assert 1790 <= left <= 1800  # the queue's default 30-minute lease, just claimed
    assert int(m.group(2)) * 60 + int(m.group(3)) == left
    case = queue.get("d-000")
    assert case is not None
    assert case["lease_expires_at"][11:19] in page.text
    listing = client.get("/case/d-001").text  # a case ana does not hold: no countdown
    assert "lease-countdown" not in listing


def test_who_answered_what_shows_only_after_resolution(
    server: str, queue: SQLiteReviewQueue
) -> None:
    _pair_case(queue)
    ana, bob = _login(server, "ana"), _login(server, "bob")
    for client, answer in ((ana, "1"), (bob, "2")):
        page = client.post("/case/k2/claim", data={"csrf": _csrf(client.get("/").text)})
        client.post(
            "/case/k2/resolve", data={"csrf": _csrf(page.text), "outcome": answer, "note": "n"}
        )
        if client is ana:  # one answer in: the second reviewer must not see it
            assert 'id="answers"' not in bob.get("/case/k2").text
    tied = bob.get("/case/k2").text
    assert "adjudication" in tied
    assert 'id="answers"' not in tied
    judge = _login(server, "judge")
    page = judge.post("/case/k2/claim", data={"csrf": _csrf(judge.get("/").text)})
    judge.post("/case/k2/resolve", data={"csrf": _csrf(page.text), "outcome": "2"})
    done = ana.get("/case/k2").text
    rows = re.findall(r"<tr><td>(\w+)</td><td>(\w+)</td><td>(\d)</td>", done)
    assert rows == [("ana", "review", "1"), ("bob", "review", "2"), ("judge", "adjudication", "2")]
    assert 'id="outcome-source">adjudication<' in done
    single = ana.get("/case/d-000").text  # a one-reviewer case shows no answers table
    assert 'id="answers"' not in single


def test_reviewer_stats_page(server: str, queue: SQLiteReviewQueue) -> None:
    for i in range(4):  # ana and bob both answer four two-reviewer cases
        queue.set_context(None, [{"name": "pair", "action": "review", "reviews_required": 2}])
        queue.enqueue({"decision_id": f"p{i}", "tier": "pair", "action": "review"})
        for reviewer, answer in (("ana", i % 2), ("bob", i % 2 if i else 1)):
            queue.claim_case(f"p{i}", reviewer)
            queue.resolve(f"p{i}", answer, reviewer)
    client = _login(server, "ana")
    html = client.get("/stats").text
    assert re.search(r"<td>ana</td><td>4</td>", html)
    assert re.search(r"<td>bob</td><td>4</td>", html)
    kappa = queue.reviewer_stats()["pairs"][0]["kappa"]
    assert f"<td>ana · bob</td><td>{kappa:.3f}</td><td>4</td>" in html
    assert 'id="sla"' in html
    assert ">pair</td>" in html


def test_reason_words_and_realized_error() -> None:
    assert describe_reason("ood").startswith("The row as a whole")
    r = realized_error(
        [{"prediction": 1, "outcome": 0}] * 3 + [{"prediction": 1, "outcome": 1}] * 97
    )
    assert r["errors"] == 3
    assert r["low"] < 0.03 < r["high"]
    assert np.isclose(r["rate"], 0.03)


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian chromium not installed")
def test_browser_claim_resolve_and_no_script(
    server: str, queue: SQLiteReviewQueue, tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    dialogs: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=shutil.which("chromium"),
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
            ],
        )
        page = browser.new_page()
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto(f"{server}/?token={TOKEN}&reviewer=carol")
        assert page.locator("#pending").is_visible()
        page.click("#claim-next")
        assert page.locator("#decision-id").inner_text() == "d-000"
        first = page.locator("#lease-countdown").inner_text()
        page.wait_for_timeout(2100)  # the countdown ticks in the page
        later = page.locator("#lease-countdown").inner_text()
        assert later < first  # "29:57" < "29:59"
        assert re.fullmatch(r"29:5\d", later)
        page.fill("#outcome-input", "1")
        page.fill("#note-input", "<script>alert(1)</script>")
        page.click("#resolve")
        assert page.locator("#decision-id").inner_text() == "d-001"
        page.goto(f"{server}/")
        assert "d-000" not in page.locator("#pending").inner_text()
        page.screenshot(path=str(tmp_path / "console.png"))
        page.goto(f"{server}/case/d-000")
        assert page.locator("#note").inner_text() == "<script>alert(1)</script>"
        page.goto(f"{server}/case/evil")
        assert "<script>alert(3)</script>" in page.locator("#inputs").inner_text()
        _pair_case(queue)
        for reviewer, answer in (("ana", 1), ("bob", 1)):
            queue.claim_case("k2", reviewer)
            queue.resolve("k2", answer, reviewer)
        page.goto(f"{server}/case/k2")
        assert page.locator("#answers").is_visible()
        assert page.locator("#answers tbody tr").count() == 2
        page.click("#stats-link")
        assert "carol" in page.locator("#reviewers").inner_text()
        assert "ana · bob" in page.locator("#kappa").inner_text()
        page.screenshot(path=str(tmp_path / "stats.png"))
        browser.close()
    assert dialogs == []
    assert (tmp_path / "console.png").stat().st_size > 10_000
    case = queue.get("d-000")
    assert case["outcome"] == 1
    assert case["note"] == "<script>alert(1)</script>"
