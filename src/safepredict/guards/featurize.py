"""The feature space the text and array OOD guards measure in, and text tokens.

The OOD guard of a non-tabular input scores rows in the **model's own feature
space** when it can see one:

* ``"user"`` -- the ``featurizer=`` callable given to ``SafePredictor`` (rows in,
  a 2-D feature matrix out; e.g. an embedding model);
* ``"pipeline"`` -- a scikit-learn ``Pipeline``'s transform up to its final
  estimator (``pipe[:-1].transform``: the TF-IDF matrix of a text pipeline);
* ``"flatten"`` -- arrays only, the default: each ``(h, w[, c])`` row flattened.

Feature matrices wider than :data:`MAX_DIMS` columns (a TF-IDF vocabulary, a large
image) are reduced by a seeded Gaussian random projection (Johnson-Lindenstrauss),
which the saved state rebuilds from its seed: nothing learned from the reference
is stored for it. The OOD p-values keep their false-alarm guarantee whatever the
feature space: it only has to be the same at calibration and at ``decide``.

Tokens of a text row come from the pipeline's vectorizer (``build_analyzer()``)
when it has one, with its ``vocabulary_`` as the known words; otherwise from a
word regex, with the known words learned from the reference as 48-bit token
hashes (:func:`token_hashes`) of words seen in at least
:data:`MIN_DOCUMENT_COUNT` reference rows -- a counted, bounded summary, never a
reference row.

Examples
--------
>>> import numpy as np
>>> f = Featurizer("flatten", 16)
>>> f(np.zeros((2, 4, 4))).shape
(2, 16)
>>> Featurizer("flatten", 1000)(np.ones((3, 10, 100))).shape
(3, 64)
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from safepredict.exceptions import ConfigError, PersistenceError

__all__ = [
    "FEATURIZER_KINDS",
    "MAX_DIMS",
    "MAX_VOCABULARY",
    "MIN_DOCUMENT_COUNT",
    "Featurizer",
    "Tokenizer",
    "ood_pvalues",
    "pipeline_transform",
    "token_hashes",
]

#: Widest feature space the OOD detector works in; wider ones are projected.
MAX_DIMS = 64
#: A word is known (hashed vocabulary) once seen in this many reference rows.
MIN_DOCUMENT_COUNT = 2
#: Most token hashes a hashed vocabulary keeps (the most frequent).
MAX_VOCABULARY = 50_000
#: Where the featurizer comes from.
FEATURIZER_KINDS = ("user", "pipeline", "flatten")
_WORD = re.compile(r"(?u)\b\w\w+\b")
_SEED = 20_261_207


def ood_pvalues(
    detector: Any,
    featurizer: Featurizer | None,
    usable: NDArray[np.bool_],
    take: Callable[[NDArray[np.intp]], Any],
) -> NDArray[np.float64] | None:
    """OOD p-values of the ``usable`` rows (``nan`` elsewhere); ``None`` without a detector.

    ``take(rows)`` gives the featurizer's input for those row indices.

    Examples
    --------
    >>> ood_pvalues(None, None, np.array([True]), lambda rows: rows) is None
    True
    """
    if detector is None or featurizer is None:
        return None
    ood = np.full(len(usable), np.nan)
    rows = np.flatnonzero(usable)
    if len(rows):
        ood[rows] = detector.pvalues(featurizer(take(rows)))
    return ood


def pipeline_transform(model: Any) -> Callable[[Any], Any] | None:
    """``pipe[:-1].transform`` of a scikit-learn ``Pipeline`` (``None`` for other models)."""
    steps = getattr(model, "steps", None)
    if not isinstance(steps, list) or len(steps) < 2:
        return None
    head = model[:-1]
    transform = getattr(head, "transform", None)
    return transform if callable(transform) else None


class Featurizer:
    """Rows to a dense ``(n, <= MAX_DIMS)`` float matrix: featurize, then project.

    Parameters
    ----------
    kind : {"user", "pipeline", "flatten"}
        Where the features come from (see the module docstring).
    n_features : int
        Width of the featurized matrix (learned at calibration; checked at use).
    function : callable, optional
        The featurizer for ``"user"`` and ``"pipeline"``.
    """

    def __init__(
        self, kind: str, n_features: int, function: Callable[[Any], Any] | None = None
    ) -> None:
        if kind not in FEATURIZER_KINDS:
            raise ConfigError(f"featurizer kind must be one of {FEATURIZER_KINDS}; got {kind!r}.")
        self.kind = kind
        self.n_features = int(n_features)
        self.function = function
        self._projection: NDArray[np.float64] | None = None
        if self.n_features > MAX_DIMS:
            rng = np.random.default_rng(_SEED + self.n_features)
            scale = 1.0 / np.sqrt(MAX_DIMS)
            self._projection = rng.normal(scale=scale, size=(self.n_features, MAX_DIMS))

    @classmethod
    def resolve(
        cls, kind: str, model: Any, featurizer: Callable[[Any], Any] | None, sample: Any
    ) -> Featurizer:
        """The featurizer of ``kind``, sized on ``sample`` (calibration) or at load."""
        function = featurizer if kind == "user" else None
        if kind == "pipeline":
            function = pipeline_transform(model)
        if kind != "flatten" and function is None:
            raise PersistenceError(
                f"the OOD guard was calibrated on a {kind!r} featurizer that is not available "
                "now: pass the same featurizer= (or the same Pipeline model) as at calibration."
            )
        probe = cls(kind, 0, function)
        return cls(kind, probe.raw(sample).shape[1], function)

    def raw(self, X: Any) -> Any:
        """The featurized rows before projection (dense or scipy sparse, 2-D)."""
        if self.kind == "flatten":
            arr = np.asarray(X, dtype=np.float64)
            return arr.reshape(len(arr), -1)
        assert self.function is not None
        out = self.function(X)
        if not hasattr(out, "tocsr"):
            out = np.asarray(out, dtype=np.float64)
            if out.ndim != 2:
                out = out.reshape(len(out), -1)
        return out

    def __call__(self, X: Any) -> NDArray[np.float64]:
        """Featurized, projected rows as a dense float matrix."""
        out = self.raw(X)
        if out.shape[1] != self.n_features:
            raise ConfigError(
                f"the featurizer gave {out.shape[1]} features; at calibration it gave "
                f"{self.n_features}. Use the featurizer the predictor was calibrated with."
            )
        if self._projection is not None:
            out = out @ self._projection
        elif hasattr(out, "toarray"):
            out = out.toarray()
        return np.asarray(out, dtype=np.float64)


def token_hashes(tokens: Iterable[str]) -> list[int]:
    """48-bit BLAKE2b hashes of tokens (JSON-safe integers).

    Examples
    --------
    >>> token_hashes(["word"]) == token_hashes(["word"]), len(token_hashes(["a", "b"]))
    (True, 2)
    """
    return [
        int.from_bytes(hashlib.blake2b(t.encode("utf-8", "surrogatepass"), digest_size=6).digest())
        for t in tokens
    ]


class Tokenizer:
    """Tokens of a text row, and which of them the model knows.

    Parameters
    ----------
    analyzer : callable
        Text to a list of tokens (the vectorizer's ``build_analyzer()``).
    vocabulary : mapping or None
        The vectorizer's ``vocabulary_`` (tokens known as themselves).
    hashes : collection of int or None
        Known token hashes (:func:`token_hashes`) when there is no vectorizer.

    Examples
    --------
    >>> tok = Tokenizer.learn(None, ["red apple", "green apple", "red pear"])
    >>> tok.tokens("Apple pie"), tok.known(["apple", "pie"]).tolist()
    (['apple', 'pie'], [True, False])
    """

    def __init__(
        self,
        analyzer: Callable[[str], list[str]],
        vocabulary: Mapping[str, Any] | None,
        hashes: Iterable[int] | None,
    ) -> None:
        self.analyzer = analyzer
        self.vocabulary = vocabulary
        self.hashes = None if hashes is None else frozenset(int(h) for h in hashes)

    @staticmethod
    def vectorizer(model: Any) -> Any:
        """The fitted text vectorizer of a ``Pipeline`` (``None`` if it has none)."""
        for _, step in getattr(model, "steps", None) or ():
            if hasattr(step, "build_analyzer") and hasattr(step, "vocabulary_"):
                return step
        return None

    @classmethod
    def learn(cls, model: Any, texts: Iterable[str]) -> Tokenizer:
        """The model's vectorizer, or a word regex with a hashed vocabulary of ``texts``."""
        vec = cls.vectorizer(model)
        if vec is not None:
            return cls(vec.build_analyzer(), vec.vocabulary_, None)
        counts: Counter[str] = Counter()
        for text in texts:
            counts.update(set(_words(text)))
        common = [t for t, c in counts.most_common(MAX_VOCABULARY) if c >= MIN_DOCUMENT_COUNT]
        return cls(_words, None, token_hashes(common))

    @classmethod
    def restore(cls, model: Any, hashes: Iterable[int] | None) -> Tokenizer:
        """The tokenizer of a saved state: the model's vectorizer, or the saved hashes."""
        vec = cls.vectorizer(model)
        if hashes is None:
            if vec is None:
                raise PersistenceError(
                    "the text guards used the model's vectorizer, which this model lacks: "
                    "load with the Pipeline the predictor was calibrated with."
                )
            return cls(vec.build_analyzer(), vec.vocabulary_, None)
        return cls(_words, None, hashes)

    def tokens(self, text: str) -> list[str]:
        """The row's tokens."""
        return list(self.analyzer(text))

    def known(self, tokens: list[str]) -> NDArray[np.bool_]:
        """Which tokens the model (or the reference) knows."""
        if self.vocabulary is not None:
            vocab = self.vocabulary
            return np.array([t in vocab for t in tokens], dtype=bool)
        assert self.hashes is not None
        known = self.hashes
        return np.array([h in known for h in token_hashes(tokens)], dtype=bool)

    def to_state(self) -> list[int] | None:
        """The hashed vocabulary, sorted (``None``: the model's vectorizer)."""
        return None if self.hashes is None else sorted(self.hashes)


def _words(text: str) -> list[str]:
    """Lower-cased words of two or more characters (scikit-learn's default pattern)."""
    return _WORD.findall(text.lower())
