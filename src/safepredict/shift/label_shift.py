"""Label shift: class priors of production estimated without labels.

Under label shift the class-conditional inputs are unchanged
(``p(x | y)`` is the same in calibration and production) and only the class
priors move. The ratio ``w(y) = q(y) / p(y)`` of production to calibration
priors then reweights every calibration row by its label.

Two estimators, both from the model's outputs only:

* ``"bbse"`` -- black-box shift estimation (Lipton et al., 2018): with the
  calibration confusion matrix ``C[i, j] = P_cal(y_hat = i, y = j)`` and the
  production prediction rates ``mu[i] = P_prod(y_hat = i)``, solve
  ``C w = mu``. Consistent whenever ``C`` is invertible, calibrated
  probabilities or not.
* ``"em"`` -- the EM prior adjustment of Saerens et al. (2002): re-weight the
  predicted probabilities by ``q(y) / p(y)``, average them into new priors,
  repeat. Efficient when the model's probabilities are calibrated.

References
----------
Lipton, Z. C., Wang, Y.-X. and Smola, A. (2018). Detecting and correcting for
label shift with black box predictors. *ICML* (arXiv:1802.03916).

Saerens, M., Latinne, P. and Decaestecker, C. (2002). Adjusting the outputs of a
classifier to new a priori probabilities: a simple procedure. *Neural
Computation* 14(1), 21-41.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from safepredict.exceptions import ConfigError

__all__ = ["LabelShift", "estimate_label_shift"]

#: Smallest production prior kept (a class estimated absent keeps a sliver of mass).
PRIOR_FLOOR = 1e-6


@dataclass(frozen=True)
class LabelShift:
    """Estimated production class priors and the prior ratios.

    Attributes
    ----------
    method : {"bbse", "em"}
    calibration_priors : ndarray of shape (K,)
        Class frequencies of the calibration labels.
    production_priors : ndarray of shape (K,)
        Estimated class priors of the production rows.
    ratios : ndarray of shape (K,)
        ``production_priors / calibration_priors``: the weight of a calibration
        row of each class.
    """

    method: str
    calibration_priors: NDArray[np.float64]
    production_priors: NDArray[np.float64]
    ratios: NDArray[np.float64]


def estimate_label_shift(
    proba_calibration: NDArray[np.float64],
    y_calibration: NDArray[np.intp],
    proba_production: NDArray[np.float64],
    *,
    method: str = "bbse",
    max_iter: int = 1000,
    tol: float = 1e-10,
) -> LabelShift:
    """Estimate production class priors from unlabelled production outputs.

    Parameters
    ----------
    proba_calibration : ndarray of shape (n, K)
        Model probabilities on the calibration rows.
    y_calibration : ndarray of shape (n,)
        Calibration labels as class indices ``0 .. K-1``.
    proba_production : ndarray of shape (m, K)
        Model probabilities on unlabelled production rows.
    method : {"bbse", "em"}, default="bbse"

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> y_cal = rng.integers(0, 2, size=4000)
    >>> y_prod = (rng.uniform(size=4000) < 0.8).astype(int)      # priors 0.2 / 0.8
    >>> def proba(y):  # a classifier right 90% of the time
    ...     hit = rng.uniform(size=len(y)) < 0.9
    ...     p1 = np.where(hit == (y == 1), 0.9, 0.1)
    ...     return np.column_stack([1 - p1, p1])
    >>> ls = estimate_label_shift(proba(y_cal), y_cal, proba(y_prod))
    >>> np.round(ls.production_priors, 1).tolist()
    [0.2, 0.8]
    """
    if method not in ("bbse", "em"):
        raise ConfigError(
            f"label-shift method must be 'bbse' or 'em'; got {method!r}. Use method='bbse' "
            "(no calibration assumption) or 'em' (calibrated probabilities)."
        )
    p_cal = np.asarray(proba_calibration, dtype=np.float64)
    p_prod = np.asarray(proba_production, dtype=np.float64)
    y = np.asarray(y_calibration, dtype=np.intp)
    k = p_cal.shape[1]
    prior_cal = np.bincount(y, minlength=k) / max(len(y), 1)
    if (prior_cal <= 0).any():
        missing = np.flatnonzero(prior_cal <= 0).tolist()
        raise ConfigError(
            f"label-shift correction needs every class among the calibration labels; classes "
            f"at indices {missing} have none. Calibrate on rows of every class."
        )
    if method == "bbse":
        confusion = np.zeros((k, k))
        np.add.at(confusion, (p_cal.argmax(axis=1), y), 1.0)
        confusion /= len(y)
        mu = np.bincount(p_prod.argmax(axis=1), minlength=k) / max(len(p_prod), 1)
        w, *_ = np.linalg.lstsq(confusion, mu, rcond=None)
        q = np.maximum(w * prior_cal, PRIOR_FLOOR)
    else:
        q = prior_cal.copy()
        for _ in range(max_iter):
            adjusted = p_prod * (q / prior_cal)
            adjusted /= np.maximum(adjusted.sum(axis=1, keepdims=True), 1e-300)
            new = np.maximum(adjusted.mean(axis=0), PRIOR_FLOOR)
            done = float(np.abs(new - q).max()) < tol
            q = new
            if done:
                break
    q = q / q.sum()
    return LabelShift(
        method=method,
        calibration_priors=prior_cal,
        production_priors=q,
        ratios=np.asarray(q / prior_cal, dtype=np.float64),
    )
