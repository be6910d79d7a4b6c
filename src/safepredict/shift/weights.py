"""Covariate-shift weights: a domain classifier turned into likelihood ratios.

A probabilistic classifier learns to tell calibration rows (label 0) from
unlabelled production rows (label 1). With ``c(x) = P(production | x)`` and
``n_cal``, ``n_prod`` rows, the likelihood ratio of the two input distributions
is estimated as (Sugiyama et al., 2012; Tibshirani et al., 2019, section 3)::

    w(x) = dP_production / dP_calibration (x) = n_cal / n_prod * c(x) / (1 - c(x))

The weights are then normalized to mean 1 over the calibration rows and
clipped at ``max_weight``: the bound every weighted guarantee in
:mod:`safepredict.shift.weighted` and :mod:`safepredict.shift.weighted_tiers`
uses. The effective sample size ``(sum w)^2 / sum w^2`` of the calibration
weights says how many unweighted rows the weighted calibration is worth.

References
----------
Sugiyama, M., Suzuki, T. and Kanamori, T. (2012). *Density Ratio Estimation in
Machine Learning*. Cambridge University Press.

Tibshirani, R. J., Foygel Barber, R., Candes, E. J. and Ramdas, A. (2019).
Conformal prediction under covariate shift. *NeurIPS 32* (arXiv:1904.06019).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from safepredict.exceptions import ConfigError

__all__ = ["DomainWeights", "default_domain_classifier", "effective_sample_size"]


def effective_sample_size(weights: ArrayLike) -> float:
    """Kish's effective sample size ``(sum w)^2 / sum w^2`` (``n`` for equal weights).

    Examples
    --------
    >>> effective_sample_size([1.0, 1.0, 1.0, 1.0])
    4.0
    >>> round(effective_sample_size([4.0, 0.0, 0.0, 0.0]), 6)
    1.0
    """
    w = np.asarray(weights, dtype=np.float64)
    total = float(w.sum())
    square = float((w * w).sum())
    return total * total / square if square > 0 else 0.0


def default_domain_classifier(random_state: int | None = 0) -> Any:
    """Standardized logistic regression: the default domain classifier.

    Smooth and well calibrated when the shift moves the feature means (the
    common case); pass any scikit-learn classifier with ``predict_proba``
    instead (e.g. gradient boosting for interactions).

    Examples
    --------
    >>> type(default_domain_classifier()).__name__
    'Pipeline'
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    return make_pipeline(
        StandardScaler(), LogisticRegression(C=1.0, max_iter=2000, random_state=random_state)
    )


@dataclass(frozen=True)
class DomainWeights:
    """Likelihood-ratio weights of a fitted domain classifier.

    Use :meth:`fit`; then :meth:`weights` gives the weight of any row.

    Attributes
    ----------
    classifier : object
        The fitted domain classifier (class 1 = production).
    scale : float
        ``n_cal / n_prod`` divided by the mean raw ratio over the calibration
        rows (so calibration weights have mean 1 before clipping).
    max_weight : float
        Upper clip of every weight.
    calibration_weights : ndarray of shape (n_cal,)
        Clipped weights of the calibration rows.
    n_clipped : int
        Calibration and production rows whose weight was clipped.
    """

    classifier: Any
    scale: float
    max_weight: float
    calibration_weights: NDArray[np.float64] = field(repr=False)
    n_clipped: int = 0

    @classmethod
    def fit(
        cls,
        X_calibration: Any,
        X_production: Any,
        *,
        classifier: Any = None,
        max_weight: float = 10.0,
    ) -> DomainWeights:
        """Fit the domain classifier on calibration (0) versus production (1) rows.

        Parameters
        ----------
        X_calibration, X_production : array-like or DataFrame
            Rows as the model receives them.
        classifier : scikit-learn classifier, optional
            Cloned before fitting. Default :func:`default_domain_classifier`.
        max_weight : float, default=10
            Clip of the weights (> 1). Smaller: more statistical power for the
            weighted tiers, more bias where the true ratio is larger.

        Examples
        --------
        >>> rng = np.random.default_rng(0)
        >>> cal = rng.normal(size=(2000, 2))
        >>> prod = rng.normal(size=(2000, 2)) + [0.5, 0.0]
        >>> dw = DomainWeights.fit(cal, prod)
        >>> bool(dw.weights(np.array([[1.0, 0.0]]))[0] > dw.weights(np.array([[-1.0, 0.0]]))[0])
        True
        >>> 1000 < dw.effective_sample_size < 2000
        True
        """
        from sklearn.base import clone

        if not max_weight > 1.0:
            raise ConfigError(
                f"max_weight must be a number > 1 (the largest likelihood-ratio weight kept); "
                f"got {max_weight!r}. Use e.g. max_weight=10."
            )
        n_cal, n_prod = len(X_calibration), len(X_production)
        if n_prod < 2:
            raise ConfigError(
                f"adapting needs unlabelled production rows to compare with; got {n_prod}. "
                "Pass a batch of recent production inputs (hundreds of rows or more)."
            )
        model = clone(default_domain_classifier() if classifier is None else classifier)
        X_all = _stack(X_calibration, X_production)
        domain = np.concatenate([np.zeros(n_cal, dtype=np.intp), np.ones(n_prod, dtype=np.intp)])
        try:
            model.fit(X_all, domain)
            ratio_cal, ratio_prod = _ratio(model, X_calibration), _ratio(model, X_production)
        except Exception as exc:
            raise ConfigError(
                f"the domain classifier could not be fitted on the calibration and production "
                f"rows ({type(exc).__name__}: {exc}). Pass domain_classifier= a scikit-learn "
                "classifier with predict_proba that accepts these inputs (e.g. a pipeline "
                "that encodes categorical columns)."
            ) from exc
        mean = float(ratio_cal.mean()) * (n_cal / n_prod)
        scale = (n_cal / n_prod) / mean if mean > 0 else n_cal / n_prod
        w_cal, w_prod = ratio_cal * scale, ratio_prod * scale
        n_clipped = int((w_cal > max_weight).sum() + (w_prod > max_weight).sum())
        return cls(
            classifier=model,
            scale=float(scale),
            max_weight=float(max_weight),
            calibration_weights=np.minimum(w_cal, max_weight),
            n_clipped=n_clipped,
        )

    def weights(self, X: Any) -> NDArray[np.float64]:
        """Clipped likelihood-ratio weight of each row of ``X``."""
        if len(X) == 0:
            return np.zeros(0)
        return np.minimum(_ratio(self.classifier, X) * self.scale, self.max_weight)

    @property
    def effective_sample_size(self) -> float:
        """Effective sample size of the calibration weights."""
        return effective_sample_size(self.calibration_weights)


def _ratio(model: Any, X: Any) -> NDArray[np.float64]:
    """``c / (1 - c)`` of the domain classifier, with ``c`` kept inside ``(0, 1)``."""
    p = np.asarray(model.predict_proba(X), dtype=np.float64)[:, 1]
    p = np.clip(p, 1e-12, 1.0 - 1e-12)
    return np.asarray(p / (1.0 - p), dtype=np.float64)


def _stack(a: Any, b: Any) -> Any:
    """Rows of ``a`` then ``b`` (DataFrames stay DataFrames)."""
    if hasattr(a, "iloc") and hasattr(b, "iloc"):
        import pandas as pd

        return pd.concat([a, b], axis=0, ignore_index=True)
    return np.concatenate([np.asarray(a), np.asarray(b)], axis=0)
