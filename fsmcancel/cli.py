"""
The ``fsmcancel`` command.

Each concept registers its own subcommand, so this module only dispatches.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence


def _parser() -> argparse.ArgumentParser:
    from fsmcancel._version import __version__
    from fsmcancel.diagram import _cli as diagram_cli
    from fsmcancel.timeouts import _cli as timeouts_cli

    parser = argparse.ArgumentParser(
        prog="fsmcancel",
        description="Cancellable Twisted operations as Automat state machines.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    timeouts_cli.add_parser(commands)
    diagram_cli.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """
    Run the command line; return the exit status.

    Each subcommand's parser sets ``func``, which takes the parsed arguments
    and returns an exit status.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        status: int = args.func(args)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (``fsmcancel timeouts show | head``): that is
        # not an error.  Point stdout at devnull so the interpreter's final
        # flush does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
