"""
A remote call with its timeout: the resource a state owns.

Design constraints, and how they are met:

* *One timer per call.*  Deadline and idle timeout share a single
  ``IDelayedCall`` armed for whichever is due first; 100,000 concurrent calls
  are 100,000 delayed calls, not 200,000.
* *Progress must be cheap* (it happens per body chunk, 5 ms apart in a
  fast stream, and every gap is learned: merging close events would starve
  the model of exactly the fast streams).  `GuardedCall.progress` only stores a
  timestamp and adds the gap to two histograms; it never touches the
  reactor.  ``IDelayedCall.reset()`` would re-sort the reactor's timer heap on
  every chunk.  Instead, when the timer fires it re-checks the silence since
  the last progress and, if the call is still alive, re-arms for the time
  remaining: one reactor operation per idle period, not per chunk.
* *Nothing after the end.*  Exactly one of result, failure, timeout or
  cancellation wins; the others are suppressed, so no input reaches the
  machine after the state that started the call has been left.
* *A stall is not a latency.*  A call given up at its limit is counted in
  the stall population and in its peer's health; a call its caller gave up
  is a censored live observation (see ``_estimators``).
* *Cancelling is releasing.*  Timing out or releasing cancels the Deferred
  (so the request or connection is really dropped) and consumes whatever
  failure that produces (``CancelledError``, ``ConnectingCancelledError``,
  ``DNSLookupError`` from a cancelled ``HostnameEndpoint``,
  ``ResponseNeverReceived``...): we asked for it, so it is not an
  "Unhandled error in Deferred".
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, Literal, TypeVar

from twisted.internet.defer import Deferred, fail
from twisted.python.failure import Failure

from fsmcancel.timeouts._clock import ReactorTime, Timer, call_later, seconds_of
from fsmcancel.timeouts._estimators import KeyEstimator, Limit
from fsmcancel.timeouts._health import PeerHealth
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


@dataclass(frozen=True)
class Plan:
    """
    What a call starts with: its limit before the first sign of life, the
    factor applied to its silence limits (more than 1 for a probe or an
    exploratory call) and whether it is its peer's probe.
    """

    first: Limit
    factor: float
    probe: bool


class GuardedCall(Generic[T]):
    """
    A running call and its armed timeout; created by `Timeouts.call`.

    Call `progress` whenever the call shows signs of life.  Releasing the
    call (leaving the state that owns it, or `cancel`) cancels it.
    """

    __slots__ = (
        "_cap",
        "_deadline",
        "_deferred",
        "_done",
        "_due",
        "_end",
        "_estimator",
        "_factor",
        "_first",
        "_health",
        "_idle",
        "_on_failure",
        "_on_result",
        "_on_timeout",
        "_rule",
        "_seconds",
        "_timer",
        "clock",
        "kind",
        "last",
        "peer",
        "probe",
        "progressed",
        "started",
    )

    def __init__(
        self,
        clock: ReactorTime,
        estimator: KeyEstimator,
        health: PeerHealth,
        rule: Rule,
        plan: Plan,
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
        self.probe = plan.probe
        self._estimator = estimator
        self._health = health
        self._rule = rule
        self._on_result = on_result
        self._on_failure = on_failure
        self._on_timeout = on_timeout
        self._end = end
        # One bound ``seconds`` shared by every call on a clock (passed in by
        # `Timeouts`) stays in cache; one per call is another cache miss per
        # progress event when 100,000 calls are armed.
        self._seconds = seconds_of(clock) if seconds is None else seconds
        self._idle = rule.policy in ("idle", "hedge")
        self._factor = plan.factor
        self._first = plan.first.seconds
        self._cap = math.inf
        self._done = False
        self.progressed = False
        self._timer: Timer | None = None
        self._due = 0.0
        self._deferred: Deferred[T] | None = None
        self.started = self.last = self._seconds()
        self._deadline = self.started + estimator.deadline(rule).seconds

    @property
    def done(self) -> bool:
        """True once the call completed, failed, timed out or was cancelled."""
        return self._done

    def start(self, fn: Callable[..., Deferred[T]], *args: Any) -> None:
        self._health.inflight.add(self)
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
        gap = now - self.last
        if gap <= 0 or self._done:
            return
        self.last = now
        if self.progressed:
            self._estimator.gap(gap)
            return
        # The first sign of life ends request upload and server think time,
        # not an inter-arrival gap: it teaches the first-sign limit, not the
        # gap model, and it says the peer is alive.
        self.progressed = True
        self._estimator.first_sign(gap)
        self._health.alive(now)
        # The gap model may allow less silence than the first-sign limit the
        # timer was armed for: re-arm, once per call.
        if self._timer is not None and now + self.silence_limit() < self._due:
            self._arm(self._seconds() if at is not None else now)

    def silence_limit(self) -> float:
        """
        How much silence declares a stall now: before the first sign of
        life, the limit the call started with; after it, the gap model's.
        """
        if not self.progressed:
            return min(self._first, self._cap)
        limit = self._estimator.silence_limit(self._rule, True).seconds
        return min(limit * self._factor if self._factor != 1.0 else limit, self._cap)

    def tighten(self, cap: float) -> None:
        """
        Another call to this peer just stalled without a sign of life: from
        now on this one's silence is judged by at most ``cap`` as well, so a
        peer that died with calls in flight has each detected no later than
        the first.
        """
        if self._done or cap >= self._cap:
            return
        self._cap = cap
        if self._timer is not None and self.last + self.silence_limit() < self._due:
            self._arm(self._seconds())

    def cancel(self) -> None:
        """Give up the call: cancel its Deferred, disarm, report nothing."""
        if self._done:
            return
        self._finish()
        now = self._seconds()
        self._estimator.cancelled(now - self.started, now - self.last if self.progressed else None)
        if self.probe:
            self._health.probing = False
        if self._deferred is not None:
            self._deferred.cancel()

    def bypassed(self, now: float) -> None:
        """
        This (cancelled) call lost a hedged race while silent past the hedge
        delay: tell its peer's health how far into its limit that silence
        went (see `PeerHealth.bypassed`).
        """
        share = (now - self.last) / self.silence_limit()
        self._health.bypassed(now, self._rule, share, silent=not self.progressed, probe=self.probe)

    # -- internals

    def _arm(self, now: float) -> None:
        due = self._deadline
        if self._idle:
            due = min(due, self.last + self.silence_limit())
        # Half an epsilon early, so float rounding of ``now + delay`` can never
        # make the timer fire after the moment it stands for.
        self._due = due
        delay = max(0.0, due - now - _EPSILON / 2)
        # Moving an armed timer sooner re-sifts it in the reactor's heap;
        # cancelling it and arming another costs twice that.
        if self._timer is None:
            self._timer = call_later(self.clock, delay, self._fire)
        else:
            self._timer.reset(delay)

    def _fire(self) -> None:
        self._timer = None
        now = self._seconds()
        if self._idle:
            limit = self.silence_limit()
            if now - self.last >= limit - _EPSILON and self.last + limit <= self._deadline:
                self._timeout("idle", limit, now)
                return
        if now >= self._deadline - _EPSILON:
            self._timeout("deadline", self._deadline - self.started, now)
            return
        self._arm(now)

    def _finish(self) -> None:
        self._done = True
        self._health.inflight.discard(self)
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timeout(self, rule: Literal["deadline", "idle"], limit: float, now: float) -> None:
        self._finish()
        waited = now - self.started
        self._estimator.stalled()
        self._health.ended(
            True, self.probe, now, self._rule, silent=not self.progressed, limit=self._first
        )
        if self._deferred is not None:
            self._deferred.cancel()
        self._end(self)
        self._on_timeout(TimedOut(self.kind, self.peer, waited, rule, limit))

    def _answered(self) -> float:
        now = self._seconds()
        if not self.progressed:  # the answer is the first sign of life
            self._estimator.first_sign(now - self.started)
            self._health.alive(now)
        elif now > self.last:
            # The silence before the answer was survived, like any gap: a
            # peer whose calls got slower shows it here first (its long
            # silences mid-stream are exactly what the old limit kills).
            self._estimator.gap(now - self.last)
        self._health.ended(False, self.probe, now, self._rule)
        return now - self.started

    def _result(self, result: T) -> None:
        if self._done:
            return
        self._finish()
        self._estimator.completed(self._answered())
        self._end(self)
        self._on_result(result)

    def _failure(self, failure: Failure) -> None:
        if self._done:
            return None  # we cancelled it: whatever it says, it is consumed
        self._finish()
        self._answered()  # an answer, if an unhappy one
        self._estimator.answered()
        self._end(self)
        self._on_failure(failure)
        return None

    def __repr__(self) -> str:
        state = "done" if self._done else "running"
        return f"<GuardedCall {self.kind} to {self.peer} {state}>"
