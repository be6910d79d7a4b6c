"""Pin the public API: a change here is a change users see (and needs a CHANGELOG entry)."""

import safepredict

EXPECTED = [
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


def test_all_is_pinned_and_sorted() -> None:
    assert safepredict.__all__ == EXPECTED
    assert sorted(safepredict.__all__) == safepredict.__all__


def test_every_public_name_resolves() -> None:
    for name in safepredict.__all__:
        assert getattr(safepredict, name) is not None


def test_exception_hierarchy() -> None:
    from safepredict import (
        CalibrationError,
        ConfigError,
        InputSchemaError,
        NotCalibratedError,
        SafePredictError,
    )

    for exc in (ConfigError, InputSchemaError, NotCalibratedError, CalibrationError):
        assert issubclass(exc, SafePredictError)
        assert issubclass(exc, ValueError)
    assert issubclass(NotCalibratedError, AttributeError)
