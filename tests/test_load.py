"""
Load: 1,000 concurrent fetches (`tests.faulty_peers.fetch_machine`) against
four peers on 127.0.0.1, a seeded 30% of them cancelled at random moments
(a fifth of those cancelled twice, which forces), and one peer going silent
mid-run, its streams in flight freezing.

Asserted: every completion fires exactly once, with the right body, an
``OperationCancelled`` (only for the operations we cancelled), or a
`Stalled`; operations whose first peer went silent fail over to the second;
the `Registry` given to every operation is empty at the end; the process
holds no file descriptor, reactor reader or writer or delayed call it did
not hold before; traced memory returns close to where it started once
garbage is collected; nothing was logged at error level and no Deferred
failed unhandled.  It takes a few seconds; the bound is a minute.

``tests/benchmarks/bench_load.py`` is the bigger version, with figures.
"""

from __future__ import annotations

import gc
import os
import random
import tracemalloc

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from fsmcancel import OperationCancelled
from fsmcancel.timeouts import Timeouts
from tests.faulty_peers import (
    Drive,
    FaultyServer,
    Lab,
    Stalled,
    body_for,
    drive,
    fast_timeouts,
    fetch,
    raise_fd_limit,
)
from tests.reactor_util import iterate_until, open_fds, warm_up

COUNT = 1000
SEED = 20240611
CANCEL_FRACTION = 0.3
FORCE_FRACTION = 0.2
SIZE = 2048
EXPECTED = {
    "ok",
    "ok after a stall on the silent peer",
    # Not seen with these timeouts, but not wrong: a healthy peer slowed
    # down by the load itself (both ends share one thread).
    "ok after a stall on a healthy peer",
    "cancelled",
    "stalled",
}
#: What may stay allocated after the run: the timeout estimators filling
#: their windows, the reactor's tables grown to 2,000 connections.
MEMORY_TOLERANCE = 2_000_000


def labelled(
    i: int,
    servers: list[FaultyServer],
    timeouts: Timeouts,
    lab: Lab,
    silent: FaultyServer,
    planned: set[int],
) -> Deferred[str]:
    """Start fetch ``i`` (first peer ``i`` mod 4, then the next one)."""
    name = f"item-{i}"
    peers = [servers[i % len(servers)].peer(), servers[(i + 1) % len(servers)].peer()]
    op = fetch(name, peers, timeouts, registry=lab.registry)

    def label(outcome: object) -> str:
        attempts = op.core.attempts
        if outcome == body_for(name, SIZE):
            if len(attempts) == 1:
                return "ok"
            first, error = attempts[0]
            if isinstance(error, Stalled):
                which = "the silent peer" if first == silent.name else "a healthy peer"
                return f"ok after a stall on {which}"
            return f"unexpected: ok after {first}: {error!r}"
        if isinstance(outcome, Failure):
            error = outcome.value
            if isinstance(error, OperationCancelled):
                return "cancelled" if i in planned else f"unplanned cancel: {error}"
            if isinstance(error, Stalled):
                return "stalled"
            return f"unexpected: {error!r} after {attempts}"
        return f"unexpected: {outcome!r}"

    op.completion.addBoth(label)
    return op.completion


def run(
    lab: Lab,
    timeouts: Timeouts,
    count: int,
    concurrency: int,
    *,
    silent_after: int | None = None,
    cancel: bool = False,
) -> tuple[Drive, set[int]]:
    """
    Run ``count`` fetches over the lab's servers, the last of which goes
    silent after ``silent_after`` more requests; with ``cancel``, cancel a
    seeded random selection.  Returns what happened and which were to be
    cancelled.
    """
    servers = lab.servers
    silent = servers[-1]
    rng = random.Random(SEED)
    cancels: dict[int, tuple[float, int]] = {}
    if cancel:
        for i in range(count):
            if rng.random() < CANCEL_FRACTION:
                cancels[i] = (rng.uniform(0.0, 1.5), 2 if rng.random() < FORCE_FRACTION else 1)
    if silent_after is not None:
        silent.silent_after = silent.requests + silent_after
    planned = set(cancels)

    def start(i: int) -> Deferred[str]:
        return labelled(i, servers, timeouts, lab, silent, planned)

    result = drive(
        count, start, concurrency=concurrency, cancels=cancels, timeout=60, probe=count_fds
    )
    return result, planned


def count_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_thousand_concurrent_fetches_random_cancels_and_a_peer_going_silent() -> None:
    # Two descriptors per connection (both ends are in this process), and a
    # fetch that fails over holds at most one connection at a time.
    soft = raise_fd_limit(2 * COUNT + 200)
    concurrency = min(COUNT, (soft - 200) // 2)
    warm_up()  # Twisted's one reserved descriptor
    fds_before = len(open_fds())
    with Lab.open() as lab:
        for _ in range(4):
            lab.server("healthy", size=SIZE, chunks=4, interval=0.02, think=0.01)
        # Both ends of 1,000 connections share one thread, and tracemalloc
        # triples the cost of each: the last of 1,000 fetches started at once
        # gets its first byte ~2.5 s later (~0.9 s untraced).  The idle
        # timeout counts that wait too (it is learned from the 20 ms gaps
        # between chunks, so its floor is what applies): the floor must be
        # well above the herd, or healthy peers are declared stalled.
        timeouts = fast_timeouts(idle_initial="6s", idle_min="5s", idle_max="10s", connect="10s")
        # Warm up: first-use allocations (estimators, caches) are not a leak.
        warm, _ = run(lab, timeouts, 100, concurrency)
        assert set(warm.labels) == {"ok"}, set(warm.labels)

        gc.collect()
        tracemalloc.start()
        try:
            memory_before = tracemalloc.get_traced_memory()[0]
            load, planned = run(lab, timeouts, COUNT, concurrency, silent_after=120, cancel=True)
            settle = lab.finish(timeout=20)
            del timeouts
            gc.collect()
            memory_after, memory_peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        fds_after = len(open_fds())

    labels: dict[str, int] = {}
    for label in load.labels:
        labels[label] = labels.get(label, 0) + 1
    print(
        f"\n{COUNT} fetches, at most {load.max_in_flight} in flight: {load.elapsed:.2f}s "
        f"(+{settle:.2f}s to settle); outcomes {labels}; fds {fds_before} before, "
        f"{load.probe_max} at the peak, {fds_after} after; traced memory "
        f"+{(memory_after - memory_before) / 1e6:.2f} MB after gc, "
        f"peak +{(memory_peak - memory_before) / 1e6:.1f} MB"
    )
    assert load.fired == [1] * COUNT
    assert load.max_in_flight == concurrency
    unexpected = {k: v for k, v in labels.items() if k not in EXPECTED}
    assert not unexpected, unexpected
    cancelled = labels.get("cancelled", 0)
    assert 0 < cancelled <= len(planned)
    # The silent peer was detected under load, and its fetches failed over.
    assert labels.get("ok after a stall on the silent peer", 0) > 0, labels
    finished = COUNT - cancelled
    ok = sum(v for k, v in labels.items() if k.startswith("ok"))
    assert ok >= 0.9 * finished, labels
    assert load.elapsed < 60
    assert fds_after == fds_before
    assert memory_after - memory_before < MEMORY_TOLERANCE


def test_a_peer_going_silent_freezes_its_streams_in_flight() -> None:
    """What the load test's silent peer does to a fetch in the middle of a body."""
    with Lab.open() as lab:
        server = lab.server("healthy", size=SIZE, chunks=4, interval=0.2)
        op = fetch("item", [server.peer()], fast_timeouts(), registry=lab.registry)
        outcome = lab.watch(op)
        iterate_until(lambda: any(c.answered and len(c.pending) < 4 for c in server.connections))
        server.go_silent()
        iterate_until(lambda: bool(outcome))
        assert isinstance(outcome[0], Failure)
        error = outcome[0].value
        assert isinstance(error, Stalled) and 0 < error.received < SIZE
        lab.finish()
