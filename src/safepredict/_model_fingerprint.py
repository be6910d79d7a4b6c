"""What identifies a model and the libraries a calibration was made with (layer 0).

:func:`model_fingerprint` records the model's class, features and classes and a hash
of its outputs on fixed synthetic probe rows (never data); :func:`check_model` says
whether the model given to ``load`` is the one the calibration was made for.
"""

from __future__ import annotations

import functools
import hashlib
import platform
import warnings
from collections.abc import Mapping
from importlib import metadata
from typing import Any

import numpy as np

from safepredict._state import array_to_state
from safepredict._version import __version__
from safepredict.exceptions import PersistenceError

__all__ = ["N_PROBE_ROWS", "check_model", "library_versions", "model_fingerprint", "probe_rows"]

#: Number of synthetic probe rows whose model outputs fingerprint the model.
N_PROBE_ROWS = 8


@functools.lru_cache(maxsize=1)
def _installed_versions() -> tuple[tuple[str, str | None], ...]:
    found: list[tuple[str, str | None]] = []
    for dist in ("numpy", "scikit-learn", "mapie", "skops"):
        try:
            found.append((dist, metadata.version(dist)))
        except metadata.PackageNotFoundError:
            found.append((dist, None))
    return tuple(found)


def library_versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"safepredict": __version__, "python": platform.python_version()}
    out.update(_installed_versions())
    return out


# ---------------------------------------------------------------- fingerprint
def probe_rows(n_features: int) -> Any:
    """Deterministic synthetic rows (no data from the calibration set).

    Values follow a fixed additive-recurrence pattern in [-2, 2], so they are the
    same on every platform and numpy version and reveal nothing about the data.
    """
    i = np.arange(1, N_PROBE_ROWS + 1, dtype=np.float64)[:, None]
    j = np.arange(1, n_features + 1, dtype=np.float64)[None, :]
    frac = np.mod(i * 0.6180339887498949 + j * 0.4142135623730951 + i * j * 0.1, 1.0)
    return 4.0 * frac - 2.0


def _probe_digest(model: Any, task: str, n_features: int | None) -> str | None:
    """SHA-256 of the model's outputs (6 significant digits) on the probe rows.

    ``None`` when the model cannot score synthetic numeric rows (e.g. a pipeline
    with categorical columns); the fingerprint then relies on the schema only.
    """
    if not n_features:
        return None
    rows = probe_rows(n_features)
    names = getattr(model, "feature_names_in_", None)
    method = "predict_proba" if task == "classification" else "predict"
    try:
        X: Any = rows
        if names is not None:
            import pandas as pd

            X = pd.DataFrame(rows, columns=[str(c) for c in names])
        # The probe is a best-effort fingerprint: a model warning about synthetic
        # rows (convergence, feature names, ...) must not fail save/load.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = np.asarray(getattr(model, method)(X), dtype=np.float64)
    except Exception:  # any failure on synthetic rows just disables the probe
        return None
    text = ",".join(f"{v:.6g}" for v in out.ravel())
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def model_fingerprint(model: Any, task: str) -> dict[str, Any]:
    """What identifies the model a calibration belongs to (JSON-safe).

    Holds the class name (compared as text, never imported), ``n_features_in_``,
    ``feature_names_in_``, ``classes_`` and a hash of the model's outputs on
    :data:`N_PROBE_ROWS` synthetic rows. No calibration or training rows are
    stored: probe rows are a fixed pattern, not data.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> X, y = load_iris(return_X_y=True)
    >>> fp = model_fingerprint(LogisticRegression(max_iter=500).fit(X, y), "classification")
    >>> fp["class"], fp["n_features"], fp["classes"]["values"]
    ('sklearn.linear_model._logistic.LogisticRegression', 4, [0, 1, 2])
    """
    names = getattr(model, "feature_names_in_", None)
    classes = getattr(model, "classes_", None) if task == "classification" else None
    n_features = getattr(model, "n_features_in_", None)
    n_features = int(n_features) if isinstance(n_features, int | np.integer) else None
    return {
        "class": f"{type(model).__module__}.{type(model).__qualname__}",
        "n_features": n_features,
        "feature_names": None if names is None else [str(c) for c in names],
        "classes": None if classes is None else array_to_state(np.asarray(classes)),
        "probe_sha256": _probe_digest(model, task, n_features),
    }


def check_model(saved: Mapping[str, Any], model: Any, task: str, *, verify: bool) -> None:
    now = model_fingerprint(model, task)
    problems = []
    if saved.get("class") != now["class"]:
        problems.append(f"model class: saved {saved.get('class')!r}, given {now['class']!r}")
    if saved.get("n_features") != now["n_features"]:
        problems.append(
            f"n_features_in_: saved {saved.get('n_features')}, given {now['n_features']}"
        )
    if saved.get("feature_names") != now["feature_names"]:
        old, new = saved.get("feature_names") or [], now["feature_names"] or []
        missing = [c for c in old if c not in new]
        extra = [c for c in new if c not in old]
        detail = f"missing {missing}, extra {extra}" if missing or extra else "different order"
        problems.append(f"feature names differ ({detail})")
    saved_classes = saved.get("classes")
    now_classes = now["classes"]
    if (saved_classes or {}).get("values") != (now_classes or {}).get("values"):
        problems.append(
            f"classes: saved {(saved_classes or {}).get('values')}, given "
            f"{(now_classes or {}).get('values')}"
        )
    if problems:
        raise PersistenceError(
            "the model passed to load() is not the model this calibration was made for: "
            + "; ".join(problems)
            + ". Load with the model the predictor was calibrated with, or recalibrate."
        )
    probe = saved.get("probe_sha256")
    if verify and probe is not None and probe != now["probe_sha256"]:
        raise PersistenceError(
            "the model passed to load() gives different outputs than the calibrated model on "
            "the fingerprint probe rows (same class, features and classes: probably a refit). "
            "Conformal guarantees do not carry over to a refitted model: recalibrate it, or "
            "pass verify_model=False if you are sure it is the same model (e.g. only the "
            "numerical library changed)."
        )
