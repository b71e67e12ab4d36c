"""The examples in docs/ run: every ```python block of a page, in order, in one namespace."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).parent.parent / "docs"
EXECUTED = ["operations.md"]


@pytest.mark.parametrize("page", EXECUTED)
def test_python_examples_run(page, tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", (DOCS / page).read_text(), flags=re.DOTALL)
    assert blocks, f"{page} has no examples"
    namespace: dict = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"{page}[block {i}]", "exec"), namespace)  # noqa: S102
