"""Decision value objects: one :class:`Decision` per row, a columnar :class:`Decisions` batch.

``Decisions`` keeps numpy columns so that deciding on 10,000 rows does not build
10,000 Python objects; indexing or iterating builds a frozen :class:`Decision` on
demand.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, overload

import numpy as np
from numpy.typing import NDArray

from safepredict._deprecation import warn_deprecated
from safepredict._ids import decision_id as _decision_id
from safepredict._ids import decision_ids as _decision_ids
from safepredict._jsonl import to_builtin
from safepredict._validation import check_one_of
from safepredict.reasons import is_guard_reason

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "FRAME_COLUMNS",
    "Decision",
    "Decisions",
    "Explanation",
    "GuardReport",
]


@dataclass(frozen=True)
class Explanation:
    """Feature contributions for one decision, independent of the shap version.

    Parameters
    ----------
    method : str
        How the contributions were computed (``"tree"``, ``"linear"``,
        ``"permutation"``, ...).
    feature_names : tuple of str
        The user's input columns.
    values : tuple of float
        Contribution of each feature to ``output`` (the predicted class's
        probability or the regression output), aligned with ``feature_names``.
    base_value : float
        Expected model output over the background data.
    output : str, optional
        What is explained, e.g. ``"proba[setosa]"`` or ``"prediction"``.
    data : tuple, optional
        The row's feature values, aligned with ``feature_names``.

    Examples
    --------
    >>> e = Explanation("tree", ("a", "b", "c"), (0.1, -0.5, 0.2), 0.3)
    >>> e.top(2)
    [('b', -0.5), ('c', 0.2)]
    >>> round(e.output_value, 6)
    0.1
    """

    method: str
    feature_names: tuple[str, ...]
    values: tuple[float, ...]
    base_value: float
    output: str | None = None
    data: tuple[Any, ...] | None = None

    @property
    def output_value(self) -> float:
        """``base_value + sum(values)``: the explained model output."""
        return float(self.base_value + math.fsum(self.values))

    def to_shap(self) -> Any:
        """Deprecated (0.2, removed in 0.3): use ``safepredict.explain.to_shap(explanation)``.

        ``decisions`` is a layer-1 module and must not reach up to ``explain`` (the
        only shap import; DESIGN.md "Layers"); this shim imports it lazily and warns.
        """
        import warnings

        from safepredict.explain import to_shap

        warnings.warn(
            "Explanation.to_shap() is deprecated and will be removed in safepredict 0.3; "
            "call safepredict.explain.to_shap(explanation) instead.",
            DeprecationWarning,
            stacklevel=2,
        )
        return to_shap(self)

    def top(self, k: int = 5) -> list[tuple[str, float]]:
        """The ``k`` largest contributions by absolute value, largest first."""
        order = sorted(range(len(self.values)), key=lambda i: -abs(self.values[i]))
        return [(self.feature_names[i], float(self.values[i])) for i in order[:k]]

    def to_dict(self, top_k: int | None = None) -> dict[str, Any]:
        """JSON-safe dict; with ``top_k`` only the top contributions are listed."""
        out: dict[str, Any] = {
            "method": self.method,
            "base_value": to_builtin(self.base_value),
            "output": self.output,
        }
        if top_k is None:
            out["values"] = dict(zip(self.feature_names, to_builtin(self.values), strict=True))
        else:
            out["top"] = [[f, to_builtin(v)] for f, v in self.top(top_k)]
        return out


@dataclass(frozen=True)
class GuardReport:
    """What the input guards found for one row.

    Parameters
    ----------
    status : {"pass", "flag"}
        ``"flag"`` when any guard reason was raised (even one configured to
        ``"ignore"``, which is reported but does not change the action).
    reasons : tuple of str
        Reason codes such as ``"out_of_range:age"`` or ``"ood"``.
    ood_score : float, optional
        The out-of-distribution p-value (small means unusual), when computed.

    Examples
    --------
    >>> GuardReport("flag", ("missing:age",)).to_dict()
    {'status': 'flag', 'reasons': ['missing:age'], 'ood_score': None}
    """

    status: str = "pass"
    reasons: tuple[str, ...] = ()
    ood_score: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict."""
        return {
            "status": self.status,
            "reasons": list(self.reasons),
            "ood_score": to_builtin(self.ood_score),
        }


@dataclass(frozen=True)
class Decision:
    """The decision for one row.

    Attributes
    ----------
    decision_id : str
        Unique id; use it to record the outcome later.
    prediction : Any
        The model's point prediction (class label or number); ``None`` when the
        model could not score the row.
    prediction_set : tuple or None
        Classification: the conformal prediction set at the predictor's
        confidence level.
    interval : (float, float) or None
        Regression: the conformal prediction interval.
    confidence : float or None
        Classification: the largest confidence level at which the conformal set
        is the single predicted label.
    tier : str
        Name of the tier the row landed in.
    action : {"accept", "review", "abstain"}
        What the product should do.
    reasons : tuple of str
        Why the row did not get a plain answer (guard reasons, ``empty_set``,
        ``model_error``, ``uncertified:<tier>``, ...).
    explanation : Explanation or None
        Feature contributions, when the policy asked for them.
    audit : bool
        True when an accepted row was also sampled for human audit.
    """

    decision_id: str
    prediction: Any
    prediction_set: tuple[Any, ...] | None
    interval: tuple[float, float] | None
    confidence: float | None
    tier: str
    action: str
    reasons: tuple[str, ...] = ()
    explanation: Explanation | None = None
    audit: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of every field.

        Examples
        --------
        >>> d = Decision("id-1", np.int64(2), (np.int64(2),), None, 0.97, "auto", "accept")
        >>> d.to_dict()["prediction_set"]
        [2]
        """
        return {
            "decision_id": self.decision_id,
            "prediction": to_builtin(self.prediction),
            "prediction_set": to_builtin(self.prediction_set),
            "interval": to_builtin(self.interval),
            "confidence": to_builtin(self.confidence),
            "tier": self.tier,
            "action": self.action,
            "reasons": list(self.reasons),
            "explanation": None if self.explanation is None else self.explanation.to_dict(),
            "audit": self.audit,
        }


@dataclass(eq=False)
class Decisions(Sequence[Decision]):
    """A batch of decisions stored as columns.

    Built by :meth:`SafePredictor.decide`; users read it. ``len()``, indexing and
    iteration give :class:`Decision` objects; the arrays give fast columnar access.

    Attributes
    ----------
    predictions : ndarray of shape (n,)
        Point predictions (``object`` dtype; ``None`` where the model failed).
    tier_codes : ndarray of shape (n,)
        Index into ``tier_names`` for each row.
    tier_names : tuple of str
        Tier names, in policy order, plus the guard tier at the end.
    actions : ndarray of shape (n,)
        ``"accept"``, ``"review"`` or ``"abstain"`` per row.
    reasons : list of tuple of str
        Reason codes per row.
    confidence : ndarray of shape (n,)
        Conformal confidence per row (``nan`` where undefined).
    set_mask : ndarray of shape (n, n_classes) or None
        Classification: membership of each class in the prediction set.
    classes : ndarray or None
        Class labels aligned with the columns of ``set_mask``.
    intervals : ndarray of shape (n, 2) or None
        Regression: lower and upper bounds.
    probabilities : ndarray of shape (n, n_classes) or None
        Classifier probabilities, when available.
    explanations : list of Explanation or None
        Per row; ``None`` where not computed.
    audit : ndarray of bool
        Accepted rows sampled for audit.
    guard_flagged : ndarray of bool
        Rows for which any guard raised a reason.
    ood_scores : ndarray of float or None
        Out-of-distribution p-values, when computed.
    inputs_hash : ndarray of str or None
        Per-row hash of the input values.
    latency_s : dict
        Seconds spent per stage for the whole batch.
    batch_id : str
        Prefix of every ``decision_id`` in the batch.
    """

    predictions: NDArray[Any]
    tier_codes: NDArray[np.intp]
    tier_names: tuple[str, ...]
    actions: NDArray[Any]
    reasons: list[tuple[str, ...]]
    confidence: NDArray[np.float64]
    batch_id: str
    set_mask: NDArray[np.bool_] | None = None
    classes: NDArray[Any] | None = None
    intervals: NDArray[np.float64] | None = None
    probabilities: NDArray[np.float64] | None = None
    explanations: list[Explanation | None] | None = None
    audit: NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, dtype=bool))
    guard_flagged: NDArray[np.bool_] = field(default_factory=lambda: np.zeros(0, dtype=bool))
    ood_scores: NDArray[np.float64] | None = None
    inputs_hash: NDArray[Any] | None = None
    latency_s: dict[str, float] = field(default_factory=dict)
    route: list[Mapping[str, Any] | None] | None = None
    _ids: NDArray[Any] | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        n = len(self.predictions)
        if len(self.audit) != n:
            self.audit = np.zeros(n, dtype=bool)
        if len(self.guard_flagged) != n:
            self.guard_flagged = np.zeros(n, dtype=bool)

    # ---------------------------------------------------------------- columns
    @property
    def decision_ids(self) -> NDArray[Any]:
        """Decision ids (``"<batch_id>-<row>"``), built on first access."""
        if self._ids is None:
            self._ids = _decision_ids(self.batch_id, len(self))
        return self._ids

    @property
    def tiers(self) -> NDArray[Any]:
        """Tier name per row."""
        names = np.array(self.tier_names, dtype=object)
        return names[self.tier_codes] if len(self) else np.array([], dtype=object)

    @property
    def set_sizes(self) -> NDArray[np.intp] | None:
        """Number of labels in each prediction set (classification only)."""
        return None if self.set_mask is None else self.set_mask.sum(axis=1)

    @property
    def prediction_sets(self) -> list[tuple[Any, ...] | None] | None:
        """The prediction set of every row, as tuples of labels (classification only).

        A row without a prediction (a guard or the model failed) has ``None``, as
        :attr:`Decision.prediction_set` does; a regressor's batch has no sets
        (``None``, as :attr:`set_sizes`).

        Examples
        --------
        >>> batch = Decisions(
        ...     predictions=np.array([0, None], dtype=object),
        ...     tier_codes=np.array([0, 1]),
        ...     tier_names=("auto", "guard"),
        ...     actions=np.array(["accept", "abstain"], dtype=object),
        ...     reasons=[(), ("missing:x",)],
        ...     confidence=np.array([0.95, np.nan]),
        ...     batch_id="b",
        ...     set_mask=np.array([[True, False], [False, False]]),
        ...     classes=np.array([0, 1]),
        ... )
        >>> batch.prediction_sets
        [(0,), None]
        """
        if self.set_mask is None or self.classes is None:
            return None
        return self._set_column("tuple")

    def prediction_set(self, i: int) -> tuple[Any, ...] | None:
        """Deprecated (0.2, removed in 0.3): use ``prediction_sets[i]``.

        Unlike ``prediction_sets[i]`` it gives the set even where the row has no
        prediction (an empty tuple there).
        """
        warn_deprecated("Decisions.prediction_set(i)", "Decisions.prediction_sets[i]")
        return self._row_set(i)

    def _row_set(self, i: int) -> tuple[Any, ...] | None:
        if self.set_mask is None or self.classes is None:
            return None
        return tuple(self.classes[self.set_mask[i]].tolist())

    def guard_report(self, i: int) -> GuardReport:
        """What the guards found for row ``i``."""
        ood = None if self.ood_scores is None else float(self.ood_scores[i])
        guard_reasons = tuple(r for r in self.reasons[i] if is_guard_reason(r))
        status = "flag" if self.guard_flagged[i] else "pass"
        return GuardReport(status, guard_reasons, None if ood is None or math.isnan(ood) else ood)

    # -------------------------------------------------------------- sequence
    def __len__(self) -> int:
        return len(self.predictions)

    @overload
    def __getitem__(self, index: int) -> Decision: ...

    @overload
    def __getitem__(self, index: slice) -> Decisions: ...

    def __getitem__(self, index: int | slice) -> Decision | Decisions:
        if isinstance(index, slice):
            return self.take(np.arange(len(self))[index])
        n = len(self)
        i = int(index)
        if i < -n or i >= n:
            raise IndexError(f"decision index {index} is out of range for a batch of {n}.")
        i %= n
        conf = float(self.confidence[i])
        interval = None
        if self.intervals is not None:
            lo, hi = self.intervals[i].tolist()
            if not (math.isnan(lo) and math.isnan(hi)):
                interval = (lo, hi)
        pred = self.predictions[i]
        return Decision(
            decision_id=(
                _decision_id(self.batch_id, i) if self._ids is None else str(self._ids[i])
            ),
            prediction=pred.item() if isinstance(pred, np.generic) else pred,
            prediction_set=self._row_set(i) if pred is not None else None,
            interval=interval,
            confidence=None if math.isnan(conf) else conf,
            tier=self.tier_names[self.tier_codes[i]],
            action=str(self.actions[i]),
            reasons=self.reasons[i],
            explanation=None if self.explanations is None else self.explanations[i],
            audit=bool(self.audit[i]),
        )

    def __iter__(self) -> Iterator[Decision]:
        for i in range(len(self)):
            yield self[i]

    def take(self, rows: NDArray[np.intp] | Sequence[int]) -> Decisions:
        """A new batch with only ``rows`` (decision ids are kept)."""
        idx = np.asarray(rows, dtype=np.intp)

        def sub(a: Any) -> Any:
            return None if a is None else a[idx]

        return Decisions(
            predictions=self.predictions[idx],
            tier_codes=self.tier_codes[idx],
            tier_names=self.tier_names,
            actions=self.actions[idx],
            reasons=[self.reasons[i] for i in idx],
            confidence=self.confidence[idx],
            batch_id=self.batch_id,
            set_mask=sub(self.set_mask),
            classes=self.classes,
            intervals=sub(self.intervals),
            probabilities=sub(self.probabilities),
            explanations=None if self.explanations is None else [self.explanations[i] for i in idx],
            audit=self.audit[idx],
            guard_flagged=self.guard_flagged[idx],
            ood_scores=sub(self.ood_scores),
            inputs_hash=sub(self.inputs_hash),
            latency_s=dict(self.latency_s),
            route=None if self.route is None else [self.route[i] for i in idx],
            _ids=self.decision_ids[idx],
        )

    # ------------------------------------------------------------- exports
    def to_dicts(self) -> list[dict[str, Any]]:
        """Every decision as a JSON-safe dict."""
        return [d.to_dict() for d in self]

    def to_frame(self, *, set_format: str = "tuple") -> pd.DataFrame:
        """The batch as a pandas DataFrame, one row per decision, with fixed dtypes.

        Parameters
        ----------
        set_format : {"tuple", "list", "string"}, default="tuple"
            How prediction sets and reasons are written: tuples, lists, or JSON
            text (``'[0, 2]'``, for Parquet, CSV or a database column).

        Returns
        -------
        pandas.DataFrame
            Columns :data:`FRAME_COLUMNS`. ``decision_id``, ``tier`` and ``action``
            are ``string``; ``prediction`` is ``float64`` for a regressor and
            follows the class labels for a classifier (``Int64``, ``boolean``,
            ``Float64``, ``string``, else ``object``), missing where there is no
            prediction; ``prediction_set`` and ``reasons`` are ``string`` as JSON
            text, else ``object``; ``interval_*`` and ``confidence`` are
            ``float64``; ``audit`` is ``bool``. The dtypes depend only on the
            model, not on the rows, so batches concatenate cleanly, an empty batch
            is an exact Dask ``meta``, and the frame writes to Parquet as is.

        Examples
        --------
        >>> from sklearn.datasets import load_iris
        >>> from sklearn.linear_model import LogisticRegression
        >>> from safepredict import SafePredictor
        >>> X, y = load_iris(return_X_y=True)
        >>> model = LogisticRegression(max_iter=500).fit(X[::2], y[::2])
        >>> sp = SafePredictor(model, log="off").calibrate(X[1::2], y[1::2])
        >>> frame = sp.decide(X[:2]).to_frame(set_format="string")
        >>> frame["prediction_set"].tolist()
        ['[0]', '[0]']
        """
        import pandas as pd

        check_one_of(set_format, "set_format", _SET_FORMATS)

        def column(values: Any, dtype: Any) -> pd.Series:
            # Explicit dtypes: pandas would infer them from the values, so an empty
            # batch (a Dask meta) would get different ones.
            return pd.Series(pd.array(_objects(values), dtype=dtype))

        n = len(self)
        regression = self.intervals is not None
        bounds = np.full((n, 2), np.nan) if self.intervals is None else self.intervals
        prediction = (
            np.array([np.nan if p is None else float(p) for p in self.predictions], dtype=float)
            if regression
            else column(self.predictions, _label_dtype(self.classes))
        )
        listed = "string" if set_format == "string" else object
        data: dict[str, Any] = {
            "decision_id": column(self.decision_ids, "string"),
            "prediction": prediction,
            "prediction_set": column(self._set_column(set_format), listed),
            "interval_lower": np.asarray(bounds[:, 0], dtype=np.float64),
            "interval_upper": np.asarray(bounds[:, 1], dtype=np.float64),
            "confidence": np.asarray(self.confidence, dtype=np.float64),
            "tier": column(self.tiers, "string"),
            "action": column(self.actions, "string"),
            "reasons": column(_encoded(self.reasons, set_format), listed),
            "audit": np.asarray(self.audit, dtype=bool),
        }
        return pd.DataFrame(data, columns=FRAME_COLUMNS)

    def _set_column(self, set_format: str) -> list[Any]:
        """Prediction sets per row (``None`` without a prediction), each set encoded once."""
        if self.set_mask is None or self.classes is None:
            return [None] * len(self)
        if not len(self):
            return []
        patterns, inverse = np.unique(self.set_mask, axis=0, return_inverse=True)
        labels = [tuple(self.classes[p].tolist()) for p in patterns]
        encoded = _encoded([labels[k] for k in inverse.reshape(-1)], set_format)
        # No prediction (guard or model failure): no set, as in ``Decision.prediction_set``.
        return [None if p is None else e for p, e in zip(self.predictions, encoded, strict=True)]

    def counts(self) -> dict[str, dict[str, int]]:
        """Row counts per tier and per action.

        Examples
        --------
        >>> d = Decisions(
        ...     predictions=np.array([1, 2], dtype=object), tier_codes=np.array([0, 1]),
        ...     tier_names=("auto", "human"), actions=np.array(["accept", "abstain"], dtype=object),
        ...     reasons=[(), ()], confidence=np.array([0.99, 0.5]), batch_id="b")
        >>> d.counts()
        {'tier': {'auto': 1, 'human': 1}, 'action': {'accept': 1, 'abstain': 1}}
        """
        tiers = np.bincount(self.tier_codes, minlength=len(self.tier_names))
        acts = {a: int(np.sum(self.actions == a)) for a in ("accept", "review", "abstain")}
        return {
            "tier": {name: int(c) for name, c in zip(self.tier_names, tiers, strict=True) if c},
            "action": {a: c for a, c in acts.items() if c},
        }

    def __repr__(self) -> str:
        c = self.counts()
        return f"Decisions(n={len(self)}, tiers={c['tier']}, actions={c['action']})"


#: Columns of :meth:`Decisions.to_frame`, in order.
FRAME_COLUMNS = (
    "decision_id",
    "prediction",
    "prediction_set",
    "interval_lower",
    "interval_upper",
    "confidence",
    "tier",
    "action",
    "reasons",
    "audit",
)
_SET_FORMATS = ("tuple", "list", "string")


def _label_dtype(classes: NDArray[Any] | None) -> Any:
    """The nullable pandas dtype that holds these class labels (``object`` if none does)."""
    if classes is None:
        return object
    kind = classes.dtype.kind
    if kind in "iu":
        return "Int64" if kind == "i" else "UInt64"
    if kind == "b":
        return "boolean"
    if kind == "f":
        return "Float64"
    if kind in "US" or (len(classes) and all(isinstance(c, str) for c in classes)):
        return "string"
    return object


def _objects(values: Any) -> NDArray[Any]:
    """A 1-d object array (no nested-sequence broadcasting)."""
    out = np.empty(len(values), dtype=object)
    out[:] = list(values)
    return out


def _encoded(rows: Sequence[tuple[Any, ...]], set_format: str) -> list[Any]:
    """Tuples as tuples, fresh lists, or JSON text (each distinct value encoded once)."""
    if set_format == "tuple":
        return list(rows)
    if set_format == "list":
        return [list(r) for r in rows]
    memo: dict[tuple[Any, ...], str] = {}
    out = []
    for r in rows:
        text = memo.get(r)
        if text is None:
            text = memo[r] = json.dumps(to_builtin(list(r)))
        out.append(text)
    return out
