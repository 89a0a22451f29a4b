"""
The ``fsmcancel`` command.

Each concept registers its own subcommand, so this module only dispatches.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence


def _parser() -> argparse.ArgumentParser:
    from fsmcancel import _diagram_cli
    from fsmcancel.timeouts import _cli as timeouts_cli

    parser = argparse.ArgumentParser(
        prog="fsmcancel",
        description="Cancellable Twisted operations as Automat state machines.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    timeouts_cli.add_parser(commands)
    _diagram_cli.add_parser(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """
    Run the command line; return the exit status.

    Each subcommand's parser sets ``func``, which takes the parsed arguments
    and returns an exit status.
    """
    parser = _parser()
    args = parser.parse_args(argv)
    status: int = args.func(args)
    return status


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
