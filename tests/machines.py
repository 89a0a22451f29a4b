"""
Sample operations shared by tests, instrumented so a test can see everything.

Every resource a sample operation acquires is registered with a ``Tracker``
that the test owns:

- custom resources (``own`` with a release function) release according to a
  *mode* taken from ``Tracker.modes`` in turn: ``"sync"`` returns nothing,
  ``"raise"`` raises an ``InjectedError``, ``"async"`` returns a Deferred the
  test fires later (or never);
- watched Deferreds are created by the tracker; the test fires or fails them.
  Their canceller is logged, and with mode ``"raise"`` it fails the Deferred
  with an ``InjectedError`` instead of a plain cancellation (the way some
  Twisted APIs report a cancelled call as another error);
- timers come from ``op.call_later`` on the test's ``Clock``.

Behaviours record what outcome they gave the operation (``Tracker.outcome``)
so a test can predict the completion without re-implementing fsmcancel.

Two machines:

``TRANSFER``
    ``idle -> connecting -> transferring (data state) -> closing (cleanup)
    -> done``, with watched Deferreds, timers, ``hand_over``, ``op.release``,
    a behaviour that raises, re-entrant inputs (valid, cancel, and invalid),
    and a path to a terminal state without an outcome.

``LAYER``
    One level of a nested operation: ``idle -> running -> stopping (cleanup)
    -> done``.  ``running`` owns a child ``LAYER`` operation one level down
    (when ``depth > 0``), a custom resource and a timer; ``stopping`` waits
    for an asynchronous "bye" and owns another custom resource.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from twisted.internet.defer import Deferred
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from fsmcancel import Cancellable, Operation, OperationBuilder

RELEASE_MODES = ("sync", "raise", "async")
WATCH_MODES = ("sync", "raise")


class InjectedError(Exception):
    """
    A failure the test injected (into a release, a Deferred, a behaviour).
    """


class TransferTimeout(Exception):
    """
    A sample operation gave up waiting.
    """


@dataclass(eq=False)
class Custom:
    """
    A custom resource: something only its release function knows how to free.
    """

    name: str
    mode: str
    released: bool = False
    # For "async": the Deferred the release returned, fired by the test.
    pending: Deferred[None] | None = None
    abandoned: bool = False


@dataclass(eq=False)
class Watched:
    """
    A Deferred a sample operation watches, and what happened to it.
    """

    name: str
    mode: str
    deferred: Deferred[str]
    cancelled: bool = False


@dataclass(eq=False)
class Tracker:
    """
    Everything the sample operations acquired, and how it was released.
    """

    modes: list[str] = field(default_factory=lambda: ["sync"])
    customs: list[Custom] = field(default_factory=list)
    watched: list[Watched] = field(default_factory=list)
    # Exceptions our releases raised or failed with: each must reach a
    # completion as a cleanup error.
    raised: list[BaseException] = field(default_factory=list)
    # Every event, in order: ("acquire"|"release"|"settle"|"abandon"|..., name).
    log: list[tuple[str, str]] = field(default_factory=list)
    # The outcome the behaviours gave, last one wins (as an abort overrides).
    outcome: tuple[str, object] | None = None
    aborted: bool = False
    _next_mode: int = 0
    _count: int = 0

    def _mode(self, allowed: tuple[str, ...]) -> str:
        mode = self.modes[self._next_mode % len(self.modes)]
        self._next_mode += 1
        return mode if mode in allowed else "sync"

    def _name(self, prefix: str) -> str:
        self._count += 1
        return f"{prefix}#{self._count}"

    # -- custom resources --------------------------------------------------

    def custom(self, op: Operation[Any, Any], prefix: str) -> Custom:
        """
        Acquire a custom resource for the state being entered.
        """
        resource = Custom(self._name(prefix), self._mode(RELEASE_MODES))
        self.customs.append(resource)
        self.log.append(("acquire", resource.name))
        return op.own(resource, self._release, name=resource.name)

    def _release(self, resource: Custom) -> Deferred[None] | None:
        assert not resource.released, f"{resource.name} released twice"
        resource.released = True
        self.log.append(("release", resource.name))
        if resource.mode == "raise":
            error = InjectedError(f"release of {resource.name} failed")
            self.raised.append(error)
            raise error
        if resource.mode == "async":

            def abandon(d: Deferred[None]) -> None:
                resource.abandoned = True
                self.log.append(("abandon", resource.name))

            resource.pending = Deferred(abandon)
            return resource.pending
        return None

    def pending_releases(self) -> list[Custom]:
        return [c for c in self.customs if c.pending is not None and not c.pending.called]

    def settle(self, resource: Custom, ok: bool) -> None:
        """
        Finish an asynchronous release, successfully or not.
        """
        assert resource.pending is not None and not resource.pending.called
        self.log.append(("settle", resource.name))
        if ok:
            resource.pending.callback(None)
        else:
            error = InjectedError(f"asynchronous release of {resource.name} failed")
            self.raised.append(error)
            resource.pending.errback(Failure(error))

    # -- watched Deferreds -------------------------------------------------

    def deferred(self, prefix: str) -> Deferred[str]:
        """
        A Deferred for a behaviour to watch, fired later by the test.
        """
        name = self._name(prefix)
        mode = self._mode(WATCH_MODES)

        def canceller(d: Deferred[str]) -> None:
            entry.cancelled = True
            self.log.append(("cancel", name))
            if mode == "raise":
                error = InjectedError(f"cancelling {name} failed")
                self.raised.append(error)
                d.errback(Failure(error))

        d: Deferred[str] = Deferred(canceller)
        entry = Watched(name, mode, d)
        self.watched.append(entry)
        self.log.append(("acquire", name))
        return d

    def live_watched(self, prefix: str = "") -> list[Watched]:
        return [w for w in self.watched if not w.deferred.called and w.name.startswith(prefix)]

    # -- outcome -----------------------------------------------------------

    def record(self, kind: str, value: object) -> None:
        self.outcome = (kind, value)

    def unreleased(self) -> list[str]:
        """
        What is still held or still being released.
        """
        problems = [f"{c.name} not released" for c in self.customs if not c.released]
        problems += [
            f"{c.name} release still pending"
            for c in self.customs
            if c.pending is not None and not c.pending.called
        ]
        problems += [f"{w.name} still waiting" for w in self.watched if not w.deferred.called]
        return problems


# ---------------------------------------------------------------------------
# TRANSFER


class Transfer(Cancellable, Protocol):
    def start(self) -> None: ...
    def abandon(self) -> None: ...
    def connected(self, conn: str) -> None: ...
    def connect_failed(self, failure: Failure) -> None: ...
    def timed_out(self) -> None: ...
    def explode(self) -> None: ...
    def chunk(self, piece: str) -> None: ...
    def finish(self) -> None: ...
    def idle_timeout(self) -> None: ...
    def boom(self) -> None: ...
    def reenter(self) -> None: ...
    def reenter_cancel(self) -> None: ...
    def reenter_bad(self) -> None: ...
    def closed(self, how: str) -> None: ...
    def close_failed(self, failure: Failure) -> None: ...


@dataclass(eq=False)
class TransferCore:
    tracker: Tracker
    socket: Custom | None = None


@dataclass(eq=False)
class TransferData:
    conn: str
    chunks: list[str]
    idle_timer: Any
    buffer: Custom


TOp = Operation[Transfer, TransferCore]

CONNECT_TIMEOUT = 5.0
IDLE_TIMEOUT = 10.0
CLOSE_TIMEOUT = 3.0

_t = OperationBuilder(Transfer, TransferCore, name="transfer")


def _start_transfer(inputs: Transfer, op: TOp, conn: str) -> TransferData:
    tracker = op.core.tracker
    socket = op.core.socket
    assert socket is not None
    op.hand_over(socket)
    op.watch(tracker.deferred("chunk"), inputs.chunk)  # no on_failure: a failure aborts
    timer = op.call_later(IDLE_TIMEOUT, inputs.idle_timeout)
    return TransferData(conn, [], timer, tracker.custom(op, "buffer"))


t_idle = _t.state("idle")
t_connecting = _t.state("connecting", resources=["connect", "connect timer", "socket"])
t_transferring = _t.state(
    "transferring", _start_transfer, resources=["socket", "chunk", "idle timer", "buffer"]
)
t_closing = _t.cleanup_state("closing", resources=["close", "close timer", "shutdown"])
t_done = _t.terminal_state("done")


def _enter_closing(inputs: Transfer, op: TOp) -> None:
    tracker = op.core.tracker
    op.watch(tracker.deferred("close"), inputs.closed, inputs.close_failed)
    op.call_later(CLOSE_TIMEOUT, inputs.closed, "timer")
    tracker.custom(op, "shutdown")


t_idle.upon(Transfer.cancel).to(t_done).returns(None)
t_idle.upon(Transfer.abandon).to(t_done).returns(None)


@t_idle.upon(Transfer.start).to(t_connecting)
def _start(inputs: Transfer, op: TOp) -> None:
    tracker = op.core.tracker
    op.watch(tracker.deferred("connect"), inputs.connected, inputs.connect_failed)
    op.call_later(CONNECT_TIMEOUT, inputs.timed_out)
    op.core.socket = tracker.custom(op, "socket")


@t_connecting.upon(Transfer.connected).to(t_transferring)
def _connected(inputs: Transfer, op: TOp, conn: str) -> None:
    pass


@t_connecting.upon(Transfer.connect_failed).to(t_closing)
def _connect_failed(inputs: Transfer, op: TOp, failure: Failure) -> None:
    op.core.tracker.record("fail", failure.value)
    op.fail(failure)
    _enter_closing(inputs, op)


@t_connecting.upon(Transfer.timed_out).to(t_closing)
def _timed_out(inputs: Transfer, op: TOp) -> None:
    error = TransferTimeout("connect timed out")
    op.core.tracker.record("fail", error)
    op.fail(error)
    _enter_closing(inputs, op)


@t_connecting.upon(Transfer.explode).to(t_closing)
def _explode(inputs: Transfer, op: TOp) -> None:
    # Acquires for the new state, then fails: both states' resources must go.
    _enter_closing(inputs, op)
    error = InjectedError("explode")
    op.core.tracker.record("fail", error)
    op.core.tracker.aborted = True
    raise error


@t_connecting.upon(Transfer.cancel).to(t_closing)
def _cancel_connecting(inputs: Transfer, op: TOp, reason: str | None = None) -> None:
    _enter_closing(inputs, op)


@t_transferring.upon(Transfer.chunk).loop()
def _chunk(inputs: Transfer, op: TOp, data: TransferData, piece: str) -> None:
    data.chunks.append(piece)
    op.release(data.idle_timer)
    data.idle_timer = op.call_later(IDLE_TIMEOUT, inputs.idle_timeout)
    op.watch(op.core.tracker.deferred("chunk"), inputs.chunk)


@t_transferring.upon(Transfer.finish).to(t_closing)
def _finish(inputs: Transfer, op: TOp, data: TransferData) -> None:
    value = f"{data.conn}:{''.join(data.chunks)}"
    op.core.tracker.record("ok", value)
    op.succeed(value)
    _enter_closing(inputs, op)


@t_transferring.upon(Transfer.idle_timeout).to(t_closing)
def _idle_timeout(inputs: Transfer, op: TOp, data: TransferData) -> None:
    error = TransferTimeout("idle")
    op.core.tracker.record("fail", error)
    op.fail(error)
    _enter_closing(inputs, op)


@t_transferring.upon(Transfer.boom).loop()
def _boom(inputs: Transfer, op: TOp, data: TransferData) -> None:
    error = InjectedError("boom")
    op.core.tracker.record("fail", error)
    op.core.tracker.aborted = True
    raise error


@t_transferring.upon(Transfer.reenter).loop()
def _reenter(inputs: Transfer, op: TOp, data: TransferData) -> None:
    # Queued: run after this transition, in order.
    inputs.chunk("r")
    inputs.finish()
    assert op.state == "transferring", "a re-entrant input ran before its feeder returned"


@t_transferring.upon(Transfer.reenter_cancel).loop()
def _reenter_cancel(inputs: Transfer, op: TOp, data: TransferData) -> None:
    inputs.cancel("from inside")
    assert op.state == "transferring", "a re-entrant cancel ran before its feeder returned"


@t_transferring.upon(Transfer.reenter_bad).loop()
def _reenter_bad(inputs: Transfer, op: TOp, data: TransferData) -> None:
    # 'start' is not accepted in 'transferring': once dequeued, it fails the
    # operation (a bug in the machine), rather than raising to anyone.
    inputs.start()
    op.core.tracker.record("fail", "UnexpectedInput")
    op.core.tracker.aborted = True


@t_transferring.upon(Transfer.cancel).to(t_closing)
def _cancel_transferring(
    inputs: Transfer, op: TOp, data: TransferData, reason: str | None = None
) -> None:
    _enter_closing(inputs, op)


@t_closing.upon(Transfer.closed).to(t_done)
def _closed(inputs: Transfer, op: TOp, how: str) -> None:
    pass


@t_closing.upon(Transfer.close_failed).to(t_done)
def _close_failed(inputs: Transfer, op: TOp, failure: Failure) -> None:
    pass


TRANSFER = _t.build()

# Inputs a test may feed from outside, and which of them are there to fail.
TRANSFER_INPUTS: dict[str, Callable[[Transfer], None]] = {
    "start": lambda i: i.start(),
    "abandon": lambda i: i.abandon(),
    "connected": lambda i: i.connected("direct"),
    "timed_out": lambda i: i.timed_out(),
    "explode": lambda i: i.explode(),
    "chunk": lambda i: i.chunk("c"),
    "finish": lambda i: i.finish(),
    "boom": lambda i: i.boom(),
    "reenter": lambda i: i.reenter(),
    "reenter_cancel": lambda i: i.reenter_cancel(),
    "reenter_bad": lambda i: i.reenter_bad(),
    "closed": lambda i: i.closed("direct"),
}


# ---------------------------------------------------------------------------
# LAYER: nested operations


class Layer(Cancellable, Protocol):
    def start(self) -> None: ...
    def child_done(self, value: str) -> None: ...
    def child_failed(self, failure: Failure) -> None: ...
    def expire(self) -> None: ...
    def stopped(self, how: str) -> None: ...
    def stop_failed(self, failure: Failure) -> None: ...


@dataclass(eq=False)
class LayerCore:
    """
    ``trackers[depth]`` tracks the resources of the operation at that depth
    (0 is the innermost); ``ops[depth]`` is that operation, once started.
    """

    depth: int
    clock: Clock
    trackers: list[Tracker]
    ops: dict[int, Operation[Layer, LayerCore]]
    grace: float | None = None

    @property
    def tracker(self) -> Tracker:
        return self.trackers[self.depth]


LOp = Operation[Layer, LayerCore]
EXPIRE = 20.0
STOP_TIMEOUT = 7.0

_l = OperationBuilder(Layer, LayerCore, name="layer")
l_idle = _l.state("idle")
l_running = _l.state("running", resources=["child or work", "resource", "expiry"])
l_stopping = _l.cleanup_state("stopping", resources=["bye", "stop timer", "resource"])
l_done = _l.terminal_state("done")


def start_layer(
    depth: int,
    clock: Clock,
    trackers: list[Tracker],
    ops: dict[int, LOp],
    grace: float | None = None,
) -> LOp:
    op = LAYER(LayerCore(depth, clock, trackers, ops, grace), clock=clock, grace=grace)
    ops[depth] = op
    return op


def _enter_stopping(inputs: Layer, op: LOp) -> None:
    tracker = op.core.tracker
    op.watch(tracker.deferred("bye"), inputs.stopped, inputs.stop_failed)
    op.call_later(STOP_TIMEOUT, inputs.stopped, "timer")
    tracker.custom(op, "stop")


l_idle.upon(Layer.cancel).to(l_done).returns(None)


@l_idle.upon(Layer.start).to(l_running)
def _l_start(inputs: Layer, op: LOp) -> None:
    core = op.core
    tracker = core.tracker
    tracker.custom(op, "res")
    if core.depth > 0:
        child = start_layer(core.depth - 1, core.clock, core.trackers, core.ops, core.grace)
        op.watch(child, inputs.child_done, inputs.child_failed)
        child.inputs.start()
    else:
        op.watch(tracker.deferred("work"), inputs.child_done, inputs.child_failed)
    op.call_later(EXPIRE + core.depth, inputs.expire)


@l_running.upon(Layer.child_done).to(l_stopping)
def _l_child_done(inputs: Layer, op: LOp, value: str) -> None:
    result = f"{op.core.depth}({value})"
    op.core.tracker.record("ok", result)
    op.succeed(result)
    _enter_stopping(inputs, op)


@l_running.upon(Layer.child_failed).to(l_stopping)
def _l_child_failed(inputs: Layer, op: LOp, failure: Failure) -> None:
    op.core.tracker.record("fail", failure.value)
    op.fail(failure)
    _enter_stopping(inputs, op)


@l_running.upon(Layer.expire).to(l_stopping)
def _l_expire(inputs: Layer, op: LOp) -> None:
    error = TransferTimeout(f"layer {op.core.depth} expired")
    op.core.tracker.record("fail", error)
    op.fail(error)
    _enter_stopping(inputs, op)


@l_running.upon(Layer.cancel).to(l_stopping)
def _l_cancel(inputs: Layer, op: LOp, reason: str | None = None) -> None:
    _enter_stopping(inputs, op)


@l_stopping.upon(Layer.stopped).to(l_done)
def _l_stopped(inputs: Layer, op: LOp, how: str) -> None:
    pass


@l_stopping.upon(Layer.stop_failed).to(l_done)
def _l_stop_failed(inputs: Layer, op: LOp, failure: Failure) -> None:
    pass


LAYER = _l.build()
