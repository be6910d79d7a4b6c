"""Integrations with other engines (layer 4): ``safepredict.integrations.dask``."""
