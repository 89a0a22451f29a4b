"""
Graceful shutdown for the operations of a Twisted application.

A ``twistd``/``twist`` application stops by calling ``stopService`` on its
services, and the reactor waits for the Deferreds they return before it
shuts down.  Without help, an application has no standard way to cancel
every operation still running at that moment and to wait for their cleanup
(closing connections politely, deleting temporary files), so the reactor
tears down connections under operations that never hear about it.

`OperationService` is that help: operations are registered with
`OperationService.track`; ``stopService`` cancels each of them once, with
the reason ``"service stopping"``, and returns a Deferred that fires when
every one has completed.  A cleanup that does not finish within the grace
period is forced (``op.force(reason)``), so a peer that never answers a
polite close cannot hold the process up for ever.
"""

from __future__ import annotations

import math
from typing import Any, TypeVar, cast

import structlog
from twisted.application.service import Service
from twisted.internet.defer import Deferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from fsmcancel.core import Operation

__all__ = ["DEFAULT_GRACE", "STOPPING", "OperationService"]

OpT = TypeVar("OpT", bound=Operation[Any, Any])

#: Seconds ``stopService`` waits for cleanup before forcing what is left.
#: Shorter than the time supervisors give a process between SIGTERM and
#: SIGKILL (30 s for Kubernetes, 90 s for systemd), so forcing still happens
#: in the process, with its cleanup errors logged, rather than by SIGKILL.
DEFAULT_GRACE = 10.0

#: The reason given to every operation the service cancels.
STOPPING = "service stopping"

_LOG = structlog.get_logger("fsmcancel")


class OperationService(Service):
    """
    A service that cancels the operations tracked by it when it stops.

    Give it to a ``MultiService`` (or ``setServiceParent(application)``),
    and register each operation started under it with `track`.
    ``stopService``:

    - cancels every live tracked operation once, with the reason
      ``"service stopping"``;
    - returns a Deferred that fires (with ``None``) when every one of them
      has completed, after its cleanup, and one more reactor turn (in which
      connections aborted by the cleanup close their sockets);
    - after ``grace`` seconds, forces what is left with
      ``op.force("service stopping: grace period of N s ran out")``.

    Cancelling that Deferred forces what is left at once (a second Ctrl-C,
    say).  Outcomes are not the service's business: whoever started an
    operation still gets its completion, ``OperationCancelled`` included.

    Operations tracked once ``stopService`` has begun (a client that
    connected just now) are not refused with an exception: the caller has
    already created them, and their completion is where their end is
    reported.  They are cancelled at once with the same reason, or forced at
    once if the grace period has already run out, and a stop in progress
    waits for them too.  ``startService`` accepts operations again.

    An operation still in its initial state when the service comes to
    cancel it is cancelled a reactor turn later (``callLater(0)``): whoever
    created it may be about to start it, and a start after the cancel would
    raise ``UnexpectedInput``.  So tracking before or after starting are
    both right.

    :param grace: seconds to wait for cleanup before forcing; a finite
        number >= 0.
    :param clock: the ``IReactorTime`` that times the grace period; the
        global reactor by default.
    """

    def __init__(self, *, grace: float = DEFAULT_GRACE, clock: IReactorTime | None = None) -> None:
        if isinstance(grace, bool) or not isinstance(grace, (int, float)):
            raise TypeError(f"OperationService(grace=...) must be a number, not {grace!r}")
        if not (math.isfinite(grace) and grace >= 0):
            raise ValueError(
                f"OperationService(grace=...) must be a finite number >= 0, not {grace!r}"
            )
        if clock is None:
            from twisted.internet import reactor

            clock = cast(IReactorTime, reactor)
        #: Seconds ``stopService`` waits before forcing what is left.
        self.grace = float(grace)
        self._clock = clock
        self._live: dict[int, Operation[Any, Any]] = {}
        self._accepting = True
        # The ids a stop in progress waits for, and who waits for it.
        self._stopping: set[int] | None = None
        # The ids this service has cancelled: it never asks twice.
        self._cancelled: set[int] = set()
        self._waiters: list[Deferred[None]] = []
        self._grace_timer: IDelayedCall | None = None
        self._forcing = False

    # -- tracking ----------------------------------------------------------

    def track(self, op: OpT) -> OpT:
        """
        Make ``op`` one of the operations this service cancels when it stops;
        return it.  The service holds it until it completes.

        Once ``stopService`` has begun, ``op`` is cancelled at once, or a
        reactor turn later if it has not left its initial state (see the
        class docstring).
        """
        if not isinstance(op, Operation):
            raise TypeError(f"OperationService.track() takes an fsmcancel Operation, not {op!r}")
        if op.done or op.id in self._live:
            return op
        self._live[op.id] = op
        op.observe().addBoth(self._completed, op)
        if not self._accepting:
            if self._stopping is not None:
                self._stopping.add(op.id)
            self._stop_one(op)
        return op

    def operations(self) -> list[Operation[Any, Any]]:
        """
        The tracked operations that have not completed, oldest first.
        """
        return [op for _, op in sorted(self._live.items())]

    def _completed(self, result: object, op: Operation[Any, Any]) -> None:
        # The outcome belongs to whoever started the operation; this
        # observer only counts it out (and so consumes its own copy).
        self._live.pop(op.id, None)
        self._cancelled.discard(op.id)
        stopping = self._stopping
        if stopping is not None:
            stopping.discard(op.id)
            if not stopping:
                self._stopped()

    # -- the service -------------------------------------------------------

    def startService(self) -> None:
        """
        Start (or restart) the service: operations are accepted again.  A
        stop still in progress goes on waiting for (and forcing) only the
        operations it cancelled.
        """
        self._accepting = True
        super().startService()  # type: ignore[no-untyped-call]

    def stopService(self) -> Deferred[None]:
        """
        Cancel every tracked operation; return a Deferred that fires when all
        have completed (see the class docstring).
        """
        super().stopService()  # type: ignore[no-untyped-call]
        self._accepting = False
        live = self.operations()
        stopping = self._stopping
        if stopping is None:
            if not live:
                return succeed(None)
            stopping = self._stopping = set()
            self._forcing = False
            _LOG.info("service stopping", operations=len(live), grace=self.grace)
            self._grace_timer = self._clock.callLater(self.grace, self._grace_ran_out)
        # A stop already in progress waits for what it waited for, plus what
        # was tracked since a restart.  Ids first: a cancel may complete an
        # operation, and so the stop, at once.
        new = [op for op in live if op.id not in stopping]
        stopping.update(op.id for op in new)
        waiter: Deferred[None] = Deferred(self._stop_cancelled)
        self._waiters.append(waiter)
        for op in new:
            self._stop_one(op)
        return waiter

    def _stop_one(self, op: Operation[Any, Any], now: bool = False) -> None:
        """
        Cancel ``op`` (once), or force it once the grace period has run out.
        """
        if op.done:
            return
        if not now and op.state == op.spec.initial:
            # Not started yet: whoever created it may be about to start it,
            # and a start after the cancel would raise UnexpectedInput.  Do
            # it once the current call is over.
            self._clock.callLater(0, self._stop_one, op, True)
        elif self._forcing:
            op.force(self._forced_reason())
        elif op.id not in self._cancelled:
            self._cancelled.add(op.id)
            op.cancel(STOPPING)

    def _forced_reason(self) -> str:
        return f"{STOPPING}: grace period of {self.grace:g} s ran out"

    def _grace_ran_out(self) -> None:
        self._grace_timer = None
        self._force_all()

    def _stop_cancelled(self, waiter: Deferred[None]) -> None:
        # Whoever waits for the stop no longer wants to wait: force the rest,
        # which completes them now, so the waiter fires normally.
        self._force_all()
        if not waiter.called:
            waiter.callback(None)

    def _force_all(self) -> None:
        stopping = self._stopping
        if stopping is None:
            return
        self._forcing = True
        reason = self._forced_reason()
        for op in [self._live[i] for i in sorted(stopping) if i in self._live]:
            if op.done:  # completed by forcing another (its parent, say)
                continue
            _LOG.warning(
                "forcing operation",
                op=op.id,
                machine=op.machine,
                state=op.state,
                resources=list(op.resources),
                reason=reason,
            )
            op.force(reason)

    def _stopped(self) -> None:
        self._stopping = None
        timer, self._grace_timer = self._grace_timer, None
        if timer is not None and timer.active():
            timer.cancel()
        waiters, self._waiters = self._waiters, []
        # One more reactor turn before saying so: an aborted connection
        # (the usual release of a transport) closes its socket in a
        # callLater(0), and a reactor shutting down as soon as this fires
        # would never run it, leaving the peer to notice at process exit.
        self._clock.callLater(0, _fire, waiters)


def _fire(waiters: list[Deferred[None]]) -> None:
    for waiter in waiters:
        if not waiter.called:
            waiter.callback(None)
