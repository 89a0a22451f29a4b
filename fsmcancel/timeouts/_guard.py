"""
A remote call with its timeout: the resource a state owns.

Design constraints, and how they are met:

* *One timer per call.*  Deadline and idle timeout share a single
  ``IDelayedCall`` armed for whichever is due first; 100,000 concurrent calls
  are 100,000 delayed calls, not 200,000.
* *Progress must be cheap* (it happens per body chunk).  `progress` only
  stores a timestamp and feeds the gap estimator; it never touches the
  reactor.  ``IDelayedCall.reset()`` would re-sort the reactor's timer heap on
  every chunk.  Instead, when the timer fires it re-checks the silence since
  the last progress and, if the call is still alive, re-arms for the time
  remaining: one reactor operation per idle period, not per chunk.
* *Nothing after the end.*  Exactly one of result, failure, timeout or
  cancellation wins; the others are suppressed, so no input reaches the
  machine after the state that started the call has been left.
* *Cancelling is releasing.*  Timing out or releasing cancels the Deferred
  (so the request or connection is really dropped) and consumes whatever
  failure that produces (``CancelledError``, ``ConnectingCancelledError``,
  ``DNSLookupError`` from a cancelled ``HostnameEndpoint``,
  ``ResponseNeverReceived``...): we asked for it, so it is not an
  "Unhandled error in Deferred".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from twisted.internet.defer import Deferred, fail
from twisted.python.failure import Failure

from fsmcancel.timeouts._clock import ReactorTime, Timer, call_later, seconds_of
from fsmcancel.timeouts._estimators import GAP_RESOLUTION, KeyEstimator
from fsmcancel.timeouts._rule import Rule

T = TypeVar("T")

#: Timers fire at float times; a remaining wait below this is "due now", so
#: rounding can never re-arm a timer for 1e-16 s forever.
_EPSILON = 1e-9


@dataclass(frozen=True)
class TimedOut:
    """
    What the machine receives when a guarded call is given up.

    ``rule`` is ``"idle"`` (no progress for improbably long) or
    ``"deadline"`` (the whole-call limit); ``limit`` is the timeout that
    fired and ``waited`` how long the call ran.
    """

    kind: str
    peer: str
    waited: float
    rule: Literal["deadline", "idle"]
    limit: float


class GuardedCall(Generic[T]):
    """
    A running call and its armed timeout; created by `Timeouts.call`.

    Call `progress` whenever the call shows signs of life.  Releasing the
    call (leaving the state that owns it, or `cancel`) cancels it.
    """

    __slots__ = (
        "_backoff",
        "_deadline",
        "_deferred",
        "_done",
        "_due",
        "_end",
        "_estimator",
        "_idle",
        "_last",
        "_observe_gap",
        "_on_failure",
        "_on_result",
        "_on_timeout",
        "_progressed",
        "_rule",
        "_seconds",
        "_timer",
        "clock",
        "kind",
        "peer",
        "started",
    )

    def __init__(
        self,
        clock: ReactorTime,
        estimator: KeyEstimator,
        rule: Rule,
        kind: str,
        peer: str,
        on_result: Callable[[T], object],
        on_failure: Callable[[Failure], object],
        on_timeout: Callable[[TimedOut], object],
        end: Callable[[GuardedCall[T]], object],
        seconds: Callable[[], float] | None = None,
    ) -> None:
        self.clock = clock
        self.kind = kind
        self.peer = peer
        self._estimator = estimator
        self._rule = rule
        self._on_result = on_result
        self._on_failure = on_failure
        self._on_timeout = on_timeout
        self._end = end
        # One bound ``seconds`` shared by every call on a clock (passed in by
        # `Timeouts`) stays in cache; one per call is another cache miss per
        # progress event when 100,000 calls are armed.
        self._seconds = seconds_of(clock) if seconds is None else seconds
        self._observe_gap = estimator.gaps.observe
        self._idle = rule.policy in ("idle", "hedge")
        self._done = False
        self._progressed = False
        self._timer: Timer | None = None
        self._due = 0.0
        self._deferred: Deferred[T] | None = None
        self.started = self._last = self._seconds()
        self._deadline = self.started + estimator.deadline(rule)
        # Backoff is decided when the call starts, like its deadline.
        self._backoff = estimator.backoff(rule)

    @property
    def done(self) -> bool:
        """True once the call completed, failed, timed out or was cancelled."""
        return self._done

    def start(self, fn: Callable[..., Deferred[T]], *args: Any) -> None:
        self._arm(self.started)
        try:
            d = fn(*args)
        except Exception:
            d = fail()
        self._deferred = d
        d.addCallbacks(self._result, self._failure)

    def progress(self, at: float | None = None) -> None:
        """
        The call showed a sign of life (a chunk, a PONG) now, or at ``at``
        (e.g. Foolscap's ``getDataLastReceivedAt()``), in clock seconds.
        """
        now = self._seconds() if at is None else at
        gap = now - self._last
        if gap <= 0 or self._done:
            return
        self._last = now
        if self._progressed:
            if gap >= GAP_RESOLUTION:
                self._observe_gap(gap)
        else:
            # The first progress ends request upload and server think time,
            # not an inter-arrival gap: it teaches the first-sign allowance,
            # not the gap model.
            self._progressed = True
            self._estimator.first.observe(gap)
            # The gap model may allow less silence than the first-sign
            # allowance the timer was armed for: re-arm, once per call.
            if self._timer is not None and now + self._idle_limit() < self._due:
                self._timer.cancel()
                self._arm(self._seconds() if at is not None else now)

    def cancel(self) -> None:
        """Give up the call: cancel its Deferred, disarm, report nothing."""
        if self._done:
            return
        self._finish()
        waited = self._seconds() - self.started
        self._estimator.cancelled(waited)
        if not self._progressed:
            self._estimator.first.censor(waited)
        if self._deferred is not None:
            self._deferred.cancel()

    # -- internals

    def _arm(self, now: float) -> None:
        due = self._deadline
        if self._idle:
            due = min(due, self._last + self._idle_limit())
        # Half an epsilon early, so float rounding of ``now + delay`` can never
        # make the timer fire after the moment it stands for.
        self._due = due
        self._timer = call_later(self.clock, max(0.0, due - now - _EPSILON / 2), self._fire)

    def _fire(self) -> None:
        self._timer = None
        now = self._seconds()
        if self._idle:
            limit = self._idle_limit()
            if now - self._last >= limit - _EPSILON and self._last + limit <= self._deadline:
                self._timeout("idle", limit, now)
                return
        if now >= self._deadline - _EPSILON:
            self._timeout("deadline", self._deadline - self.started, now)
            return
        self._arm(now)

    def _idle_limit(self) -> float:
        """
        How much silence is improbable now: before the first sign of life,
        the learned first-sign allowance; after it, the gap model.
        """
        if self._progressed:
            return self._estimator.idle_timeout(self._rule, self._backoff)
        return self._estimator.first_progress_timeout(self._rule, self._backoff)

    def _finish(self) -> None:
        self._done = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timeout(self, rule: Literal["deadline", "idle"], limit: float, now: float) -> None:
        self._finish()
        waited = now - self.started
        self._estimator.timed_out(waited)
        if not self._progressed:
            self._estimator.first.censor(waited)
        if self._deferred is not None:
            self._deferred.cancel()
        self._end(self)
        self._on_timeout(TimedOut(self.kind, self.peer, waited, rule, limit))

    def _result(self, result: T) -> None:
        if self._done:
            return
        self._finish()
        latency = self._seconds() - self.started
        self._estimator.completed(latency)
        if not self._progressed:
            self._estimator.first.observe(latency)
        self._end(self)
        self._on_result(result)

    def _failure(self, failure: Failure) -> None:
        if self._done:
            return None  # we cancelled it: whatever it says, it is consumed
        self._finish()
        if not self._progressed:  # an answer, if an unhappy one
            self._estimator.first.observe(self._seconds() - self.started)
        self._end(self)
        self._on_failure(failure)
        return None

    def __repr__(self) -> str:
        state = "done" if self._done else "running"
        return f"<GuardedCall {self.kind} to {self.peer} {state}>"
