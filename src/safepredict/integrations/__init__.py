"""Integrations with other engines (layer 4): Dask, Spark and MLflow.

``safepredict.integrations.dask``, ``.spark`` and ``.mlflow``.
"""
