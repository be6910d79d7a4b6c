"""Text guards: what a string must look like before a text model's answer can be trusted.

:class:`TextGuards` learns from reference texts (the calibration texts by
default) and flags, per row, with the column name ``text``:

* ``missing:text`` (``None``/NaN) and ``type:text`` (not a string): the model
  never sees these rows;
* ``empty:text``: an empty or whitespace-only string -- never accepted;
* ``length:text``: a token count outside the reference range;
* ``oov:text``: a share of out-of-vocabulary tokens above the reference's, and
  always when no token is known (gibberish, punctuation only) -- never accepted;
* ``ood``: unlike the reference in the model's own feature space (the
  pipeline's transform or ``featurizer=``; :mod:`~safepredict.guards.featurize`).

The reference is split at random, as for tables: the fit part learns the
vocabulary (when the model has no vectorizer) and the OOD centroids; the
held-out part calibrates the length range and the OOD share threshold (each at
``guard_alpha / 2``, so that together they flag at most ``guard_alpha`` of
in-distribution rows) and the OOD p-values (at most ``ood_alpha``). The saved
state holds thresholds, the OOD detector's aggregates and, without a vectorizer,
hashes of words seen in at least two reference rows: never a reference text.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> words = np.array(["red", "green", "apple", "pear", "ripe", "fresh", "sweet", "sour"])
>>> texts = [" ".join(rng.choice(words, size=6)) for _ in range(400)]
>>> guards = TextGuards.fit(np.array(texts, dtype=object), random_state=0)
>>> r = guards.check(np.array(["ripe red apple pear sweet fresh", "  ", "qzx vbnm wrtp",
...                            None], dtype=object))
>>> [r.reasons.get(i) for i in range(4)]
[None, ('empty:text',), ('oov:text',), ('missing:text',)]
>>> r.skip.tolist()
[False, False, False, True]
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from safepredict._validation import describe
from safepredict.config import GuardConfig
from safepredict.exceptions import CalibrationError, ConfigError
from safepredict.guards.featurize import Featurizer, Tokenizer, ood_pvalues, pipeline_transform
from safepredict.guards.ranges import MIN_FIT, fit_size, json_float
from safepredict.guards.result import GuardResult, collect
from safepredict.guards.values import is_missing_scalar
from safepredict.ood import CentroidDetector, MarginalScores

__all__ = ["TextGuards", "lower_upper", "upper_level"]

#: The column name of a text input in reason codes (``"oov:text"``).
COLUMN = "text"
STATE_VERSION = 1


class TextGuards:
    """Fitted guards for one string per row.

    Build with :meth:`fit`; :meth:`check` takes the 1-D object array that
    :func:`safepredict.inputs.prepare` makes of a text batch.

    Parameters
    ----------
    config : GuardConfig
        Actions per guard (``empty``, ``length``, ``oov``, ``ood``, ...).
    tokenizer : Tokenizer
        Tokens and known words.
    length_range : tuple of float
        Allowed token counts ``[low, high]`` (``high`` may be ``inf``).
    oov_threshold : float
        Largest share of unknown tokens accepted (a share of 1 never is).
    detector : CentroidDetector, optional
        OOD detector on :attr:`featurizer`'s features.
    featurizer : Featurizer, optional
        The feature space of the OOD detector.
    """

    def __init__(
        self,
        config: GuardConfig,
        tokenizer: Tokenizer,
        length_range: tuple[float, float],
        oov_threshold: float,
        detector: CentroidDetector | None = None,
        featurizer: Featurizer | None = None,
    ) -> None:
        self.config = config
        self.tokenizer = tokenizer
        self.length_range = (float(length_range[0]), float(length_range[1]))
        self.oov_threshold = float(oov_threshold)
        self.detector = detector
        self.featurizer = featurizer

    @classmethod
    def fit(
        cls,
        reference: Any,
        config: GuardConfig | None = None,
        *,
        model: Any = None,
        featurizer: Callable[[Any], Any] | None = None,
        random_state: int | None = None,
    ) -> TextGuards:
        """Learn the guards from reference texts.

        Parameters
        ----------
        reference : 1-D array of str
            Texts like those the model should be trusted on (rows that are
            not non-empty strings are left out).
        config : GuardConfig, optional
        model : object, optional
            The wrapped model: its ``Pipeline`` vectorizer gives tokens and
            vocabulary, its transform the OOD feature space.
        featurizer : callable, optional
            Texts to a 2-D feature matrix (takes precedence over the pipeline).
        random_state : int, optional
            Seed of the fit/calibration split.

        Returns
        -------
        TextGuards
        """
        config = GuardConfig() if config is None else config
        texts = [v for v in np.asarray(reference, dtype=object).tolist() if _usable(v)]
        if len(texts) < 2:
            raise CalibrationError(
                f"the text guards need reference texts; got {len(texts)} non-empty strings. "
                "Pass reference= (e.g. the training texts) or more calibration rows."
            )
        rng = np.random.default_rng(random_state)
        order = rng.permutation(len(texts))
        n_fit = fit_size(len(texts), config)
        fit_part = np.array([texts[i] for i in order[:n_fit]], dtype=object)
        cal_part = np.array([texts[i] for i in order[n_fit:]], dtype=object)
        tokenizer = Tokenizer.learn(model, fit_part.tolist())
        counts, shares = _token_stats(tokenizer, cal_part.tolist())
        alpha = config.guard_alpha / 2.0  # length and oov share guard_alpha
        length_range = lower_upper(counts, alpha)
        if math.isinf(length_range[1]) and len(counts):  # too few rows: a wide net
            length_range = (0.0, 2.0 * float(max(counts.max(), 1)))
        threshold = upper_level(shares, alpha)
        detector, feats = None, None
        kind = "user" if featurizer is not None else None
        if kind is None and pipeline_transform(model) is not None:
            kind = "pipeline"
        if config.ood_method != "none" and kind is not None and len(fit_part) >= MIN_FIT:
            feats = Featurizer.resolve(kind, model, featurizer, fit_part[:2])
            if len(cal_part):
                f_fit = feats(fit_part)
                detector = CentroidDetector.fit_split(
                    f_fit, feats(cal_part), rng=rng, transform=MarginalScores.fit(f_fit)
                )
        return cls(config, tokenizer, length_range, threshold, detector, feats)

    def check(self, X: Any) -> GuardResult:
        """Check a text batch (1-D object array).

        Returns
        -------
        GuardResult
            ``ood`` is ``nan`` for rows that were not scored (not a non-empty string).
        """
        values = np.asarray(X, dtype=object).reshape(-1).tolist()
        n = len(values)
        masks = {g: np.zeros(n, dtype=bool) for g in ("missing", "type", "empty", "length", "oov")}
        low, high = self.length_range
        usable = np.zeros(n, dtype=bool)
        for i, v in enumerate(values):
            if is_missing_scalar(v):
                masks["missing"][i] = True
            elif not isinstance(v, str):
                masks["type"][i] = True
            elif not v.strip():
                masks["empty"][i] = True
            else:
                usable[i] = True
                tokens = self.tokenizer.tokens(v)
                known = self.tokenizer.known(tokens)
                k = len(tokens)
                masks["length"][i] = k < low or k > high
                share = 1.0 - known.mean() if k else 1.0
                masks["oov"][i] = not known.any() or share > self.oov_threshold
        ood = ood_pvalues(
            self.detector,
            self.featurizer,
            usable,
            lambda rows: np.array([values[i] for i in rows], dtype=object),
        )
        return collect(n, masks, COLUMN, self.config, ood)

    @property
    def ood_min_pvalue(self) -> float | None:
        """Smallest OOD p-value possible (``None`` without a detector)."""
        return None if self.detector is None else self.detector.min_pvalue

    def to_state(self) -> dict[str, Any]:
        """JSON-safe state: thresholds, aggregates and token hashes, never a text."""
        return {
            "version": STATE_VERSION,
            "stores_raw_rows": False,
            "config": self.config.to_dict(),
            "vocabulary_hashes": self.tokenizer.to_state(),
            "length_range": [json_float(v) for v in self.length_range],
            "oov_threshold": self.oov_threshold,
            "featurizer": None if self.featurizer is None else self.featurizer.kind,
            "detector": None if self.detector is None else self.detector.to_state(),
        }

    @classmethod
    def from_state(
        cls,
        state: Mapping[str, Any],
        *,
        model: Any = None,
        featurizer: Callable[[Any], Any] | None = None,
    ) -> TextGuards:
        """Restore guards saved with :meth:`to_state` (the model and featurizer are runtime)."""
        if not isinstance(state, Mapping) or state.get("version") != STATE_VERSION:
            raise ConfigError(
                "text guard state must be a dict written by TextGuards.to_state() "
                f"(version {STATE_VERSION}); got {describe(state)}."
            )
        det, kind = state.get("detector"), state.get("featurizer")
        feats = None
        if kind is not None:
            feats = Featurizer.resolve(
                str(kind), model, featurizer, np.array(["a b"], dtype=object)
            )
        low, high = state["length_range"]
        return cls(
            GuardConfig.from_dict(state["config"]),
            Tokenizer.restore(model, state.get("vocabulary_hashes")),
            (float(low), float(high)),
            float(state["oov_threshold"]),
            None if det is None else CentroidDetector.from_state(det),
            feats,
        )


def _usable(v: Any) -> bool:
    return isinstance(v, str) and bool(v.strip())


def _token_stats(
    tokenizer: Tokenizer, texts: list[str]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Token counts and out-of-vocabulary shares of ``texts``."""
    counts = np.zeros(len(texts))
    shares = np.zeros(len(texts))
    for i, text in enumerate(texts):
        tokens = tokenizer.tokens(text)
        counts[i] = len(tokens)
        shares[i] = 1.0 - tokenizer.known(tokens).mean() if tokens else 1.0
    return counts, shares


def upper_level(scores: NDArray[np.float64], alpha: float) -> float:
    """Split-conformal upper level: a new exchangeable score exceeds it w.p. <= ``alpha``.

    The ``ceil((m + 1)(1 - alpha))``-th smallest of ``m`` scores; ``inf`` when
    ``m`` is too small for ``alpha``.

    Examples
    --------
    >>> upper_level(np.arange(1.0, 100.0), 0.05)
    95.0
    """
    m = len(scores)
    rank = math.ceil((m + 1) * (1.0 - alpha) - 1e-9)
    if m == 0 or rank > m:
        return math.inf
    return float(np.sort(scores)[rank - 1])


def lower_upper(scores: NDArray[np.float64], alpha: float) -> tuple[float, float]:
    """Two-sided split-conformal range: a new score falls outside w.p. <= ``alpha``.

    Each side at ``alpha / 2`` (``-inf``/``inf`` when ``m`` is too small).

    Examples
    --------
    >>> lower_upper(np.arange(1.0, 100.0), 0.1)
    (5.0, 95.0)
    """
    high = upper_level(scores, alpha / 2.0)
    low = -upper_level(-np.asarray(scores, dtype=np.float64), alpha / 2.0)
    return low, high
