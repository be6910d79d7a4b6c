"""The explainer ``decide`` calls: builds shap lazily, explains rows within a budget."""

from __future__ import annotations

import math
import threading
import time
from typing import Any

import numpy as np
from numpy.typing import NDArray

from safepredict.decisions import Explanation
from safepredict.exceptions import ConfigError
from safepredict.explain.backend import load_shap
from safepredict.explain.groups import dense, feature_groups
from safepredict.explain.permutation import Codec, PermutationShap
from safepredict.explain.select import (
    AGNOSTIC_BACKGROUND_SIZE,
    SKIPPED_BUDGET,
    SKIPPED_ERROR,
    candidate_methods,
    margin_output,
    model_kind,
    split_pipeline,
)
from safepredict.explain.state import ExplainerState, scalar

__all__ = [
    "ModelExplainer",
]


class ModelExplainer:
    """Explain a fitted model's rows in its input columns, within a per-row budget.

    Parameters
    ----------
    model : estimator
        The fitted model or ``Pipeline`` the predictor wraps.
    state : ExplainerState
        Background sample and settings (see :meth:`ExplainerState.fit`).

    Notes
    -----
    The shap explainer is built on the first call to :meth:`explain` (or
    :meth:`prepare`), which also measures each candidate method's per-row cost
    on background rows and keeps the first (most faithful) one that fits the
    budget. Calls are serialised with a lock: shap explainers keep per-call
    state, so concurrent ``decide`` calls must not share one unguarded. No
    method draws from numpy's global random generator (the permutation method is
    :class:`PermutationShap`, seeded from ``random_state``). Why a method was
    not chosen (an error building or measuring it) is kept in
    ``state.errors``. The shap objects are dropped when pickling and rebuilt lazily.

    Examples
    --------
    >>> from sklearn.datasets import load_diabetes
    >>> from sklearn.linear_model import Ridge
    >>> X, y = load_diabetes(return_X_y=True)
    >>> model = Ridge().fit(X, y)
    >>> ex = ModelExplainer(model, ExplainerState.fit(X, task="regression"))
    >>> [e] = ex.explain(X[:1])[0]
    >>> e.method, e.output
    ('linear', 'prediction')
    >>> bool(abs(e.output_value - model.predict(X[:1])[0]) < 1e-6)
    True
    """

    def __init__(self, model: Any, state: ExplainerState) -> None:
        self.model = model
        self.state = state
        self._lock = threading.RLock()
        self._built: dict[str, Any] = {}

    # pickling: the shap objects and the lock are rebuilt lazily
    def __getstate__(self) -> dict[str, Any]:
        return {"model": self.model, "state": self.state}

    def __setstate__(self, data: dict[str, Any]) -> None:
        self.model = data["model"]
        self.state = data["state"]
        self._lock = threading.RLock()
        self._built = {}

    # ------------------------------------------------------------ building
    @property
    def method(self) -> str | None:
        """The chosen method (``None`` before first use)."""
        return self.state.method

    def prepare(self) -> str | None:
        """Choose (if needed) and build the explainer; return the chosen method.

        ``None`` means no method fits the budget (rows will be skipped).
        """
        with self._lock:
            state = self.state
            if state.method is not None:
                if state.method not in self._built:
                    self._built[state.method] = self._build(state.method)
                return self._fits(state.method)
            kind = model_kind(self.model)
            candidates = candidate_methods(kind, state.requested, len(state.feature_names))
            chosen: str | None = None
            for method in candidates:
                try:
                    self._built[method] = self._build(method)
                    cost = self._measure(method)
                except Exception as exc:  # a method that cannot handle this model: next one
                    state.errors[method] = f"{type(exc).__name__}: {exc}"[:300]
                    continue
                state.per_row_ms[method] = cost
                if state.budget_ms is None or cost <= state.budget_ms:
                    chosen = method
                    break
            if chosen is None and state.per_row_ms:
                state.method = min(state.per_row_ms, key=state.per_row_ms.__getitem__)
            else:
                state.method = chosen
            if state.method is not None:
                state.space = self._built[state.method].get("space")
            return chosen

    def _fits(self, method: str) -> str | None:
        budget = self.state.budget_ms
        cost = self.state.per_row_ms.get(method)
        if budget is not None and cost is not None and cost > budget:
            return None
        return method

    def _build(self, method: str) -> dict[str, Any]:
        shap = load_shap()
        state = self.state
        background = state.background_data()
        pre, final = split_pipeline(self.model)
        groups = None
        if method in ("tree", "linear") and pre is not None:
            groups = feature_groups(pre, background)
            if groups is None:
                raise ConfigError(
                    f"the pipeline's preprocessing mixes input columns, so the {method} "
                    "explainer's contributions cannot be mapped back to them; use "
                    "explainer='auto' or 'permutation'."
                )
        if method == "tree":
            explainer = shap.TreeExplainer(final)
            return {"explainer": explainer, "pre": pre, "groups": groups, "codec": None}
        if method == "linear":
            bg = dense(background if pre is None else pre.transform(background))
            weights = state.background_weights
            if weights is None:
                explainer = shap.LinearExplainer(final, bg)
            else:
                # interventional linear SHAP needs only the background's mean (and the
                # covariance for completeness): the weighted centroids give both
                w = np.asarray(weights, dtype=np.float64)
                mean = np.average(bg, axis=0, weights=w)
                cov = (
                    np.atleast_2d(np.cov(bg, rowvar=False, aweights=w))
                    if len(bg) > 1
                    else np.zeros((bg.shape[1], bg.shape[1]))
                )
                explainer = shap.LinearExplainer(final, (mean, cov))
            return {"explainer": explainer, "pre": pre, "groups": groups, "codec": None}
        # model-agnostic, in the input columns of the whole model
        codec = Codec(background) if state.is_frame else None
        rng = np.random.default_rng(state.random_state if state.random_state is not None else 0)
        n_bg = len(background)
        take = np.arange(n_bg)
        if n_bg > AGNOSTIC_BACKGROUND_SIZE:  # a raw sample (centroids are fewer)
            take = np.sort(rng.choice(n_bg, size=AGNOSTIC_BACKGROUND_SIZE, replace=False))
        bg_rows = background.iloc[take] if state.is_frame else background[take]
        bg_num = codec.encode(bg_rows) if codec is not None else dense(bg_rows)
        model = self.model
        fn_name = "predict_proba" if state.task == "classification" else "predict"
        fn = getattr(model, fn_name)
        names = list(state.feature_names)
        wants_frame = state.is_frame or hasattr(model, "feature_names_in_")

        def f(masked: NDArray[np.float64]) -> NDArray[np.float64]:
            if codec is not None:
                rows: Any = codec.decode(masked)
            elif wants_frame:
                import pandas as pd

                rows = pd.DataFrame(masked, columns=names)
            else:
                rows = masked
            return np.asarray(fn(rows), dtype=np.float64)

        seed = state.random_state if state.random_state is not None else 0
        if method == "exact":
            masker = shap.maskers.Independent(bg_num, max_samples=len(bg_num))
            agnostic: Any = shap.explainers.ExactExplainer(f, masker)
        else:
            agnostic = PermutationShap(f, bg_num, seed=seed)
        return {"explainer": agnostic, "pre": None, "groups": None, "codec": codec}

    def _measure(self, method: str) -> float:
        """Median per-row milliseconds of ``method`` on a few background rows.

        One warm-up row first (numba compilation, caches), then three single-row
        calls; also fixes which output space the method explains.

        Raises
        ------
        ValueError
            If the contributions do not add up to any model output (the method is
            not faithful for this model).
        """
        background = self.state.background_data()
        n = len(background)
        if n == 0:
            raise ValueError("no background rows to measure the explainer on")
        rows = [
            background.iloc[[i % n]] if self.state.is_frame else background[[i % n]]
            for i in range(4)
        ]
        self._raw(method, rows[0])
        times = []
        for row in rows[1:]:
            t = time.perf_counter()
            self._raw(method, row)
            times.append((time.perf_counter() - t) * 1000.0)
        space = self._detect_space(method, rows[0])
        if space is None:
            raise ValueError("contributions do not add up to the model's output")
        self._built[method]["space"] = space
        return float(np.median(times))

    def _detect_space(self, method: str, row: Any) -> str | None:
        """Which model output the method's contributions add up to."""
        values, base = self._raw(method, row)
        totals = np.asarray(values.sum(axis=1) + base, dtype=np.float64).reshape(len(row), -1)
        if self.state.task == "regression":
            pred = np.asarray(self.model.predict(row), dtype=np.float64).reshape(len(row), -1)
            return "prediction" if np.allclose(totals, pred, atol=1e-6, rtol=1e-6) else None
        proba = np.asarray(self.model.predict_proba(row), dtype=np.float64)
        cand: dict[str, NDArray[np.float64]] = {"proba": proba}
        margin = margin_output(self.model, row)
        if margin is not None:
            cand["margin"] = margin.reshape(len(row), -1)
        for space, ref in cand.items():
            if totals.shape[1] == 1 and ref.shape[1] == 2:
                ref = ref[:, 1:]
            if totals.shape == ref.shape and np.allclose(totals, ref, atol=1e-6, rtol=1e-6):
                return space
        return None

    def _raw(self, method: str, rows: Any) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Shap values ``(n, n_inputs[, n_outputs])`` and base values ``(n[, n_outputs])``."""
        built = self._built[method]
        explainer = built["explainer"]
        if built["codec"] is not None:
            data = built["codec"].encode(rows)
        elif built["pre"] is not None:
            data = dense(built["pre"].transform(rows))
        else:
            data = dense(rows)
        if method == "tree":
            result = explainer(data, check_additivity=False)
        elif method == "permutation":
            return self._permutation(explainer, data, built["groups"])
        elif method == "exact":
            result = explainer(data, silent=True)
        else:
            result = explainer(data)
        values = np.asarray(result.values, dtype=np.float64)
        base = np.asarray(result.base_values, dtype=np.float64)
        if base.ndim == 0:
            base = np.full(len(data), float(base))
        if base.ndim == 1 and values.ndim == 3:
            base = np.broadcast_to(base, (len(data), values.shape[2])).copy()
        groups = built["groups"]
        if groups is not None:
            n_in = len(self.state.feature_names)
            onehot = np.zeros((len(groups), n_in))
            onehot[np.arange(len(groups)), groups] = 1.0
            if values.ndim == 2:
                values = values @ onehot
            else:
                values = np.einsum("nko,kj->njo", values, onehot)
        return values, base

    def _permutation(
        self, explainer: Any, data: NDArray[np.float64], groups: Any
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Permutation values, one row at a time (see :class:`PermutationShap`)."""
        values, bases = [], []
        for i in range(len(data)):
            v, b = explainer.explain_row(data[i])
            values.append(v[None])
            bases.append(np.asarray(b, dtype=np.float64).reshape(1, -1))
        out = np.concatenate(values)
        base = np.concatenate(bases)
        if out.ndim == 2:
            base = base[:, 0]
        return out, base

    # ------------------------------------------------------------ explaining
    def explain(
        self, rows: Any, class_index: NDArray[np.intp] | None = None
    ) -> tuple[list[Explanation | None], list[str | None]]:
        """Explain ``rows`` (model input), each for its predicted class.

        Parameters
        ----------
        rows : array-like or DataFrame
            Rows as the model receives them.
        class_index : ndarray of int, optional
            Classification: index into ``classes`` of each row's predicted
            class. Default: the model's most probable class.

        Returns
        -------
        explanations : list of Explanation or None
            One per row; ``None`` where skipped.
        skipped : list of str or None
            The reason each skipped row was skipped (``explanation_skipped:budget``
            or ``explanation_skipped:error``), ``None`` where explained.
        """
        n = len(rows)
        if n == 0:
            return [], []
        try:
            method = self.prepare()
        except Exception:  # e.g. shap cannot be imported: the decision still stands
            return [None] * n, [SKIPPED_ERROR] * n
        if method is None:
            why = SKIPPED_ERROR if self.state.method is None else SKIPPED_BUDGET
            return [None] * n, [why] * n
        state = self.state
        if state.task == "classification" and class_index is None:
            class_index = np.argmax(np.asarray(self.model.predict_proba(rows)), axis=1)
        try:
            with self._lock:
                t = time.perf_counter()
                values, base = self._raw(method, rows)
                elapsed = (time.perf_counter() - t) * 1000.0 / n
                space = self._built[method].get("space", state.space)
            # keep the estimate current, so a budget that stops fitting is noticed
            old = state.per_row_ms.get(method, elapsed)
            state.per_row_ms[method] = 0.8 * old + 0.2 * elapsed
        except Exception:  # explaining must never fail the decision
            return [None] * n, [SKIPPED_ERROR] * n
        explained = self._package(method, space, values, base, rows, class_index)
        # a row whose contributions are not finite (e.g. a linear model on a row with
        # missing values) is not an explanation a reviewer can use
        return explained, [None if e is not None else SKIPPED_ERROR for e in explained]

    def _package(
        self,
        method: str,
        space: str | None,
        values: NDArray[np.float64],
        base: NDArray[np.float64],
        rows: Any,
        class_index: NDArray[np.intp] | None,
    ) -> list[Explanation | None]:
        state = self.state
        names = state.feature_names
        data = rows.to_numpy(dtype=object) if hasattr(rows, "to_numpy") else np.asarray(rows)
        out: list[Explanation | None] = []
        classes = state.classes
        for i in range(len(values)):
            if state.task == "regression" or class_index is None or classes is None:
                v = values[i].reshape(len(names), -1)[:, 0]
                b = float(np.ravel(base[i])[0])
                output = "prediction"
            else:
                k = int(class_index[i])
                label = classes[k]
                if values.ndim == 3:
                    v, b = values[i, :, k], float(base[i, k])
                else:  # one output: the positive class (index 1) of a binary model
                    v, b = values[i], float(np.ravel(base[i])[0])
                    if k == 0:
                        v, b = -v, (1.0 - b if space == "proba" else -b)
                if space == "proba":
                    output = f"proba[{label}]"
                elif len(classes) == 2:
                    output = f"log_odds[{label}]"
                else:
                    output = f"logit[{label}]"
            if not (np.isfinite(v).all() and math.isfinite(b)):
                out.append(None)
                continue
            out.append(
                Explanation(
                    method=method,
                    feature_names=names,
                    values=tuple(float(x) for x in v),
                    base_value=b,
                    output=output,
                    data=tuple(scalar(x) for x in data[i]),
                )
            )
        return out

    # ------------------------------------------------------------ state
    def to_state(self) -> dict[str, Any]:
        """JSON-safe state (the model is not included)."""
        return self.state.to_state()

    @classmethod
    def from_state(cls, state: dict[str, Any], *, model: Any) -> ModelExplainer:
        """Rebuild from :meth:`to_state` output and the model."""
        return cls(model, ExplainerState.from_state(state))
