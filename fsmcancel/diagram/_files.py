"""
Diagram files on disk: safe unique names, writing, and comparing.

Files are written and compared as UTF-8 with ``\\n`` line ends, and a file
is only rewritten when its text changes, so regenerating diagrams never
touches files (or their mtimes) that are already right.  Comparison ignores
``\\r\\n`` versus ``\\n`` so that a Windows checkout with ``autocrlf`` does not
look stale.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path


def file_stems(names: Sequence[str]) -> list[str]:
    """
    A filesystem-safe, unique stem for each machine name, in order.

    Anything but letters, digits, ``.``, ``_`` and ``-`` becomes ``_``;
    uniqueness is case-insensitive (macOS and Windows filesystems are), and
    a later clash gets ``-2``, ``-3``...
    """
    stems: list[str] = []
    taken: set[str] = set()
    for name in names:
        base = re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "machine"
        stem, n = base, 1
        while stem.lower() in taken:
            n += 1
            stem = f"{base}-{n}"
        taken.add(stem.lower())
        stems.append(stem)
    return stems


def _normalise(text: str) -> str:
    return text.replace("\r\n", "\n")


def write_if_changed(path: Path, text: str) -> bool:
    """
    Write ``text`` to ``path`` unless it already holds it; say if it wrote.
    """
    if path.is_file() and _normalise(path.read_text(encoding="utf-8")) == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8", newline="\n")
    return True


def compare(path: Path, text: str) -> str | None:
    """
    ``None`` if ``path`` holds ``text``, else why not (``missing``,
    ``differs``).  Reads only.
    """
    if not path.is_file():
        return "missing"
    try:
        current = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError:
        return "differs"
    return None if _normalise(current) == text else "differs"
