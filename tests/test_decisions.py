import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from safepredict import ConfigError, Decision, Decisions, Explanation
from safepredict._ids import new_batch_id
from safepredict.decisions import FRAME_COLUMNS


def make_batch() -> Decisions:
    return Decisions(
        predictions=np.array(["a", "b", None], dtype=object),
        tier_codes=np.array([0, 1, 2]),
        tier_names=("auto", "human", "guard"),
        actions=np.array(["accept", "abstain", "abstain"], dtype=object),
        reasons=[(), ("empty_set",), ("missing:x", "model_error")],
        confidence=np.array([0.97, 0.4, np.nan]),
        batch_id="b1",
        set_mask=np.array([[True, False], [False, False], [False, False]]),
        classes=np.array(["a", "b"], dtype=object),
        probabilities=np.array([[0.9, 0.1], [0.5, 0.5], [np.nan, np.nan]]),
    )


def test_indexing_iteration_and_columns() -> None:
    batch = make_batch()
    assert len(batch) == 3
    first = batch[0]
    assert isinstance(first, Decision)
    assert first.prediction_set == ("a",)
    assert first.decision_id == "b1-0"
    assert batch[-1].confidence is None
    assert batch[-1].prediction_set is None
    assert [d.action for d in batch] == ["accept", "abstain", "abstain"]
    assert batch.tiers.tolist() == ["auto", "human", "guard"]
    assert batch.set_sizes.tolist() == [1, 0, 0]
    assert batch.guard_report(2).reasons == ("missing:x",)
    with pytest.raises(IndexError, match="out of range"):
        batch[3]
    sub = batch[1:]
    assert len(sub) == 2
    assert sub[0].decision_id == "b1-1"


def test_decision_is_frozen_and_json_safe() -> None:
    d = make_batch()[0]
    with pytest.raises(AttributeError):
        d.action = "review"  # type: ignore[misc]
    text = json.dumps([x.to_dict() for x in make_batch()], allow_nan=False)
    assert '"prediction_set": ["a"]' in text


def test_to_frame() -> None:
    frame = make_batch().to_frame()
    assert tuple(frame.columns) == FRAME_COLUMNS
    assert frame["tier"].tolist() == ["auto", "human", "guard"]


@pytest.mark.parametrize("set_format", ["tuple", "list", "string"])
def test_to_frame_set_formats_and_fixed_dtypes(set_format: str, tmp_path: Path) -> None:
    batch = make_batch()
    frame = batch.to_frame(set_format=set_format)
    encode = {"tuple": tuple, "list": list, "string": lambda s: json.dumps(list(s))}[set_format]
    sets = [None if d.prediction_set is None else encode(d.prediction_set) for d in batch]
    assert frame["prediction_set"].iloc[:2].tolist() == sets[:2]
    assert sets[-1] is None
    assert pd.isna(frame["prediction_set"].iloc[2])
    assert frame["reasons"].tolist() == [encode(r) for r in batch.reasons]
    assert frame["prediction"].dtype == "string"
    assert pd.isna(frame["prediction"].iloc[2])
    empty = batch.take([]).to_frame(set_format=set_format)
    assert dict(empty.dtypes) == dict(frame.dtypes)  # usable as a Dask meta
    assert frame["audit"].dtype == bool
    assert frame["confidence"].dtype == np.float64
    assert frame["tier"].dtype == "string"
    if set_format == "string":
        frame.to_parquet(tmp_path / "decisions.parquet")  # writes as is
        back = pd.read_parquet(tmp_path / "decisions.parquet")
        assert back["prediction_set"].iloc[0] == '["a"]'


def test_to_frame_lists_are_not_shared_between_rows() -> None:
    frame = make_batch().to_frame(set_format="list")
    frame["reasons"][0].append("edited")
    assert "edited" not in frame["reasons"][1]


def test_to_frame_rejects_unknown_set_format() -> None:
    with pytest.raises(ConfigError, match=r"set_format must be one of .*'csv'"):
        make_batch().to_frame(set_format="csv")


def test_explanation_top_and_dict() -> None:
    e = Explanation("linear", ("x1", "x2", "x3"), (0.5, -2.0, 0.1), 1.0, output="prediction")
    assert e.top(1) == [("x2", -2.0)]
    assert e.to_dict(top_k=2)["top"] == [["x2", -2.0], ["x1", 0.5]]
    assert e.output_value == pytest.approx(-0.4)


@pytest.mark.parametrize(
    ("classes", "dtype"),
    [
        (np.array([3, 7]), "Int64"),
        (np.array([3, 7], dtype=np.uint8), "UInt64"),
        (np.array([False, True]), "boolean"),
        (np.array(["no", "yes"], dtype=object), "string"),
        (np.array(["no", "yes"]), "string"),  # numpy unicode labels
    ],
)
def test_to_frame_prediction_dtype_follows_the_labels(classes: np.ndarray, dtype: str) -> None:
    batch = make_batch()
    batch.classes = classes
    batch.predictions = np.array([classes[0], classes[1], None], dtype=object)
    frame = batch.to_frame()
    assert frame["prediction"].dtype == dtype
    assert frame["prediction"].iloc[:2].tolist() == classes.tolist()
    assert pd.isna(frame["prediction"].iloc[2])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_batch_ids_are_unique_and_a_forked_child_does_not_repeat_its_parent() -> None:
    ids = {new_batch_id() for _ in range(20_000)}
    assert len(ids) == 20_000
    assert all(len(b) == 16 and int(b, 16) >= 0 for b in list(ids)[:100])
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, through the pipe
        os.close(read)
        os.write(write, " ".join(new_batch_id() for _ in range(50)).encode())
        os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = pipe.read().split()
    os.waitpid(pid, 0)
    parent = [new_batch_id() for _ in range(50)]
    assert len(child) == 50
    assert not set(child) & set(parent)  # without the reseed at fork both draw the same ids
