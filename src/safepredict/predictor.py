"""``SafePredictor``: the one orchestrator that turns model outputs into decisions.

Per batch: check the input structure, run the guards, score with the model (fail
closed per row), compute conformal sets/intervals and confidence, assign tiers,
explain where the policy asks, sample audits, emit events and route cases to
humans. The core modules it calls are pure; this is the only place that logs and
routes.
"""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib
import json
import math
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.base import BaseEstimator, is_classifier, is_regressor

from safepredict._frames import default_feature_names, input_rows, is_frame, resolve_redact
from safepredict._hashing import row_hashes, unit_interval
from safepredict._validation import check_fraction, check_one_of, describe
from safepredict._version import __version__
from safepredict.adaptive import long_run_bound, threshold_path
from safepredict.config import GuardConfig, TierPolicy
from safepredict.conformal import (
    CLASSIFICATION_SCORES,
    REGRESSION_SCORES,
    ClassificationConformal,
    RegressionConformal,
)
from safepredict.decisions import Decision, Decisions
from safepredict.exceptions import (
    CalibrationError,
    ConfigError,
    InputSchemaError,
    NotCalibratedError,
)
from safepredict.explain import ExplainerState, ModelExplainer, check_request
from safepredict.guards import InputGuards
from safepredict.monitoring.events import EventContext, EventEmitter, confidence_snapshot
from safepredict.monitoring.tier_health import effective_audit_rates, tier_outcomes
from safepredict.monitoring.tier_health import tier_health as compute_tier_health
from safepredict.review import Router, build_cases
from safepredict.review.outcomes import check_outcome, outcome_space
from safepredict.tiers import TierCalibration, TierInputs, assign_tiers, calibrate_tiers

__all__ = ["SafePredictor"]

_ACTION_RANK = {"accept": 0, "review": 1, "abstain": 2}
_RANK_NAMES = np.array(["accept", "review", "abstain"], dtype=object)


@dataclass(frozen=True)
class _DecideCache:
    """Constants ``decide`` needs per policy (computed once, not per call)."""

    policy: TierPolicy
    actions: NDArray[Any]
    tier_names: tuple[str, ...]
    classes: NDArray[Any] | None
    classes_obj: NDArray[Any] | None
    needs_scores: bool


class SafePredictor(BaseEstimator):  # type: ignore[misc]  # sklearn ships no type stubs
    """Wrap a fitted model so every prediction comes with a safe decision.

    Parameters
    ----------
    model : estimator
        A fitted scikit-learn classifier/regressor or ``Pipeline`` (or any object
        with ``predict_proba`` for classification, ``predict`` for regression).
    task : {"auto", "classification", "regression"}, default="auto"
        ``"auto"`` uses ``predict_proba``/``classes_`` to detect a classifier.
    confidence_level : float, default=0.9
        Target coverage of the conformal sets / intervals.
    conformity_score : str, default="auto"
        ``"lac"``, ``"aps"`` or ``"raps"`` for classification (binary targets
        support ``"lac"`` only); ``"absolute"``, ``"residual_normalized"`` or
        ``"cqr"`` for regression. ``"auto"`` picks ``"lac"`` / ``"absolute"``
        (``"cqr"`` when ``quantile_models`` is given).
    tiers : TierPolicy, dict, str or path, optional
        The tier policy (TOML file, TOML string, dict or object). Default:
        :meth:`TierPolicy.default`.
    guards : {"auto", "off"} or GuardConfig, default="auto"
        ``"auto"`` uses the policy's ``[guards]`` table; a ``GuardConfig``
        replaces it; ``"off"`` disables input guards (not recommended).
    explainer : {"auto", "tree", "linear", "permutation"} or None, default=None
        How rows in the policy's ``explain`` tiers are explained.
    explainer_background : {"kmeans", "sample"}, default="kmeans"
        The explainer's background: weighted k-means centroids of the
        calibration rows, each aggregating >= 20 rows (no row stored), or
        ``"sample"`` (opt-in) a seeded sample of raw calibration rows, stored
        verbatim in saved states.
    router : callable, path or queue, optional
        Where review/abstain cases (and audit samples) go.
    logger : structlog-style logger, str or path-like, optional
        Where events go. A path appends them to that file as JSON lines (the fast
        path; no structlog setup needed). Default: ``structlog.get_logger("safepredict")``,
        written to only once the application has configured structlog (until then
        the library is silent: nothing on stdout or stderr).
    model_name, model_version : str, optional
        Recorded in every event.
    random_state : int, optional
        Seed for anything random (OOD split, permutation explainer, MAPIE).
    log : {"decision", "summary", "off"}, default="decision"
        One event per decision, one per batch, or none.
    log_inputs : bool, default=False
        Include raw inputs in events (opt-in; see ``redact``).
    redact : sequence of str, default=()
        Columns never logged even with ``log_inputs=True``.
    explain_budget_ms : float, optional
        Per-row explanation budget; rows whose explanation would exceed it get
        ``explanation_skipped:budget``.
    quantile_models : tuple of (lower, median, upper) estimators, optional
        Fitted quantile regressors for CQR.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from sklearn.linear_model import LogisticRegression
    >>> X, y = load_iris(return_X_y=True)
    >>> model = LogisticRegression(max_iter=500).fit(X[::3], y[::3])
    >>> sp = SafePredictor(model, log="off").calibrate(X[1::3], y[1::3])
    >>> d = sp.decide_one(X[2])
    >>> d.action in ("accept", "review", "abstain")
    True
    """

    def __init__(
        self,
        model: Any,
        *,
        task: str = "auto",
        confidence_level: float = 0.9,
        conformity_score: str = "auto",
        tiers: Any = None,
        guards: Any = "auto",
        explainer: str | None = None,
        router: Any = None,
        logger: Any = None,
        model_name: str | None = None,
        model_version: str | None = None,
        random_state: int | None = None,
        log: str = "decision",
        log_inputs: bool = False,
        redact: Sequence[str] = (),
        explain_budget_ms: float | None = None,
        quantile_models: Any = None,
        explainer_background: str = "kmeans",
    ) -> None:
        self.model = model
        self.task = task
        self.confidence_level = confidence_level
        self.conformity_score = conformity_score
        self.tiers = tiers
        self.guards = guards
        self.explainer = explainer
        self.router = router
        self.logger = logger
        self.model_name = model_name
        self.model_version = model_version
        self.random_state = random_state
        self.log = log
        self.log_inputs = log_inputs
        self.redact = redact
        self.explain_budget_ms = explain_budget_ms
        self.quantile_models = quantile_models
        self.explainer_background = explainer_background

    # ------------------------------------------------------------ sklearn glue
    def __sklearn_clone__(self) -> SafePredictor:
        """Clone the configuration, keeping the (already fitted) model itself.

        ``sklearn.base.clone`` would otherwise clone the wrapped model into an
        unfitted copy; the wrapper's job is to wrap that fitted model.
        """
        return type(self)(**self.get_params(deep=False))

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "conformal_")

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for derived in ("_lock", "_events", "_events_key"):  # rebuilt on first use
            state.pop(derived, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    @property
    def _thread_lock(self) -> threading.Lock:
        lock: threading.Lock | None = self.__dict__.get("_lock")
        if lock is None:
            lock = self.__dict__.setdefault("_lock", threading.Lock())
        return lock

    # ------------------------------------------------------------ validation
    def _resolve_task(self) -> str:
        task = check_one_of(self.task, "task", ("auto", "classification", "regression"))
        if task != "auto":
            return str(task)
        if _sklearn_kind(self.model, is_classifier) or (
            hasattr(self.model, "predict_proba") and hasattr(self.model, "classes_")
        ):
            return "classification"
        if _sklearn_kind(self.model, is_regressor) or hasattr(self.model, "predict"):
            return "regression"
        raise ConfigError(
            f"model must have predict_proba (classification) or predict (regression); got "
            f"{describe(self.model)}. Pass a fitted estimator."
        )

    def _resolve_policy(self, task: str) -> TierPolicy:
        policy = TierPolicy.default(task) if self.tiers is None else TierPolicy.coerce(self.tiers)
        if isinstance(self.guards, GuardConfig):
            policy = TierPolicy(
                tiers=policy.tiers,
                delta=policy.delta,
                explain=policy.explain,
                audit_rate=policy.audit_rate,
                audit_seed=policy.audit_seed,
                guard_tier=policy.guard_tier,
                guards=self.guards,
            )
        elif self.guards not in ("auto", "off", None):
            raise ConfigError(
                f"guards must be 'auto', 'off' or a GuardConfig; got {describe(self.guards)}."
            )
        for tier in policy.tiers:
            if task == "classification" and tier.max_interval_width is not None:
                raise ConfigError(
                    f"tier {tier.name!r}: max_interval_width applies to regression; this "
                    "predictor is a classifier (use min_confidence or max_set_size)."
                )
            if task == "regression" and (
                tier.min_confidence is not None
                or tier.max_set_size is not None
                or tier.min_credibility is not None
            ):
                raise ConfigError(
                    f"tier {tier.name!r}: min_confidence/min_credibility/max_set_size apply to "
                    "classification; "
                    "this predictor is a regressor (use max_interval_width or max_error)."
                )
            if task == "regression" and tier.max_error is not None and tier.tolerance is None:
                raise ConfigError(
                    f"tier {tier.name!r}: a regression max_error tier needs 'tolerance' (an "
                    "error is |y - y_hat| > tolerance), e.g. tolerance = 5.0."
                )
        return policy

    def _resolve_score(self, task: str) -> str:
        options = CLASSIFICATION_SCORES if task == "classification" else REGRESSION_SCORES
        if self.conformity_score == "auto":
            if task == "regression" and self.quantile_models is not None:
                return "cqr"
            return "lac" if task == "classification" else "absolute"
        return str(check_one_of(self.conformity_score, "conformity_score", options))

    def _check_params(self) -> None:
        check_fraction(self.confidence_level, "confidence_level")
        check_one_of(self.log, "log", ("decision", "summary", "off"))
        if self.explainer is not None:
            check_one_of(self.explainer, "explainer", ("auto", "tree", "linear", "permutation"))
        check_one_of(self.explainer_background, "explainer_background", ("kmeans", "sample"))
        if self.explain_budget_ms is not None and not (
            isinstance(self.explain_budget_ms, int | float) and self.explain_budget_ms > 0
        ):
            raise ConfigError(
                "explain_budget_ms must be a positive number; got "
                f"{describe(self.explain_budget_ms)}."
            )

    def _check_calibrated(self, method: str) -> None:
        if not hasattr(self, "conformal_"):
            raise NotCalibratedError(
                f"this SafePredictor is not calibrated yet; call "
                f"predictor.calibrate(X_cal, y_cal) before {method}()."
            )

    # ------------------------------------------------------------ input schema
    def _record_schema(self, X: Any) -> None:
        if is_frame(X):
            self.feature_names_in_ = np.asarray([str(c) for c in X.columns], dtype=object)
            self.n_features_in_ = len(X.columns)
        else:
            arr = np.asarray(X)
            if arr.ndim != 2:
                raise InputSchemaError(
                    f"calibration X must be 2-D (rows x features); got {arr.ndim}-D.",
                    problems=[f"ndim={arr.ndim}"],
                )
            self.n_features_in_ = arr.shape[1]
            names = getattr(self.model, "feature_names_in_", None)
            if names is not None:
                self.feature_names_in_ = np.asarray([str(c) for c in names], dtype=object)

    def _prepare(self, X: Any) -> Any:
        """Check a batch's structure and return what the model should receive."""
        names = getattr(self, "feature_names_in_", None)
        if is_frame(X):
            cols = [str(c) for c in X.columns]
            if names is None:
                if len(cols) != self.n_features_in_:
                    raise InputSchemaError(
                        f"X has {len(cols)} columns but the predictor was calibrated on "
                        f"{self.n_features_in_} features.",
                        problems=[f"n_features={len(cols)}, expected {self.n_features_in_}"],
                    )
                return X.to_numpy()
            expected = list(names)
            if cols != expected:
                missing = [c for c in expected if c not in cols]
                extra = [c for c in cols if c not in expected]
                dupes = sorted({c for c in cols if cols.count(c) > 1})
                if missing or extra or dupes:
                    parts = []
                    if missing:
                        parts.append(f"missing columns {missing}")
                    if extra:
                        parts.append(f"extra columns {extra}")
                    if dupes:
                        parts.append(f"duplicated columns {dupes}")
                    raise InputSchemaError(
                        "X does not have the columns the predictor was calibrated on: "
                        + "; ".join(parts)
                        + ". Pass exactly the calibration columns (order does not matter).",
                        missing=missing,
                        extra=extra,
                        problems=[f"duplicated:{c}" for c in dupes],
                    )
                X = X[expected]
            if list(X.columns) != expected:  # non-string labels: rename to the strings
                X = X.set_axis(expected, axis=1)
            return X
        if isinstance(X, Mapping):
            return self._prepare(_frame_from_records([X]))
        if isinstance(X, list) and X and all(isinstance(r, Mapping) for r in X):
            return self._prepare(_frame_from_records(X))
        try:
            arr = np.asarray(X)
        except (ValueError, TypeError) as exc:  # ragged rows, unconvertible objects
            raise InputSchemaError(
                f"X cannot be read as a 2-D table of rows x features ({exc}); pass an array, "
                "a DataFrame, a dict or a list of dicts with equally long rows.",
                problems=["ragged"],
            ) from exc
        if arr.ndim == 1:
            arr = arr.reshape(1, -1)
        if arr.ndim != 2:
            raise InputSchemaError(
                f"X must be 2-D (rows x features); got an array with {arr.ndim} dimensions.",
                problems=[f"ndim={arr.ndim}"],
            )
        if arr.shape[1] != self.n_features_in_:
            raise InputSchemaError(
                f"X has {arr.shape[1]} features but the predictor was calibrated on "
                f"{self.n_features_in_}. Pass rows with the calibration features in the same "
                "order.",
                problems=[f"n_features={arr.shape[1]}, expected {self.n_features_in_}"],
            )
        if names is not None and hasattr(self.model, "feature_names_in_"):
            import pandas as pd

            return pd.DataFrame(arr, columns=list(names))
        return arr

    # ------------------------------------------------------------ model calls
    def _model_output(
        self, X: Any, skip: NDArray[np.bool_] | None = None
    ) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
        """Probabilities (classification) or predictions (regression), and failed rows.

        If the model raises on the batch, rows are scored one by one and only the
        rows that raise (or give non-finite output) are marked failed. Rows in
        ``skip`` (the guards found a value the model may not take) are not sent
        to the model and come back failed.
        """
        method = "predict_proba" if self.task_ == "classification" else "predict"
        fn = getattr(self.model, method)
        n = len(X)
        # --- guards: score only the rows the guards did not mark (begin) ---
        if skip is not None and skip.any():
            width_ = len(self.classes_) if self.task_ == "classification" else None
            full = np.full((n, width_) if width_ is not None else (n,), np.nan)
            keep = np.flatnonzero(~skip)
            if len(keep):
                full[keep] = self._model_output(X.iloc[keep] if is_frame(X) else X[keep])[0]
            ok = np.isfinite(full).all(axis=1) if full.ndim == 2 else np.isfinite(full)
            return full, np.asarray(~ok, dtype=bool)
        # --- guards (end) ---
        try:
            out = np.asarray(fn(X), dtype=np.float64)
        except Exception:  # any model failure becomes per-row model_error, never a crash
            width = len(self.classes_) if self.task_ == "classification" else None
            shape: tuple[int, ...] = (n, width) if width is not None else (n,)
            out = np.full(shape, np.nan)
            for i in range(n):
                row = X.iloc[i : i + 1] if is_frame(X) else X[i : i + 1]
                try:
                    out[i] = np.asarray(fn(row), dtype=np.float64)[0]
                except Exception:  # this row fails closed as model_error
                    continue
        return _with_failed_rows(out, n)

    def predict(self, X: Any) -> Any:
        """The wrapped model's ``predict`` (scikit-learn semantics, no guards)."""
        return self.model.predict(X)

    def predict_proba(self, X: Any) -> Any:
        """The wrapped model's ``predict_proba`` (scikit-learn semantics, no guards)."""
        return self.model.predict_proba(X)

    # ------------------------------------------------------------ calibration
    def calibrate(self, X: Any, y: Any, *, reference: Any = None) -> SafePredictor:
        """Conformalize on held-out ``(X, y)``, fit the guards and certify the tiers.

        Parameters
        ----------
        X : array-like or DataFrame of shape (n, n_features)
            Calibration rows the model was not trained on.
        y : array-like of shape (n,)
            Their true targets.
        reference : array-like or DataFrame, optional
            Data the guards learn normal inputs from (e.g. the training set).
            Default: ``X``.

        Returns
        -------
        SafePredictor
            ``self``, calibrated.
        """
        self._check_params()
        task = self._resolve_task()
        policy = self._resolve_policy(task)
        score = self._resolve_score(task)
        y_arr = np.asarray(y)
        if y_arr.ndim != 1:
            y_arr = y_arr.ravel() if y_arr.ndim == 2 and 1 in y_arr.shape else y_arr
        if y_arr.ndim != 1 or len(y_arr) != len(X):
            raise CalibrationError(
                f"y must be 1-D with one target per row of X ({len(X)} rows); got shape "
                f"{np.shape(y)}."
            )
        self._record_schema(X)
        X_model = self._prepare(X)
        method = "predict_proba" if task == "classification" else "predict"
        try:  # a model that cannot score the calibration rows is the caller's to fix
            raw = getattr(self.model, method)(X_model)
        except Exception as exc:
            raise CalibrationError(
                f"the model failed on the calibration rows ({method} raised "
                f"{type(exc).__name__}: {exc}). Calibrate on rows with the columns and types "
                "the model was trained on."
            ) from exc
        self.task_ = task
        self.policy_ = policy
        self.conformity_score_ = score
        if task == "classification":
            self.classes_ = np.asarray(self.model.classes_)
            unknown = set(np.unique(y_arr).tolist()) - set(self.classes_.tolist())
            if unknown:
                raise CalibrationError(
                    f"calibration labels {sorted(map(str, unknown))} are not among the model's "
                    f"classes {self.classes_.tolist()}; calibrate on the labels the model knows."
                )
            if score != "lac" and len(self.classes_) == 2:
                raise ConfigError(
                    f"conformity_score={score!r} needs 3 or more classes; binary targets support "
                    "'lac' only. Use conformity_score='lac'."
                )
            self.conformal_: ClassificationConformal | RegressionConformal = (
                ClassificationConformal.calibrate(
                    self.model,
                    X_model,
                    y_arr,
                    method=score,
                    confidence_level=float(self.confidence_level),
                    random_state=self.random_state,
                )
            )
        else:
            self.conformal_ = RegressionConformal.calibrate(
                self.model,
                X_model,
                y_arr.astype(np.float64),
                method=score,
                confidence_level=float(self.confidence_level),
                random_state=self.random_state,
                quantile_models=self.quantile_models,
            )
        try:  # the model runs once on the calibration rows for tiers and baseline
            out, failed = _with_failed_rows(np.asarray(raw, dtype=np.float64), len(X_model))
        except Exception:  # output not numeric: score row by row, as decide does
            out, failed = self._model_output(X_model)
        inputs = self._score_rows(X_model, out, failed)[0] if policy.risk_controlled else None
        self.tier_calibration_ = self._calibrate_tiers(y_arr, out, failed, inputs)
        self._fit_guards(X if reference is None else reference)
        self._fit_explainer(X_model)
        self.calibration_size_ = len(y_arr)
        self.calibration_id_ = _calibration_hash(X_model, y_arr)
        self._emit_calibration(X_model, out, failed, inputs)
        return self

    # ------------------------------------------------------------ decide
    def decide(self, X: Any, *, request_id: str | None = None) -> Decisions:
        """Decide on every row of ``X``.

        Parameters
        ----------
        X : array-like, DataFrame, dict or list of dicts
            Rows with the calibration features.
        request_id : str, optional
            Recorded in every event of this call. Default: the ``request_id``
            bound in structlog's contextvars, if any.

        Returns
        -------
        Decisions
            One decision per row. Rows failing a guard and rows the model
            cannot score are never accepted; rows with an empty conformal set
            carry the reason ``empty_set`` and go to the first tier whose
            conditions they meet (``min_credibility`` asks for typicality).

        Raises
        ------
        NotCalibratedError
            If called before :meth:`calibrate`.
        InputSchemaError
            If the batch's columns or feature count differ from calibration.
        """
        self._check_calibrated("decide")
        t0 = time.perf_counter()
        X_model = self._prepare(X)
        n = len(X_model)
        policy = self.policy_
        cache = self._decide_cache(policy)
        latency: dict[str, float] = {}

        t = time.perf_counter()
        guard_reasons, guard_rank, ood_scores, skip = self._check_guards(X_model)
        t_model = time.perf_counter()
        latency["guard"] = t_model - t

        if n:
            out, failed = self._model_output(X_model, skip)
        else:
            width = () if cache.classes is None else (len(cache.classes),)
            out, failed = np.zeros((0, *width)), np.zeros(0, dtype=bool)
        t = time.perf_counter()
        latency["model"] = t - t_model
        inputs, set_mask, intervals = self._score_rows(
            X_model, out, failed, needs_scores=cache.needs_scores
        )
        any_failed = bool(failed.any())  # _score_rows may add rows (auxiliary model failed)
        probabilities = None
        if set_mask is not None:
            probabilities = out
            assert cache.classes_obj is not None
            assert inputs.predicted_class is not None
            predictions = cache.classes_obj[inputs.predicted_class]
        else:
            predictions = out.reshape(-1).astype(object)
        confidence = inputs.confidence
        if any_failed:
            predictions[failed] = None
        latency["conformal"] = time.perf_counter() - t

        codes, tier_reasons = assign_tiers(policy, inputs, self.tier_calibration_)
        actions = cache.actions[codes]
        reasons: list[tuple[str, ...]] = [()] * n
        for tier_row, extra in tier_reasons.items():
            if skip[tier_row]:  # guards: never scored, so no tier reasons (e.g. empty_set)
                continue
            reasons[tier_row] = reasons[tier_row] + extra

        # Rows that fail a guard or the model go to the guard tier, never "accept".
        guard_flagged = None
        if guard_reasons:
            guard_flagged = np.zeros(n, dtype=bool)
            guard_flagged[list(guard_reasons)] = True
            for guard_row, why in guard_reasons.items():
                reasons[guard_row] = why + reasons[guard_row]
        if any_failed:
            guard_rank = guard_rank.copy()
            # skipped rows (the guards kept them from the model) carry their guard reasons
            for row in np.flatnonzero(failed & ~skip).tolist():
                reasons[row] = (*reasons[row], "model_error")
                guard_rank[row] = 2
        if any_failed or guard_rank.any():
            blocked = guard_rank > 0
            codes = codes.copy()
            current = np.array([_ACTION_RANK[a] for a in actions[blocked]], dtype=np.intp)
            actions[blocked] = _RANK_NAMES[np.maximum(current, guard_rank[blocked])]
            codes[blocked] = len(policy.tiers)

        decisions = Decisions(
            predictions=predictions,
            tier_codes=codes,
            tier_names=cache.tier_names,
            actions=actions,
            reasons=reasons,
            confidence=confidence,
            batch_id=os.urandom(8).hex(),  # 64 random bits, as uuid4().hex[:16] gave
            set_mask=set_mask,
            classes=cache.classes,
            intervals=intervals,
            probabilities=probabilities,
            guard_flagged=np.zeros(n, dtype=bool) if guard_flagged is None else guard_flagged,
            ood_scores=ood_scores,
            latency_s=latency,
        )
        t = time.perf_counter()
        self._explain(X_model, decisions)
        latency["explain"] = time.perf_counter() - t
        self._sample_audit(X_model, decisions)
        self._route(X_model, decisions)  # before the events, so they carry the route status
        latency["total"] = time.perf_counter() - t0
        self._emit_decisions(X_model, decisions, request_id=request_id)
        return decisions

    def _score_rows(
        self,
        X_model: Any,
        out: NDArray[np.float64],
        failed: NDArray[np.bool_],
        *,
        needs_scores: bool = True,
    ) -> tuple[TierInputs, NDArray[np.bool_] | None, NDArray[np.float64] | None]:
        """Turn model output into what the tier rule reads: ``(inputs, set_mask, intervals)``.

        The one scoring rule shared by :meth:`decide` and calibration (so the
        tiers are certified on exactly what decide assigns). Failed rows get an
        empty set / ``nan`` interval, ``nan`` confidence and ``nan`` scores.
        ``failed`` is updated in place for rows where an auxiliary regression
        model (CQR, residual) fails. ``set_mask`` is ``None`` for regression,
        ``intervals`` is ``None`` for classification.
        """
        any_failed = bool(failed.any())
        if self.task_ == "classification":
            conformal = self.conformal_
            assert isinstance(conformal, ClassificationConformal)
            safe = np.where(failed[:, None], 0.0, out) if any_failed else out
            predicted_class = safe.argmax(axis=1)
            set_mask, confidence, credibility = conformal.set_confidence_credibility(
                safe, predicted_class
            )
            if any_failed:
                set_mask[failed] = False
                confidence[failed] = np.nan
                credibility[failed] = np.nan
            scores = _classification_scores(safe, confidence) if needs_scores else {}
            if any_failed:
                scores = {k: np.where(failed, np.nan, v) for k, v in scores.items()}
            inputs = TierInputs(
                "classification",
                confidence,
                set_size=set_mask.sum(axis=1),
                scores=scores,
                predicted_class=predicted_class,
                credibility=credibility,
                groups=self._tier_groups(X_model),
            )
            return inputs, set_mask, None
        conformal_r = self.conformal_
        assert isinstance(conformal_r, RegressionConformal)
        y_pred = out.reshape(-1)
        intervals = self._intervals(conformal_r, X_model, y_pred, failed)
        if failed.any():
            intervals[failed] = np.nan
        widths = intervals[:, 1] - intervals[:, 0]
        scores_r = _regression_scores(widths) if needs_scores else {}
        inputs = TierInputs(
            "regression",
            np.full(len(y_pred), np.nan),
            width=widths,
            scores=scores_r,
            groups=self._tier_groups(X_model),
        )
        return inputs, None, intervals

    def _tier_groups(self, X_model: Any) -> dict[str, NDArray[Any]]:
        """Each row's value of every ``group_by`` column of the policy (tier stage input).

        The one place the tiers read raw input columns: ``group_by`` names an
        input feature (a DataFrame column, or a feature name such as ``x3`` for
        arrays); its values go to the tiers as ``TierInputs.groups``.
        """
        columns = sorted({t.group_by for t in self.policy_.tiers if t.group_by is not None})
        if not columns:
            return {}
        names = self._input_names()
        out: dict[str, NDArray[Any]] = {}
        for column in columns:
            if column not in names:
                raise ConfigError(
                    f"group_by = {column!r} is not an input column; the inputs have "
                    f"{names[:10]}{' ...' if len(names) > 10 else ''}. Name one of them."
                )
            if is_frame(X_model) and column in X_model.columns:
                out[column] = X_model[column].to_numpy()
            else:
                out[column] = np.asarray(X_model)[:, names.index(column)]
        return out

    def _intervals(
        self,
        conformal: RegressionConformal,
        X_model: Any,
        y_pred: NDArray[np.float64],
        failed: NDArray[np.bool_],
    ) -> NDArray[np.float64]:
        """Conformal intervals; rows where an auxiliary model (CQR, residual) fails are marked.

        ``failed`` is updated in place for those rows (they become ``model_error``).
        """
        if conformal.method == "absolute":
            return conformal.interval(X_model, y_pred)
        try:
            return conformal.interval(X_model, y_pred)
        except Exception:  # an auxiliary model failing fails closed per row, never the batch
            bounds = np.full((len(y_pred), 2), np.nan)
            for i in range(len(y_pred)):
                row = X_model.iloc[i : i + 1] if is_frame(X_model) else X_model[i : i + 1]
                try:
                    bounds[i] = conformal.interval(row, y_pred[i : i + 1])[0]
                except Exception:  # this row fails closed as model_error
                    failed[i] = True
            return bounds

    def _decide_cache(self, policy: TierPolicy) -> _DecideCache:
        """Per-policy constants of the hot path, built once (thread-safe: idempotent)."""
        cache: _DecideCache | None = self.__dict__.get("_hot")
        if cache is None or cache.policy is not policy:
            classes = getattr(self, "classes_", None)
            cache = _DecideCache(
                policy=policy,
                actions=np.array([t.action for t in policy.tiers], dtype=object),
                tier_names=(*policy.names, policy.guard_tier),
                classes=classes,
                classes_obj=None if classes is None else classes.astype(object),
                needs_scores=any(t.max_error is not None for t in policy.tiers),
            )
            self.__dict__["_hot"] = cache
        return cache

    def decide_one(self, x: Any, *, request_id: str | None = None) -> Decision:
        """Decide on a single row (1-D array, dict, pandas Series or one-row frame).

        ``request_id`` is recorded in the decision's event (see :meth:`decide`).

        Examples
        --------
        >>> from sklearn.datasets import load_diabetes
        >>> from sklearn.linear_model import Ridge
        >>> X, y = load_diabetes(return_X_y=True)
        >>> sp = SafePredictor(Ridge().fit(X[:200], y[:200]), log="off")
        >>> sp = sp.calibrate(X[200:400], y[200:400])
        >>> lo, hi = sp.decide_one(X[400]).interval
        >>> bool(lo < hi)
        True
        """
        if hasattr(x, "to_frame") and hasattr(x, "index") and not is_frame(x):  # a Series
            x = x.to_frame().T
        batch = self.decide(x, request_id=request_id)
        if len(batch) != 1:
            raise InputSchemaError(
                f"decide_one takes exactly one row; got {len(batch)}. Use decide() for batches.",
                problems=[f"n_rows={len(batch)}"],
            )
        return batch[0]

    async def adecide(self, X: Any, **kwargs: Any) -> Decisions:
        """:meth:`decide` run in a worker thread, so an event loop is never blocked.

        Keyword arguments are passed on to :meth:`decide`. Use it from async
        services (FastAPI, aiohttp): ``decisions = await predictor.adecide(rows)``.

        Examples
        --------
        >>> import asyncio
        >>> from sklearn.datasets import load_iris
        >>> from sklearn.linear_model import LogisticRegression
        >>> X, y = load_iris(return_X_y=True)
        >>> model = LogisticRegression(max_iter=500).fit(X[::3], y[::3])
        >>> sp = SafePredictor(model, log="off").calibrate(X[1::3], y[1::3])
        >>> len(asyncio.run(sp.adecide(X[:5])))
        5
        """
        return await asyncio.to_thread(self.decide, X, **kwargs)

    # ------------------------------------------------------------ persistence
    def save(
        self, path: str | Path, *, model: str | None = None, key: bytes | str | None = None
    ) -> Path:
        """Save the calibration as versioned, checksummed JSON (no pickle).

        Parameters
        ----------
        path : str or Path
            Where to write the calibration file (e.g. ``"credit.calibration.json"``).
        model : {None, "skops"}, default=None
            ``None`` saves the calibration only (pass the model to :meth:`load`);
            ``"skops"`` also writes the model next to it as ``<stem>.skops``
            with :mod:`skops.io` (needs the ``skops`` extra).
        key : str or bytes, optional
            Sign the file with HMAC-SHA256; :meth:`load` then needs the same key.

        Returns
        -------
        Path
            The calibration file written.

        Examples
        --------
        >>> import tempfile, pathlib
        >>> from sklearn.datasets import load_iris
        >>> from sklearn.linear_model import LogisticRegression
        >>> X, y = load_iris(return_X_y=True)
        >>> model = LogisticRegression(max_iter=500).fit(X[::3], y[::3])
        >>> sp = SafePredictor(model, log="off").calibrate(X[1::3], y[1::3])
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "iris.json"
        >>> back = SafePredictor.load(sp.save(path), model=model)
        >>> back.decide(X).actions.tolist() == sp.decide(X).actions.tolist()
        True
        """
        from safepredict.persistence import save_predictor

        return save_predictor(self, path, model=model, key=key)

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        model: Any = None,
        trusted: Sequence[str] | None = None,
        key: bytes | str | None = None,
        verify_model: bool = True,
        **params: Any,
    ) -> SafePredictor:
        """Restore a predictor saved with :meth:`save`; it decides exactly as before.

        Parameters
        ----------
        path : str or Path
            The calibration file.
        model : estimator, optional
            The fitted model the predictor was calibrated with. If omitted, the
            model saved with ``save(path, model="skops")`` is loaded with skops.
        trusted : sequence of str, optional
            Types in the skops model file that skops does not trust by default
            and that you accept (see ``skops.io.get_untrusted_types``).
        key : str or bytes, optional
            The HMAC key the file was signed with.
        verify_model : bool, default=True
            Check the model's outputs on the fingerprint probe rows.
        **params
            Runtime parameters that cannot be saved or that you want to change:
            ``router``, ``logger``, ``log``, ``model_name``, ... (not the
            calibration parameters).

        Raises
        ------
        PersistenceError
            Missing file, not a safepredict file, other major schema version,
            tampered checksum, or a model that differs from the calibrated one.
        """
        from safepredict.persistence import load_predictor

        return load_predictor(
            cls, path, model=model, trusted=trusted, key=key, verify_model=verify_model, **params
        )

    # ------------------------------------------------------------ stage hooks
    def _calibrate_tiers(
        self,
        y: NDArray[Any],
        out: NDArray[np.float64],
        failed: NDArray[np.bool_],
        inputs: TierInputs | None,
    ) -> TierCalibration:
        """Certify thresholds for the risk-controlled (``max_error``) tiers.

        ``out``, ``failed`` and ``inputs`` are the calibration rows scored by
        :meth:`_score_rows`, the rule :meth:`decide` applies. Marks the rows the
        model gets wrong (classification: wrong label or failed; regression:
        ``|y - y_hat| > tolerance`` of each tier, or failed) and runs
        :func:`safepredict.tiers.calibrate_tiers`.
        """
        policy = self.policy_
        if not policy.risk_controlled or inputs is None:
            return TierCalibration()
        if self.task_ == "classification":
            assert inputs.predicted_class is not None
            errors = (self.classes_[inputs.predicted_class] != y) | failed
            return calibrate_tiers(
                policy,
                inputs,
                errors,
                n_classes=len(self.classes_),
                class_labels=self.classes_.tolist(),
            )
        residual = np.abs(np.asarray(y, dtype=np.float64) - out.reshape(-1))
        by_tier = {
            t.name: (residual > float(t.tolerance or 0.0)) | failed for t in policy.risk_controlled
        }
        return calibrate_tiers(policy, inputs, by_tier)

    def _fit_guards(self, reference: Any) -> None:
        """Learn normal inputs from the reference data (same columns as calibration)."""
        self.guard_config_ = None if self.guards in ("off", None) else self.policy_.guards
        self.guards_: InputGuards | None = None
        if self.guard_config_ is None:
            return
        ref = self._prepare(reference)  # the structural checks decide() applies
        names = getattr(self, "feature_names_in_", None)
        self.guards_ = InputGuards.fit(
            ref,
            self.guard_config_,
            feature_names=None if names is None else [str(c) for c in names],
            random_state=self.random_state,
        )

    def _check_guards(
        self, X_model: Any
    ) -> tuple[
        dict[int, tuple[str, ...]],
        NDArray[np.intp],
        NDArray[np.float64] | None,
        NDArray[np.bool_],
    ]:
        """Guard reasons per flagged row, action rank per row, OOD p-values, rows to skip.

        The rank is 0 (no reason, or only ``"ignore"``d ones), 1 (review) or 2
        (abstain); skipped rows are not sent to the model.
        """
        guards = getattr(self, "guards_", None)
        n = len(X_model)
        if guards is None:
            return {}, np.zeros(n, dtype=np.intp), None, np.zeros(n, dtype=bool)
        result = guards.check(X_model)
        return result.reasons, result.rank, result.ood, result.skip

    def _fit_explainer(self, X_model: Any) -> None:
        """Keep a background sample for explanations; the explainer itself is built lazily."""
        self.explainer_: ModelExplainer | None = None
        if self.explainer is None:
            return
        # an explicit explainer that cannot explain this model fails here, not in decide
        check_request(self.model, str(self.explainer), X_model)
        state = ExplainerState.fit(
            X_model,
            task=self.task_,
            requested=str(self.explainer),
            classes=getattr(self, "classes_", None),
            budget_ms=self.explain_budget_ms,
            random_state=self.random_state,
            background=self.explainer_background,
        )
        self.explainer_ = ModelExplainer(self.model, state)

    def _explain(self, X_model: Any, decisions: Decisions) -> None:
        """Attach explanations to the rows in the policy's explain tiers.

        Default (policy ``explain`` unset): every row that is not accepted. Accepted
        rows (and rows the model could not score) cost nothing; rows whose
        explanation would exceed ``explain_budget_ms`` get
        ``explanation_skipped:budget`` instead of waiting for it.
        """
        explainer = getattr(self, "explainer_", None)
        n = len(decisions)
        if explainer is None or n == 0:
            return
        policy = self.policy_
        if policy.explain is None:
            wanted = decisions.actions != "accept"
        else:
            wanted = np.isin(decisions.tiers, np.array(policy.explain, dtype=object))
        scored = np.array([p is not None for p in decisions.predictions], dtype=bool)
        rows = np.flatnonzero(wanted & scored)
        decisions.explanations = [None] * n
        if len(rows) == 0:
            return
        subset = X_model.iloc[rows] if is_frame(X_model) else np.asarray(X_model)[rows]
        class_index = None
        if decisions.probabilities is not None:
            class_index = np.argmax(decisions.probabilities[rows], axis=1)
        explained, skipped = explainer.explain(subset, class_index)
        for row, explanation, why in zip(rows, explained, skipped, strict=True):
            decisions.explanations[row] = explanation
            if why is not None:
                decisions.reasons[row] = (*decisions.reasons[row], why)

    def _sample_audit(self, X_model: Any, decisions: Decisions) -> None:
        """Mark a deterministic sample of accepted rows for audit.

        A row of tier ``t`` is audited with probability ``t.audit_rate`` (the
        policy's ``audit_rate`` when the tier sets none); tier health reads the
        same per-tier rates back as the rows' audit probabilities.
        """
        rates = effective_audit_rates(self.policy_)  # tier health (issue 22)
        if max(rates.values(), default=0.0) <= 0 or len(decisions) == 0:
            return
        accepted = np.flatnonzero(decisions.actions == "accept")
        if len(accepted) == 0:
            return
        if decisions.inputs_hash is None:
            decisions.inputs_hash = row_hashes(X_model)
        by_code = np.array([rates.get(str(n), 0.0) for n in decisions.tier_names])
        rate = by_code[decisions.tier_codes[accepted]]
        u = unit_interval(decisions.inputs_hash[accepted], self.policy_.audit_seed)
        decisions.audit[accepted[u < rate]] = True

    @property
    def events(self) -> EventEmitter:
        """The event emitter (also used by the router hook for ``safepredict.route``)."""
        key = (id(self.logger), bool(self.log_inputs), tuple(self.redact))
        emitter: EventEmitter | None = self.__dict__.get("_events")
        if emitter is None or self.__dict__.get("_events_key") != key:
            with self._thread_lock:
                emitter = self.__dict__.get("_events")
                if emitter is None or self.__dict__.get("_events_key") != key:
                    old = emitter
                    emitter = EventEmitter(
                        self.logger, log_inputs=self.log_inputs, redact=self.redact
                    )
                    if old is not None:  # keep the counts across set_params
                        emitter.emitted, emitter.dropped = old.emitted, old.dropped
                    self.__dict__["_events"], self.__dict__["_events_key"] = emitter, key
        assert emitter is not None
        return emitter

    @property
    def dropped_events_(self) -> int:
        """Events lost because the logger or a sink raised (decisions are unaffected)."""
        return self.events.dropped

    def event_stats(self) -> dict[str, int]:
        """Counts of events emitted and dropped by this predictor."""
        return self.events.stats()

    def _event_context(self) -> EventContext:
        names = getattr(self, "feature_names_in_", None)
        n_features = int(getattr(self, "n_features_in_", 0))
        return EventContext(
            model_name=self.model_name,
            model_version=self.model_version,
            policy_hash=self.policy_.policy_hash,
            calibration_id=self.calibration_id_,
            n_features=n_features,
            confidence_level=float(self.confidence_level),
            feature_names=tuple(names)
            if names is not None
            else tuple(default_feature_names(n_features)),
        )

    def _calibration_baseline(
        self, inputs: TierInputs, failed: NDArray[np.bool_]
    ) -> dict[str, Any]:
        """Confidence (or interval width) snapshot and action mix on the calibration rows.

        ``inputs`` are the calibration rows scored by :meth:`_score_rows`; rows
        the model failed on are left out.
        """
        ok = ~failed
        policy = self.policy_
        if self.task_ == "classification":
            values, metric = inputs.confidence[ok], "confidence"
        else:
            assert inputs.width is not None
            values, metric = inputs.width[ok], "interval_width"
        codes = assign_tiers(policy, inputs, self.tier_calibration_)[0][ok]
        n = max(len(codes), 1)
        tiers = np.bincount(codes, minlength=len(policy.tiers))
        actions: dict[str, float] = {}
        for tier, count in zip(policy.tiers, tiers.tolist(), strict=True):
            actions[tier.action] = actions.get(tier.action, 0.0) + count / n
        snapshot = confidence_snapshot(values, metric=metric)
        snapshot["tier_rates"] = {
            t.name: c / n for t, c in zip(policy.tiers, tiers.tolist(), strict=True)
        }
        snapshot["action_rates"] = {a: actions.get(a, 0.0) for a in ("accept", "review", "abstain")}
        return snapshot

    def _emit_calibration(
        self,
        X_model: Any,
        out: NDArray[np.float64],
        failed: NDArray[np.bool_],
        inputs: TierInputs | None,
    ) -> None:
        """Log the calibration event (with the monitor's drift baseline).

        ``out`` and ``failed`` are the model's output on the calibration rows,
        ``inputs`` their scoring by :meth:`_score_rows` (``None``: not scored yet).
        """
        context = self._event_context()
        emitter = self.events
        if self.log_inputs:
            emitter.check_redact(context.feature_names)
        if self.log == "off":
            return
        try:
            if inputs is None:
                inputs = self._score_rows(X_model, out, failed)[0]
            baseline = self._calibration_baseline(inputs, failed)
        except Exception:  # the baseline is monitoring help; never fail calibration on it
            baseline = {}
        policy = self.policy_
        tier_cal = self.tier_calibration_
        report = tier_cal.report or {}
        certified = {
            t.name: tier_cal.is_certified(t.name)
            and (report.get(t.name) or {}).get("certified", True) is not False
            for t in policy.tiers
            if t.is_risk_controlled
        }
        emitter.calibration(
            context,
            task=self.task_,
            policy=policy.to_dict(),
            calibration_size=self.calibration_size_,
            conformity_score=self.conformity_score_,
            quantile=float(self.conformal_.quantile),
            thresholds=tier_cal.thresholds,
            report=tier_cal.report,
            certified=certified,
            baseline=baseline,
        )

    def _emit_decisions(
        self, X_model: Any, decisions: Decisions, *, request_id: str | None = None
    ) -> None:
        """Log one event per decision (or one per batch); never raises."""
        if self.log == "off":
            return
        try:
            self.events.decisions(
                decisions,
                self._event_context(),
                X_model=X_model,
                request_id=request_id,
                mode=self.log,
            )
        except Exception:  # a failing logger never fails a decision; count the batch
            self.events._count(0, 1 if self.log == "summary" else len(decisions))

    def _route(self, X_model: Any, decisions: Decisions) -> None:
        """Hand review/abstain rows and audit samples to the router, as one batch.

        Sets ``decisions.route[i]`` to the route status of each routed row (None
        for the others). A sink failure never fails the decision (see ``Router``).
        """
        router = self.router_
        if router is None:
            return
        n = len(decisions)
        decisions.route = [None] * n
        rows = np.flatnonzero((decisions.actions != "accept") | decisions.audit)
        if len(rows) == 0:
            return
        try:
            names = self._input_names()
            if decisions.inputs_hash is not None:
                hashes = decisions.inputs_hash[rows]
            else:
                hashes = row_hashes(X_model.iloc[rows] if is_frame(X_model) else X_model[rows])
            inputs = (
                input_rows(X_model, rows, names, resolve_redact(self.redact, names))
                if self.log_inputs
                else None
            )
            cases = build_cases(
                decisions,
                rows,
                model_name=self.model_name,
                model_version=self.model_version,
                inputs=inputs,
                inputs_hash=hashes,
            )
            space = outcome_space(self.task_, getattr(self, "classes_", None))
            router.set_context(space, self.policy_.to_dict()["tiers"])
            statuses = router.route(cases)
        except Exception as exc:  # building the cases must not fail the decision either
            statuses = router.report_failure(decisions.audit[rows].tolist(), exc)
        for i, status in zip(rows.tolist(), statuses, strict=True):
            decisions.route[i] = status

    @property
    def router_(self) -> Router | None:
        """The :class:`~safepredict.review.Router` built from ``router`` (None without one).

        Its ``failures`` attribute counts cases the sink refused after retries.
        """
        if self.router is None:
            return None
        cached = self.__dict__.get("_router_cache")
        if cached is None or cached[0] is not self.router:
            with self._thread_lock:
                cached = self.__dict__.get("_router_cache")
                if cached is None or cached[0] is not self.router:
                    cached = (self.router, Router.coerce(self.router))
                    self.__dict__["_router_cache"] = cached
        router: Router = cached[1]
        return router

    def _input_names(self) -> list[str]:
        names = getattr(self, "feature_names_in_", None)
        if names is not None:
            return [str(c) for c in names]
        return default_feature_names(self.n_features_in_)

    # ------------------------------------------------------------ outcomes
    def record_outcome(self, decision_id: str, y_true: Any) -> str:
        """Record the realized outcome of a decision that arrived by another path.

        Stored in the router's review queue when it has one (the case is
        resolved, or the outcome kept in its ``external_outcomes`` table for
        decisions that were never routed); with a JSONL router, appended to
        ``<stem>.outcomes.jsonl`` next to it.

        Returns
        -------
        str
            ``"case"`` (a queued case was resolved) or ``"external"``.

        Raises
        ------
        ConfigError
            If the predictor has no router able to store outcomes.
        InvalidOutcomeError
            If ``y_true`` is not one of the model's labels (classification) or
            not a finite number (regression); the message lists the choices.
        """
        router = self.router_
        if router is None:
            raise ConfigError(
                "record_outcome needs somewhere to store outcomes; this SafePredictor has no "
                "router. Pass SafePredictor(router='reviews.db') (or a .jsonl path)."
            )
        space = outcome_space(getattr(self, "task_", None), getattr(self, "classes_", None))
        y_true = check_outcome(y_true, space)
        return router.record_outcome(str(decision_id), y_true, source="record_outcome")

    def recalibrate_from(
        self, queue: Any, *, audited_only: bool = True, reference: Any = None
    ) -> SafePredictor:
        """Re-run :meth:`calibrate` on the resolved cases of a review queue.

        The resolved cases' logged inputs and outcomes become the calibration
        set, so the cases must have been routed with ``log_inputs=True`` (and
        no feature redacted).

        Exchangeability caveat: conformal guarantees need calibration rows
        exchangeable with future rows. Routed (review/abstain) cases are chosen
        *because* they were uncertain, so they are not; audited cases are a
        hash-random sample of the accepted rows, so they are exchangeable with
        the rows the current policy accepts (not with all traffic). Hence the
        default ``audited_only=True``.

        Parameters
        ----------
        queue : SQLiteReviewQueue, Router or path
            Where the resolved cases are.
        audited_only : bool, default=True
            Use only audit-sampled cases (see the caveat).
        reference : array-like or DataFrame, optional
            Passed to :meth:`calibrate` (pass the training data so the guards do
            not learn from the small review sample).

        Returns
        -------
        SafePredictor
            ``self``, recalibrated.
        """
        self._check_calibrated("recalibrate_from")
        source = Router.coerce(queue).sink if not hasattr(queue, "outcomes") else queue
        outcomes = getattr(source, "outcomes", None)
        if outcomes is None:
            raise ConfigError(
                f"recalibrate_from needs a SQLiteReviewQueue (or its path); got {describe(queue)}."
            )
        items = [o for o in outcomes(audited_only=audited_only) if o.get("outcome") is not None]
        kind = "audited " if audited_only else ""
        if not items:
            hint = " (or pass audited_only=False, see the caveat)" if audited_only else ""
            raise CalibrationError(
                f"the queue has no resolved {kind}cases with an outcome; resolve some cases "
                f"first{hint}."
            )
        names = self._input_names()
        no_inputs = [o["decision_id"] for o in items if not o.get("inputs")]
        if no_inputs:
            raise CalibrationError(
                f"{len(no_inputs)} of {len(items)} resolved {kind}cases have no logged inputs "
                f"(e.g. {no_inputs[0]!r}), so they cannot be re-scored. Route with "
                "SafePredictor(log_inputs=True) to make recalibration from the queue possible."
            )
        absent = sorted({c for o in items for c in names if c not in o["inputs"]})
        if absent:
            raise CalibrationError(
                f"resolved cases lack the features {absent} (redacted or renamed); "
                "recalibration needs every calibration feature. Drop them from redact=."
            )
        rows = [[o["inputs"][c] for c in names] for o in items]
        y = np.asarray([o["outcome"] for o in items])
        X: Any
        if getattr(self, "feature_names_in_", None) is not None:
            import pandas as pd

            X = pd.DataFrame(rows, columns=names)
        else:
            X = np.asarray(rows, dtype=np.float64)
        return self.calibrate(X, y, reference=reference)

    # ---------------------------------------------------- tier health (issue 22)
    def tier_health(
        self, queue: Any = None, *, since: Any = None, delta: float | None = None
    ) -> dict[str, Any]:
        """Is every accepting tier keeping its promise? Anytime-valid, from audited outcomes.

        Reads the resolved audit cases (``queue.outcomes(audited_only=True)``, in
        the order their outcomes arrived) and runs
        :func:`safepredict.monitoring.tier_health.tier_health`: per tier, a
        confidence sequence for the error rate of *all* rows the tier accepted
        (each outcome weighted by ``1 / audit_rate`` of its tier), valid however
        often it is checked. Emits one ``safepredict.tier_alarm`` warning per
        tier in alarm.

        Parameters
        ----------
        queue : SQLiteReviewQueue, Router or path, optional
            Where the outcomes are. Default: this predictor's router.
        since : datetime or ISO 8601 str, optional
            Only outcomes resolved at or after this time (UTC). The bounds are
            for the error rate of the rows accepted in the window, so a long good
            history does not dilute a recent rise; each window keeps its own
            ``delta`` guarantee.
        delta : float, optional
            Miscoverage over the whole stream. Default: the policy's ``delta``.

        Returns
        -------
        dict
            Tier name -> JSON-safe dict with ``n_outcomes``, ``n_errors``,
            ``estimate`` (weighted), ``lower`` / ``upper`` (anytime-valid),
            ``max_error`` (the promise), ``alarm`` (``lower > max_error``),
            ``delta`` and ``audit_rate``.
        """
        self._check_calibrated("tier_health")
        items = self._audit_outcomes(queue, "tier_health")
        if since is not None:
            start = _utc_text(since)
            items = (o for o in items if str(o.get("resolved_at") or "") >= start)
        report = compute_tier_health(items, self.policy_, delta=delta)
        context = self._event_context()
        out = {name: h.to_dict() for name, h in report.items()}
        for health in out.values():
            if health["alarm"]:
                self.events.tier_alarm(context, health)
        return out

    def _audit_outcomes(self, queue: Any, caller: str) -> Any:
        """``outcomes(audited_only=True)`` of ``queue`` (default: this predictor's router)."""
        source = self.router_ if queue is None else queue
        if source is not None and not hasattr(source, "outcomes"):
            source = getattr(Router.coerce(source), "queue", None)
        outcomes = getattr(source, "outcomes", None)
        if outcomes is None:
            raise ConfigError(
                f"{caller} needs the review queue the audited outcomes are in; pass "
                f"SafePredictor(router='reviews.db') or {caller}(queue='reviews.db'); "
                f"got {describe(queue)}."
            )
        return outcomes(audited_only=True)

    def adapt_thresholds(self, queue: Any = None) -> dict[str, Any]:
        """Move the ``adapt = true`` tiers' thresholds, replayed from the audit outcome log.

        For each such tier the threshold path starts at the certified threshold
        and takes one step per audited outcome of the tier, in arrival order
        (:func:`safepredict.adaptive.threshold_path`), so calling this again after
        more outcomes arrived, or on another process with the same queue, gives the
        same threshold. The new threshold replaces the tier's threshold in this
        predictor (and in what :meth:`save` writes); each change emits a
        ``safepredict.threshold_change`` event.

        Returns
        -------
        dict
            Tier name -> ``start`` (certified threshold), ``threshold`` (now),
            ``n_outcomes``, ``weighted_error`` and ``bound`` (the long-run excess
            over ``max_error`` allowed so far, see :mod:`safepredict.adaptive`).
        """
        self._check_calibrated("adapt_thresholds")
        policy = self.policy_
        tiers = [t for t in policy.tiers if t.adapt]
        if not tiers:
            raise ConfigError(
                "adapt_thresholds: no tier has adapt = true; add adapt = true to a "
                "max_error tier of the policy."
            )
        if self.task_ != "classification":
            raise ConfigError(
                "adapt_thresholds supports classification tiers, whose scores lie in [0, 1]; "
                "this predictor is a regressor. Remove adapt = true and recalibrate instead."
            )
        per_tier = tier_outcomes(self._audit_outcomes(queue, "adapt_thresholds"), policy)
        cal = self.tier_calibration_
        thresholds = dict(cal.thresholds)
        out: dict[str, Any] = {}
        context = self._event_context()
        for tier in tiers:
            start = (cal.report.get(tier.name) or {}).get("threshold")
            errs, weights = per_tier[tier.name]
            if start is None or tier.max_error is None:  # uncertified: accepts nothing
                continue
            path = threshold_path(
                errs, weights, start=float(start), max_error=tier.max_error, step=tier.adapt_step
            )
            new, old = float(path[-1]), float(thresholds[tier.name])
            total = float(weights.sum())
            out[tier.name] = {
                "start": float(start),
                "threshold": new,
                "n_outcomes": len(errs),
                "weighted_error": float((weights * errs).sum() / total) if total else None,
                "bound": long_run_bound(
                    start=float(start),
                    step=tier.adapt_step,
                    total_weight=total,
                    max_weight=float(weights.max()) if len(weights) else 1.0,
                ),
            }
            if new != old:
                thresholds[tier.name] = new
                self.events.threshold_change(
                    context, {"tier": tier.name, "old": old, "new": new, **out[tier.name]}
                )
        self.tier_calibration_ = dataclasses.replace(cal, thresholds=thresholds)
        return out

    # ------------------------------------------------------------ reporting
    def calibration_report(self) -> dict[str, dict[str, Any]]:
        """What the calibration certified for every risk-controlled (``max_error``) tier.

        Returns
        -------
        dict
            Tier name -> JSON-safe dict with ``threshold`` (``None`` if not
            certified; a list by class for ``per_class`` tiers), ``certified``,
            ``n_reaching`` / ``n_accepted`` / ``n_errors`` (calibration rows
            reaching the tier, accepted by it, wrong among those),
            ``observed_error``, ``upper_bound`` (one-sided ``1 - delta``
            Clopper-Pearson bound on the error rate among accepted rows),
            ``acceptance_rate`` with a 95% ``acceptance_interval``, ``delta``
            (this tier's share), ``rows_needed`` (accepted rows needed even with
            zero errors) and ``calibration_rows_needed`` (calibration rows
            needed in total at the current reach rate), plus ``warning`` when
            the tier could not be certified.

        Examples
        --------
        >>> from sklearn.datasets import load_breast_cancer
        >>> from sklearn.linear_model import LogisticRegression
        >>> X, y = load_breast_cancer(return_X_y=True)
        >>> model = LogisticRegression(max_iter=5000).fit(X[:250], y[:250])
        >>> policy = {"delta": 0.1, "tiers": [
        ...     {"name": "auto", "action": "accept", "max_error": 0.05},
        ...     {"name": "human", "action": "abstain"}]}
        >>> sp = SafePredictor(model, tiers=policy, log="off").calibrate(X[250:], y[250:])
        >>> report = sp.calibration_report()["auto"]
        >>> report["certified"], report["upper_bound"] <= 0.05
        (True, True)
        """
        self._check_calibrated("calibration_report")
        cal = self.tier_calibration_
        out = {name: dict(rep) for name, rep in cal.report.items()}
        for warning in cal.warnings:
            entry = out.setdefault(warning["tier"], {"tier": warning["tier"]})
            entry.setdefault("warnings", []).append(warning["message"])
            entry["warning"] = "; ".join(entry["warnings"])
        return out

    def summary(self) -> dict[str, Any]:
        """What this predictor was calibrated with (JSON-safe)."""
        self._check_calibrated("summary")
        return {
            "safepredict_version": __version__,
            "task": self.task_,
            "conformity_score": self.conformity_score_,
            "confidence_level": float(self.confidence_level),
            "calibration_size": self.calibration_size_,
            "calibration_id": self.calibration_id_,
            "policy_hash": self.policy_.policy_hash,
            "quantile": float(self.conformal_.quantile),
        }


def _sklearn_kind(model: Any, check: Any) -> bool:
    """``is_classifier``/``is_regressor`` that tolerates objects without sklearn tags."""
    try:
        return bool(check(model))
    except (AttributeError, TypeError):
        return False


def _classification_scores(
    proba: NDArray[np.float64], confidence: NDArray[np.float64]
) -> dict[str, NDArray[np.float64]]:
    if proba.shape[1] >= 2:
        top2 = np.partition(proba, -2, axis=1)[:, -2:]
        top, second = top2[:, 1], top2[:, 0]
    else:
        top = proba[:, 0] if proba.shape[1] else np.zeros(len(proba))
        second = np.zeros_like(top)
    return {"conformal": confidence, "top_prob": top, "margin": top - second}


def _regression_scores(width: NDArray[np.float64]) -> dict[str, NDArray[np.float64]]:
    """Regression ``max_error`` score: minus the conformal interval width (narrower = surer)."""
    return {"conformal": -np.asarray(width, dtype=np.float64)}


def _with_failed_rows(
    out: NDArray[np.float64], n: int
) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
    """``out`` and its rows with non-finite output (failed)."""
    if out.ndim in (1, 2) and out.shape[0] == n and math.isfinite(out.sum()):
        return out, np.zeros(n, dtype=bool)  # the common case, in one reduction
    finite = np.isfinite(out).all(axis=1) if out.ndim == 2 else np.isfinite(out)
    return out, np.asarray(~finite, dtype=bool)


def _frame_from_records(records: Sequence[Mapping[str, Any]]) -> Any:
    import pandas as pd

    return pd.DataFrame.from_records(list(records))


def _calibration_hash(X: Any, y: NDArray[Any]) -> str:
    h = hashlib.sha256()
    for digest in row_hashes(X):
        h.update(digest.encode())
    h.update(json.dumps([str(v) for v in np.asarray(y).tolist()]).encode())
    return h.hexdigest()[:16]


def _utc_text(when: Any) -> str:
    """``since`` as the queue's UTC ISO text (which sorts as time)."""
    from datetime import UTC, datetime

    if isinstance(when, str):
        try:
            when = datetime.fromisoformat(when.replace("Z", "+00:00"))
        except ValueError as exc:
            raise ConfigError(
                f"since must be a datetime or an ISO 8601 time such as "
                f"'2026-01-31T00:00:00Z'; got {describe(when)}."
            ) from exc
    if not isinstance(when, datetime):
        raise ConfigError(f"since must be a datetime or an ISO 8601 str; got {describe(when)}.")
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return str(when.astimezone(UTC).isoformat(timespec="microseconds"))
