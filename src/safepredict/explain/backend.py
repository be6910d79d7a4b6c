"""The one shap import (lazy), and conversion to ``shap.Explanation``."""

from __future__ import annotations

import contextlib
import warnings
from typing import Any

import numpy as np

from safepredict.decisions import Explanation

__all__ = [
    "load_shap",
    "to_shap",
]


def load_shap() -> Any:
    """Import shap once, lazily.

    shap 0.51's colour module calls a matplotlib API that newer matplotlib marks
    as pending deprecation at import time; that warning is about shap's own
    code, not ours, so it is silenced for the import only.
    """
    with warnings.catch_warnings():
        # shap.plots.colors calls Colormap.set_bad/set_over/set_under at import,
        # which matplotlib >= 3.10 marks as pending deprecation.
        warnings.filterwarnings(
            "ignore",
            message=r"The set_(bad|over|under) function will be deprecated",
            category=PendingDeprecationWarning,
        )
        import shap

    return shap


# ---------------------------------------------------------------- shap interop
def to_shap(explanation: Explanation) -> Any:
    """Convert an :class:`~safepredict.Explanation` to a ``shap.Explanation``.

    The result is one row (1-D ``values``), ready for ``shap.plots.waterfall``
    or ``shap.plots.bar``.

    Examples
    --------
    >>> e = Explanation("linear", ("a", "b"), (0.5, -0.25), 1.0, output="prediction")
    >>> s = to_shap(e)
    >>> s.values.tolist(), float(s.base_values), s.feature_names
    ([0.5, -0.25], 1.0, ['a', 'b'])
    """
    shap = load_shap()
    data = None
    if explanation.data is not None:
        data = np.asarray(explanation.data, dtype=object)
        # mixed-type rows stay objects; plots print them as text
        with contextlib.suppress(TypeError, ValueError):
            data = data.astype(np.float64)
    return shap.Explanation(
        values=np.asarray(explanation.values, dtype=np.float64),
        base_values=float(explanation.base_value),
        data=data,
        feature_names=list(explanation.feature_names),
    )
