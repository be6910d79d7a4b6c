"""safepredict: make any trained model safe to put in front of people.

Wrap a fitted model in :class:`SafePredictor`, calibrate it on held-out data,
and every prediction becomes a :class:`Decision`: guarded inputs, a conformal
prediction set or interval, a confidence tier and an action (accept, review or
abstain), with a structured event for monitoring.
"""

from typing import TYPE_CHECKING, Any

from safepredict._version import __version__
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

if TYPE_CHECKING:
    from safepredict.config import GuardConfig, Tier, TierPolicy
    from safepredict.decisions import Decision, Decisions, Explanation, GuardReport
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


def __getattr__(name: str) -> Any:
    """Import the public classes on first use (PEP 562).

    ``import safepredict`` stays light (no scikit-learn, MAPIE or scipy), so a
    command that only reads logs, such as ``safepredict monitor``, starts fast.
    """
    if name in ("GuardConfig", "Tier", "TierPolicy"):
        from safepredict import config

        return _keep(name, config)
    if name in ("Decision", "Decisions", "Explanation", "GuardReport"):
        from safepredict import decisions

        return _keep(name, decisions)
    if name == "SafePredictor":
        from safepredict import predictor

        return _keep(name, predictor)
    if name in ("JSONLSink", "PostgresReviewQueue", "Router", "SQLiteReviewQueue"):
        from safepredict import review

        return _keep(name, review)
    if name == "plan_calibration":
        from safepredict import tiers

        return _keep(name, tiers)
    raise AttributeError(f"module 'safepredict' has no attribute {name!r}")


def _keep(name: str, module: Any) -> Any:
    value = getattr(module, name)
    globals()[name] = value  # later look-ups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
