"""
SVG and PNG, by piping our DOT text through Graphviz's ``dot`` program.

Owns: finding and running ``dot``.  Must not touch: the DOT text itself
(``_dot``) -- anything Graphviz draws must already be in it, so the
committed ``.dot`` file says everything the pictures show.

Only these formats need Graphviz; the error for its absence names the
package to install, because "command not found" from a subprocess tells a
user nothing about which of their tools is missing.
"""

from __future__ import annotations

import shutil
import subprocess
from typing import Literal

GraphvizFormat = Literal["svg", "png"]


class GraphvizNotFound(RuntimeError):
    """
    Graphviz's ``dot`` program is not on ``PATH``, so SVG and PNG cannot be
    made.
    """

    def __init__(self) -> None:
        super().__init__(
            "SVG and PNG output need Graphviz's `dot` program, which is not on PATH. "
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


def run_dot(dot_source: str, output: GraphvizFormat) -> bytes:
    """
    Lay out ``dot_source`` with Graphviz and return the ``output`` bytes.
    """
    result = subprocess.run(
        [find_dot(), f"-T{output}"],
        input=dot_source.encode("utf-8"),
        capture_output=True,
        check=False,
    )
    if result.returncode != 0:
        message = result.stderr.decode("utf-8", "replace").strip()
        raise RuntimeError(f"Graphviz `dot` failed (exit {result.returncode}): {message}")
    return result.stdout
