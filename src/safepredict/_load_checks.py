"""Checks a restored predictor passes before ``load`` returns it.

:func:`check_conformal` (the conformal state fits the task, the score and the
model) and :func:`trial_decide` (a decide on synthetic probe rows, so a state
that cannot decide fails at load, never in a later ``decide``). Used by
:mod:`safepredict.persistence`.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from safepredict._model_fingerprint import probe_rows
from safepredict.conformal import (
    CLASSIFICATION_SCORES,
    REGRESSION_SCORES,
    ClassificationConformal,
    RegressionConformal,
)
from safepredict.exceptions import PersistenceError

__all__ = ["check_conformal", "modal_probe", "trial_decide"]


def trial_decide(predictor: Any) -> None:
    """Decide on a few synthetic rows, with no router and no events.

    A restored state that cannot decide then fails here, at load, and never in a
    later ``decide``. The rows are the fingerprint's probe pattern (no data); what they decide is
    discarded. Values the guards flag or the model cannot score are fine: only an
    exception means the state is inconsistent.
    """
    n = int(predictor.n_features_in_)
    if not 0 < n <= 100_000:
        raise PersistenceError(f"n_features_in_ must be in 1..100000; got {n}.")
    probe = probe_rows(n)[:4]
    rows: Any = np.vstack([probe, np.full((1, n), np.nan)])  # and a row of missing values
    names = getattr(predictor, "feature_names_in_", None)
    if names is not None:
        if len(names) != n:
            raise PersistenceError(
                f"feature_names_in_ has {len(names)} names for n_features_in_={n}."
            )
        rows = [dict(zip((str(c) for c in names), r.tolist(), strict=True)) for r in probe]
        rows.append(dict.fromkeys((str(c) for c in names), None))
    modality = getattr(predictor, "input_modality_", None)
    if modality is not None:  # text or arrays: rows of that modality (safepredict.inputs)
        rows = modal_probe(modality)
    predictor.router_instance  # noqa: B018  # a saved router that is no sink fails now, not in decide
    predictor.events  # noqa: B018  # likewise the logger / log settings
    saved = {k: predictor.__dict__.get(k) for k in ("router", "log", "logger")}
    predictor.__dict__.update(router=None, log="off", logger=None)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a model warning about synthetic rows is fine,
            warnings.simplefilter("error", RuntimeWarning)  # overflow / NaN from the state is not
            predictor.decide(rows)
    finally:
        predictor.__dict__.update(saved)


def modal_probe(modality: Mapping[str, Any]) -> Any:
    """Synthetic rows of a text or array predictor: words and an empty string, or zeros."""
    if modality.get("modality") == "text":
        return ["probe words", "", "a"]
    shape = tuple(int(v) for v in modality.get("item_shape", ()))
    dtype = np.dtype(str(modality.get("dtype") or "float64"))
    return np.zeros((2, *shape), dtype=dtype)


def check_conformal(predictor: Any, task: str, p: Path) -> None:
    """The restored conformal state must fit the task, the score and the model."""
    conformal = predictor.conformal_
    expected = ClassificationConformal if task == "classification" else RegressionConformal
    scores = CLASSIFICATION_SCORES if task == "classification" else REGRESSION_SCORES
    if not isinstance(conformal, expected):
        raise PersistenceError(f"{p}: a {task} predictor needs a {expected.__name__} state.")
    method = predictor.conformity_score_
    if method not in scores or conformal.method != method:
        raise PersistenceError(
            f"{p}: conformity score {method!r} (state: {conformal.method!r}) is not one of "
            f"{list(scores)} for {task}; the file is inconsistent."
        )
    if isinstance(conformal, ClassificationConformal):
        if (
            np.asarray(conformal.classes).tolist()
            != np.asarray(getattr(predictor, "classes_", None)).tolist()
        ):
            raise PersistenceError(f"{p}: the conformal state's classes differ from the model's.")
    elif method == "cqr" and getattr(predictor, "quantile_models", None) is None:
        raise PersistenceError(
            f"{p} was calibrated with CQR; pass the same fitted quantile models: "
            "SafePredictor.load(path, model=model, quantile_models=(lower, median, upper))."
        )
