"""
Hedged calls: the same call on a second peer once the first is late.

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
    cancelled.  If every started attempt fails or times out, the last
    outcome is reported and the machine decides what to do next.
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
        self._done = False
        self.attempts = 0

    @property
    def done(self) -> bool:
        return self._done

    def start(self) -> None:
        rule = self._timeouts.rule(self.kind, self.peers[0])
        hedging = rule.policy == "hedge" and len(self.peers) > 1
        if hedging:
            self._timeouts.budget(self.kind, rule.hedge).deposit(rule.hedge)
        self._launch()
        if hedging and not self._done:
            delay = self._timeouts.estimator(self.kind, self.peers[0]).hedge_delay(rule)
            self._timer = call_later(self._op.clock, delay, self._hedge, delay)

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
            on_result=self._result,
            on_failure=self._failure,
            on_timeout=self._timed_out,
            end=self._ended,
        )
        self._live.append(call)
        call.start(self._fn, peer, *self._args)

    def _hedge(self, delay: float) -> None:
        self._timer = None
        rule = self._timeouts.rule(self.kind, self.peers[0])
        if not self._timeouts.budget(self.kind, rule.hedge).withdraw():
            return
        self._launch()
        if self._next < len(self.peers) and not self._done:
            self._timer = call_later(self._op.clock, delay, self._hedge, delay)

    def _ended(self, call: GuardedCall[T]) -> None:
        if call in self._live:
            self._live.remove(call)

    def _finish(self) -> None:
        self._done = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        live, self._live = self._live, []
        for call in live:
            call.cancel()

    def _result(self, result: T) -> None:
        if self._done:
            return
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
