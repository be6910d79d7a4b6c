"""``SafePredictor``: the one orchestrator that turns model outputs into decisions.

Per batch: check the input structure, run the guards, score with the model (fail
closed per row), compute conformal sets/intervals and confidence, assign tiers,
explain where the policy asks, sample audits, emit events and route cases to
humans. The core modules it calls are pure; this is the only place that logs and
routes.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.base import BaseEstimator, is_classifier, is_regressor

from safepredict._hashing import row_hashes, unit_interval
from safepredict._validation import check_fraction, check_one_of, describe
from safepredict._version import __version__
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
from safepredict.tiers import TierCalibration, TierInputs, assign_tiers

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


def _is_frame(X: Any) -> bool:
    return hasattr(X, "columns") and hasattr(X, "iloc")


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
    router : callable, path or queue, optional
        Where review/abstain cases (and audit samples) go.
    logger : structlog-style logger, optional
        Defaults to ``structlog.get_logger("safepredict")``.
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
        state.pop("_lock", None)
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
                tier.min_confidence is not None or tier.max_set_size is not None
            ):
                raise ConfigError(
                    f"tier {tier.name!r}: min_confidence/max_set_size apply to classification; "
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
        if _is_frame(X):
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
        if _is_frame(X):
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
        arr = np.asarray(X)
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
    def _model_output(self, X: Any) -> tuple[NDArray[np.float64], NDArray[np.bool_]]:
        """Probabilities (classification) or predictions (regression), and failed rows.

        If the model raises on the batch, rows are scored one by one and only the
        rows that raise (or give non-finite output) are marked failed.
        """
        method = "predict_proba" if self.task_ == "classification" else "predict"
        fn = getattr(self.model, method)
        n = len(X)
        try:
            out = np.asarray(fn(X), dtype=np.float64)
        except Exception:  # any model failure becomes per-row model_error, never a crash
            width = len(self.classes_) if self.task_ == "classification" else None
            shape: tuple[int, ...] = (n, width) if width is not None else (n,)
            out = np.full(shape, np.nan)
            for i in range(n):
                row = X.iloc[i : i + 1] if _is_frame(X) else X[i : i + 1]
                try:
                    out[i] = np.asarray(fn(row), dtype=np.float64)[0]
                except Exception:  # this row fails closed as model_error
                    continue
        if out.ndim in (1, 2) and out.shape[0] == n and math.isfinite(out.sum()):
            return out, np.zeros(n, dtype=bool)  # the common case, in one reduction
        finite = np.isfinite(out).all(axis=1) if out.ndim == 2 else np.isfinite(out)
        return out, np.asarray(~finite, dtype=bool)

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
        self.tier_calibration_ = self._calibrate_tiers(X_model, y_arr)
        self._fit_guards(X if reference is None else reference)
        self.calibration_size_ = len(y_arr)
        self.calibration_id_ = _calibration_hash(X_model, y_arr)
        self._emit_calibration()
        return self

    # ------------------------------------------------------------ decide
    def decide(self, X: Any) -> Decisions:
        """Decide on every row of ``X``.

        Parameters
        ----------
        X : array-like, DataFrame, dict or list of dicts
            Rows with the calibration features.

        Returns
        -------
        Decisions
            One decision per row. Rows failing a guard, rows the model cannot
            score and rows with empty sets are never accepted.

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
        guard_reasons, guard_rank, ood_scores = self._check_guards(X_model)
        t_model = time.perf_counter()
        latency["guard"] = t_model - t

        if n:
            out, failed = self._model_output(X_model)
        else:
            width = () if cache.classes is None else (len(cache.classes),)
            out, failed = np.zeros((0, *width)), np.zeros(0, dtype=bool)
        t = time.perf_counter()
        latency["model"] = t - t_model
        any_failed = bool(failed.any())

        set_mask = intervals = probabilities = None
        if self.task_ == "classification":
            conformal = self.conformal_
            assert isinstance(conformal, ClassificationConformal)
            probabilities = out
            safe = np.where(failed[:, None], 0.0, out) if any_failed else out
            predicted_class = safe.argmax(axis=1)
            assert cache.classes_obj is not None
            predictions = cache.classes_obj[predicted_class]
            set_mask, confidence = conformal.set_and_confidence(safe, predicted_class)
            if any_failed:
                set_mask[failed] = False
                confidence[failed] = np.nan
            set_size = set_mask.sum(axis=1)
            scores = _classification_scores(safe, confidence) if cache.needs_scores else {}
            inputs = TierInputs(
                "classification",
                confidence,
                set_size=set_size,
                scores=scores,
                predicted_class=predicted_class,
            )
        else:
            conformal_r = self.conformal_
            assert isinstance(conformal_r, RegressionConformal)
            y_pred = out.reshape(-1)
            predictions = y_pred.astype(object)
            intervals = self._intervals(conformal_r, X_model, y_pred, failed)
            any_failed = bool(failed.any())
            if any_failed:
                intervals[failed] = np.nan
            confidence = np.full(n, np.nan)
            inputs = TierInputs("regression", confidence, width=intervals[:, 1] - intervals[:, 0])
        if any_failed:
            predictions[failed] = None
        latency["conformal"] = time.perf_counter() - t

        codes, tier_reasons = assign_tiers(policy, inputs, self.tier_calibration_)
        actions = cache.actions[codes]
        reasons: list[tuple[str, ...]] = [()] * n
        for tier_row, extra in tier_reasons.items():
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
            for row in np.flatnonzero(failed).tolist():
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
        latency["total"] = time.perf_counter() - t0
        self._emit_decisions(X_model, decisions)
        self._route(X_model, decisions)
        return decisions

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
                row = X_model.iloc[i : i + 1] if _is_frame(X_model) else X_model[i : i + 1]
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

    def decide_one(self, x: Any) -> Decision:
        """Decide on a single row (1-D array, dict, pandas Series or one-row frame).

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
        if hasattr(x, "to_frame") and hasattr(x, "index") and not _is_frame(x):  # a Series
            x = x.to_frame().T
        batch = self.decide(x)
        if len(batch) != 1:
            raise InputSchemaError(
                f"decide_one takes exactly one row; got {len(batch)}. Use decide() for batches.",
                problems=[f"n_rows={len(batch)}"],
            )
        return batch[0]

    # ------------------------------------------------------------ stage hooks
    def _calibrate_tiers(self, X_model: Any, y: NDArray[Any]) -> TierCalibration:
        """Certify thresholds for the risk-controlled tiers (none certified yet)."""
        return TierCalibration()

    def _fit_guards(self, reference: Any) -> None:
        """Learn normal inputs from the reference data."""
        self.guard_config_ = None if self.guards in ("off", None) else self.policy_.guards

    def _check_guards(
        self, X_model: Any
    ) -> tuple[dict[int, tuple[str, ...]], NDArray[np.intp], NDArray[np.float64] | None]:
        """Guard reasons per flagged row, the action rank per row, and OOD scores."""
        n = len(X_model)
        return {}, np.zeros(n, dtype=np.intp), None

    def _explain(self, X_model: Any, decisions: Decisions) -> None:
        """Attach explanations to the rows in the policy's explain tiers."""

    def _sample_audit(self, X_model: Any, decisions: Decisions) -> None:
        """Mark a deterministic ``audit_rate`` sample of accepted rows for audit."""
        rate = self.policy_.audit_rate
        if rate <= 0 or len(decisions) == 0:
            return
        accepted = np.flatnonzero(decisions.actions == "accept")
        if len(accepted) == 0:
            return
        if decisions.inputs_hash is None:
            decisions.inputs_hash = row_hashes(X_model)
        u = unit_interval(decisions.inputs_hash[accepted], self.policy_.audit_seed)
        decisions.audit[accepted[u < rate]] = True

    def _emit_calibration(self) -> None:
        """Log the calibration event."""

    def _emit_decisions(self, X_model: Any, decisions: Decisions) -> None:
        """Log one event per decision (or one per batch)."""

    def _route(self, X_model: Any, decisions: Decisions) -> None:
        """Hand review/abstain rows and audit samples to the router."""
        if self.router is None:
            return
        rows = np.flatnonzero((decisions.actions != "accept") | decisions.audit)
        for i in rows:
            try:
                self.router(decisions[int(i)])
            except Exception:  # a failing sink never fails the decision
                continue

    # ------------------------------------------------------------ reporting
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


def _frame_from_records(records: Sequence[Mapping[str, Any]]) -> Any:
    import pandas as pd

    return pd.DataFrame.from_records(list(records))


def _calibration_hash(X: Any, y: NDArray[Any]) -> str:
    h = hashlib.sha256()
    for digest in row_hashes(X):
        h.update(digest.encode())
    h.update(json.dumps([str(v) for v in np.asarray(y).tolist()]).encode())
    return h.hexdigest()[:16]
