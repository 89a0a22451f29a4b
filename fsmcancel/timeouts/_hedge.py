"""
Hedged calls: hedge first, kill on evidence.

A silence limit that never times out a live call cannot detect a stall
faster than the slowest live calls show a sign of life (about 2 s on a WAN).
A hedge needs no verdict: once an attempt has been silent for longer than
the ``hedge.quantile`` of the silences live calls show (before their first
sign of life, or between two progress events, e.g. mid-body), the same call
goes to the next peer, and the first attempt *keeps running*.  The first
answer wins; only then are the others cancelled.  So a slow-but-alive peer's
late answer still wins (and is learned) when it comes first, and each
attempt's own kill limit (`TimedOut`) stays the conservative idle limit.

"The Tail at Scale" hedges after the p95 for ~5% extra load; Finagle and
gRPC cap the extra load with a token budget so that a slow cluster is not
hit with twice the traffic exactly when it can least take it.  Here each
hedged call of a kind deposits ``budget`` tokens and each backup withdraws
one; ``burst`` tokens are there from the start.  Backups therefore never
exceed ``burst + budget * calls``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from fsmcancel.timeouts._clock import Timer, call_later
from fsmcancel.timeouts._guard import GuardedCall, TimedOut
from fsmcancel.timeouts._rule import HedgeRule

if TYPE_CHECKING:
    from fsmcancel.timeouts._timeouts import Operation, Timeouts

T = TypeVar("T")


class HedgeBudget:
    """Tokens for backup calls of one kind."""

    __slots__ = ("backups", "balance", "calls")

    def __init__(self, rule: HedgeRule) -> None:
        self.balance = float(rule.burst)
        self.calls = 0
        self.backups = 0

    def deposit(self, rule: HedgeRule) -> None:
        self.calls += 1
        self.balance = min(self.balance + rule.budget, rule.burst + 1.0)

    def withdraw(self) -> bool:
        if self.balance < 1.0:
            return False
        self.balance -= 1.0
        self.backups += 1
        return True


class HedgedCall(Generic[T]):
    """
    One logical call spread over up to ``len(peers)`` attempts; created by
    `Timeouts.hedged`.  The first answer wins and every other attempt is
    cancelled then.  If every started attempt fails or times out, the last
    outcome is reported and the machine decides what to do next.

    ``attempts`` counts the attempts started, ``winner`` is the peer whose
    answer won, ``losers`` the peers whose attempts were cancelled because
    another won.
    """

    def __init__(
        self,
        timeouts: Timeouts,
        op: Operation,
        fn: Callable[..., Deferred[T]],
        args: tuple[Any, ...],
        kind: str,
        peers: Sequence[str],
        on_result: Callable[[T], object],
        on_failure: Callable[[Failure], object],
        on_timeout: Callable[[TimedOut], object],
    ) -> None:
        if not peers:
            raise ValueError("a hedged call needs at least one peer")
        self.kind = kind
        self.peers = tuple(peers)
        self._timeouts = timeouts
        self._op = op
        self._fn = fn
        self._args = args
        self._on_result = on_result
        self._on_failure = on_failure
        self._on_timeout = on_timeout
        self._live: list[GuardedCall[T]] = []
        self._next = 0
        self._timer: Timer | None = None
        self._hedging = False
        self._done = False
        self.attempts = 0
        self.winner: str | None = None
        self.losers: list[str] = []

    @property
    def done(self) -> bool:
        return self._done

    def start(self) -> None:
        rule = self._timeouts.rule(self.kind, self.peers[0])
        self._hedging = rule.policy == "hedge" and len(self.peers) > 1
        if self._hedging:
            self._timeouts.budget(self.kind, rule.hedge).deposit(rule.hedge)
        self._launch()
        self._arm()

    def progress(self, peer: str, at: float | None = None) -> None:
        """The attempt on ``peer`` showed a sign of life (see `GuardedCall.progress`)."""
        for call in self._live:
            if call.peer == peer:
                call.progress(at)

    def cancel(self) -> None:
        """Cancel every attempt and the pending backup; report nothing."""
        if self._done:
            return
        self._finish()

    # -- internals

    def _launch(self) -> None:
        peer = self.peers[self._next]
        self._next += 1
        self.attempts += 1
        call = self._timeouts.guard(
            self._op.clock,
            self.kind,
            peer,
            on_result=lambda result: self._result(result, peer),
            on_failure=self._failure,
            on_timeout=self._timed_out,
            end=self._ended,
        )
        self._live.append(call)
        call.start(self._fn, peer, *self._args)

    def _arm(self) -> None:
        """Watch the newest live attempt for lateness (lazily, like a guard)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if not self._hedging or self._done or not self._live or self._next >= len(self.peers):
            return
        call = self._live[-1]
        delay = self._delay(call)
        now = self._op.clock.seconds()
        # Half a nanosecond early, as in the guard: float rounding must not
        # make the check run just before the moment it stands for.
        due = call.last + delay - now - 0.5e-9
        self._timer = call_later(self._op.clock, max(0.0, due), self._check)

    def _delay(self, call: GuardedCall[T]) -> float:
        rule = self._timeouts.rule(self.kind, call.peer)
        est = self._timeouts.estimator(self.kind, call.peer)
        return est.hedge_delay(rule, call.progressed).seconds

    def _check(self) -> None:
        self._timer = None
        if self._done or not self._live:
            return
        call = self._live[-1]
        if self._op.clock.seconds() - call.last >= self._delay(call) - 1e-9:
            rule = self._timeouts.rule(self.kind, self.peers[0])
            if not self._timeouts.budget(self.kind, rule.hedge).withdraw():
                return  # no budget: the attempts run to their own limits
            self._launch()
        self._arm()

    def _ended(self, call: GuardedCall[T]) -> None:
        if call in self._live:
            self._live.remove(call)
            if not self._done:
                self._arm()

    def _finish(self) -> None:
        self._done = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        live, self._live = self._live, []
        now = self._op.clock.seconds()
        for call in live:
            # A loser silent past its hedge delay is why a backup was sent:
            # its peer's health hears of it (a fresh backup that lost does not).
            late = self.winner is not None and now - call.last >= self._delay(call) - 1e-9
            call.cancel()
            if late:
                call.bypassed(now)
        if self.winner is not None:
            self.losers = [call.peer for call in live]

    def _result(self, result: T, peer: str) -> None:
        if self._done:
            return
        self.winner = peer
        self._finish()
        self._op.release(self)
        self._on_result(result)

    def _failure(self, failure: Failure) -> None:
        if self._done or self._live:
            return  # another attempt may still answer
        self._finish()
        self._op.release(self)
        self._on_failure(failure)

    def _timed_out(self, timed_out: TimedOut) -> None:
        if self._done or self._live:
            return
        self._finish()
        self._op.release(self)
        self._on_timeout(timed_out)

    def __repr__(self) -> str:
        return f"<HedgedCall {self.kind} to {', '.join(self.peers)} attempts={self.attempts}>"
