"""
SVG, by piping our DOT text through Graphviz's ``dot`` program.

Only SVG needs Graphviz; the error for its absence names the package to
install, because "command not found" from a subprocess tells a user nothing
about which of their tools is missing.
"""

from __future__ import annotations

import shutil
import subprocess


class GraphvizNotFound(RuntimeError):
    """
    Graphviz's ``dot`` program is not on ``PATH``, so SVG cannot be made.
    """

    def __init__(self) -> None:
        super().__init__(
            "SVG output needs Graphviz's `dot` program, which is not on PATH. "
            "Install Graphviz (Debian/Ubuntu: `apt-get install graphviz`; "
            "Fedora: `dnf install graphviz`; macOS: `brew install graphviz`), "
            "or choose other formats with --format dot,mermaid."
        )


def find_dot() -> str:
    """
    The path of ``dot``, or :class:`GraphvizNotFound`.
    """
    path = shutil.which("dot")
    if path is None:
        raise GraphvizNotFound()
    return path


def svg_from_dot(dot_source: str) -> str:
    """
    Lay out ``dot_source`` with Graphviz and return the SVG text.
    """
    result = subprocess.run(
        [find_dot(), "-Tsvg"],
        input=dot_source.encode("utf-8"),
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        message = result.stderr.decode("utf-8", "replace").strip()
        raise RuntimeError(f"Graphviz `dot` failed (exit {result.returncode}): {message}")
    return result.stdout.decode("utf-8")
