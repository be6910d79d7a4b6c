"""One home for JSON lines: plain and gzip files stream the same objects, bad lines are named."""

from __future__ import annotations

import gzip
import itertools
from pathlib import Path

import numpy as np
import pytest

from safepredict._jsonl import append_jsonl, iter_jsonl, iter_lines, read_jsonl
from safepredict.exceptions import InputSchemaError


def _rows(n: int) -> list[dict[str, object]]:
    rng = np.random.default_rng(0)
    return [{"i": i, "x": float(rng.normal()), "s": "é" * (i % 3)} for i in range(n)]


def test_gzip_and_plain_files_read_the_same(tmp_path: Path) -> None:
    rows = _rows(500)
    plain = tmp_path / "log.jsonl"
    append_jsonl(plain, rows, fsync=False)
    packed = tmp_path / "log.jsonl.gz"
    packed.write_bytes(gzip.compress(plain.read_bytes()))
    assert read_jsonl(plain) == rows
    assert read_jsonl(packed) == rows
    assert [n for n, _ in iter_jsonl(packed)] == list(range(1, 501))


def test_progress_reports_bytes_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "log.jsonl.gz"
    with gzip.open(path, "wb") as fh:
        fh.write(b'{"a": 1}\n' * 70_000)  # more than PROGRESS_EVERY lines
    calls: list[tuple[int, int]] = []
    n = sum(1 for _ in iter_lines(path, lambda done, size: calls.append((done, size))))
    assert n == 70_000
    size = path.stat().st_size
    assert calls[-1] == (size, size)
    assert len(calls) >= 2
    assert all(a <= b for (a, _), (b, _) in itertools.pairwise(calls))


def test_bad_lines_raise_or_are_collected(tmp_path: Path) -> None:
    path = tmp_path / "mixed.jsonl"
    path.write_text('{"a": 1}\n\nnot json\n[1, 2]\n{"b": 2}\n', encoding="utf-8")
    bad: list[str] = []
    assert list(iter_jsonl(path, bad=bad)) == [(1, {"a": 1}), (5, {"b": 2})]
    assert [b.split(":")[0] for b in bad] == ["line 3", "line 4"]
    assert bad[1] == "line 4: not a JSON object"
    with pytest.raises(InputSchemaError, match=r"line 3 is not a JSON object") as info:
        read_jsonl(path)
    assert info.value.problems[0].startswith("line 3: ")


def test_a_missing_file_reads_as_empty(tmp_path: Path) -> None:
    assert read_jsonl(tmp_path / "absent.jsonl") == []
