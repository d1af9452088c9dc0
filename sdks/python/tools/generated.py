"""What the generators of this folder share: write the file, or with ``--check`` fail when the
committed one differs from what would be written."""

from __future__ import annotations

import sys
from pathlib import Path


def write_or_check(target: Path, text: str, generator: str) -> int:
    """The exit status of a generator run (``--check`` in ``sys.argv``: compare only)."""
    if "--check" in sys.argv:
        if not target.exists() or target.read_text() != text:
            print(f"{target} is stale: run python tools/{generator}", file=sys.stderr)
            return 1
        return 0
    target.write_text(text)
    return 0
