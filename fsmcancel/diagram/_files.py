"""
Diagram files on disk: safe unique names, writing, and comparing.

Owns: file names and bytes on disk.  Must not touch: what goes in a file
(``_render`` makes the texts) or which files a command asks for (``_cli``).

Text files are written and compared as UTF-8 with ``\\n`` line ends, and a
file is only rewritten when its content changes, so regenerating diagrams
never touches files (or their mtimes) that are already right.  Comparison
ignores ``\\r\\n`` versus ``\\n`` in text so that a Windows checkout with
``autocrlf`` does not look stale; binary files (PNG) compare byte for byte.
A file is written to a temporary name beside it and renamed into place, so
an interrupted run never leaves a half-written diagram that looks current.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

#: A diagram file's content: text, or bytes for PNG.
Content = str | bytes


def safe_stem(name: str) -> str:
    """
    A filesystem-safe file stem for a machine name: anything but letters,
    digits, ``.``, ``_`` and ``-`` becomes ``_``.
    """
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("._") or "machine"


def file_stems(names: Sequence[str]) -> list[str]:
    """
    A filesystem-safe, unique stem for each machine name, in order.

    Uniqueness is case-insensitive (macOS and Windows filesystems are), and
    a later clash gets ``-2``, ``-3``...
    """
    stems: list[str] = []
    taken: set[str] = set()
    for name in names:
        base = safe_stem(name)
        stem, n = base, 1
        while stem.lower() in taken:
            n += 1
            stem = f"{base}-{n}"
        taken.add(stem.lower())
        stems.append(stem)
    return stems


def _encode(content: Content) -> bytes:
    return content if isinstance(content, bytes) else content.encode("utf-8")


def _same(path: Path, content: Content) -> bool:
    current = path.read_bytes()
    if isinstance(content, bytes):
        return current == content
    return current.replace(b"\r\n", b"\n") == _encode(content)


def write_if_changed(path: Path, content: Content) -> bool:
    """
    Write ``content`` to ``path`` unless it already holds it; say if it
    wrote.
    """
    if path.is_file() and _same(path, content):
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    # mkstemp makes the file private (0600); a diagram is meant to be read.
    mode = path.stat().st_mode & 0o777 if path.is_file() else 0o644
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as file:
            file.write(_encode(content))
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
    return True


def compare(path: Path, content: Content) -> str | None:
    """
    ``None`` if ``path`` holds ``content``, else why not (``missing``,
    ``differs``).  Reads only.
    """
    if not path.is_file():
        return "missing"
    return None if _same(path, content) else "differs"


def write_diagrams(files: Mapping[Path, Content]) -> list[Path]:
    """
    Write ``files``, creating directories; return the paths that changed.
    """
    return [path for path, content in files.items() if write_if_changed(path, content)]


def stale_diagrams(files: Mapping[Path, Content]) -> list[tuple[Path, str]]:
    """
    ``(path, "missing" | "differs")`` for every file on disk that does not
    match ``files``.  Writes nothing.
    """
    problems = [(path, compare(path, content)) for path, content in files.items()]
    return [(path, problem) for path, problem in problems if problem is not None]
