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


MOVED = {
    "safepredict.routing": ("SQLiteReviewQueue", "safepredict.review"),
    "safepredict.console": ("create_app", "safepredict.review.console"),
    "safepredict.events": ("jsonl_file_logger", "safepredict.monitoring.events"),
    "safepredict.monitor": ("monitor", "safepredict.monitoring.monitor"),
    "safepredict.monitor_html": ("render_html", "safepredict.monitoring.html"),
    "safepredict.prometheus": ("__name__", "safepredict.monitoring.prometheus"),
    "safepredict.reports": ("write_report", "safepredict.evaluation.report"),
}


def test_moved_modules_keep_working_with_a_deprecation_warning() -> None:
    import importlib

    import pytest

    for old, (name, new) in MOVED.items():
        if name == "__name__":  # needs an optional extra; only the alias itself is checked
            continue
        alias = importlib.import_module(old)
        with pytest.warns(DeprecationWarning, match=f"{old}.{name} moved to {new}.{name}"):
            value = getattr(alias, name)
        assert value is getattr(importlib.import_module(new), name)
        with pytest.raises(AttributeError, match="has no attribute"):
            alias.not_a_name  # noqa: B018
