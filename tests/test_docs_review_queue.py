"""docs/review-queue.md: its python blocks run as written, in order, in one namespace."""

import re
from pathlib import Path

PAGE = Path(__file__).resolve().parents[1] / "docs" / "review-queue.md"


def test_review_queue_page_runs() -> None:
    blocks = re.findall(r"```python\n(.*?)```", PAGE.read_text(encoding="utf-8"), re.S)
    assert len(blocks) >= 4
    namespace: dict[str, object] = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"{PAGE}:block{i}", "exec"), namespace)
    assert namespace["full"].calibration_size_ > 0  # type: ignore[attr-defined]
