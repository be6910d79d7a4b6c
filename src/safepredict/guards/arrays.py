"""Array guards: what an N-D array row (an image, an embedding) must look like.

:class:`ArrayGuards` learns from reference arrays ``(n, *item_shape)`` (the
calibration arrays by default) and flags, per row, with the column name
``array``:

* ``non_finite:array``: a NaN or infinite value -- the model never sees the row;
* ``type:array``: a value the calibration dtype cannot hold (``3.5`` or ``300``
  for ``uint8`` data) -- the model never sees the row;
* ``out_of_range:array``: a value outside the reference's value range widened
  by ``range_margin`` of its span on each side (a gross value: no false-alarm
  rate is claimed for it);
* ``ood``: unlike the reference on a featurizer -- ``featurizer=`` when given,
  else the row flattened (projected to 64 dimensions when larger;
  :mod:`~safepredict.guards.featurize`) -- at most ``ood_alpha`` false alarms.

Whole-batch problems (another item shape, a non-numeric dtype) are
:class:`~safepredict.InputSchemaError` in :func:`safepredict.inputs.prepare`.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> guards = ArrayGuards.fit(rng.normal(size=(400, 4, 4)), random_state=0)
>>> batch = rng.normal(size=(3, 4, 4))
>>> batch[1, 0, 0], batch[2] = np.nan, 50.0
>>> r = guards.check(batch)
>>> r.reasons
{1: ('non_finite:array',), 2: ('out_of_range:array', 'ood')}
>>> r.skip.tolist()
[False, True, False]
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from numpy.typing import NDArray

from safepredict._validation import describe
from safepredict.config import GuardConfig
from safepredict.exceptions import CalibrationError, ConfigError
from safepredict.guards.featurize import Featurizer, ood_pvalues
from safepredict.guards.ranges import MIN_FIT, fit_size
from safepredict.guards.result import GuardResult, collect
from safepredict.ood import CentroidDetector, MarginalScores

__all__ = ["ArrayGuards"]

#: The column name of an array input in reason codes (``"non_finite:array"``).
COLUMN = "array"
STATE_VERSION = 1


class ArrayGuards:
    """Fitted guards for one N-D array per row.

    Parameters
    ----------
    config : GuardConfig
    dtype : str
        The calibration dtype.
    value_range : tuple of float
        Allowed values ``[low, high]``.
    detector : CentroidDetector, optional
    featurizer : Featurizer, optional
    """

    def __init__(
        self,
        config: GuardConfig,
        dtype: str,
        value_range: tuple[float, float],
        detector: CentroidDetector | None = None,
        featurizer: Featurizer | None = None,
    ) -> None:
        self.config = config
        self.dtype = str(dtype)
        self.value_range = (float(value_range[0]), float(value_range[1]))
        self.detector = detector
        self.featurizer = featurizer

    @classmethod
    def fit(
        cls,
        reference: Any,
        config: GuardConfig | None = None,
        *,
        featurizer: Callable[[Any], Any] | None = None,
        random_state: int | None = None,
    ) -> ArrayGuards:
        """Learn the guards from reference arrays of shape ``(n, *item_shape)``.

        Parameters
        ----------
        reference : ndarray
            Arrays like those the model should be trusted on.
        config : GuardConfig, optional
        featurizer : callable, optional
            Arrays to a 2-D feature matrix (default: flatten).
        random_state : int, optional
            Seed of the fit/calibration split.

        Returns
        -------
        ArrayGuards
        """
        config = GuardConfig() if config is None else config
        ref = np.asarray(reference)
        finite = np.isfinite(ref.reshape(len(ref), -1)).all(axis=1) if len(ref) else ref
        ref_ok = ref[finite] if len(ref) else ref
        if len(ref_ok) < 2:
            raise CalibrationError(
                f"the array guards need reference arrays; got {len(ref_ok)} finite rows. "
                "Pass reference= (e.g. the training arrays) or more calibration rows."
            )
        lo, hi = float(ref_ok.min()), float(ref_ok.max())
        pad = config.range_margin * (hi - lo)
        rng = np.random.default_rng(random_state)
        order = rng.permutation(len(ref_ok))
        n_fit = fit_size(len(ref_ok), config)
        fit_part, cal_part = ref_ok[order[:n_fit]], ref_ok[order[n_fit:]]
        detector, feats = None, None
        if config.ood_method != "none" and len(fit_part) >= MIN_FIT and len(cal_part):
            kind = "flatten" if featurizer is None else "user"
            feats = Featurizer.resolve(kind, None, featurizer, fit_part[:2])
            f_fit = feats(fit_part)
            detector = CentroidDetector.fit_split(
                f_fit, feats(cal_part), rng=rng, transform=MarginalScores.fit(f_fit)
            )
        return cls(config, str(ref.dtype), (lo - pad, hi + pad), detector, feats)

    def check(self, X: Any) -> GuardResult:
        """Check an array batch ``(n, *item_shape)``.

        Returns
        -------
        GuardResult
            ``ood`` is ``nan`` for rows the model does not see.
        """
        arr = np.asarray(X)
        n = len(arr)
        flat = arr.reshape(n, -1)
        values = flat.astype(np.float64, copy=False)
        with np.errstate(invalid="ignore"):
            non_finite = ~np.isfinite(values).all(axis=1)
            low, high = self.value_range
            outside = ((values < low) | (values > high)) & np.isfinite(values)
        wanted = np.dtype(self.dtype)
        wrong = np.zeros(n, dtype=bool)
        if wanted.kind in "biu" and flat.dtype.kind == "f":
            info = np.iinfo(wanted)
            with np.errstate(invalid="ignore"):
                bad = (values != np.round(values)) | (values < info.min) | (values > info.max)
            wrong = (bad & np.isfinite(values)).any(axis=1)
        masks: dict[str, NDArray[np.bool_]] = {
            "non_finite": np.asarray(non_finite, dtype=bool),
            "type": np.asarray(wrong, dtype=bool),
            "out_of_range": np.asarray(outside.any(axis=1), dtype=bool),
        }
        usable = ~non_finite & ~wrong
        ood = ood_pvalues(self.detector, self.featurizer, usable, lambda rows: arr[rows])
        return collect(n, masks, COLUMN, self.config, ood)

    @property
    def ood_min_pvalue(self) -> float | None:
        """Smallest OOD p-value possible (``None`` without a detector)."""
        return None if self.detector is None else self.detector.min_pvalue

    def to_state(self) -> dict[str, Any]:
        """JSON-safe state: the value range and the detector's aggregates, no row."""
        return {
            "version": STATE_VERSION,
            "stores_raw_rows": False,
            "config": self.config.to_dict(),
            "dtype": self.dtype,
            "value_range": list(self.value_range),
            "featurizer": None if self.featurizer is None else self.featurizer.kind,
            "n_features": None if self.featurizer is None else self.featurizer.n_features,
            "detector": None if self.detector is None else self.detector.to_state(),
        }

    @classmethod
    def from_state(
        cls,
        state: Mapping[str, Any],
        *,
        featurizer: Callable[[Any], Any] | None = None,
    ) -> ArrayGuards:
        """Restore guards saved with :meth:`to_state` (``featurizer`` if one was used)."""
        if not isinstance(state, Mapping) or state.get("version") != STATE_VERSION:
            raise ConfigError(
                "array guard state must be a dict written by ArrayGuards.to_state() "
                f"(version {STATE_VERSION}); got {describe(state)}."
            )
        kind, det = state.get("featurizer"), state.get("detector")
        feats = None
        if kind == "user" and featurizer is None:
            Featurizer.resolve("user", None, None, None)  # raises: say what to pass
        if kind is not None:
            feats = Featurizer(str(kind), int(state["n_features"]), featurizer)
        low, high = state["value_range"]
        return cls(
            GuardConfig.from_dict(state["config"]),
            str(state["dtype"]),
            (float(low), float(high)),
            None if det is None else CentroidDetector.from_state(det),
            feats,
        )
