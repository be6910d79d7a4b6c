"""Explanations of text and array rows: tokens for linear text pipelines, else a named skip.

A scikit-learn text ``Pipeline`` whose steps turn strings into one column per
vocabulary token (``CountVectorizer``/``TfidfVectorizer``, optionally followed by
``TfidfTransformer``) and whose final estimator is linear (``coef_`` and
``intercept_``: ``LogisticRegression``, ``LinearSVC`` with probabilities,
``Ridge``, ...) is explained exactly, in **tokens**: the contribution of token
``j`` to the explained output is ``x_j * coef[k, j]`` (its transformed value
times its weight), the base value is ``intercept[k]``, so that
``base_value + sum(values)`` is the model's decision function -- the **logit**
of class ``k`` (the log-odds for a binary model, signed for the predicted
class), or the prediction of a regressor. Every explanation is checked against
``decision_function`` (``predict`` for a regressor); a row where they disagree
is skipped as ``explanation_skipped:error``. Only the tokens present in the
row are listed, so :meth:`~safepredict.Explanation.top` gives the top tokens.

Every other text or array model gets ``explanation_skipped:unsupported`` on the
rows it would explain, with the reason in :attr:`TokenExplainer.unsupported`
(no shap explainer works on raw strings, and pixel attributions of a neural
network are beyond what this library certifies).

Examples
--------
>>> import numpy as np
>>> from sklearn.feature_extraction.text import TfidfVectorizer
>>> from sklearn.linear_model import LogisticRegression
>>> from sklearn.pipeline import make_pipeline
>>> texts = ["good fine great", "bad awful poor", "great good", "poor bad"] * 5
>>> pipe = make_pipeline(TfidfVectorizer(), LogisticRegression()).fit(texts, [1, 0, 1, 0] * 5)
>>> ex = TokenExplainer.fit(pipe, "text", "auto", task="classification", classes=[0, 1])
>>> (e,), skipped = ex.explain(np.array(["good but awful"], dtype=object), np.array([0]))
>>> e.output, [name for name, _ in e.top(2)], skipped
('log_odds[0]', ['good', 'awful'], [None])
>>> bool(abs(e.output_value + pipe.decision_function(["good but awful"])[0]) < 1e-9)
True
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from safepredict.decisions import Explanation
from safepredict.exceptions import ConfigError
from safepredict.reasons import reason_code

__all__ = ["ADDITIVITY_TOLERANCE", "SKIPPED_UNSUPPORTED", "TokenExplainer", "token_model"]

#: Reason added to a row whose input kind has no explainer.
SKIPPED_UNSUPPORTED = reason_code("explanation_skipped", "unsupported")
_SKIPPED_ERROR = reason_code("explanation_skipped", "error")
#: Largest ``|base + sum(values) - decision_function|`` accepted (relative to 1 + |output|).
ADDITIVITY_TOLERANCE = 1e-6


def token_model(model: Any) -> tuple[Any, Any, NDArray[Any]] | str:
    """``(transform, linear estimator, token names)`` of a linear text pipeline, else why not.

    Examples
    --------
    >>> token_model(object())
    'the model is not a scikit-learn Pipeline'
    """
    steps = getattr(model, "steps", None)
    if not isinstance(steps, list) or len(steps) < 2:
        return "the model is not a scikit-learn Pipeline"
    final = steps[-1][1]
    if getattr(final, "coef_", None) is None or getattr(final, "intercept_", None) is None:
        return f"the final estimator {type(final).__name__} is not linear (no coef_/intercept_)"
    vectorizers = [s for _, s in steps[:-1] if hasattr(s, "vocabulary_")]
    if len(vectorizers) != 1 or not hasattr(vectorizers[0], "get_feature_names_out"):
        return "the pipeline has no single text vectorizer (CountVectorizer / TfidfVectorizer)"
    names = np.asarray(vectorizers[0].get_feature_names_out(), dtype=object)
    coef = np.atleast_2d(np.asarray(final.coef_))
    if coef.shape[1] != len(names):
        return (
            f"the steps before the estimator give {coef.shape[1]} columns, not one per "
            f"vocabulary token ({len(names)})"
        )
    return model[:-1].transform, final, names


class TokenExplainer:
    """Token contributions of a linear text pipeline, or a named skip for other inputs.

    Build with :meth:`fit`; :meth:`explain` has the interface of
    :meth:`safepredict.explain.ModelExplainer.explain`.

    Parameters
    ----------
    model : object
        The wrapped model.
    modality : {"text", "array"}
        The input kind.
    task : {"classification", "regression"}
    classes : sequence or None
        Class labels (classification).
    unsupported : str or None
        Why rows cannot be explained (``None``: token explanations).
    """

    def __init__(
        self,
        model: Any,
        modality: str,
        task: str,
        classes: Sequence[Any] | None,
        unsupported: str | None,
    ) -> None:
        self.model = model
        self.modality = modality
        self.task = task
        self.classes = None if classes is None else list(classes)
        self.unsupported = unsupported
        self._parts = None
        if unsupported is None:
            parts = token_model(model)
            if isinstance(parts, str):
                self.unsupported = parts
            else:
                self._parts = parts

    @classmethod
    def fit(
        cls,
        model: Any,
        modality: str,
        requested: str,
        *,
        task: str,
        classes: Sequence[Any] | None = None,
    ) -> TokenExplainer:
        """The explainer of a text or array model.

        Raises
        ------
        ConfigError
            ``explainer="linear"`` (or ``"tree"``) on a model it cannot explain
            exactly: say so at calibration, not on every row.
        """
        why: str | None = None
        if modality != "text":
            why = f"{modality} inputs have no explainer"
        else:
            parts = token_model(model)
            why = parts if isinstance(parts, str) else None
            if why is None and requested in ("tree", "permutation"):
                why = f"explainer={requested!r} does not apply to text; tokens are explained"
        if why is not None and requested in ("tree", "linear"):
            raise ConfigError(
                f"explainer={requested!r} cannot explain this {modality} model ({why}). Use "
                "explainer='auto': rows then carry explanation_skipped:unsupported."
            )
        return cls(model, modality, task, classes, why)

    @property
    def method(self) -> str | None:
        """``"tokens"``, or ``None`` when rows are skipped as unsupported."""
        return None if self.unsupported is not None else "tokens"

    def explain(
        self, rows: Any, class_index: NDArray[np.intp] | None = None
    ) -> tuple[list[Explanation | None], list[str | None]]:
        """Explain ``rows`` (as the model receives them), each for its predicted class."""
        n = len(rows)
        if self._parts is None:
            return [None] * n, [SKIPPED_UNSUPPORTED] * n
        transform, final, names = self._parts
        try:
            X = transform(rows)
            X = X.tocsr() if hasattr(X, "tocsr") else np.asarray(X)
            coef = np.atleast_2d(np.asarray(final.coef_, dtype=np.float64))
            intercept = np.atleast_1d(np.asarray(final.intercept_, dtype=np.float64))
            if self.task == "classification":
                reference = np.asarray(final.decision_function(X), dtype=np.float64)
            else:
                reference = np.asarray(final.predict(X), dtype=np.float64)
        except Exception:  # explaining must never fail the decision
            return [None] * n, [_SKIPPED_ERROR] * n
        reference = reference.reshape(n, -1)
        out: list[Explanation | None] = []
        for i in range(n):
            row = X[i]
            if hasattr(row, "indices"):
                cols, data = row.indices, row.data
            else:
                data_all = np.ravel(row)
                cols = np.flatnonzero(data_all)
                data = data_all[cols]
            out.append(self._one(cols, data, coef, intercept, reference[i], names, class_index, i))
        return out, [None if e is not None else _SKIPPED_ERROR for e in out]

    def _one(
        self,
        cols: NDArray[np.intp],
        data: NDArray[np.float64],
        coef: NDArray[np.float64],
        intercept: NDArray[np.float64],
        reference: NDArray[np.float64],
        names: NDArray[Any],
        class_index: NDArray[np.intp] | None,
        i: int,
    ) -> Explanation | None:
        """One row's explanation, checked against the model's own output."""
        sign, r, output = 1.0, 0, "prediction"
        if self.task == "classification" and self.classes is not None:
            k = 0 if class_index is None else int(class_index[i])
            label = self.classes[k]
            if coef.shape[0] == 1:  # binary: the log-odds of classes[1]
                sign = 1.0 if k == 1 else -1.0
                output = f"log_odds[{label}]"
            else:
                r = k
                output = f"logit[{label}]"
        order = np.argsort(cols)
        cols, data = cols[order], np.asarray(data, dtype=np.float64)[order]
        values = sign * data * coef[r, cols]
        base = sign * float(intercept[r if len(intercept) > 1 else 0])
        target = sign * float(reference[r if len(reference) > 1 else 0])
        total = base + float(np.sum(values))
        if not np.isfinite(total) or abs(total - target) > ADDITIVITY_TOLERANCE * (
            1.0 + abs(target)
        ):
            return None
        return Explanation(
            method="tokens",
            feature_names=tuple(str(t) for t in names[cols]),
            values=tuple(float(v) for v in values),
            base_value=base,
            output=output,
            data=tuple(float(v) for v in data),
        )

    def to_state(self) -> dict[str, Any]:
        """JSON-safe state (the model is not included)."""
        return {
            "modality": self.modality,
            "task": self.task,
            "classes": None if self.classes is None else [_builtin(c) for c in self.classes],
            "unsupported": self.unsupported,
        }

    @classmethod
    def from_state(cls, state: dict[str, Any], *, model: Any) -> TokenExplainer:
        """Rebuild from :meth:`to_state` output and the model."""
        return cls(
            model,
            str(state["modality"]),
            str(state["task"]),
            state.get("classes"),
            state.get("unsupported"),
        )


def _builtin(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value
