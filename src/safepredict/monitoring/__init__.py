"""Monitoring: decision events (the only structlog import), the monitor, HTML and Prometheus.

- :mod:`safepredict.monitoring.events` (layer 2) turns decisions into one
  structured event each (schemas in ``monitoring/schemas/``);
- :mod:`safepredict.monitoring.monitor` (layer 4) reads event logs back into
  drift, confidence and tier statistics;
- :mod:`safepredict.monitoring.html` renders them; :mod:`safepredict.monitoring.prometheus`
  exports metrics (the ``prometheus`` extra).

Submodules are imported on demand so ``import safepredict`` stays light.
"""
