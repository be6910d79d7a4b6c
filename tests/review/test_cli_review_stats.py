"""``safepredict review stats`` and ``--queue postgresql://...`` on both backends."""

from __future__ import annotations

import getpass
import json
from collections.abc import Callable

from typer.testing import CliRunner

from safepredict.cli._app import app
from safepredict.review import SQLiteReviewQueue
from safepredict.review._core import ReviewQueueCore
from safepredict.review.outcomes import OutcomeSpace

runner = CliRunner()


def target(q: ReviewQueueCore) -> str:
    """The --queue value: the file, or the URL with a password (trust auth ignores it)."""
    if isinstance(q, SQLiteReviewQueue):
        return str(q.path)
    dsn: str = q.dsn  # type: ignore[attr-defined]
    return dsn.replace("postgresql://postgres@", "postgresql://postgres:secret-pw@", 1).replace(
        f"postgresql://{getpass.getuser()}@", f"postgresql://{getpass.getuser()}:secret-pw@", 1
    )


def test_review_stats_reports_sla_agreement_and_accuracy(
    make_queue: Callable[..., ReviewQueueCore],
) -> None:
    q = make_queue()
    tiers = [{"name": "pair", "action": "review", "reviews_required": 2}]
    q.set_context(OutcomeSpace("classification", (0, 1)), tiers)
    q.write_batch(
        [
            {
                "decision_id": f"d{i}",
                "tier": "pair",
                "action": "accept",
                "audit": True,
                "prediction": 0,
            }
            for i in range(4)
        ]
    )
    answers = {"ana": [0, 1, 0, 1], "bo": [0, 1, 1, 1]}
    for reviewer, labels in answers.items():
        for i, label in enumerate(labels):
            q.claim_case(f"d{i}", reviewer)
            q.resolve(f"d{i}", label, reviewer)
    q.record_outcome("d0", 0)  # gold for d0: both right
    result = runner.invoke(app, ["review", "stats", "--queue", target(q), "--json"])
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["tiers"]["pair"]["resolved"] == 3  # d2 tied: it waits for adjudication
    assert data["tiers"]["pair"]["adjudication"] == 1
    assert data["reviewers"]["ana"]["gold_n"] == 1
    assert data["pairs"][0]["n"] == 4
    assert data["alpha"] == q.reviewer_stats()["alpha"]
    table = runner.invoke(app, ["review", "stats", "--queue", target(q)])
    assert table.exit_code == 0
    assert "secret-pw" not in table.stdout
    assert "kappa ana vs bo" in table.stdout
    assert "Krippendorff's alpha" in table.stdout
    counts = runner.invoke(app, ["review", "counts", "--queue", target(q)])
    assert counts.exit_code == 0
    assert "pair" in counts.stdout


def test_review_stats_on_an_unreachable_postgres_is_one_line() -> None:
    result = runner.invoke(
        app,
        ["review", "stats", "--queue", "postgresql://nobody@/none?host=/nonexistent&port=1"],
    )
    assert result.exit_code == 1
    assert "cannot be reached" in result.output
    assert "Traceback" not in result.output
