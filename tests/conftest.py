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
