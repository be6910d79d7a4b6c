"""Deprecated alias of :mod:`safepredict.monitoring.prometheus` (moved in 0.2; removed in 0.3)."""

from safepredict._deprecation import moved_module

__getattr__ = moved_module(__name__, "safepredict.monitoring.prometheus")
