"""``SafePredictor``: a thin lifecycle facade over the decide pipeline.

Parameters, calibration, ``decide``, save/load and outcome feedback. The work is
done by the stages (:mod:`safepredict.inputs`, :mod:`safepredict.guards`,
:mod:`safepredict.model`, :mod:`safepredict.conformal`, :mod:`safepredict.tiers`,
:mod:`safepredict.merge`, :mod:`safepredict.explain`) that
:mod:`safepredict.pipeline` composes; this class holds what calibration learned
and the runtime writers (router, event emitter), and is, with the pipeline, the
only place that logs and routes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from sklearn.base import BaseEstimator

from safepredict import adapters, calibration, pipeline
from safepredict._frames import check_redact, is_frame
from safepredict.conformal import ClassificationConformal
from safepredict.decisions import Decision, Decisions
from safepredict.exceptions import InputSchemaError
from safepredict.health import TierHealth
from safepredict.shift.mixin import ShiftAware
from safepredict.tiers import TierCalibration, TierInputs

__all__ = ["SafePredictor"]


class SafePredictor(TierHealth, ShiftAware, BaseEstimator):  # type: ignore[misc]  # sklearn: no stubs
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
    guards : {"auto", "off"}, GuardConfig or dict, default="auto"
        ``"auto"`` uses the policy's ``[guards]`` table; a ``GuardConfig`` (or a
        dict of its fields, e.g. ``{"ood": "review"}``) replaces it; ``"off"``
        disables input guards (not recommended).
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
    redact : sequence of str or int, default=()
        Columns never written anywhere (events, review cases, spool, exports),
        even with ``log_inputs=True``: names, or 0-based positions. Checked at
        construction (against the model's feature names, when it has them),
        :meth:`set_params`, :meth:`calibrate` and :meth:`load`; a name that is no
        input raises :class:`~safepredict.ConfigError` with the closest one.
    explain_budget_ms : float, optional
        Per-row explanation budget; rows whose explanation would exceed it get
        ``explanation_skipped:budget``.
    quantile_models : tuple of (lower, median, upper) estimators, optional
        Fitted quantile regressors for CQR.
    classes : sequence, optional
        Class labels, in the order of the model's probability columns, for a
        classifier without ``classes_`` (a remote client, a plain function); see
        :mod:`safepredict.adapters`.
    featurizer : callable, optional
        Text or array inputs only: maps a batch of rows to a 2-D feature matrix
        (an embedding model, say) in which the OOD guard measures how unusual a
        row is. Default: a ``Pipeline``'s transform up to its final estimator
        (text and arrays), else the flattened array (arrays; text then has no
        OOD guard, only its empty / length / vocabulary guards). Not saved:
        pass it again to :meth:`load`.
    conditional : str, optional
        Classification: Mondrian sets, coverage within every true class (``"class"``)
        or every value of an input column (its name). Default: the policy's key.
    smoothed : bool, optional
        Classification (``"lac"``): smoothed p-values, exact coverage with ties
        (seeded by ``random_state``). Default: the policy's; a value here wins.

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
        redact: Sequence[str | int] = (),
        explain_budget_ms: float | None = None,
        quantile_models: Any = None,
        explainer_background: str = "kmeans",
        classes: Sequence[Any] | None = None,
        featurizer: Callable[[Any], Any] | None = None,
        conditional: str | None = None,
        smoothed: bool | None = None,
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
        self.classes = classes
        self.featurizer = featurizer
        self.conditional = conditional
        self.smoothed = smoothed
        check_redact(redact, getattr(model, "feature_names_in_", None))

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
        for derived in ("_lock", "_events", "_events_key", "_cache", "_hot"):  # derived
            state.pop(derived, None)
        state.pop("_calibration_rows", None)  # shift.adapt_to: calibration rows stay in memory
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def set_params(self, **params: Any) -> SafePredictor:
        """Set constructor parameters (scikit-learn); ``redact`` is checked at once.

        Raises
        ------
        ConfigError
            If ``redact`` names a column the predictor does not have.
        """
        super().set_params(**params)
        if "redact" in params:
            check_redact(self.redact, self._known_names())
        return self

    def predict(self, X: Any) -> Any:
        """The wrapped model's ``predict`` (scikit-learn semantics, no guards)."""
        return self.model.predict(X)

    def predict_proba(self, X: Any) -> Any:
        """The wrapped model's ``predict_proba`` (scikit-learn semantics, no guards)."""
        return self.model.predict_proba(X)

    # ------------------------------------------------------------ calibration
    def calibrate(
        self,
        X: Any,
        y: Any,
        *,
        reference: Any = None,
        feature_names: Sequence[str] | None = None,
    ) -> SafePredictor:
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
        feature_names : sequence of str, optional
            Names of an unnamed array's columns (default ``x0 .. x{n-1}``):
            dicts and DataFrames given to :meth:`decide` must use exactly these
            names, and events and cases write them.

        Returns
        -------
        SafePredictor
            ``self``, calibrated.

        Examples
        --------
        >>> from sklearn.datasets import load_iris
        >>> from sklearn.linear_model import LogisticRegression
        >>> X, y = load_iris(return_X_y=True)
        >>> model = LogisticRegression(max_iter=500).fit(X[::3], y[::3])
        >>> names = ["sepal_l", "sepal_w", "petal_l", "petal_w"]
        >>> sp = SafePredictor(model, log="off").calibrate(X[1::3], y[1::3], feature_names=names)
        >>> row = dict(zip(names, X[2]))
        >>> sp.decide_one(row).prediction == sp.decide_one(X[2]).prediction
        True
        """
        calibration.check_params(
            self.confidence_level,
            self.log,
            self.explainer,
            self.explain_budget_ms,
            self.explainer_background,
        )
        task = calibration.resolve_task(self.model, self.task)
        # -- model adapters (safepredict.adapters): what the stages call
        adapters.check_task(self.model, self.task, task, X)
        model = adapters.adapt(self.model, task, self.classes)
        # -- end model adapters
        policy = calibration.resolve_policy(self.tiers, self.guards, task)
        method = calibration.resolve_score(self.conformity_score, task, self.quantile_models)
        conditional, smoothed = policy.conformal_options(self.conditional, self.smoothed)
        core = calibration.fit_core(
            model,
            X,
            y,
            task=task,
            policy=policy,
            method=method,
            confidence_level=float(self.confidence_level),
            random_state=self.random_state,
            quantile_models=self.quantile_models,
            feature_names=feature_names,
            conditional=conditional,
            smoothed=smoothed,
        )
        check_redact(self.redact, core.schema.feature_names)
        for stale in ("feature_names_in_", "feature_names_", "classes_", "input_modality_"):
            self.__dict__.pop(stale, None)
        self.n_features_in_ = core.schema.n_features
        if core.schema.to_dict() is not None:  # text or arrays (safepredict.inputs)
            self.input_modality_ = core.schema.to_dict()
        if core.schema.frames_to_model:
            self.feature_names_in_ = np.asarray(core.schema.feature_names, dtype=object)
        elif feature_names is not None:
            self.feature_names_ = np.asarray(core.schema.feature_names, dtype=object)
        self.task_, self.policy_, self.conformity_score_ = task, policy, method
        if core.classes is not None:
            self.classes_ = core.classes
        self.conformal_ = core.conformal
        self.tier_calibration_ = self._calibrate_tiers(
            core.y, core.values, core.failed, core.inputs
        )
        self.guard_config_ = None if self.guards in ("off", None) else policy.guards
        reference = X if reference is None else reference
        self.guards_ = calibration.fit_guards(
            reference,
            core.schema,
            self.guard_config_,
            self.random_state,
            model=self.model,
            featurizer=self.featurizer,
        )
        self.explainer_ = calibration.fit_explainer(
            model,
            core.X_model,
            requested=self.explainer,
            task=task,
            classes=core.classes,
            budget_ms=self.explain_budget_ms,
            random_state=self.random_state,
            background=self.explainer_background,
            modality=core.schema.modality,
        )
        self.calibration_size_ = len(core.y)
        self.calibration_id_ = calibration.calibration_hash(core.X_model, core.y)
        self._emit_calibration(core)
        self._calibration_rows = core  # shift.adapt_to: memory only, never saved or pickled
        # Smoothed p-values: decisions draw from the seed on, as after load (tiers2).
        if isinstance(self.conformal_, ClassificationConformal):
            self.conformal_.restart_draws()
        return self

    # ------------------------------------------------------------ decide
    def decide(self, X: Any, *, request_id: str | None = None) -> Decisions:
        """Decide on every row of ``X``.

        Parameters
        ----------
        X : array-like, DataFrame, dict or list of dicts
            Rows with the calibration features. Dict keys and DataFrame columns
            are matched by name (``x0 ..`` for a predictor calibrated on an
            unnamed array, unless ``feature_names`` were given); masked cells of
            a masked array are missing values.
        request_id : str, optional
            Recorded in every event of this call. Default: the ``request_id``
            bound in structlog's contextvars, if any.

        Returns
        -------
        Decisions
            One decision per row. Rows failing a guard, rows the model cannot
            score (``model_error``) and rows whose model output breaks the
            output contract (``invalid_output``) are never accepted; rows with
            an empty conformal set carry the reason ``empty_set`` and go to the
            first tier whose conditions they meet (``min_credibility`` asks for
            typicality).

        Raises
        ------
        NotCalibratedError
            If called before :meth:`calibrate`.
        InputSchemaError
            If the batch's names or feature count differ from calibration
            (missing or unknown keys are named, with the closest known name).
        """
        stages, writers = self._decide_parts()  # raises NotCalibratedError before calibrate
        return pipeline.decide(stages, writers, X, request_id=request_id)

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

        An ``async`` model (a remote client, see :class:`~safepredict.adapters.AsyncModel`)
        is awaited on this event loop, with its per-batch timeout and retries;
        rows of a batch that times out abstain with ``model_error:timeout``.

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
        # -- model adapters: an async model's calls are awaited on this loop
        token = adapters.caller_loop.set(asyncio.get_running_loop())
        try:
            return await asyncio.to_thread(self.decide, X, **kwargs)
        finally:
            adapters.caller_loop.reset(token)

    # ------------------------------------------------------------ stage hooks
    def _calibrate_tiers(
        self,
        y: NDArray[Any],
        out: NDArray[np.float64],
        failed: NDArray[np.bool_],
        inputs: TierInputs | None,
    ) -> TierCalibration:
        """Certify the ``max_error`` tiers (:func:`safepredict.calibration.certify_tiers`)."""
        classes = getattr(self, "classes_", None)
        return calibration.certify_tiers(self.policy_, self.task_, classes, y, out, failed, inputs)
