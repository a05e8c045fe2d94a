"""The code blocks of README.md and of the documentation's pages (docs/*.md), for the tests that run them."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def code_block(page: str, marker: str) -> str:
    """The one Python or bash block of ``page`` (a path from the repository root, e.g. ``docs/data.md``)
    whose text holds ``marker``. A block a page includes from README.md (``--8<--``) is README's."""
    text = (ROOT / page).read_text(encoding="utf-8")
    [block] = [b for b in re.findall(r"```(?:python|bash)\n(.*?)```", text, re.S) if marker in b]
    return block
