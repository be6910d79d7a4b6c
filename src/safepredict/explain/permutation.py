"""Antithetic permutation SHAP on a seeded generator, and the frame codec it uses."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
from numpy.typing import NDArray

from safepredict.explain.select import N_PERMUTATIONS

__all__ = [
    "Codec",
    "PermutationShap",
]


# ---------------------------------------------------------------- the explainer
class Codec:
    """Numeric codes for mixed-type input frames (shap's maskers need numbers)."""

    def __init__(self, frame: Any) -> None:
        self.columns = list(frame.columns)
        self.dtypes = frame.dtypes.to_dict()
        from pandas.api.types import is_numeric_dtype

        self.numeric = [bool(is_numeric_dtype(t)) for t in frame.dtypes]
        self.vocab: list[dict[Any, int]] = [{} for _ in self.columns]
        self.values: list[list[Any]] = [[] for _ in self.columns]
        self.lock = threading.Lock()

    def encode(self, frame: Any) -> NDArray[np.float64]:
        """A frame as float codes (category positions for non-numeric columns)."""
        out = np.empty((len(frame), len(self.columns)), dtype=np.float64)
        with self.lock:
            for j, col in enumerate(self.columns):
                values = frame[col].to_numpy()
                if self.numeric[j]:
                    out[:, j] = values.astype(np.float64)
                    continue
                vocab, vals = self.vocab[j], self.values[j]
                for i, v in enumerate(values.tolist()):
                    code = vocab.get(v)
                    if code is None:
                        code = vocab[v] = len(vals)
                        vals.append(v)
                    out[i, j] = code
        return out

    def decode(self, codes: NDArray[np.float64]) -> Any:
        """Float codes back to a frame with the original values."""
        import pandas as pd

        data: dict[Any, Any] = {}
        for j, col in enumerate(self.columns):
            if self.numeric[j]:
                data[col] = codes[:, j]
            else:
                lookup = np.asarray(self.values[j], dtype=object)
                data[col] = lookup[codes[:, j].astype(np.intp)]
        return pd.DataFrame(data).astype(self.dtypes)


class PermutationShap:
    """Antithetic permutation Shapley values drawn from a seeded ``Generator``.

    The algorithm of ``shap.PermutationExplainer`` (each permutation is walked
    forwards, switching features from the background to the row, and backwards,
    switching them off in the same order), without its use of numpy's global
    random generator (it seeds and shuffles ``np.random``, shap#2863). Every
    row's permutations come from ``numpy.random.default_rng(seed)``, so a row's
    explanation is a function of the row alone and nothing global is touched.
    Contributions add up exactly (up to rounding) to ``f(row) - base``, where
    ``base`` is the mean of ``f`` over the background rows.

    Parameters
    ----------
    f : callable
        Model output of a float matrix ``(n, M)``: shape ``(n,)`` or ``(n, K)``.
    background : ndarray of shape (B, M)
        Background rows (masked features take their values).
    seed : int
        Seed of each row's permutations.
    n_permutations : int, default=N_PERMUTATIONS
        Antithetic permutation pairs per row.

    Examples
    --------
    >>> f = lambda X: X[:, 0] * 2.0 + X[:, 1] * X[:, 2]
    >>> ex = PermutationShap(f, np.zeros((1, 3)), seed=0)
    >>> values, base = ex.explain_row(np.array([1.0, 2.0, 3.0]))
    >>> float(values[0]), float(values.sum() + base)
    (2.0, 8.0)
    """

    def __init__(
        self,
        f: Any,
        background: NDArray[np.float64],
        *,
        seed: int,
        n_permutations: int = N_PERMUTATIONS,
    ) -> None:
        self.f = f
        self.background = np.asarray(background, dtype=np.float64)
        self.seed = int(seed)
        self.n_permutations = int(n_permutations)

    def explain_row(self, row: NDArray[np.float64]) -> tuple[NDArray[np.float64], Any]:
        """Shapley values ``(n_feat,)`` or ``(n_feat, K)`` of one row, and the base value."""
        row = np.asarray(row, dtype=np.float64).reshape(-1)
        n_feat = len(row)
        bg = self.background
        n_bg = len(bg)
        rng = np.random.default_rng(self.seed)
        perms = np.array([rng.permutation(n_feat) for _ in range(self.n_permutations)])
        n_perm = len(perms)
        # masks: per permutation, forward states F_1..F_{n_feat-1} (first s features on)
        # and backward states B_1..B_{n_feat-1} (all on except the first s)
        steps = np.arange(1, n_feat)
        position = np.empty_like(perms)
        position[np.arange(n_perm)[:, None], perms] = np.arange(n_feat)[None, :]
        forward = position[:, None, :] < steps[None, :, None]  # (n_perm, n_feat-1, n_feat)
        masks = np.concatenate(
            [
                np.zeros((1, n_feat), dtype=bool),
                np.ones((1, n_feat), dtype=bool),
                forward.reshape(-1, n_feat),
                ~forward.reshape(-1, n_feat),
            ]
        )
        inputs = np.where(masks[:, None, :], row[None, None, :], bg[None, :, :])
        out = np.asarray(self.f(inputs.reshape(-1, n_feat)), dtype=np.float64)
        means = out.reshape(len(masks), n_bg, *out.shape[1:]).mean(axis=1)
        base, full = means[0], means[1]
        fwd = means[2 : 2 + n_perm * (n_feat - 1)].reshape(n_perm, n_feat - 1, *means.shape[1:])
        bwd = means[2 + n_perm * (n_feat - 1) :].reshape(n_perm, n_feat - 1, *means.shape[1:])
        # chain values v_0 .. v_M of the forward walk and of the backward walk
        v_f = np.concatenate(
            [
                np.broadcast_to(base, (n_perm, 1, *base.shape)),
                fwd,
                np.broadcast_to(full, (n_perm, 1, *base.shape)),
            ],
            axis=1,
        )
        v_b = np.concatenate(
            [
                np.broadcast_to(full, (n_perm, 1, *base.shape)),
                bwd,
                np.broadcast_to(base, (n_perm, 1, *base.shape)),
            ],
            axis=1,
        )
        step_gain = (v_f[:, 1:] - v_f[:, :-1]) + (v_b[:, :-1] - v_b[:, 1:])  # (n_perm, n_feat, ...)
        values = np.zeros((n_feat, *base.shape))
        for p in range(n_perm):
            values[perms[p]] += step_gain[p]
        return values / (2 * n_perm), base
