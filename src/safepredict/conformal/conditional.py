"""Class- and group-conditional (Mondrian) and smoothed p-values for a classifier's state.

:class:`StratifiedPValues` gives :class:`~safepredict.conformal.ClassificationConformal`
its conditional and smoothed path (the arithmetic is in
:mod:`safepredict.conformal.pvalues`): sets ``{y : p_y > 1 - confidence_level}``,
Vovk's confidence ``1 - max_{y != y_hat} p_y`` and the credibility ``p_{y_hat}``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from safepredict._frames import group_labels
from safepredict.conformal._counts import min_calibration_rows
from safepredict.conformal._mapie import alpha_of
from safepredict.conformal.pvalues import conformal_p_values, stratum_counts
from safepredict.exceptions import ConfigError

__all__ = ["StratifiedPValues", "check_options"]


def check_options(
    method: str, conditional: str | None, groups: Any, smoothed: bool, n_rows: int
) -> None:
    """Raise ConfigError for a ``conditional`` / ``smoothed`` choice the score cannot take."""
    if conditional is not None and method == "raps":
        raise ConfigError(
            "conditional conformal sets need every calibration row's score; 'raps' holds "
            "some out to tune its penalty. Use conformity_score='lac' or 'aps', or "
            "conditional=None."
        )
    if conditional not in (None, "class") and (groups is None or len(groups) != n_rows):
        raise ConfigError(
            f"conditional={conditional!r} needs that column's value for each of the "
            f"{n_rows} calibration rows (groups=); got "
            f"{'none' if groups is None else len(groups)}. Name an input column."
        )
    if smoothed and method != "lac":
        raise ConfigError(
            f"smoothed p-values break ties of the 'lac' score; conformity_score={method!r} "
            "already randomizes its scores. Use conformity_score='lac' or smoothed=False."
        )


class StratifiedPValues:
    """Conditional / smoothed p-values over the calibrated strata (a mixin).

    Reads the state's ``method``, ``confidence_level``, ``classes``,
    ``calibration_scores``, ``conditional``, ``strata``, ``smoothed`` and its
    seeded generator; the label thresholds ``t`` come from the state's
    ``label_scores``.
    """

    method: str
    confidence_level: float
    classes: NDArray[Any]
    calibration_scores: NDArray[np.float64]
    conditional: str | None
    strata: dict[str, NDArray[np.float64]]
    smoothed: bool
    random_state: int | None
    _rng: np.random.Generator

    def restart_draws(self) -> None:
        """Restart the smoothing draws from ``random_state`` (as a freshly loaded state)."""
        self._rng = np.random.default_rng(self.random_state)

    @property
    def small_strata(self) -> list[str]:
        """Classes / groups with too few calibration rows to exclude anything.

        Fewer than ``ceil(1 / alpha - 1)`` rows: their labels (``"class"``) or
        rows (a column) always get the full label set, trivially valid.
        """
        need = min_calibration_rows(self.confidence_level)
        keys = group_labels(self.classes).tolist() if self.conditional == "class" else []
        sizes = {**dict.fromkeys(keys, 0), **{k: len(v) for k, v in self.strata.items()}}
        return sorted(k for k, size in sizes.items() if size < need)

    def _stratified(
        self, t: NDArray[np.float64], groups: Any
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Conditional and/or smoothed p-values as ``(numerator, denominator)``."""
        by, row_keys = "class", None
        strata = self.strata
        if self.conditional is None:
            by, strata = "group", {"": self.calibration_scores}
            row_keys = np.full(len(t), "", dtype=object)
        elif self.conditional != "class":
            by, row_keys = "group", group_labels(self.group_values(groups, len(t)))
        counts = stratum_counts(
            t,
            strata,
            by=by,
            confidence_level=self.confidence_level,
            strict=self.method != "lac",
            class_keys=group_labels(self.classes).tolist(),
            row_keys=row_keys,
        )
        tau = self._rng.random(len(t)) if self.smoothed else None
        return conformal_p_values(counts, tau)

    def group_values(self, groups: Any, n: int) -> NDArray[Any]:
        """The rows' values of the ``conditional`` column, from ``groups`` (dict or array)."""
        values = groups.get(self.conditional) if isinstance(groups, Mapping) else groups
        if values is None or len(values) != n:
            raise ConfigError(
                f"conformal sets are conditional on column {self.conditional!r}: pass its "
                f"{n} values (groups={{{self.conditional!r}: values}}); got "
                f"{'none' if values is None else len(values)}."
            )
        return np.asarray(values)

    def stratum_reasons(self, groups: Any, n: int) -> dict[int, tuple[str, ...]]:
        """Rows whose set is full because of their stratum, with the reason.

        ``small_stratum:<value>`` (too few calibration rows) or
        ``unseen_stratum:<value>`` (a group value the calibration never saw);
        ``"class"``: every row names the small classes (their labels are always
        in the set).
        """
        if self.conditional is None:
            return {}
        small = self.small_strata
        if self.conditional == "class":
            codes = tuple(f"small_stratum:{k}" for k in small)
            return dict.fromkeys(range(n), codes) if codes else {}
        values = group_labels(self.group_values(groups, n)).tolist()
        out: dict[int, tuple[str, ...]] = {}
        for row, value in enumerate(values):
            if value not in self.strata:
                out[row] = (f"unseen_stratum:{value}",)
            elif value in small:
                out[row] = (f"small_stratum:{value}",)
        return out

    def _from_p_values(
        self, t: NDArray[np.float64], predicted: NDArray[np.intp], groups: Any
    ) -> tuple[NDArray[np.bool_], NDArray[np.float64], NDArray[np.float64]]:
        """Set, confidence and credibility from conditional / smoothed p-values."""
        num, den = self._stratified(t, groups)
        p = num / den
        rows = np.arange(len(p))
        own = p[rows, predicted]
        if p.shape[1] < 2:
            return p > alpha_of(self.confidence_level), np.ones(len(p)), own
        others = p.copy()
        others[rows, predicted] = -np.inf
        j = others.argmax(axis=1)
        best = (den[rows, j] - num[rows, j]) / den[rows, j]  # 1 - p, exact when unsmoothed
        confidence = np.where(own >= p[rows, j], best, 0.0)
        return p > alpha_of(self.confidence_level), confidence, own
