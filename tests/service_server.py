"""The service example under uvicorn, one server per test session (a fixture).

``tests/conftest.py`` registers :func:`service`; ``test_service.py`` and
``test_service_oip.py`` share the one server (100 rows, 200,000 bytes per request).
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

import safepredict as sp

ROOT = Path(__file__).resolve().parents[1]
SERVICE = ROOT / "examples" / "service"


def _load_train_module() -> Any:
    spec = importlib.util.spec_from_file_location("service_train", SERVICE / "train.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Service:
    url: str
    stdout: Path
    calibration: Path
    rows: list[dict[str, Any]]
    predictor: sp.SafePredictor

    def log_lines(self) -> list[dict[str, Any]]:
        lines = self.stdout.read_text().splitlines()
        parsed = [json.loads(line) for line in lines if line.strip()]
        assert all(isinstance(p, dict) for p in parsed)
        return parsed


# Session scope: under xdist's loadgroup a worker may interleave other modules' tests,
# which would tear a module-scoped server down and start it again.
@pytest.fixture(scope="session")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Service]:
    out = tmp_path_factory.mktemp("service")
    train = _load_train_module()
    calibration = train.main(out)
    X, _ = train.load_data()
    rows = X.iloc[:60].to_dict(orient="records")
    stdout, stderr = out / "stdout.log", out / "stderr.log"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
        "PYTHONUNBUFFERED": "1",
        "SAFEPREDICT_CALIBRATION": str(calibration),
        "SAFEPREDICT_MAX_ROWS": "100",
        "SAFEPREDICT_MAX_BODY_BYTES": "200000",
    }
    env.pop("SAFEPREDICT_REVIEW_DB", None)
    for _attempt in range(3):  # the free port may be taken between probe and bind
        port = _free_port()
        with stdout.open("w") as out_fh, stderr.open("w") as err_fh:
            proc = subprocess.Popen(
                [
                    *(sys.executable, "-m", "uvicorn", "app:app", "--host", "127.0.0.1"),
                    *("--port", str(port), "--no-access-log", "--timeout-keep-alive", "60"),
                ],
                cwd=SERVICE,
                env=env,
                stdout=out_fh,
                stderr=err_fh,
            )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 120  # a loaded CI machine takes its time to import
        up = False
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                up = httpx.get(f"{url}/health", timeout=2).status_code == 200
            except httpx.TransportError:
                up = False
            if up:
                break
            time.sleep(0.2)
        if up:
            break
        proc.kill()  # it never answered: nothing to shut down gracefully
        proc.wait(timeout=10)
    else:
        pytest.fail(f"the service did not start:\n{stderr.read_text()}")
    try:
        yield Service(url, stdout, calibration, rows, sp.SafePredictor.load(calibration))
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
