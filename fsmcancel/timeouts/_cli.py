"""
``fsmcancel timeouts show`` and ``fsmcancel timeouts check``.

``show`` answers "which timeout applies here, and who set it?" by printing
every effective knob with its source; with ``--state FILE`` (what
`Timeouts.dumps` wrote) it answers "what will the next call get, and why?"
for every (kind, peer) the file knows.  ``check`` is for CI and deploy
scripts: it loads the file exactly as the program will (environment
overrides included, so it never says "ok" for a configuration the program
then refuses): exit 0 if valid, 1 if readable but invalid, 2 if it cannot
be read at all, with the reasons on stderr.

Output is plain text in whatever encoding stdout has: a terminal or pipe
that cannot show a multiplication sign or ``≤`` gets ``x`` and ``<=``, never a
traceback.
"""

from __future__ import annotations

import argparse
import difflib
import os
import sys
from typing import Any

from fsmcancel.timeouts._config import ENV_PREFIX, ConfigError, TimeoutConfig, render
from fsmcancel.timeouts._loading import iter_layers, load_config, quote_key
from fsmcancel.timeouts._rule import label

EXIT_INVALID = 1
EXIT_UNREADABLE = 2

_ASCII = str.maketrans(
    {"\u00d7": "x", "≤": "<=", "φ": "phi", "…": "...", "\u2014": "-", "\u2013": "-"}
)


def _print(text: str = "", *, file: Any = None) -> None:
    """Print ``text``, transliterated if the stream cannot encode it."""
    stream = sys.stdout if file is None else file
    encoding = getattr(stream, "encoding", None) or "ascii"
    try:
        text.encode(encoding)
    except (UnicodeEncodeError, LookupError):
        text = text.translate(_ASCII)
        try:
            text = text.encode(encoding, errors="replace").decode(encoding)
        except LookupError:
            text = text.encode("ascii", errors="replace").decode("ascii")
    print(text, file=stream)


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``timeouts`` (with ``show`` and ``check``) on ``subparsers``."""
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "timeouts", help="show or check the timeout configuration"
    )
    commands = parser.add_subparsers(dest="timeouts_command", required=True, metavar="COMMAND")

    show = commands.add_parser(
        "show",
        help="print the effective configuration and where each value came from, or (--state) "
        "what the next call of each kind to each peer will get, and why",
    )
    show.add_argument("--config", metavar="FILE", help="TOML file to load")
    show.add_argument("--state", metavar="FILE", help="a file written by Timeouts.dumps()")
    show.add_argument("--kind", help="resolve the rule for this call kind")
    show.add_argument("--peer", help="resolve the rule for this peer")
    show.set_defaults(func=show_command)

    check = commands.add_parser(
        "check",
        help="validate a TOML file as the program will load it, environment overrides "
        "included (exit 0, 1 invalid, 2 unreadable)",
    )
    check.add_argument("file", metavar="FILE")
    check.set_defaults(func=check_command)
    return parser


def _load(path: str | None) -> TimeoutConfig | int:
    try:
        return load_config(path)
    except ConfigError as e:
        _print(f"{path}: {e}" if path else str(e), file=sys.stderr)
        return EXIT_INVALID
    except OSError as e:
        _print(f"fsmcancel timeouts: cannot read {path}: {e.strerror or e}", file=sys.stderr)
        return EXIT_UNREADABLE


def _unknown_name(what: str, name: str | None, known: list[str], where: str) -> str | None:
    """
    A problem with ``--kind``/``--peer`` ``name`` if it is a likely typo of
    a name ``where`` knows; None if it is known, or plausibly just a name
    with no overrides (a note is printed then).
    """
    if name is None or name in known:
        return None
    hint = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    if hint:
        listed = ", ".join(sorted(known))
        return f"no {what} {name!r} in {where} ({what}s: {listed}); did you mean {hint[0]!r}?"
    _print(f"note: {where} says nothing about {what} {name!r}: the defaults apply", file=sys.stderr)
    return None


def show_command(args: argparse.Namespace) -> int:
    config = _load(args.config)
    if isinstance(config, int):
        return config
    if args.state is not None:
        return _show_state(args, config)
    where = args.config or "the configuration"
    for what, name, known in (
        ("kind", args.kind, list(config.kinds)),
        ("peer", args.peer, list(config.peers)),
    ):
        problem = _unknown_name(what, name, known, where)
        if problem is not None:
            _print(f"fsmcancel timeouts show: {problem}", file=sys.stderr)
            return EXIT_INVALID
    kind, peer = args.kind, args.peer
    if kind is None and peer is None:
        _print(f"# effective timeouts: {label(config.rule())}")
        _print("[default]")
    else:
        rule = label(config.rule(kind, peer))
        _print(f"# effective timeouts for kind={kind} peer={peer}: {rule}")
    _print_rows([(k, v.value, v.source) for k, v in config.effective(kind, peer).items()])
    if kind is None and peer is None:
        for top, name, layer in iter_layers(config):
            rule = label(config.rule(name, None) if top == "kinds" else config.rule(None, name))
            _print(f"\n[{top}.{quote_key(name)}]  # {rule}")
            _print_rows([(k, v.value, v.source) for k, v in layer.items()])
    return 0


def _show_state(args: argparse.Namespace, config: TimeoutConfig) -> int:
    from fsmcancel.timeouts._timeouts import Timeouts

    try:
        with open(args.state, encoding="utf-8") as f:
            text = f.read()
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        _print(f"fsmcancel timeouts: cannot read {args.state}: {reason}", file=sys.stderr)
        return EXIT_UNREADABLE
    # A fixed clock at 0: the file's health is shown as of loading it.
    timeouts = Timeouts(config, clock=_Frozen())
    try:
        timeouts.loads(text)
    except ValueError as e:
        _print(f"{args.state}: not a usable timeout state: {e}", file=sys.stderr)
        return EXIT_INVALID
    keys = timeouts.known()
    kinds = sorted({k for k, _ in keys})
    peers = sorted({p for _, p in keys})
    for what, name, known in (("kind", args.kind, kinds), ("peer", args.peer, peers)):
        problem = _unknown_name(what, name, known, args.state)
        if problem is not None:
            _print(f"fsmcancel timeouts show: {problem}", file=sys.stderr)
            return EXIT_INVALID
    chosen = [
        (k, p)
        for k in ([args.kind] if args.kind else kinds)
        for p in ([args.peer] if args.peer else sorted(p for kk, p in keys if kk == k))
    ]
    _print(f"# what the next call will get, from {args.state}")
    for kind, peer in chosen:
        for line in timeouts.explain(kind, peer).lines():
            _print(line)
    return 0


class _Frozen:
    def seconds(self) -> float:
        return 0.0

    def callLater(self, *args: Any, **kw: Any) -> Any:  # pragma: no cover - never armed
        raise AssertionError("timeouts show arms no timer")


def _print_rows(rows: list[tuple[str, object, str]]) -> None:
    # Values are printed as TOML, so the output can be pasted into a file.
    shown = [(knob, _toml(knob, value), source) for knob, value, source in rows]
    if not shown:
        return
    width = max(len(knob) for knob, _, _ in shown)
    vwidth = max(len(text) for _, text, _ in shown)
    for knob, text, source in shown:
        _print(f"{knob:<{width}} = {text:<{vwidth}}  # {source}")


def _toml(knob: str, value: object) -> str:
    text = render(knob, value)
    return text if isinstance(value, (int, float)) and text[-1].isdigit() else f'"{text}"'


def check_command(args: argparse.Namespace) -> int:
    config = _load(args.file)
    if isinstance(config, int):
        return config
    overrides = sorted(v for v in os.environ if v.upper().startswith(ENV_PREFIX))
    extra = f" (with {', '.join(overrides)} from the environment)" if overrides else ""
    _print(f"{args.file}: ok{extra}")
    return 0
