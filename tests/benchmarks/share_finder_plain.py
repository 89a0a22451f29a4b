"""
The share finder's orchestration in plain Twisted, for comparison with
`examples.share_machines` (``bench_share_finder.py`` counts both and runs
both on the same cluster).

The same behaviour, written as carefully as I know how without fsmcancel:
one `Attempt` per request on the wire (connect, the answer line under the
``query`` timeout kind, the body under the ``share`` kind with progress per
chunk), at most C at once, downloads ahead of queued queries, failover to
the healthiest untried holder, the end as soon as all K shares are in or
every share is in hand or can no longer be had, and on the end or a cancel every attempt
dropped and its connection waited for.  It uses the same wire protocol
(`examples.share_protocol`), statistics and errors (`examples.share_report`)
and the same adaptive timeouts (`fsmcancel.timeouts`, through
``Timeouts.guard``, which needs no operation), so that the two differ only
in how the orchestration is written.

Cancelling: ``finder.done`` is cancellable, and as Twisted does for any
Deferred whose canceller does not fire it, it fails with ``CancelledError``
at once; the connections close a reactor turn later, and ``finder.closed``
fires then (a program waits for it before the reactor stops).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, DeferredList
from twisted.python.failure import Failure

from examples.share_machines import QUERY_KIND, SHARE_KIND, Reply
from examples.share_protocol import Answer, Exchange, Holdings, Request, ShareHeader
from examples.share_report import Found, SharesUnavailable, Stats
from fsmcancel.timeouts import GuardedCall, TimedOut, Timeouts


class Attempt:
    """One request: what a ``share-request`` operation does, by hand."""

    def __init__(self, finder: PlainFinder, request: Request) -> None:
        self.finder = finder
        self.request = request
        self.stats = finder.stats[request.server]
        self.exchange = finder.connect(request)
        self.call: GuardedCall[Any] = self._guard(QUERY_KIND, self._answered)

    def start(self) -> None:
        self.stats.sent(self.request)
        self.call.start(self.exchange.answer)

    def _guard(self, kind: str, on_result: Callable[[Any], None]) -> GuardedCall[Any]:
        return self.finder.timeouts.guard(
            self.finder.clock, kind, self.request.server, on_result=on_result,
            on_failure=self._failed, on_timeout=self._stalled, end=lambda call: None,
        )  # fmt: skip

    def _answered(self, answer: Answer) -> None:
        if isinstance(answer, ShareHeader):
            self.call = self._guard(SHARE_KIND, self._end)
            self.exchange.progress = self.call.progress
            self.call.start(self.exchange.body)
        else:
            self._end(answer)

    def _failed(self, failure: Failure) -> None:
        self._end(Failure(self.stats.error(self.request, failure)))

    def _stalled(self, timed_out: TimedOut) -> None:
        silence = self.finder.clock.seconds() - self.exchange.last
        self._end(Failure(self.stats.stall(self.request, silence)))

    def _end(self, outcome: Reply | Failure) -> None:
        # Reported once the connection is closed, so the slot is really free;
        # a mistake in the bookkeeping fails the run instead of hanging it.
        closed = self.exchange.close()
        closed.addCallback(lambda _: self.finder._outcome(self.request, outcome))
        closed.addErrback(self.finder._finish)

    def stop(self) -> Deferred[None]:
        self.call.cancel()
        return self.exchange.close()


class PlainFinder:
    """
    Find and download shares 0..k-1 of ``si``; ``done`` fires with a
    `Found`, or fails with `SharesUnavailable` or ``CancelledError``.
    """

    def __init__(
        self,
        si: str,
        k: int,
        servers: list[str],
        concurrency: int,
        timeouts: Timeouts,
        connect: Callable[[Request], Exchange],
        clock: Any,
    ) -> None:
        self.si = si
        self.k = k
        self.servers = servers
        self.concurrency = concurrency
        self.timeouts = timeouts
        self.connect = connect
        self.clock = clock
        self.stats = Stats()
        self.queries = deque(Request(server) for server in servers)
        self.downloads: deque[Request] = deque()
        self.live: dict[Request, Attempt] = {}
        self.latest: dict[int, Request] = {}  # each share's last GET
        self.unanswered = set(servers)
        self.holders: dict[int, list[str]] = {}
        self.shares: dict[int, bytes] = {}
        self.sources: dict[int, str] = {}
        self.failures: dict[Request, Failure] = {}
        self.finishing = False
        self.done: Deferred[Found] = Deferred(lambda _: self.cancel())
        self.closed: Deferred[None] = Deferred()

    def start(self) -> Deferred[Found]:
        self._fill()
        return self.done

    def cancel(self, reason: str = "cancelled") -> None:
        self._finish(Failure(CancelledError(reason)))

    def _fill(self) -> None:
        while not self.finishing and len(self.live) < self.concurrency:
            waiting = self.downloads or self.queries
            if not waiting:
                return
            request = waiting.popleft()
            self.live[request] = attempt = Attempt(self, request)
            attempt.start()  # after it is live: its outcome may come at once

    def _outcome(self, request: Request, outcome: Reply | Failure) -> None:
        if self.live.pop(request, None) is None:
            return  # dropped by _finish meanwhile
        if request.share is None:
            self.unanswered.discard(request.server)
        if isinstance(outcome, Failure):
            self.failures[request] = outcome
            if request.share is not None:
                self._fetch(request.share)
        elif isinstance(outcome, Holdings):
            for n in sorted(outcome.shares):
                self.holders.setdefault(n, []).append(request.server)
                self._fetch(n)
        elif request.share is not None:
            self.shares[request.share] = outcome
            self.sources[request.share] = request.server
        missing = self._missing()
        if len(self.shares) == self.k:
            data = b"".join(self.shares[n] for n in range(self.k))
            self._finish(Found(data, self.sources))
        elif missing and len(missing) + len(self.shares) == self.k:
            self._finish(Failure(SharesUnavailable(self.si, missing, self.failures)))
        else:
            self._fill()

    def _wanted(self, n: int) -> bool:
        last = self.latest.get(n)
        return last is None or last in self.failures

    def _untried(self, n: int) -> list[str]:
        # While a share is wanted, every GET of it so far has failed.
        return [s for s in self.holders.get(n, ()) if Request(s, n) not in self.failures]

    def _fetch(self, n: int) -> None:
        holders = self._wanted(n) and self._untried(n)
        if holders:
            request = self.latest[n] = Request(self.timeouts.rank(SHARE_KIND, holders)[0], n)
            self.downloads.append(request)

    def _missing(self) -> list[int]:
        if self.unanswered:
            return []
        return [n for n in range(self.k) if self._wanted(n) and not self._untried(n)]

    def _finish(self, outcome: Found | Failure) -> None:
        if self.finishing:
            return
        self.finishing = True
        attempts, self.live = list(self.live.values()), {}
        self.downloads.clear()
        self.queries.clear()
        closing = DeferredList([attempt.stop() for attempt in attempts])
        closing.addCallback(lambda _: self._closed(outcome))

    def _closed(self, outcome: Found | Failure) -> None:
        self.closed.callback(None)
        if not self.done.called:
            if isinstance(outcome, Failure):
                self.done.errback(outcome)
            else:
                self.done.callback(outcome)
