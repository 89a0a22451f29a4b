"""
``fsmcancel timeouts show`` and ``fsmcancel timeouts check``.

``show`` answers "which timeout applies here, and who set it?" by printing
every effective knob with its source.  ``check`` is for CI and deploy
scripts: exit 0 if a file is valid, 1 if it is readable but invalid, 2 if it
cannot be read at all, with the reasons on stderr.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from fsmcancel.timeouts._config import ConfigError, iter_layers, load_config, quote_key, render
from fsmcancel.timeouts._rule import label

EXIT_INVALID = 1
EXIT_UNREADABLE = 2


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``timeouts`` (with ``show`` and ``check``) on ``subparsers``."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "timeouts", help="show or check the timeout configuration"
    )
    commands = parser.add_subparsers(dest="timeouts_command", required=True, metavar="COMMAND")

    show = commands.add_parser(
        "show", help="print the effective configuration and where each value came from"
    )
    show.add_argument("--config", metavar="FILE", help="TOML file to load")
    show.add_argument("--kind", help="resolve the rule for this call kind")
    show.add_argument("--peer", help="resolve the rule for this peer")
    show.set_defaults(func=show_command)

    check = commands.add_parser(
        "check", help="validate a TOML file (exit 0, 1 invalid, 2 unreadable)"
    )
    check.add_argument("file", metavar="FILE")
    check.set_defaults(func=check_command)
    return parser


def show_command(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError as e:
        print(e, file=sys.stderr)
        return EXIT_INVALID
    except OSError as e:
        print(f"fsmcancel timeouts: cannot read {args.config}: {e.strerror}", file=sys.stderr)
        return EXIT_UNREADABLE
    kind, peer = args.kind, args.peer
    if kind is None and peer is None:
        print(f"# effective timeouts: {label(config.rule())}")
        print("[default]")
    else:
        print(f"# effective timeouts for kind={kind} peer={peer}: {label(config.rule(kind, peer))}")
    _print_rows([(k, v.value, v.source) for k, v in config.effective(kind, peer).items()])
    if kind is None and peer is None:
        for top, name, layer in iter_layers(config):
            rule = config.rule(name, None) if top == "kinds" else config.rule(None, name)
            print(f"\n[{top}.{quote_key(name)}]  # {label(rule)}")
            _print_rows([(k, v.value, v.source) for k, v in layer.items()])
    return 0


def _print_rows(rows: list[tuple[str, object, str]]) -> None:
    # Values are printed as TOML, so the output can be pasted into a file.
    shown = [(knob, _toml(knob, value), source) for knob, value, source in rows]
    width = max(len(knob) for knob, _, _ in shown)
    vwidth = max(len(text) for _, text, _ in shown)
    for knob, text, source in shown:
        print(f"{knob:<{width}} = {text:<{vwidth}}  # {source}")


def _toml(knob: str, value: object) -> str:
    text = render(knob, value)
    return text if isinstance(value, (int, float)) and text[-1].isdigit() else f'"{text}"'


def check_command(args: argparse.Namespace) -> int:
    try:
        load_config(args.file, env={})
    except OSError as e:
        print(f"fsmcancel timeouts: cannot read {args.file}: {e.strerror}", file=sys.stderr)
        return EXIT_UNREADABLE
    except ConfigError as e:
        print(f"{args.file}: {e}", file=sys.stderr)
        return EXIT_INVALID
    print(f"{args.file}: ok")
    return 0
