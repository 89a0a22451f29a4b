"""
The share finder on fsmcancel against the same orchestration in plain
Twisted (`share_finder_plain`), side by side: lines of orchestration code,
and completion time on the same cluster.

    python tests/benchmarks/bench_share_finder.py [--runs 7] [--shares 16] [--timeouts FILE]

**Lines.**  `code_lines` counts, in ``examples/share_machines.py`` and in
``tests/benchmarks/share_finder_plain.py``, every line that holds code:
not blank, not only a comment, not part of a docstring; imports, type
annotations and declarations count.  Both files are formatted by ``ruff
format`` (line length 100) and hold the orchestration only: the wire
protocol (`examples.share_protocol`), the statistics and errors
(`examples.share_report`) and the command line (`examples.share_finder`)
are shared, or left out of both.

**Time.**  Each run starts a fresh cluster (`examples.share_cluster`, the
same seed, so every run sees the same server behaviour) with healthy
servers, a silent one, one that stalls mid-body on every GET, one slow but
alive, and one each that resets, sends a short body, garbage, a long body
or refuses; then one finder, with fresh timeouts (the shipped
``share_timeouts.toml`` unless ``--timeouts``), as a fresh process would
be.  Time is from the start to the outcome with every connection closed.
Runs alternate between the two; the median, min and max are printed, and
each run's file is checked.
"""

from __future__ import annotations

import argparse
import ast
import io
import statistics
import sys
import time
import tokenize
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from twisted.internet import reactor as _reactor  # noqa: E402
from twisted.internet.defer import Deferred  # noqa: E402

from examples.share_cluster import file_bytes, running, server_spec  # noqa: E402
from examples.share_machines import TIMEOUTS, Search, share_finder  # noqa: E402
from examples.share_protocol import Connections  # noqa: E402
from examples.share_report import Found  # noqa: E402
from fsmcancel.timeouts import Timeouts, load_config  # noqa: E402
from tests.benchmarks.share_finder_plain import PlainFinder  # noqa: E402

reactor: Any = _reactor
SI = "bench"
MACHINES = ROOT / "examples" / "share_machines.py"
PLAIN = ROOT / "tests" / "benchmarks" / "share_finder_plain.py"


def code_lines(path: Path) -> int:
    """Lines holding code: not blank, not only comments, not docstrings."""
    source = path.read_text()
    docstrings: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            first = node.body[0] if node.body else None
            if (
                isinstance(first, ast.Expr)
                and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str)
            ):
                docstrings.update(range(first.lineno, (first.end_lineno or first.lineno) + 1))
    skip = {tokenize.COMMENT, tokenize.NL, tokenize.NEWLINE, tokenize.INDENT, tokenize.DEDENT}
    skip |= {tokenize.ENDMARKER, tokenize.ENCODING}
    lines: set[int] = set()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type not in skip:
            lines.update(range(token.start[0], token.end[0] + 1))
    return len(lines - docstrings)


def cluster_specs(k: int, healthy: bool = False) -> list[str]:
    if healthy:
        return ["healthy", "healthy@0.01", "healthy@0.02", "healthy@0.03"]
    half = k // 2
    return [
        f"healthy:0-{half - 1}",
        f"healthy:{half}-{k - 1}@0.05",
        "healthy:all@0.1",
        "silent",
        f"stall:0-{k - 1}",
        f"slow:{half}-{k - 1}",
        "reset",
        "short",
        "garbage",
        "long",
        "none",
    ]


def with_fsmcancel(search: Search) -> Deferred[Any]:
    op = share_finder(search, clock=reactor)
    op.inputs.start()
    return op.completion


def with_plain(search: Search) -> Deferred[Any]:
    finder = PlainFinder(
        search.si, search.k, search.servers, search.concurrency, search.timeouts,
        search.connect, reactor,
    )  # fmt: skip
    finder.start()

    async def outcome() -> Found:
        await finder.closed  # done fires after it, except when cancelled
        return await finder.done

    return Deferred.fromCoroutine(outcome())


async def one_run(
    run: Callable[[Search], Deferred[Any]], k: int, timeouts: Path, healthy: bool
) -> tuple[float, int]:
    specs = [server_spec(s) for s in cluster_specs(k, healthy)]
    with running(SI, k, specs, seed=3) as cluster:
        connections = Connections(reactor, SI, k)
        config = load_config(timeouts, env={})
        search = Search(SI, k, cluster.addresses, 10, Timeouts(config), connections)
        started = time.monotonic()
        found = await run(search)
        took = time.monotonic() - started
    if not isinstance(found, Found) or found.data != file_bytes(SI, k):
        raise SystemExit(f"bench: {run.__name__} did not bring back the file: {found!r}")
    return took, connections.most


async def measure(
    runs: int, k: int, timeouts: Path, healthy: bool
) -> dict[str, list[tuple[float, int]]]:
    times: dict[str, list[tuple[float, int]]] = {"fsmcancel": [], "plain Twisted": []}
    for _ in range(runs):
        times["fsmcancel"].append(await one_run(with_fsmcancel, k, timeouts, healthy))
        times["plain Twisted"].append(await one_run(with_plain, k, timeouts, healthy))
    return times


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--shares", type=int, default=16)
    p.add_argument("--timeouts", type=Path, default=TIMEOUTS)
    p.add_argument(
        "--healthy", action="store_true",
        help="four healthy servers holding every share: the orchestration's own cost",
    )  # fmt: skip
    args = p.parse_args()

    outcome: list[Any] = []
    d = Deferred.fromCoroutine(measure(args.runs, args.shares, args.timeouts, args.healthy))
    d.addBoth(outcome.append).addBoth(lambda _: reactor.stop())
    reactor.run()
    [times] = outcome
    if not isinstance(times, dict):
        times.raiseException()

    lines = {"fsmcancel": code_lines(MACHINES), "plain Twisted": code_lines(PLAIN)}
    files = {"fsmcancel": MACHINES, "plain Twisted": PLAIN}
    servers = len(cluster_specs(args.shares, args.healthy))
    kind = "healthy" if args.healthy else "faulty"
    print(f"share finder, K={args.shares}, {servers} {kind} servers, ", end="")
    print(f"{args.runs} runs each, timeouts {args.timeouts.name}")
    print(f"{'':15} {'lines':>6} {'median s':>9} {'min s':>7} {'max s':>7} {'max conns':>10}  file")
    for name, measured in times.items():
        seconds = [t for t, _ in measured]
        conns = max(c for _, c in measured)
        print(
            f"{name:15} {lines[name]:6d} {statistics.median(seconds):9.3f} {min(seconds):7.3f} "
            f"{max(seconds):7.3f} {conns:10d}  {files[name].relative_to(ROOT)}"
        )
    ratio_lines = lines["fsmcancel"] / lines["plain Twisted"]
    medians = {name: statistics.median(t for t, _ in m) for name, m in times.items()}
    ratio_time = medians["fsmcancel"] / medians["plain Twisted"]
    print(f"fsmcancel / plain: lines {ratio_lines:.2f}x, median completion time {ratio_time:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
