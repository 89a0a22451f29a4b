"""
Load over real sockets on 127.0.0.1: many fetches through fsmcancel
operations, against a baseline of bare Deferred-based calls to the same
servers, measured in the same run.

    python tests/benchmarks/bench_load.py [--count 10000] [--concurrency 1000] [--quick]

Four in-process servers speak the line protocol of `tests.faulty_peers`
(``GET name`` -> ``OK length`` + a 2 KiB body in 4 chunks).  Both ends of
every connection live in this process and share its one reactor thread, so
the figures are for the whole exchange, client and server.  Three runs:

1. *baseline*: `bare_fetch`, the same exchange with bare Deferreds (connect,
   read, close), no state machine, no timeouts;
2. *fsmcancel*: `fetch_machine` operations, each with a guarded connect and
   a guarded response (progress per chunk), a `Registry`, a fail-over peer;
3. *fsmcancel, faults*: as 2, with 30% of the operations cancelled at random
   moments (a fifth of them twice, forcing) and one peer going silent after
   a fifth of the run; throughput here is dominated by the stall detection
   (an idle timeout of 5-10 s, above the thundering herd's wait for a first
   byte, see tests/test_load.py), so it is shown for information only.

Each run is made twice: untraced, for throughput (operations per second,
best of ``--rounds``), then under ``tracemalloc`` for the peak of traced
memory.  ``ru_maxrss`` is the process's high-water mark after each run (it
only ever grows).  At most ``--concurrency`` calls are in flight (each
holds two descriptors here); the soft limit on open files is raised toward
the hard one if needed.

Logging is filtered at WARNING (structlog's filtering bound logger, cached).
"""

from __future__ import annotations

import argparse
import gc
import logging
import random
import resource
import sys
import time
import tracemalloc
from collections import Counter
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import structlog
from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from fsmcancel import OperationCancelled, Registry
from fsmcancel.timeouts import Timeouts
from tests.faulty_peers import (
    FaultyServer,
    Stalled,
    bare_fetch,
    body_for,
    drive,
    fast_timeouts,
    fetch,
    raise_fd_limit,
    stop_all,
)
from tests.reactor_util import Snapshot, iterate_until, run_until, warm_up

SIZE = 2048

structlog.configure(
    wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING),
    cache_logger_on_first_use=True,
)

Start = Callable[[int], Deferred[str]]


def label(outcome: object, name: str) -> str:
    if outcome == body_for(name, SIZE):
        return "ok"
    if isinstance(outcome, Failure):
        if outcome.check(OperationCancelled):
            return "cancelled"
        if outcome.check(Stalled):
            return "stalled"
        return f"failed: {outcome.type.__name__}"  # type: ignore[union-attr]
    return "wrong body"


def baseline(servers: list[FaultyServer]) -> Start:
    def start(i: int) -> Deferred[str]:
        name = f"item-{i}"
        return bare_fetch(servers[i % len(servers)].peer(), name).addBoth(label, name)

    return start


def operations(servers: list[FaultyServer], timeouts: Timeouts, registry: Registry) -> Start:
    def start(i: int) -> Deferred[str]:
        name = f"item-{i}"
        n = len(servers)
        peers = [servers[i % n].peer(), servers[(i + 1) % n].peer()]
        op = fetch(name, peers, timeouts, registry=registry)
        return op.completion.addBoth(label, name)

    return start


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


class Bench:
    def __init__(self, count: int, concurrency: int) -> None:
        self.count = count
        self.concurrency = concurrency

    def servers(self) -> list[FaultyServer]:
        return [
            FaultyServer("healthy", size=SIZE, chunks=4, interval=0.0).listen() for _ in range(4)
        ]

    def once(
        self, make: Callable[[list[FaultyServer]], Start], faults: bool, traced: bool
    ) -> tuple[float, Counter[str], int]:
        """One run: (seconds, outcomes, traced peak bytes or 0)."""
        snapshot = Snapshot()
        servers = self.servers()
        cancels: dict[int, tuple[float, int]] = {}
        if faults:
            rng = random.Random(7)
            for i in range(self.count):
                if rng.random() < 0.3:
                    cancels[i] = (rng.uniform(0.0, 1.0), 2 if rng.random() < 0.2 else 1)
            servers[-1].silent_after = self.count // 4 // 5
        start = make(servers)
        gc.collect()
        if traced:
            tracemalloc.start()
            tracemalloc.reset_peak()
            before = tracemalloc.get_traced_memory()[0]
        result = drive(
            self.count, start, concurrency=self.concurrency, cancels=cancels, timeout=600
        )
        peak = 0
        if traced:
            peak = tracemalloc.get_traced_memory()[1] - before
            tracemalloc.stop()
        assert result.fired == [1] * self.count, "a completion fired more than once"
        iterate_until(lambda: all(s.open == 0 for s in servers), 30)
        run_until(stop_all(servers))
        snapshot.assert_clean(30)
        return result.elapsed, Counter(result.labels), peak

    def measure(
        self, title: str, make: Callable[[list[FaultyServer]], Start], faults: bool, rounds: int
    ) -> float:
        times = []
        outcomes: Counter[str] = Counter()
        for _ in range(rounds):
            elapsed, outcomes, _ = self.once(make, faults, traced=False)
            times.append(elapsed)
        best = min(times)
        _, _, peak = self.once(make, faults, traced=True)
        rate = self.count / best
        print(
            f"{title:<22} {rate:>9,.0f} ops/s  (best of {rounds}: {best:.2f}s)  "
            f"traced peak {peak / 1e6:6.1f} MB ({peak / self.concurrency / 1e3:.1f} kB per "
            f"call in flight)  ru_maxrss {maxrss_mb():.0f} MB  outcomes {dict(outcomes)}"
        )
        return rate


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--count", type=int, default=10_000)
    p.add_argument("--concurrency", type=int, default=1000)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--quick", action="store_true", help="1,000 calls, one round")
    args = p.parse_args()
    if args.quick:
        args.count, args.rounds = 1000, 1
    soft = raise_fd_limit(2 * args.concurrency + 200)
    concurrency = min(args.concurrency, (soft - 200) // 2)
    warm_up()
    print(
        f"{args.count:,} calls, at most {concurrency:,} in flight, 4 servers, "
        f"{SIZE} B bodies in 4 chunks; RLIMIT_NOFILE soft {soft}; Python {sys.version.split()[0]}"
    )
    bench = Bench(args.count, concurrency)

    def fsm(servers: list[FaultyServer]) -> Start:
        # As in tests/test_load.py: the idle floor must exceed the wait of
        # the last of 1,000 calls started at once for its first byte.
        timeouts = fast_timeouts(idle_initial="6s", idle_min="5s", idle_max="10s", connect="10s")
        return operations(servers, timeouts, registry)

    registry = Registry()
    base = bench.measure("baseline (Deferreds)", baseline, False, args.rounds)
    ours = bench.measure("fsmcancel", fsm, False, args.rounds)
    bench.measure("fsmcancel, faults", fsm, True, 1)
    assert len(registry) == 0, registry.describe()
    print(
        f"fsmcancel throughput / baseline: {ours / base:.2f}  (per call: {base / ours:.2f}x time)"
    )
    return 0


if __name__ == "__main__":
    started = time.monotonic()
    code = main()
    print(f"total {time.monotonic() - started:.0f}s")
    sys.exit(code)
