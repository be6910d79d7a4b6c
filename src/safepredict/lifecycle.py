"""The lifecycle half of :class:`~safepredict.SafePredictor` (layer 3), as two mixins.

:class:`Runtime` wires a calibrated predictor to its stages and writers (input
schema, the :class:`~safepredict.pipeline.Stages` and
:class:`~safepredict.pipeline.Writers` of ``decide``, the event emitter, the
review router); :class:`Lifecycle` is what happens around decisions (save,
outcome feedback delegating to :mod:`safepredict.review`, reports). The facade
in :mod:`safepredict.predictor` keeps parameters, ``calibrate`` and ``decide``.

Examples
--------
>>> from sklearn.datasets import load_iris
>>> from sklearn.linear_model import LogisticRegression
>>> from safepredict import SafePredictor
>>> X, y = load_iris(return_X_y=True)
>>> model = LogisticRegression(max_iter=500).fit(X[::3], y[::3])
>>> sp = SafePredictor(model, log="off").calibrate(X[1::3], y[1::3])
>>> sp._schema().feature_names, sp.router_instance is None
(('x0', 'x1', 'x2', 'x3'), True)
"""

from __future__ import annotations

import operator
import threading
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol, Self, TypeVar, cast

import numpy as np

from safepredict import calibration, pipeline
from safepredict._deprecation import warn_deprecated
from safepredict._frames import check_redact
from safepredict._version import __version__
from safepredict.adapters import adapt
from safepredict.config import TierPolicy
from safepredict.conformal import ClassificationConformal, RegressionConformal
from safepredict.exceptions import ConfigError, NotCalibratedError, PersistenceError
from safepredict.inputs import InputSchema
from safepredict.monitoring.events import EventContext, EventEmitter
from safepredict.review import Router
from safepredict.review.feedback import calibration_rows
from safepredict.review.outcomes import check_outcome, outcome_space
from safepredict.tiers import TierCalibration

__all__ = ["Lifecycle", "Runtime"]

_T = TypeVar("_T")

#: What ``_stages``, ``_writers`` and ``_schema`` read (``Runtime._decide_parts``'s key).
_DECIDE_ATTRS = (
    *("model", "task_", "policy_", "conformal_", "tier_calibration_", "guards_"),
    *("explainer_", "classes_", "feature_names_in_", "feature_names_", "n_features_in_"),
    *("input_modality_", "log", "router", "log_inputs", "redact", "model_name"),
    "model_version",
)


class Runtime:
    """Stages, writers, events and router of a predictor (mixed into ``SafePredictor``)."""

    model: Any
    logger: Any
    log: str
    log_inputs: bool
    redact: Sequence[str | int]
    router: Any
    model_name: str | None
    model_version: str | None
    confidence_level: float
    task_: str
    policy_: TierPolicy
    conformal_: ClassificationConformal | RegressionConformal
    tier_calibration_: TierCalibration
    calibration_id_: str
    calibration_size_: int
    conformity_score_: str
    n_features_in_: int

    @property
    def _thread_lock(self) -> threading.Lock:
        lock: threading.Lock | None = self.__dict__.get("_lock")
        if lock is None:
            lock = self.__dict__.setdefault("_lock", threading.Lock())
        return lock

    def _check_calibrated(self, method: str) -> None:
        if not hasattr(self, "conformal_"):
            raise NotCalibratedError(
                f"this SafePredictor is not calibrated yet; call "
                f"predictor.calibrate(X_cal, y_cal) before {method}()."
            )

    def _known_names(self) -> Sequence[str] | None:
        """The input names once known (calibrated, or a model with feature names)."""
        if hasattr(self, "n_features_in_"):
            return self._schema().feature_names
        names = getattr(self.model, "feature_names_in_", None)
        return None if names is None else [str(c) for c in names]

    def _cached(self, name: str, key: tuple[Any, ...], build: Callable[[], _T]) -> _T:
        """A value derived from fitted attributes, rebuilt when one of them changes."""
        entry = self.__dict__.get("_cache", {}).get(name)
        if entry is not None and all(map(operator.is_, entry[0], key)):
            cached: _T = entry[1]
            return cached
        value = build()
        self.__dict__.setdefault("_cache", {})[name] = (key, value)
        return value

    def _decide_parts(self) -> tuple[pipeline.Stages, pipeline.Writers]:
        """:meth:`_stages` and :meth:`_writers` for ``decide``, one identity check per call.

        Keyed on every attribute they read: a refit, ``set_params`` or load rebuilds them.
        """
        d = self.__dict__
        key = tuple(map(d.get, _DECIDE_ATTRS))
        hot = d.get("_hot")
        if hot is not None and all(map(operator.is_, hot[0], key)):
            parts: tuple[pipeline.Stages, pipeline.Writers] = hot[1]
            return parts
        self._check_calibrated("decide")
        parts = (self._stages(), self._writers())
        d["_hot"] = (key, parts)
        return parts

    def _schema(self) -> InputSchema:
        """The inputs the predictor accepts (from the fitted attributes)."""
        names_in = getattr(self, "feature_names_in_", None)
        given = getattr(self, "feature_names_", None)
        modality = getattr(self, "input_modality_", None)  # text or arrays (inputs.py)

        def schema() -> InputSchema:
            if modality is not None:
                return InputSchema.from_dict(modality)
            if names_in is not None:
                named = getattr(self.model, "feature_names_in_", None) is not None
                return InputSchema(tuple(str(c) for c in names_in), True, named)
            if given is not None:
                return InputSchema(tuple(str(c) for c in given))
            return InputSchema(tuple(f"x{j}" for j in range(int(self.n_features_in_))))

        key = (names_in, given, self.model, self.n_features_in_, modality)
        return self._cached("schema", key, schema)

    def _stages(self) -> pipeline.Stages:
        """The calibrated stages ``decide`` runs (rebuilt when a fitted part changes)."""
        parts = (
            self.model,
            self.task_,
            self.policy_,
            self.conformal_,
            self.tier_calibration_,
            getattr(self, "guards_", None),
            getattr(self, "explainer_", None),
            getattr(self, "classes_", None),
            self._schema(),
        )
        return self._cached(
            "stages",
            parts,
            lambda: pipeline.Stages(
                model=adapt(parts[0], parts[1], parts[7]),  # what the stages call
                task=parts[1],
                policy=parts[2],
                conformal=parts[3],
                tier_calibration=parts[4],
                guards=parts[5],
                explainer=parts[6],
                classes=parts[7],
                schema=parts[8],
            ),
        )

    def _writers(self) -> pipeline.Writers:
        """The post stages' writers: router, events, redaction (rebuilt on set_params)."""
        key = (
            self.log,
            self.router,
            self.log_inputs,
            self.redact,
            self.model_name,
            self.model_version,
        )
        return self._cached(
            "writers",
            key,
            lambda: pipeline.Writers(
                emitter=self._events_now,
                context=self._event_context,
                log=self.log,
                router=self.router_instance,
                log_inputs=bool(self.log_inputs),
                redact=self.redact,
                model_name=self.model_name,
                model_version=self.model_version,
            ),
        )

    def _events_now(self) -> EventEmitter:
        return self.events

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
    def router_instance(self) -> Router | None:
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

    @property
    def router_(self) -> Router | None:
        """Deprecated alias of :attr:`router_instance` (it is not fitted; removed in 0.3)."""
        warn_deprecated("SafePredictor.router_ (not fitted)", "router_instance")
        return self.router_instance

    @property
    def dropped_events_(self) -> int:
        """Deprecated: use ``predictor.events.dropped`` (removed in 0.3)."""
        warn_deprecated("SafePredictor.dropped_events_ (not fitted)", "predictor.events.dropped")
        return self.events.dropped

    def _emit_calibration(self, core: calibration.Core) -> None:
        """Log the calibration event (with the monitor's drift baseline)."""
        context = self._event_context()
        emitter = self.events
        if self.log_inputs:
            emitter.check_redact(context.feature_names)
        if self.log == "off":
            return
        policy, tier_cal = self.policy_, self.tier_calibration_
        try:  # the baseline is monitoring help; never fail calibration on it
            inputs = core.inputs
            if inputs is None:
                inputs = pipeline.score(
                    self.task_, self.conformal_, core.X_model, core.values, core.failed
                ).inputs
            baseline = calibration.calibration_baseline(
                policy, self.task_, tier_cal, inputs, core.failed
            )
        except Exception:
            baseline = {}
        if baseline and self.log_inputs:  # inputs are logged: per-feature drift can be read
            try:
                names = context.feature_names
                hidden = emitter.check_redact(names)
                baseline["features"] = calibration.feature_baseline(core.X_model, names, hidden)
            except Exception:
                pass
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

    def event_stats(self) -> dict[str, int]:
        """Counts of events emitted and dropped by this predictor."""
        return self.events.stats()

    def _event_context(self) -> EventContext:
        """What every event of this predictor carries (rebuilt when one part changes)."""
        n_in = getattr(self, "n_features_in_", None)
        names = self._schema().feature_names if n_in else ()
        key = (self.model_name, self.model_version, self.policy_, self.calibration_id_)
        key_all: tuple[Any, ...] = (*key, n_in, self.confidence_level, names)
        return self._cached(
            "context",
            key_all,
            lambda: EventContext(
                self.model_name,
                self.model_version,
                self.policy_.policy_hash,
                self.calibration_id_,
                int(n_in or 0),
                float(self.confidence_level),
                names,
            ),
        )


class _Recalibratable(Protocol):
    """What :meth:`Lifecycle.recalibrate_from` needs of the predictor."""

    def _check_calibrated(self, method: str) -> None: ...

    def _schema(self) -> InputSchema: ...

    def calibrate(
        self,
        X: Any,
        y: Any,
        *,
        reference: Any = None,
        feature_names: Sequence[str] | None = None,
    ) -> Any: ...


_R = TypeVar("_R", bound=_Recalibratable)


class Lifecycle(Runtime):
    """Save, outcome feedback and reports (mixed into ``SafePredictor``)."""

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
        >>> from safepredict import SafePredictor
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
        from safepredict.persistence import SavedPredictor, save_predictor

        if getattr(self, "shift_", None) is not None:  # shift.adapt_to: never saved
            self.conformal_.to_state()  # raises PersistenceError saying what to do instead
        # the mixin only ever runs as part of SafePredictor, a SavedPredictor
        return save_predictor(cast(SavedPredictor, self), path, model=model, key=key)

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
    ) -> Self:
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
        ConfigError
            ``redact`` (saved or given) names no input column.
        """
        from safepredict.persistence import SavedPredictor, load_predictor

        # the mixin only ever runs as part of SafePredictor, a SavedPredictor
        loaded = load_predictor(
            cast("type[SavedPredictor]", cls),
            path,
            model=model,
            trusted=trusted,
            key=key,
            verify_model=verify_model,
            **params,
        )
        predictor = cast(Self, loaded)
        try:
            check_redact(predictor.redact, predictor._known_names())
        except ConfigError as exc:
            if "redact" in params:  # the caller's own parameter
                raise
            raise PersistenceError(
                f"{path}: its saved redact does not fit its columns ({exc}); re-save the "
                "predictor, or pass redact=[...] to load."
            ) from exc
        # Smoothed p-values: the model check consumed draws; decide starts at the seed (tiers2).
        if isinstance(predictor.conformal_, ClassificationConformal):
            predictor.conformal_.restart_draws()
        return predictor

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
        router = self.router_instance
        if router is None:
            raise ConfigError(
                "record_outcome needs somewhere to store outcomes; this SafePredictor has no "
                "router. Pass SafePredictor(router='reviews.db') (or a .jsonl path)."
            )
        space = outcome_space(getattr(self, "task_", None), getattr(self, "classes_", None))
        y_true = check_outcome(y_true, space)
        return router.record_outcome(str(decision_id), y_true, source="record_outcome")

    def recalibrate_from(
        self: _R, queue: Any, *, audited_only: bool = True, reference: Any = None
    ) -> _R:
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
        names = list(self._schema().feature_names)
        rows, outcomes = calibration_rows(queue, names, audited_only=audited_only)
        y = np.asarray(outcomes)
        X: Any
        if getattr(self, "feature_names_in_", None) is not None:
            import pandas as pd

            X = pd.DataFrame(rows, columns=names)
        else:
            X = np.asarray(rows, dtype=np.float64)
        given = getattr(self, "feature_names_", None)
        feature_names = None if given is None else names
        self.calibrate(X, y, reference=reference, feature_names=feature_names)
        return self

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
        >>> from safepredict import SafePredictor
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
