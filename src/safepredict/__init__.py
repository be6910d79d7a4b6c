"""safepredict: make any trained model safe to put in front of people.

Wrap a fitted model in :class:`SafePredictor`, calibrate it on held-out data,
and every prediction becomes a :class:`Decision`: guarded inputs, a conformal
prediction set or interval, a confidence tier and an action (accept, review or
abstain), with a structured event for monitoring.
"""

from safepredict._version import __version__
from safepredict.config import GuardConfig, Tier, TierPolicy
from safepredict.decisions import Decision, Decisions, Explanation, GuardReport
from safepredict.exceptions import (
    CalibrationError,
    CaseNotFoundError,
    ConfigError,
    InputSchemaError,
    NotCalibratedError,
    PersistenceError,
    ReviewQueueError,
    SafePredictError,
)
from safepredict.predictor import SafePredictor
from safepredict.review import JSONLSink, PostgresReviewQueue, Router, SQLiteReviewQueue
from safepredict.tiers import plan_calibration

__all__ = [
    "CalibrationError",
    "CaseNotFoundError",
    "ConfigError",
    "Decision",
    "Decisions",
    "Explanation",
    "GuardConfig",
    "GuardReport",
    "InputSchemaError",
    "JSONLSink",
    "NotCalibratedError",
    "PersistenceError",
    "PostgresReviewQueue",
    "ReviewQueueError",
    "Router",
    "SQLiteReviewQueue",
    "SafePredictError",
    "SafePredictor",
    "Tier",
    "TierPolicy",
    "__version__",
    "plan_calibration",
]
