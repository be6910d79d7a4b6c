"""Every optional feature names the extra to install when its dependency is missing.

A missing module is simulated the way Python itself spells it: ``sys.modules[name] = None``
makes ``import name`` raise ``ModuleNotFoundError`` (nothing is mocked).
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import pytest

from safepredict._extras import missing_extra, require
from safepredict.exceptions import MissingExtraError, SafePredictError


def hide(monkeypatch: pytest.MonkeyPatch, *modules: str, reload: str | None = None) -> None:
    """Make ``import m`` (and of every already imported ``m.sub``) raise ModuleNotFoundError."""
    for name in modules:
        for loaded in [m for m in sys.modules if m.startswith(name + ".")]:
            monkeypatch.setitem(sys.modules, loaded, None)
        monkeypatch.setitem(sys.modules, name, None)
    if reload is not None and reload in sys.modules:
        monkeypatch.delitem(sys.modules, reload)


def test_require_imports_or_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    assert require("json", "x", "y") is sys.modules["json"]
    hide(monkeypatch, "uvicorn")
    with pytest.raises(
        MissingExtraError, match=r"needs uvicorn.*pip install 'safepredict\[review\]'"
    ):
        require("uvicorn", "review", "the console")
    err = missing_extra(ImportError("x"), "plots", "a plot")
    assert isinstance(err, SafePredictError)
    assert isinstance(err, ImportError)


def test_prometheus_without_prometheus_client(monkeypatch: pytest.MonkeyPatch) -> None:
    hide(monkeypatch, "prometheus_client", reload="safepredict.monitoring.prometheus")
    with pytest.raises(MissingExtraError, match=r"pip install 'safepredict\[prometheus\]'"):
        importlib.import_module("safepredict.monitoring.prometheus")


def test_console_without_starlette_or_jinja2(monkeypatch: pytest.MonkeyPatch) -> None:
    for missing in ("starlette", "jinja2"):
        with monkeypatch.context() as m:
            hide(m, missing, reload="safepredict.review.console")
            with pytest.raises(MissingExtraError, match=r"needs .*safepredict\[review\]"):
                importlib.import_module("safepredict.review.console")


def test_decide_dask_without_dask(iris_lr: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from safepredict import SafePredictor
    from safepredict.integrations.dask import benchmark_dask, decide_dask

    sp = SafePredictor(iris_lr.model, log="off").calibrate(iris_lr.X_cal, iris_lr.y_cal)
    hide(monkeypatch, "dask", "dask.dataframe")
    with pytest.raises(MissingExtraError, match=r"decide_dask needs .*safepredict\[dask\]"):
        decide_dask(sp, iris_lr.X_test)
    with pytest.raises(MissingExtraError, match=r"benchmark_dask needs .*safepredict\[dask\]"):
        benchmark_dask(iris_lr.X_test)


def test_html_report_without_matplotlib(monkeypatch: pytest.MonkeyPatch) -> None:
    from safepredict.monitoring.html import render_html
    from safepredict.monitoring.monitor import MonitorReport

    hide(monkeypatch, "matplotlib", "matplotlib.figure")
    report = MonitorReport([], 3600.0, {}, [], [], None, [])
    with pytest.raises(MissingExtraError, match=r"monitor --html.*safepredict\[plots\]"):
        render_html(report)


def test_review_serve_without_uvicorn_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from safepredict.cli import main
    from safepredict.review import SQLiteReviewQueue

    path = tmp_path / "q.db"
    SQLiteReviewQueue(path).enqueue({"decision_id": "a", "tier": "t", "action": "review"})
    hide(monkeypatch, "uvicorn")
    with pytest.raises(SystemExit) as exit_:
        main(["review", "serve", "--queue", str(path), "--token", "x" * 12])
    message = str(exit_.value.code)
    assert message == (
        "error: safepredict review serve needs uvicorn, which is not installed: "
        "pip install 'safepredict[review]'"
    )
