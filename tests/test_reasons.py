"""The reason-code registry is the one vocabulary the pipeline writes and every reader uses."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

from safepredict import ConfigError, GuardConfig, SafePredictor
from safepredict._ids import decision_ids, new_batch_id
from safepredict.reasons import (
    GUARD_REASONS,
    REASONS,
    describe_reason,
    is_guard_reason,
    reason_code,
    reason_name,
)
from safepredict.review.console import describe_reason as console_describe_reason

DOCS = Path(__file__).resolve().parents[1] / "docs"


@pytest.fixture(scope="module")
def flagged() -> tuple[SafePredictor, np.ndarray]:
    X, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=500).fit(X[::2], y[::2])
    sp = SafePredictor(model, log="off").calibrate(X[1::2], y[1::2])
    batch = X[:12].copy()
    batch[0, 0] = np.nan  # missing
    batch[1, 2] = 1e6  # out of range
    batch[2] = 50.0  # out of range everywhere
    batch[3, 1] = np.inf  # non-finite
    return sp, batch


def test_every_reason_the_pipeline_writes_is_registered(
    flagged: tuple[SafePredictor, np.ndarray],
) -> None:
    sp, batch = flagged
    decisions = sp.decide(batch)
    codes = {code for row in decisions.reasons for code in row}
    assert {"missing:x0", "out_of_range:x2", "non_finite:x1"} <= codes
    for code in codes:
        assert reason_name(code) in REASONS, code
        assert describe_reason(code) != code, code
        detail = code.partition(":")[2] or None
        assert reason_code(reason_name(code), detail) == code
    # The guard report keeps exactly the registered guard codes of each row.
    for i, row in enumerate(decisions.reasons):
        assert decisions.guard_report(i).reasons == tuple(c for c in row if is_guard_reason(c))


def test_guard_names_come_from_the_registry() -> None:
    assert GuardConfig.GUARDS == GUARD_REASONS
    assert GUARD_REASONS == (
        "missing",
        "non_finite",
        "type",
        "unseen_category",
        "out_of_range",
        "empty",
        "length",
        "oov",
        "ood",
    )
    assert [c.name for c in REASONS.values() if c.source == "guard"] == list(GUARD_REASONS)


def test_wording_fills_in_the_detail_and_passes_unknown_codes_through() -> None:
    assert describe_reason("out_of_range:age") == (
        "age is outside the range seen in the reference data."
    )
    assert describe_reason("missing") == "A value is missing for a feature."
    assert describe_reason("uncertified:auto") == (
        "Tier auto could not be certified on the calibration data."
    )
    assert describe_reason("explanation_skipped:budget") == "The explanation was skipped (budget)."
    assert describe_reason("brand_new:x") == "brand_new:x"
    assert not is_guard_reason("empty_set")
    assert not is_guard_reason("brand_new")
    # The review console shows the registry's wording, not a copy of it.
    assert console_describe_reason is describe_reason


def test_building_an_unregistered_or_malformed_code_says_how_to_fix_it() -> None:
    with pytest.raises(ConfigError, match=r"reason 'nope' is not registered.*reasons\.py"):
        reason_code("nope")
    with pytest.raises(
        ConfigError, match=r"'missing' takes a column.*reason_code\('missing', <column>\)"
    ):
        reason_code("missing")
    with pytest.raises(ConfigError, match=r"'ood' takes no detail"):
        reason_code("ood", "x0")


def test_docs_list_every_reason_code_with_its_wording() -> None:
    text = (DOCS / "architecture.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `([a-z_]+)(?::<\w+>)?` \| [a-z]+ \| (.+?) \|$", text, re.M))
    assert rows == {name: code.wording for name, code in REASONS.items()}


def test_ids_are_fresh_hex_and_row_numbered() -> None:
    batches = {new_batch_id() for _ in range(1000)}
    assert len(batches) == 1000  # 64 random bits: a collision has probability < 3e-14
    assert all(re.fullmatch(r"[0-9a-f]{16}", b) for b in batches)
    ids = decision_ids("b1", 3)
    assert ids.tolist() == ["b1-0", "b1-1", "b1-2"]
    assert ids.dtype == object
    assert decision_ids("b1", 0).tolist() == []


def test_decisions_use_the_id_helper(flagged: tuple[SafePredictor, np.ndarray]) -> None:
    sp, batch = flagged
    d = sp.decide(batch)
    assert d.decision_ids.tolist() == decision_ids(d.batch_id, len(batch)).tolist()
