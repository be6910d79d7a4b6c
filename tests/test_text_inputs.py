"""Text inputs (#19): schema, per-row guards, OOD false alarms, events, explanations, state.

The corpus is generated (``corpus`` fixture in conftest: pseudo-words with
class-dependent distributions), since scikit-learn's text datasets need the network.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline

from safepredict import GuardConfig, InputSchemaError, PersistenceError, SafePredictor
from safepredict.guards import TextGuards
from safepredict.reasons import describe_reason


@pytest.fixture(scope="module")
def text_model(corpus: Any) -> dict[str, Any]:
    """A TF-IDF + logistic regression pipeline, its calibration and test texts."""
    X_tr, y_tr = corpus.make(1500, seed=1)
    X_cal, y_cal = corpus.make(800, seed=2)
    X_te, y_te = corpus.make(400, seed=3)
    pipe = make_pipeline(TfidfVectorizer(), LogisticRegression(max_iter=1000)).fit(X_tr, y_tr)
    return {"pipe": pipe, "cal": (X_cal, y_cal), "test": (X_te, y_te)}


@pytest.fixture(scope="module")
def text_sp(text_model: dict[str, Any]) -> SafePredictor:
    X_cal, y_cal = text_model["cal"]
    sp = SafePredictor(text_model["pipe"], log="off", random_state=0, explainer="auto")
    return sp.calibrate(X_cal, y_cal)


def test_text_schema_whole_batch_errors_and_single_strings(text_sp: SafePredictor) -> None:
    assert text_sp._schema().modality == "text"
    assert isinstance(text_sp.guards_, TextGuards)
    one = text_sp.decide_one("a text alone is one row")
    assert one.action in ("accept", "review", "abstain")
    for bad in (np.zeros((3, 2)), {"text": "a dict is a table row"}, [["nested"], ["lists"]]):
        with pytest.raises(InputSchemaError, match="X must be text"):
            text_sp.decide(bad)


def test_rows_that_are_not_strings_are_judged_one_by_one(
    text_sp: SafePredictor, text_model: dict[str, Any]
) -> None:
    X_te, _ = text_model["test"]
    batch = [X_te[0], None, 5, float("nan"), X_te[1]]
    d = text_sp.decide(batch)
    assert d.reasons[1] == ("missing:text",)
    assert d.reasons[2] == ("type:text",)
    assert d.reasons[3] == ("missing:text",)
    assert [d.actions[i] for i in (1, 2, 3)] == ["abstain"] * 3
    assert [d.predictions[i] for i in (1, 2, 3)] == [None] * 3  # never sent to the model
    assert d.predictions[0] is not None
    assert d.predictions[4] is not None


def test_empty_strings_and_gibberish_are_never_accepted(
    text_sp: SafePredictor, text_model: dict[str, Any], corpus: Any
) -> None:
    empties = ["", " ", "\t\n", "   \u3000 "]
    junk = corpus.gibberish(400, seed=7)
    d = text_sp.decide(empties + junk)
    assert not (d.actions == "accept").any()
    for i, why in enumerate(d.reasons):
        expected = "empty:text" if i < len(empties) else "oov:text"
        assert expected in why, (i, (empties + junk)[i], why)
    # the control: in-distribution texts are accepted (the guards are not closed shut)
    X_te, _ = text_model["test"]
    assert float((text_sp.decide(X_te).actions == "accept").mean()) > 0.5


def test_a_text_far_longer_than_the_reference_is_flagged(
    text_sp: SafePredictor, corpus: Any
) -> None:
    long_text = " ".join(corpus.words[:50] * 10)  # 500 known words; the reference has ~20
    d = text_sp.decide([long_text])
    assert "length:text" in d.reasons[0]
    assert d.actions[0] != "accept"


ALPHA_OOD = 0.05
ALPHA_GUARD = 0.10
N_SPLITS = 20
N_REF, N_TEST = 800, 400


def _false_alarms(pipe: Any, corpus: Any, *, shifted: bool) -> tuple[float, float, int]:
    """Mean OOD and length/oov false-alarm rates over ``N_SPLITS`` fresh splits."""
    config = GuardConfig(ood_alpha=ALPHA_OOD, guard_alpha=ALPHA_GUARD)
    ood, other, m = [], [], 0
    for s in range(N_SPLITS):
        ref, _ = corpus.make(N_REF, seed=1000 + s)
        test, _ = corpus.make(N_TEST, seed=2000 + s, shifted=shifted)
        guards = TextGuards.fit(ref, config, model=pipe, random_state=s)
        assert guards.detector is not None
        m = len(guards.detector.calibration_scores)
        r = guards.check(test)
        assert r.ood is not None
        ood.append(float((r.ood <= ALPHA_OOD).mean()))
        flagged = np.zeros(N_TEST, dtype=bool)
        for i, why in r.reasons.items():
            flagged[i] = any(w != "ood" for w in why)
        other.append(float(flagged.mean()))
    return float(np.mean(ood)), float(np.mean(other)), m


def _tolerance(alpha: float, m: int) -> float:
    """Three standard errors of the mean false-alarm rate over N_SPLITS splits.

    Given its m held-out calibration scores, a split's false-alarm rate is a Beta
    variable with variance ~ alpha (1 - alpha) / (m + 2); its N_TEST test rows add
    the binomial alpha (1 - alpha) / N_TEST. The splits are independent (fresh
    data and seeds), so the mean's variance is their sum over N_SPLITS. Three
    standard errors: a false failure has probability ~ 1e-3.
    """
    var = alpha * (1 - alpha) * (1 / (m + 2) + 1 / N_TEST)
    return 3 * math.sqrt(var / N_SPLITS)


def test_text_guard_false_alarms_stay_at_their_alphas(
    text_model: dict[str, Any], corpus: Any
) -> None:
    ood, other, m = _false_alarms(text_model["pipe"], corpus, shifted=False)
    assert ood <= ALPHA_OOD + _tolerance(ALPHA_OOD, m)
    # length and oov each run at guard_alpha / 2: together at most guard_alpha
    assert other <= ALPHA_GUARD + _tolerance(ALPHA_GUARD, m)


def test_false_alarm_check_can_fail_on_shifted_text(
    text_model: dict[str, Any], corpus: Any
) -> None:
    """Negative control: off-distribution texts break the bound the test above asserts."""
    ood, _, m = _false_alarms(text_model["pipe"], corpus, shifted=True)
    assert ood > ALPHA_OOD + _tolerance(ALPHA_OOD, m)


def test_events_hash_texts_and_log_them_only_when_asked(
    text_model: dict[str, Any], tmp_path: Path
) -> None:
    X_cal, y_cal = text_model["cal"]
    X_te, _ = text_model["test"]
    texts = list(X_te[:5])

    def events(**params: Any) -> list[dict[str, Any]]:
        path = tmp_path / f"events-{len(params)}-{sorted(params)}.jsonl"
        sp = SafePredictor(text_model["pipe"], logger=path, random_state=0, **params)
        sp.calibrate(X_cal, y_cal).decide(texts)
        lines = path.read_text(encoding="utf-8").splitlines()
        return [e for e in map(json.loads, lines) if e.get("event") == "safepredict.decision"]

    default = events()
    assert len(default) == 5
    hashes = [e["inputs_hash"] for e in default]
    assert len(set(hashes)) == 5
    assert all(isinstance(h, str) and len(h) == 16 for h in hashes)
    assert not any(t in json.dumps(default) for t in texts)
    assert not any(t in json.dumps(events(log_inputs=True, redact=["text"])) for t in texts)
    logged = events(log_inputs=True)
    assert [e["inputs"]["text"] for e in logged] == texts


def test_token_explanations_add_up_to_the_logit(
    text_sp: SafePredictor, text_model: dict[str, Any]
) -> None:
    X_te, _ = text_model["test"]
    pipe = text_model["pipe"]
    rows = X_te[:60]
    explained, skipped = text_sp.explainer_.explain(rows, np.zeros(60, dtype=np.intp) + 2)
    assert skipped == [None] * 60
    logits = pipe.decision_function(rows)
    for i, e in enumerate(explained):
        assert e is not None
        assert e.method == "tokens"
        assert e.output == "logit[2]"
        assert e.output_value == pytest.approx(logits[i, 2], abs=1e-9)
        assert set(e.feature_names) <= set(rows[i].split())  # tokens of the row only
    # decide attaches them to the rows it explains (not accepted by default)
    d = text_sp.decide([*list(rows), ""])
    assert d.explanations is not None
    assert d.explanations[-1] is not None


def test_explicit_linear_explainer_on_a_non_linear_text_model_fails_at_calibrate(
    text_model: dict[str, Any],
) -> None:
    from sklearn.ensemble import RandomForestClassifier

    X_cal, y_cal = text_model["cal"]
    forest = make_pipeline(TfidfVectorizer(), RandomForestClassifier(10, random_state=0))
    forest.fit(X_cal, y_cal)
    from safepredict import ConfigError

    with pytest.raises(ConfigError, match="not linear"):
        SafePredictor(forest, log="off", explainer="linear").calibrate(X_cal, y_cal)
    sp = SafePredictor(forest, log="off", explainer="auto", random_state=0)
    d = sp.calibrate(X_cal, y_cal).decide(["", "qzx"])
    assert all("explanation_skipped:unsupported" in why for why in d.reasons)


class _TextFunction:
    """A model behind a function of strings (no vectorizer visible to safepredict)."""

    def __init__(self, pipe: Pipeline) -> None:
        self.pipe = pipe

    def __call__(self, texts: Any) -> Any:
        return self.pipe.predict_proba(list(texts))


def test_saved_state_holds_no_calibration_text_and_needs_the_featurizer(
    text_model: dict[str, Any], tmp_path: Path
) -> None:
    X_cal, y_cal = text_model["cal"]
    X_te, _ = text_model["test"]
    pipe = text_model["pipe"]
    fn = _TextFunction(pipe)
    featurizer = pipe[:-1].transform
    sp = SafePredictor(
        fn, task="classification", classes=[0, 1, 2], featurizer=featurizer, log="off"
    ).calibrate(X_cal, y_cal)
    assert sp.guards_.tokenizer.vocabulary is None  # learned: hashed words
    path = sp.save(tmp_path / "text.json")
    saved = path.read_text(encoding="utf-8")
    state = json.loads(saved)["state"]["guards_"]["state"]
    assert state["featurizer"] == "user"
    assert state["stores_raw_rows"] is False
    assert 0 < len(state["vocabulary_hashes"]) <= 400
    assert not any(doc in saved for doc in X_cal)  # no calibration text
    assert not any(f'"{w}"' in saved for w in " ".join(X_cal[:50]).split())  # nor a word
    with pytest.raises(PersistenceError, match="featurizer"):
        SafePredictor.load(path, model=fn)
    back = SafePredictor.load(path, model=fn, featurizer=featurizer)
    batch = [*X_te[:30], "", "qqq zzz"]
    assert back.decide(batch).actions.tolist() == sp.decide(batch).actions.tolist()
    assert back.decide(batch).reasons == sp.decide(batch).reasons


def test_text_reason_wording_is_registered() -> None:
    assert describe_reason("oov:text").startswith("Too many words of text")
    assert describe_reason("empty:text") == "text is empty or only whitespace."
    assert "timed out" in describe_reason("model_error:timeout")
    assert "no explainer" in describe_reason("explanation_skipped:unsupported")
