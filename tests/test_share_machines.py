"""
The share finder's machines (`examples.share_machines`) under a
``task.Clock``, against the storage servers of `tests.share_fakes`: the cap
on connections, downloads ahead of queued queries, failover, the end of the
search in each way it can end, cancellation in every state, and (Hypothesis)
any interleaving of answers, breaks, stalls and a cancel.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from twisted.internet.defer import CancelledError
from twisted.python.failure import Failure

from examples.share_machines import Call, FindOp, share_finder, share_request
from examples.share_protocol import Request, ShareHeader
from examples.share_report import Found, ServerStats, SharesUnavailable
from fsmcancel import OperationCancelled
from fsmcancel.testing import cancel_cases
from tests.benchmarks.share_finder_plain import PlainFinder
from tests.share_fakes import World, share, world
from tests.test_core import error_of, results


def started(w: World, k: int, concurrency: int = 10) -> tuple[FindOp, list[object]]:
    op = share_finder(w.search(k, concurrency), clock=w.clock)
    out = results(op.completion)
    op.inputs.start()
    return op, out


def requests(w: World) -> list[Request]:
    return [e.request for e in w.exchanges]


def exchange(w: World, request: Request) -> Any:
    [found] = [e for e in w.exchanges if e.request == request]
    return found


# -- the cap, and who gets a freed slot -------------------------------------------------


def test_a_download_takes_the_slot_its_query_freed() -> None:
    w = world({0}, {1}, {0, 1}, {1})
    _op, out = started(w, k=2, concurrency=2)
    assert requests(w) == [Request("s0"), Request("s1")]
    exchange(w, Request("s0")).honest()
    w.clock.advance(0)  # the query's connection closes: its slot is free
    # The download the answer made possible, not the next query.
    assert requests(w)[2] == Request("s0", 0)
    assert w.sockets == 2
    while w.waiting():
        w.waiting()[0].honest()
        w.clock.advance(0)
    assert isinstance(out[0], Found) and out[0].data == share(0) + share(1)
    assert w.most == 2 and w.sockets == 0


def test_the_last_share_starts_no_query_it_would_cancel() -> None:
    w = world({0}, {0}, {0})
    _op, out = started(w, k=1, concurrency=1)
    exchange(w, Request("s0")).honest()
    w.clock.advance(0)
    get = exchange(w, Request("s0", 0))
    get.honest()
    get.honest()
    w.clock.advance(0)
    assert isinstance(out[0], Found)
    # The queries to s1 and s2 were never sent: no connection opened only
    # to be cancelled.
    assert requests(w) == [Request("s0"), Request("s0", 0)]


def test_at_most_c_connections_even_with_many_servers() -> None:
    w = world(*({n % 5, (n + 1) % 5} for n in range(12)))
    _op, out = started(w, k=5, concurrency=3)
    while not out:
        assert w.sockets <= 3
        waiting = w.waiting()
        if waiting:
            waiting[-1].honest()
        w.clock.advance(0)
    assert isinstance(out[0], Found)
    assert out[0].data == b"".join(share(n) for n in range(5))
    assert w.most == 3 and w.sockets == 0


# -- failover -----------------------------------------------------------------------------


def both_hold_share_0() -> tuple[World, FindOp, list[object]]:
    """Two servers hold the one share, and have said so: a download is on."""
    w = world({0}, {0})
    op, out = started(w, k=1)
    exchange(w, Request("s0")).honest()
    exchange(w, Request("s1")).honest()
    w.clock.advance(0)
    return w, op, out


def test_a_stalled_download_goes_to_another_holder() -> None:
    w, op, out = both_hold_share_0()
    first = w.exchanges[2]
    other = "s1" if first.request.server == "s0" else "s0"
    first.honest()  # the header
    first.chunk()
    w.clock.pump([0.01] * 100)  # silent mid-body for a second: past the share limit
    assert first.dropped and not first.open
    second = exchange(w, Request(other, 0))
    assert second.open and out == []
    second.honest()
    second.honest()
    assert isinstance(out[0], Found) and out[0].sources == {0: other}
    stats = op.core.stats[first.request.server]
    assert stats.stalls == 1 and stats.problems[0].startswith("GET 0: stalled: silent for")
    assert stats.longest_share_stall == pytest.approx(0.75, abs=0.011)  # idle.initial


def test_a_refused_download_is_asked_of_a_holder_that_answers_later() -> None:
    w = world({0}, {0})
    op, out = started(w, k=1)
    exchange(w, Request("s0")).honest()
    w.clock.advance(0)
    exchange(w, Request("s0", 0)).fail("NONE: does not hold share 0")
    w.clock.advance(0)
    assert out == [] and op.state == "finding"  # s1 has not answered: it may hold it
    exchange(w, Request("s1")).honest()
    w.clock.advance(0)
    get = exchange(w, Request("s1", 0))
    get.honest()
    get.honest()
    assert isinstance(out[0], Found) and out[0].sources == {0: "s1"}


# -- the end ------------------------------------------------------------------------------


def test_the_last_share_ends_it_and_outstanding_requests_are_closed_first() -> None:
    w = world({0}, set())
    op, out = started(w, k=1)
    exchange(w, Request("s0")).honest()
    w.clock.advance(0)
    get = exchange(w, Request("s0", 0))
    get.honest()
    get.honest()
    # s1 never answered its query: cancelled, and waited for.
    silent = exchange(w, Request("s1"))
    assert op.state == "done" and silent.dropped and silent.open and out == []
    w.clock.advance(0)
    assert isinstance(out[0], Found) and not silent.open
    assert w.clock.getDelayedCalls() == []


def test_a_share_nobody_holds_is_named_once_every_other_share_is_settled() -> None:
    w = world({0, 1}, {1, 2}, {2})
    _op, out = started(w, k=4)
    for server in ("s0", "s1", "s2"):
        exchange(w, Request(server)).honest()
        w.clock.advance(0)
    # Every server answered: nobody holds share 3, so the file cannot be
    # had; the downloads under way still settle, so that the error names
    # exactly the shares that cannot be had.
    downloads = [e for e in w.exchanges if e.request.share is not None]
    assert out == [] and [e.request.share for e in downloads] == [0, 1, 2]
    downloads[2].fail("short body: connection closed after 1 of 9 bytes")
    w.clock.advance(0)
    while w.waiting():
        w.waiting()[0].honest()
        w.clock.advance(0)
    error = error_of(out)
    assert isinstance(error, SharesUnavailable)
    assert error.missing == {3: []}
    assert "share 3: no server that answered holds it" in str(error)
    assert w.sockets == 0


def test_giving_up_names_each_holder_and_its_error() -> None:
    w, _op, out = both_hold_share_0()
    w.exchanges[2].fail("garbled answer to GET 0")
    w.clock.advance(0)
    w.exchanges[3].fail("NONE: does not hold share 0")
    w.clock.advance(0)
    error = error_of(out)
    assert isinstance(error, SharesUnavailable)
    said = dict(error.missing[0])
    assert said == {
        w.exchanges[2].request.server: "GET 0: garbled answer to GET 0",
        w.exchanges[3].request.server: "GET 0: NONE: does not hold share 0",
    }
    assert w.sockets == 0


def test_silent_servers_time_out_and_the_share_only_they_hold_is_missing() -> None:
    w = world({0}, {0, 1})
    op, out = started(w, k=2)
    exchange(w, Request("s0")).honest()
    w.clock.advance(0)
    get = exchange(w, Request("s0", 0))
    get.honest()
    get.honest()
    w.clock.pump([0.01] * 300)  # s1's query: never answered
    error = error_of(out)
    assert isinstance(error, SharesUnavailable) and error.missing == {1: []}
    assert op.core.stats["s1"].problems == ["QUERY: stalled: silent for 2.00s"]
    assert w.clock.getDelayedCalls() == []


def test_cancel_closes_every_connection_before_the_completion_fires() -> None:
    w = world({0, 1}, {0, 1}, {1})
    op, out = started(w, k=2)
    exchange(w, Request("s0")).honest()
    w.clock.advance(0)
    op.cancel("the user changed their mind")
    assert out == [] and w.sockets > 0
    w.clock.advance(0)
    error = error_of(out)
    assert isinstance(error, OperationCancelled) and error.reason == "the user changed their mind"
    assert w.sockets == 0 and w.clock.getDelayedCalls() == []


# -- cancel anywhere ------------------------------------------------------------------------


def feed_request(op: Any, name: str) -> None:
    if name == "answered":
        op.inputs.answered(ShareHeader(3))
    else:
        getattr(op.inputs, name)()


@pytest.mark.parametrize("case", cancel_cases(share_request), ids=str)
def test_cancel_a_request_anywhere(case: Any) -> None:
    w = world({0}, synchronous=True)
    search = w.search(1)

    def core() -> Call:
        request = Request("s0", 0)
        return Call(request, w.connect(request), search, ServerStats())

    # timeouts.call names its resource "<kind> call to <peer>": declared as
    # "<kind> call".
    assert isinstance(case.check(core, feed=feed_request), Failure)


@pytest.mark.parametrize("case", cancel_cases(share_finder), ids=str)
def test_cancel_the_finder_anywhere(case: Any) -> None:
    w = world({0}, {0}, synchronous=True)
    outcome = case.check(lambda: w.search(1))
    assert isinstance(outcome, Failure) and outcome.check(OperationCancelled)
    assert all(not e.open for e in w.exchanges)


# -- any interleaving -----------------------------------------------------------------------


class Interleavings(RuleBasedStateMachine):
    """
    Servers answer, break, stall and close in any order, the clock runs,
    the search may be cancelled.  Checked throughout: at most C connections
    open, never two downloads of one share at once, one completion.  At the
    end: the file is exact, or each share named missing truly could not be
    had (each of its holders failed its query or its download), and
    nothing is left open or armed.
    """

    @initialize(
        holdings=st.lists(st.sets(st.integers(0, 3), max_size=4), min_size=1, max_size=4),
        k=st.integers(1, 4),
        concurrency=st.integers(1, 3),
    )
    def setup(self, holdings: list[set[int]], k: int, concurrency: int) -> None:
        self.w = world(*holdings)
        self.k = k
        self.concurrency = concurrency
        self.cancel_search, self.out = self.start(self.w, k, concurrency)
        self.cancelled = False

    @staticmethod
    def start(w: World, k: int, concurrency: int) -> tuple[Callable[[str], None], list[object]]:
        op, out = started(w, k, concurrency)
        return op.cancel, out

    @rule(data=st.data())
    @precondition(lambda self: bool(self.w.waiting()))
    def answer_honestly(self, data: st.DataObject) -> None:
        data.draw(st.sampled_from(self.w.waiting())).honest()

    @rule(data=st.data())
    @precondition(lambda self: bool(self.w.waiting()))
    def break_a_request(self, data: st.DataObject) -> None:
        data.draw(st.sampled_from(self.w.waiting())).fail("broken")

    @rule(data=st.data())
    @precondition(lambda self: any(e.body_d for e in self.w.waiting()))
    def send_a_chunk(self, data: st.DataObject) -> None:
        data.draw(st.sampled_from([e for e in self.w.waiting() if e.body_d])).chunk()

    @rule(seconds=st.sampled_from([0.0, 0.0, 0.1, 0.5, 3.0]))
    def time_passes(self, seconds: float) -> None:
        self.w.clock.advance(seconds)

    @rule()
    def cancel(self) -> None:
        self.cancelled = True
        self.cancel_search("hypothesis")

    @invariant()
    def connections_within_the_cap(self) -> None:
        assert self.w.sockets <= self.concurrency

    @invariant()
    def one_download_per_share(self) -> None:
        live = [e.request.share for e in self.w.exchanges if e.open and not e.dropped]
        shares = [n for n in live if n is not None]
        assert len(shares) == len(set(shares))

    @invariant()
    def one_completion(self) -> None:
        assert len(self.out) <= 1

    def teardown(self) -> None:
        for _ in range(1000):
            if self.out:
                break
            waiting = self.w.waiting()
            if waiting:
                waiting[0].honest()
            self.w.clock.advance(0 if waiting else 1.0)
        self.w.clock.advance(0)
        [outcome] = self.out
        if isinstance(outcome, Found):
            assert outcome.data == b"".join(share(n) for n in range(self.k))
        else:
            assert isinstance(outcome, Failure)
            if outcome.check(CancelledError):
                assert self.cancelled
            else:
                assert isinstance(outcome.value, SharesUnavailable), outcome
                self.check_missing(outcome.value)
        assert self.w.sockets == 0
        assert [c for c in self.w.clock.getDelayedCalls() if c.active()] == []

    def check_missing(self, error: SharesUnavailable) -> None:
        asked = {e.request: e for e in self.w.exchanges}
        # Exactly the shares that could not be had are named.
        got = {e.request.share for e in self.w.exchanges if e.succeeded}
        assert set(error.missing) | got >= set(range(self.k))
        for n in error.missing:
            for server, held in self.w.holdings.items():
                query = asked.get(Request(server))
                if n in held and query is not None and query.succeeded:
                    get = asked.get(Request(server, n))
                    assert get is not None and not get.succeeded, (
                        f"share {n} named missing, but {server} said it holds it and was not asked"
                    )
                elif n in held:  # its query never succeeded: it may hold anything
                    assert query is not None and not query.open


TestInterleavings = Interleavings.TestCase
TestInterleavings.settings = settings(max_examples=200, stateful_step_count=40, deadline=None)


class PlainInterleavings(Interleavings):
    """
    The same interleavings for the plain-Twisted version the benchmark
    compares with (``tests/benchmarks/share_finder_plain.py``): a fair
    comparison needs a correct baseline.
    """

    @staticmethod
    def start(w: World, k: int, concurrency: int) -> tuple[Callable[[str], None], list[object]]:
        s = w.search(k, concurrency)
        finder = PlainFinder(s.si, k, s.servers, concurrency, s.timeouts, s.connect, w.clock)
        return finder.cancel, results(finder.start())


TestPlainInterleavings = PlainInterleavings.TestCase
TestPlainInterleavings.settings = settings(max_examples=100, stateful_step_count=40, deadline=None)
