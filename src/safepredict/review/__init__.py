"""Human review: cases, sinks, the router and the SQLite review queue.

A decision the model should not take alone becomes a JSON-safe *case*
(:func:`~safepredict.review.cases.build_cases`); a :class:`Router` hands each
batch to a *sink*:

- :class:`SQLiteReviewQueue` -- the embedded default (stdlib ``sqlite3``, WAL
  mode), with the reviewer API (``pending``, ``claim``, ``heartbeat``,
  ``resolve``, ...): leases, several reviewers per case, priorities;
- :class:`PostgresReviewQueue` -- the same API in PostgreSQL, for replicated
  services (the ``postgres`` extra; ``router="postgresql://..."``);
- :class:`JSONLSink` -- one JSON object per case appended to a file;
- :class:`CallableSink` -- any Python callable.

A sink failure never fails a decision: the router retries a bounded number of
times, then spools the batch to a local JSONL file (replayed with
:meth:`Router.flush_spool`) and reports ``"spooled"`` (or ``"failed"`` when even
the spool cannot be written) as the route status of each case.

The writers here import layers 0-1 only (never a decide stage); the reviewer
console (:mod:`safepredict.review.console`, layer 4) is imported on demand.
"""

# build_cases and utc_now are for the facade, not users (import them from review.cases).
from safepredict.review._postgres import PostgresReviewQueue
from safepredict.review.cases import build_cases as build_cases
from safepredict.review.cases import utc_now as utc_now
from safepredict.review.queue import SQLiteReviewQueue
from safepredict.review.router import Router
from safepredict.review.sinks import CallableSink, JSONLSink, Sink

__all__ = [
    "CallableSink",
    "JSONLSink",
    "PostgresReviewQueue",
    "Router",
    "SQLiteReviewQueue",
    "Sink",
]
