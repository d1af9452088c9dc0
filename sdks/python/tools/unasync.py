"""Generates the blocking client (src/sandpit/_sync/client.py) from the asyncio client
(src/sandpit/_async/client.py), the way httpcore does: the two are the same code but for
``async``/``await`` and names, so writing it twice would only let them drift.

Usage: python tools/unasync.py [--check]   (--check: fail if the committed file is stale)
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from generated import write_or_check

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "sandpit"
SOURCE = PACKAGE / "_async" / "client.py"
TARGET = PACKAGE / "_sync" / "client.py"

# Applied in order, on whole words where a word is given.
SUBSTITUTIONS: list[tuple[str, str]] = [
    (r"\basync def\b", "def"),
    (r"\basync for\b", "for"),
    (r"\basync with\b", "with"),
    (r"\bawait ", ""),
    (r"\b__aenter__\b", "__enter__"),
    (r"\b__aexit__\b", "__exit__"),
    (r"\b__aiter__\b", "__iter__"),
    (r"\b__anext__\b", "__next__"),
    (r"\bStopAsyncIteration\b", "StopIteration"),
    (r"\baclose\b", "close"),
    (r"\baiter_bytes\b", "iter_bytes"),
    (r"\baread\b", "read"),
    (r"\bwebsockets\.asyncio\.client\b", "websockets.sync.client"),
    (r"\basyncio\b", "blocking"),
    # AsyncSandpit -> Sandpit, _AsyncOps -> _Ops, AsyncIterator -> Iterator, ...
    (r"\bAsync(?=[A-Z])", ""),
    (r"\b_Async(?=[A-Z])", "_"),
]

HEADER = (
    "# Generated from _async/client.py by tools/unasync.py; do not edit.\n"
    "# ruff: noqa\n"
    '"""The blocking client: the asyncio client (``_async/client.py``) without ``await``."""\n'
)


def render() -> str:
    text = SOURCE.read_text()
    # The source's own module docstring is about the source.
    text = text[text.index('"""', 3) + 3 :]
    for pattern, replacement in SUBSTITUTIONS:
        text = re.sub(pattern, replacement, text)
    return HEADER + text


def main() -> int:
    return write_or_check(TARGET, render(), "unasync.py")


if __name__ == "__main__":
    sys.exit(main())
