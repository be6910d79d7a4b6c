"""Packaging: LICENSE ships in the wheel; `make demo` installs only the demo extra."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_license_file_is_bsd3_and_declared() -> None:
    text = (ROOT / "LICENSE").read_text(encoding="utf-8")
    assert text.startswith("BSD 3-Clause License")
    assert "Copyright (c) 2026, safepredict developers" in text
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert project["license"] == "BSD-3-Clause"
    assert project["license-files"] == ["LICENSE"]


def test_demo_extra_covers_what_the_demo_imports() -> None:
    source = (ROOT / "examples" / "demo.py").read_text(encoding="utf-8")
    imported = set(re.findall(r"^(?:from|import) (\w+)", source, flags=re.M))
    core = {"__future__", "argparse", "pathlib", "numpy", "sklearn", "safepredict"}
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "optional-dependencies"
    ]
    demo = {re.split(r"[<>=\[]", req)[0] for req in extras["demo"]}
    # pandas is imported by the demo; matplotlib draws the benchmark report it writes.
    assert imported - core == {"pandas"}
    assert demo == {"pandas", "matplotlib"}
    assert "demo" in extras["all"][0]  # `make test` (dev -> all) still gets everything
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    assert '-e ".[demo]"' in makefile
    assert re.search(r"^demo: \$\(DEMO_STAMP\)$", makefile, flags=re.M)
    for target in ("lint", "typecheck", "pytest", "docs", "bench"):
        assert re.search(rf"^{target}: \$\(STAMP\)$", makefile, flags=re.M), target


@pytest.mark.slow
def test_wheel_contains_license(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "-w",
            str(tmp_path),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = tmp_path.glob("safepredict-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = zf.namelist()
        (license_name,) = [n for n in names if n.endswith("dist-info/licenses/LICENSE")]
        assert zf.read(license_name).decode().startswith("BSD 3-Clause License")
        (metadata,) = [n for n in names if n.endswith("dist-info/METADATA")]
        lines = zf.read(metadata).decode().splitlines()
    assert "License-Expression: BSD-3-Clause" in lines
    assert "License-File: LICENSE" in lines
