"""
``fsmcancel diagram TARGET... [--out DIR] [--format dot,mermaid,svg,png]
[--direction TB|BT|LR|RL] [--timeouts FILE] [--check]``.

Owns: the command's options, messages and exit status.  Must not touch:
finding (``_discover``), drawing (``_render``) or writing (``_files``),
which it calls in that order.

``--check`` compares DOT and Mermaid only unless ``--format`` is given:
SVG and PNG bytes depend on the Graphviz version (and fonts) of whoever
rendered them, so checking them by default would fail CI for reasons
unrelated to the code.  Exit status: 0 success, 1 stale diagrams or
SVG/PNG impossible, 2 a bad target or option.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from fsmcancel.core._spec import MachineSpec
from fsmcancel.diagram._discover import TargetError, find_machines
from fsmcancel.diagram._files import Content, stale_diagrams, write_diagrams
from fsmcancel.diagram._graphviz import GraphvizNotFound, find_dot
from fsmcancel.diagram._model import DEFAULT_DIRECTION, DIRECTIONS, TimeoutLabel
from fsmcancel.diagram._render import (
    DEFAULT_FORMATS,
    FORMATS,
    GRAPHVIZ_FORMATS,
    DiagramFormat,
    diagram_files,
)
from fsmcancel.diagram._timeout_labels import configured_label

CHECKED_BY_DEFAULT: tuple[DiagramFormat, ...] = ("dot", "mermaid")


def _formats(text: str) -> tuple[DiagramFormat, ...]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    chosen = tuple(fmt for fmt in FORMATS if fmt in names)
    unknown = sorted(set(names) - set(FORMATS))
    if unknown or not chosen:
        raise argparse.ArgumentTypeError(
            f"unknown format(s) {', '.join(unknown) or text!r}; choose from {','.join(FORMATS)}"
        )
    return chosen


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """
    Register the ``diagram`` subcommand on ``subparsers``.
    """
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "diagram",
        help="write (or --check) state diagrams of the machines in modules",
        description=(
            "Write DOT, Mermaid and SVG (or PNG) diagrams of every fsmcancel operation "
            "and Automat machine in each TARGET (a module, package or module:attribute). "
            "SVG and PNG need Graphviz's `dot` (Debian: apt-get install graphviz)."
        ),
        epilog=(
            "--check compares DOT and Mermaid only, unless --format names svg or png: "
            "their bytes differ between Graphviz versions."
        ),
    )
    parser.add_argument(
        "targets", nargs="+", metavar="TARGET", help="module or module:attribute to draw"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("diagrams"),
        metavar="DIR",
        help="output directory (default: diagrams)",
    )
    parser.add_argument(
        "--format",
        dest="formats",
        type=_formats,
        default=None,
        metavar="FORMATS",
        help=(
            f"comma-separated: {','.join(FORMATS)} (default: {','.join(DEFAULT_FORMATS)}; "
            f"with --check, {','.join(CHECKED_BY_DEFAULT)})"
        ),
    )
    parser.add_argument(
        "--direction",
        type=str.upper,
        choices=DIRECTIONS,
        default=DEFAULT_DIRECTION,
        help=f"layout direction: top to bottom, bottom to top... (default: {DEFAULT_DIRECTION})",
    )
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing; exit 1 naming every diagram file that is missing or stale",
    )
    parser.add_argument(
        "--timeouts",
        type=Path,
        default=None,
        metavar="FILE",
        help="timeout configuration (TOML) for timeout labels (default: each machine's own)",
    )
    parser.set_defaults(func=run)
    return parser


def _error(message: str) -> None:
    print(f"fsmcancel diagram: {message}", file=sys.stderr)


def _find(targets: list[str]) -> list[MachineSpec]:
    """
    The machines of every target, each once, importing from the current
    directory too: the ``fsmcancel`` console script, unlike ``python -m``,
    does not put it on ``sys.path``, and a project's own modules live there.
    """
    cwd = os.getcwd()
    added = cwd not in sys.path
    if added:
        sys.path.insert(0, cwd)
    try:
        specs = [found.spec for target in targets for found in find_machines(target)]
    finally:
        if added:
            sys.path.remove(cwd)
    # One machine reached through two targets (say, re-exported) is one file.
    return list(dict.fromkeys(specs))


def run(args: argparse.Namespace) -> int:
    """
    Carry out ``fsmcancel diagram``; return the exit status.
    """
    formats: tuple[DiagramFormat, ...] = args.formats or (
        CHECKED_BY_DEFAULT if args.check else DEFAULT_FORMATS
    )
    try:
        specs = _find(args.targets)
    except TargetError as e:
        _error(str(e))
        return 2
    status = 0
    if any(fmt in GRAPHVIZ_FORMATS for fmt in formats):
        try:
            find_dot()
        except GraphvizNotFound as e:
            _error(str(e))
            formats = tuple(fmt for fmt in formats if fmt not in GRAPHVIZ_FORMATS)
            status = 1
    label: TimeoutLabel | None = None  # each machine's own configuration
    if args.timeouts is not None:
        try:
            label = configured_label(args.timeouts)
        except Exception as e:  # whatever the config loader raises, report it plainly
            _error(f"--timeouts {args.timeouts}: {e}")
            return 2
    files = diagram_files(specs, args.out, formats, timeout_label=label, direction=args.direction)
    if args.check:
        return max(status, _check(args, files))
    for path in write_diagrams(files):
        print(f"wrote {path}")
    print(f"{len(specs)} machine(s), {len(files)} diagram file(s) in {args.out}")
    return status


def _check(args: argparse.Namespace, files: dict[Path, Content]) -> int:
    stale = stale_diagrams(files)
    for path, problem in stale:
        _error(f"{path}: {problem}")
    if not stale:
        print(f"{len(files)} diagram file(s) in {args.out} match the code")
        return 0
    command = ["fsmcancel", "diagram", *args.targets, "--out", str(args.out)]
    if args.formats:
        command += ["--format", ",".join(args.formats)]
    if args.direction != DEFAULT_DIRECTION:
        command += ["--direction", args.direction]
    if args.timeouts:
        command += ["--timeouts", str(args.timeouts)]
    _error(f"{len(stale)} diagram file(s) are stale; regenerate with: {shlex.join(command)}")
    return 1
