"""Shared fixtures: real models on scikit-learn's bundled datasets."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import structlog
from numpy.typing import NDArray
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris, load_wine
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestRegressor
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler


@dataclass
class Split:
    """A model fitted on a train split, with calibration and test splits."""

    model: Any
    X_train: Any
    y_train: Any
    X_cal: Any
    y_cal: Any
    X_test: Any
    y_test: Any


@contextmanager
def json_lines_logging(path: Path) -> Iterator[Path]:
    """structlog writing JSON lines to ``path`` (the recipe docs/events.md documents)."""
    with path.open("ab") as fh:
        structlog.configure(
            processors=[
                structlog.contextvars.merge_contextvars,
                structlog.processors.add_log_level,
                structlog.processors.JSONRenderer(serializer=orjson.dumps),
            ],
            logger_factory=structlog.BytesLoggerFactory(fh),
            cache_logger_on_first_use=True,
        )
        try:
            yield path
        finally:
            structlog.reset_defaults()
            structlog.contextvars.clear_contextvars()


def three_way(X: Any, y: Any, seed: int = 0) -> tuple[Any, ...]:
    X_tr, X_rest, y_tr, y_rest = train_test_split(X, y, test_size=0.5, random_state=seed)
    X_cal, X_te, y_cal, y_te = train_test_split(X_rest, y_rest, test_size=0.5, random_state=seed)
    return X_tr, y_tr, X_cal, y_cal, X_te, y_te


@pytest.fixture(scope="session")
def iris_lr() -> Split:
    X, y = load_iris(return_X_y=True)
    X_tr, y_tr, X_cal, y_cal, X_te, y_te = three_way(X, y)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X_tr, y_tr)
    return Split(model, X_tr, y_tr, X_cal, y_cal, X_te, y_te)


@pytest.fixture(scope="session")
def wine_hgb() -> Split:
    X, y = load_wine(return_X_y=True, as_frame=True)
    X_tr, y_tr, X_cal, y_cal, X_te, y_te = three_way(X, y)
    model = HistGradientBoostingClassifier(max_iter=50, random_state=0).fit(X_tr, y_tr)
    return Split(model, X_tr, y_tr, X_cal, y_cal, X_te, y_te)


@pytest.fixture(scope="session")
def cancer_lr() -> Split:
    X, y = load_breast_cancer(return_X_y=True)
    X_tr, y_tr, X_cal, y_cal, X_te, y_te = three_way(X, y)
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X_tr, y_tr)
    return Split(model, X_tr, y_tr, X_cal, y_cal, X_te, y_te)


@pytest.fixture(scope="session")
def diabetes_rf() -> Split:
    X, y = load_diabetes(return_X_y=True, as_frame=True)
    X_tr, y_tr, X_cal, y_cal, X_te, y_te = three_way(X, y)
    model = RandomForestRegressor(n_estimators=50, random_state=0).fit(X_tr, y_tr)
    return Split(model, X_tr, y_tr, X_cal, y_cal, X_te, y_te)


@pytest.fixture(scope="session")
def diabetes_ridge() -> Split:
    X, y = load_diabetes(return_X_y=True)
    X_tr, y_tr, X_cal, y_cal, X_te, y_te = three_way(X, y)
    return Split(Ridge().fit(X_tr, y_tr), X_tr, y_tr, X_cal, y_cal, X_te, y_te)


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


# The service example under uvicorn, shared by test_service.py and test_service_oip.py.
from tests.service_server import service  # noqa: E402, F401

# ---------------------------------------------------------------- text corpus (#19)
# A generated text corpus with class-dependent word distributions (no download).
#
# scikit-learn's text datasets (``fetch_20newsgroups``) need the network, so the text
# tests draw documents from a seeded generative model instead: a vocabulary of 400
# pronounceable pseudo-words (2-3 consonant-vowel syllables), a Zipf-like background
# distribution shared by every class, and per class a Dirichlet "topic" over the
# vocabulary; a document of class ``k`` has ``6 + Poisson(14)`` words, each drawn from
# ``0.55 * topic_k + 0.45 * background``. ``shifted=True`` draws every word from the
# 400 words' least likely quarter under all classes instead (a negative control for
# the OOD tests). Gibberish is made of consonant-only strings, so it never contains
# a vocabulary word (every vocabulary word has vowels).

_CONSONANTS = "bdfgklmnprstvz"
_VOWELS = "aeiou"
_N_WORDS = 400
_N_CLASSES = 3


def _text_vocabulary() -> tuple[NDArray[np.str_], NDArray[np.float64], NDArray[np.float64]]:
    rng = np.random.default_rng(1234)
    words: list[str] = []
    seen: set[str] = set()
    while len(words) < _N_WORDS:
        n_syl = int(rng.integers(2, 4))
        word = "".join(
            rng.choice(list(_CONSONANTS)) + rng.choice(list(_VOWELS)) for _ in range(n_syl)
        )
        if word not in seen:
            seen.add(word)
            words.append(word)
    background = 1.0 / np.arange(1, _N_WORDS + 1) ** 1.1
    background /= background.sum()
    topics = rng.dirichlet(np.full(_N_WORDS, 0.05), size=_N_CLASSES)
    return np.array(words), background, topics


_WORDS, _BACKGROUND, _TOPICS = _text_vocabulary()
_MIXED = 0.55 * _TOPICS + 0.45 * _BACKGROUND
_RARE = np.argsort(_MIXED.max(axis=0))[: _N_WORDS // 4]


def _make_corpus(
    n: int, seed: int, *, shifted: bool = False
) -> tuple[NDArray[np.object_], NDArray[np.int64]]:
    """``n`` documents and their labels (``shifted``: off-distribution documents)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, _N_CLASSES, size=n)
    lengths = 6 + rng.poisson(14, size=n)
    docs = np.empty(n, dtype=object)
    for i in range(n):
        if shifted:
            idx = rng.choice(_RARE, size=lengths[i])
        else:
            idx = rng.choice(_N_WORDS, size=lengths[i], p=_MIXED[labels[i]])
        docs[i] = " ".join(_WORDS[idx])
    return docs, labels.astype(np.int64)


def _gibberish(n: int, seed: int) -> list[str]:
    """Strings with no vocabulary word: consonant runs, punctuation, digits, symbols."""
    rng = np.random.default_rng(seed)
    letters = list("bcdfghjklmnpqrstvwxz")
    out: list[str] = []
    for i in range(n):
        kind = i % 4
        if kind == 0:  # consonant-only "words"
            out.append(
                " ".join(
                    "".join(rng.choice(letters, size=rng.integers(3, 9)))
                    for _ in range(rng.integers(1, 12))
                )
            )
        elif kind == 1:  # punctuation only
            out.append("".join(rng.choice(list("!?.,;:-*#@&%"), size=rng.integers(1, 20))))
        elif kind == 2:  # digits and single letters
            out.append(
                " ".join(str(int(v)) for v in rng.integers(0, 10_000, size=rng.integers(1, 8)))
            )
        else:  # other scripts and symbols
            out.append("".join(rng.choice(list("ЖЯЮ漢字ßøΩ≈∑★☃"), size=rng.integers(2, 15))))
    return out


@dataclass(frozen=True)
class TextCorpus:
    """The generated corpus: ``make(n, seed, shifted=False)``, ``gibberish(n, seed)``."""

    words: tuple[str, ...]
    n_classes: int

    @staticmethod
    def make(
        n: int, seed: int, *, shifted: bool = False
    ) -> tuple[NDArray[np.object_], NDArray[np.int64]]:
        return _make_corpus(n, seed, shifted=shifted)

    @staticmethod
    def gibberish(n: int, seed: int) -> list[str]:
        return _gibberish(n, seed)


@pytest.fixture(scope="session")
def corpus() -> TextCorpus:
    return TextCorpus(tuple(str(w) for w in _WORDS), _N_CLASSES)


@pytest.fixture(scope="module")
def secret_split() -> dict[str, Any]:
    """Iris plus a 'ssn' column with distinctive 9-digit values the model uses."""
    X, y = load_iris(return_X_y=True, as_frame=True)
    X = X.rename(columns=lambda c: c.replace(" (cm)", "").replace(" ", "_"))
    X["ssn"] = 987_650_000 + np.arange(len(X)) * 7.0
    model = LogisticRegression(max_iter=2000).fit(X.iloc[::3], y.iloc[::3])
    return {"model": model, "X": X, "y": y}
