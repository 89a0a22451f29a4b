"""
A running operation: one machine, the resources its states own, and exactly
one completion.

The semantics, precisely:

Completion
    ``op.completion`` fires exactly once, after the machine has reached a
    terminal state (or failed, or been forced) *and* every release has
    finished.  It fires with the value given to ``op.succeed()``, the failure
    given to ``op.fail()`` or raised by a behaviour, or an
    ``OperationCancelled``.  If releasing anything failed, a success or
    failure becomes ``CleanupFailed`` carrying both, and a cancellation
    carries the errors in ``cleanup_errors``.  Other observers get their own
    Deferred from ``op.observe()``; cancelling one of those only stops that
    observer waiting.

Cancel
    ``op.completion.cancel()``, ``op.cancel(reason)`` and the machine's
    ``cancel`` input are one request.  The first request in a running state is
    recognised there: its reason and state are recorded and the machine's own
    ``cancel`` transition runs (to a cleanup or terminal state).  A first
    request in a cleanup or terminal state changes nothing: the operation is
    already finishing with its own outcome.  Any *further* request before
    completion forces it: pending asynchronous releases are cancelled (a
    child operation being released is forced in turn), resources still held
    are released, and the completion fires at once, with the outcome already
    decided if there is one, else ``OperationCancelled(forced=True)``.
    Requests after completion do nothing.  None of them ever raises.

    Cancelling ``op.completion`` never lets Twisted fire ``CancelledError``
    before cleanup has finished: the canceller fires the completion into an
    inner Deferred that fires when cleanup is done, so a second cancel is
    forwarded there (Twisted's rule for a Deferred paused on another) and
    becomes the forcing request.

Resources
    What a behaviour acquires with ``own``/``watch``/``call_later`` belongs to
    the state being entered (or the current state, in a loop or outside a
    transition).  When the machine leaves a state, its resources are released
    in reverse order of acquisition, after the transition's behaviour has run,
    unless handed over with ``hand_over``.  A release that raises is recorded
    and logged and the others still run.

Errors in behaviours
    A behaviour that raises fails the operation: everything held is released
    and the completion fails with that exception.  The exception is not
    re-raised to whoever fed the input; the completion is where the failure
    of an operation is reported.

Inputs
    An input the current state does not accept raises ``UnexpectedInput`` to
    the caller and changes nothing (or is logged and dropped if the machine
    was built with ``unexpected="log"``).  An input fed while a transition is
    running (from a behaviour or a release) is queued and runs after it, in
    order; if a queued input turns out to be unexpected, that is a bug in the
    machine and fails the operation.
"""

from __future__ import annotations

import itertools
import logging
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Generic, NamedTuple, Protocol, TypeVar

import structlog
from automat import NoTransition
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.python.failure import Failure

from fsmcancel._errors import (
    CleanupFailed,
    OperationCancelled,
    OperationIncomplete,
    ReentrantInputError,
    UnexpectedInput,
    as_failure,
)
from fsmcancel._resources import (
    Release,
    Resource,
    default_release,
    flatten_errors,
    is_cancellation,
)

if TYPE_CHECKING:
    from fsmcancel._builder import OperationFactory
    from fsmcancel._registry import Registry
    from fsmcancel._spec import MachineSpec

I = TypeVar("I")  # noqa: E741 - the input protocol, as in Automat
C = TypeVar("C")
T = TypeVar("T")

_LOG = structlog.get_logger("fsmcancel")
_ids = itertools.count(1)
_NOTHING: Any = object()
_EMPTY: list[Resource] = []  # what a state that owned nothing leaves behind; never mutated


class TransitionRecord(NamedTuple):
    """
    One transition in ``Operation.history``: at clock time ``at``, input
    ``input`` moved the machine from ``old`` to ``new`` (equal for a loop).
    """

    at: float
    old: str
    input: str
    new: str


class ReactorTime(Protocol):
    """
    The part of ``IReactorTime`` fsmcancel uses.

    Spelled as a Protocol so that both the reactor and
    ``twisted.internet.task.Clock`` type-check without the zope plugin.
    """

    def seconds(self) -> float: ...

    def callLater(
        self, delay: float, callable: Callable[..., object], *args: object, **kw: object
    ) -> IDelayedCall: ...


def _debug_enabled() -> bool:
    """
    Is the ``fsmcancel`` logger enabled for debug events?

    Asked once per operation: even a filtered-out structlog call costs about
    a third of a transition, so per-transition events are skipped by a plain
    attribute test instead.
    """
    logger = _LOG.bind()
    check = getattr(logger, "is_enabled_for", None)
    return True if check is None else bool(check(logging.DEBUG))


class Operation(Generic[I, C]):
    """
    One run of a machine built with ``OperationBuilder``.

    Outside the machine, use ``inputs``, ``completion``, ``observe()``,
    ``cancel()`` and the introspection properties.  Behaviours receive the
    operation as their second argument and use ``own``, ``watch``,
    ``call_later``, ``hand_over``, ``release``, ``succeed`` and ``fail``.
    """

    __slots__ = (
        "__weakref__",
        "_busy",
        "_cancel_reason",
        "_cancel_requests",
        "_cancel_state",
        "_cleanup_errors",
        "_debug",
        "_done",
        "_entered_at",
        "_factory",
        "_final",
        "_finishing",
        "_forced",
        "_history",
        "_input",
        "_leaving",
        "_machine",
        "_observers",
        "_outcome",
        "_pending",
        "_queue",
        "_registry",
        "_scope",
        "_state",
        "_trace",
        "clock",
        "completion",
        "core",
        "id",
        "inputs",
    )

    def __init__(
        self,
        factory: OperationFactory[I, C],
        core: C,
        clock: ReactorTime,
        registry: Registry | None,
    ) -> None:
        self._factory = factory
        self.core: C = core
        self.clock: ReactorTime = clock
        self.id: int = next(_ids)
        self._state: str = factory.spec.initial
        self._entered_at: float = clock.seconds()
        self._scope: list[Resource] | None = None
        self._leaving: list[Resource] | None = None
        self._pending: list[tuple[Deferred[Any], Resource]] | None = None
        self._queue: (
            deque[tuple[str, Callable[..., Any] | None, tuple[Any, ...], dict[str, Any]]] | None
        )
        self._queue = None
        self._busy = False
        self._finishing = False
        self._done = False
        self._forced = False
        self._input = ""
        self._outcome: Any = _NOTHING
        self._cancel_requests = 0
        self._cancel_reason: str | None = None
        self._cancel_state: str | None = None
        self._cleanup_errors: list[Failure] | None = None
        self._observers: list[Deferred[Any]] | None = None
        self._final: Deferred[Any] | None = None
        self._debug = _debug_enabled()
        depth = 0 if registry is None else registry.history
        self._history: deque[TransitionRecord] | None = deque(maxlen=depth) if depth else None
        # One test on the hot path covers both reasons to look at a transition.
        self._trace = self._debug or self._history is not None
        self.inputs: I = factory._inputs_type(self)
        self._machine: Any = factory._automat(self)
        self.completion: Deferred[Any] = Deferred(self._completion_cancelled)
        self.completion.addCallback(self._chain_final)
        self._registry = registry
        if registry is not None:
            registry._add(self)

    # -- introspection -----------------------------------------------------

    @property
    def name(self) -> str:
        """
        ``machine#id``, the name used in logs and errors.
        """
        return f"{self._factory.name}#{self.id}"

    @property
    def machine(self) -> str:
        return self._factory.name

    @property
    def spec(self) -> MachineSpec:
        return self._factory.spec

    @property
    def state(self) -> str:
        """
        The name of the current state.
        """
        return self._state

    @property
    def time_in_state(self) -> float:
        """
        Seconds since the current state was entered, by the operation's clock.
        """
        return self.clock.seconds() - self._entered_at

    @property
    def resources(self) -> tuple[str, ...]:
        """
        What the current state holds, in acquisition order.
        """
        return tuple(r.describe() for r in self._scope or ())

    @property
    def history(self) -> tuple[TransitionRecord, ...]:
        """
        The most recent transitions, oldest first; empty unless the
        operation was created with a ``Registry(history=N)``.
        """
        return tuple(self._history or ())

    @property
    def done(self) -> bool:
        """
        Has the completion fired (or been decided and is firing)?
        """
        return self._done

    def describe(self) -> dict[str, object]:
        """
        A JSON-ready snapshot, for a debugging endpoint.
        """
        return {
            "id": self.id,
            "machine": self.machine,
            "state": self._state,
            "seconds_in_state": round(self.time_in_state, 6),
            "resources": list(self.resources),
            "pending_releases": len(self._pending or ()),
            "cancel_requested": self._cancel_requests > 0,
            "done": self._done,
        }

    def __repr__(self) -> str:
        return f"<Operation {self.name} in {self._state!r}>"

    # -- completion --------------------------------------------------------

    def observe(self) -> Deferred[Any]:
        """
        A new Deferred that fires with the operation's outcome, after cleanup.

        For everyone except the owner of ``completion``: each observer gets
        its own Deferred, so one observer's callbacks never change what
        another sees.  Cancelling it only detaches that observer (it fails
        with ``CancelledError``); the operation carries on.
        """
        if self._done:
            d: Deferred[Any] = Deferred()
            self._deliver(d)
            return d
        if self._observers is None:
            self._observers = []
        observers = self._observers
        d = Deferred(observers.remove)
        observers.append(d)
        return d

    def cancel(self, reason: str | None = None) -> None:
        """
        Ask the operation to stop; ``reason`` says who asked and why.

        Same as cancelling ``completion`` or feeding the ``cancel`` input: see
        the module docstring for what a first and a further request do.
        Never raises.
        """
        self._request_cancel(reason)

    def force(self, reason: str | None = None) -> None:
        """
        Stop waiting for cleanup: cancel pending asynchronous releases (a
        child operation being released is forced in turn), release what is
        still held, and fire the completion now, with the outcome already
        decided if there is one, else ``OperationCancelled(forced=True)``.

        A deliberate call, for a shutdown whose grace period ran out.  Never
        raises; does nothing once the operation has completed.
        """
        if self._done:
            return
        if self._cancel_requests == 0:
            self._request_cancel(reason)
        if not self._done:
            self._cancel_requests = max(self._cancel_requests, 1)
            self._request_cancel(reason)

    def _completion_cancelled(self, completion: Deferred[Any]) -> None:
        self._request_cancel(None)
        # Fire the completion ourselves so Twisted does not errback it before
        # cleanup is done; _chain_final parks it on an inner Deferred until
        # the real outcome is known.
        if not completion.called:
            completion.callback(None)

    def _chain_final(self, _: object) -> object:
        if self._done:
            return self._result()
        self._final = Deferred(self._final_cancelled)
        return self._final

    def _final_cancelled(self, final: Deferred[Any]) -> None:
        self._request_cancel(None)

    # -- acquiring resources -------------------------------------------------

    def own(self, resource: T, release: Release | None = None, *, name: str | None = None) -> T:
        """
        Make ``resource`` belong to the state being entered (or the current
        state), to be released when the machine leaves it.

        fsmcancel knows how to release a ``Deferred`` (cancel it), an
        ``IDelayedCall`` (cancel it if active), a transport (abort the
        connection) and a child ``Operation`` (cancel it and wait for its
        cleanup).  Anything else needs ``release``, a function of the resource
        that may return a Deferred.

        Owning a child operation makes this operation its owner: the child's
        completion is consumed here, and a failure of the child fails this
        operation (use ``watch`` to handle the outcome instead).
        """
        if release is None:
            if isinstance(resource, Operation):
                self.watch(resource, _ignore, name=name)
                return resource
            release = default_release(resource)
            if release is None:
                raise TypeError(
                    f"{self.name}: don't know how to release {resource!r} "
                    f"acquired in state {self._state!r}; pass release="
                )
        self._acquire(Resource(resource, release, name))
        return resource

    def watch(
        self,
        source: Deferred[T] | Operation[Any, Any],
        on_result: Callable[[T], object],
        on_failure: Callable[[Failure], object] | None = None,
        *,
        name: str | None = None,
    ) -> None:
        """
        Own ``source`` (a Deferred or a child operation) and feed its outcome
        to the machine, typically as inputs: ``op.watch(d, inputs.got,
        inputs.failed)``.

        Watching a child operation makes this operation its owner: the outcome
        is taken from the child's ``completion``.

        The outcome is delivered only while ``source`` is still owned.  Once
        its state has been left it is released (cancelled), and whatever it
        fires with afterwards is never fed to the machine: a state that
        cancelled a call never hears from it again.  With no ``on_failure``, a
        failure fails the whole operation.
        """
        resource = self._acquire(Resource(source, default_release(source), name))  # type: ignore[arg-type]
        outcome = source.completion if isinstance(source, Operation) else source
        outcome.addBoth(self._watched, resource, on_result, on_failure)

    def _watched(
        self,
        result: object,
        resource: Resource,
        on_result: Callable[[Any], object],
        on_failure: Callable[[Failure], object] | None,
    ) -> object:
        if resource.released:
            # Our own release cancelled it.  A Deferred's failure is left for
            # the release to judge; a child's release observes the child
            # separately, so its completion is consumed here.
            return None if isinstance(resource.obj, Operation) else result
        self._forget(resource)
        try:
            if not isinstance(result, Failure):
                on_result(result)
            elif on_failure is not None:
                on_failure(result)
            else:
                self._abort(result)
        except Exception:
            self._abort(as_failure())
        return None

    def call_later(
        self, delay: float, f: Callable[..., object], *args: Any, **kw: Any
    ) -> IDelayedCall:
        """
        ``clock.callLater``, owned by the state: leaving it disarms the timer.
        """
        call = self.clock.callLater(delay, f, *args, **kw)
        self._acquire(Resource(call, default_release(call), None))  # type: ignore[arg-type]
        return call

    def hand_over(self, resource: T) -> T:
        """
        Keep ``resource`` alive across the transition that is running: it
        moves from the state being left to the state being entered.
        """
        leaving = self._leaving
        if leaving:
            for entry in leaving:
                if entry.obj is resource:
                    leaving.remove(entry)
                    self._acquire(entry)
                    return resource
        raise ValueError(
            f"{self.name}: {resource!r} is not owned by the state being left "
            f"(hand_over only works inside a transition that leaves its owner)"
        )

    def release(self, resource: object) -> None:
        """
        Release ``resource`` now, before its state is left.
        """
        for scope in (self._scope, self._leaving):
            for entry in scope or ():
                if entry.obj is resource:
                    scope.remove(entry)  # type: ignore[union-attr]
                    self._release_all([entry], "released early")
                    return
        raise ValueError(f"{self.name}: {resource!r} is not owned by state {self._state!r}")

    def _acquire(self, entry: Resource) -> Resource:
        if self._finishing:
            raise RuntimeError(
                f"{self.name}: cannot acquire {entry.describe()} in state {self._state!r}: "
                "the operation is finishing and terminal states own nothing"
            )
        entry.owner = self._state
        if self._scope is None:
            self._scope = [entry]
        else:
            self._scope.append(entry)
        return entry

    def _forget(self, entry: Resource) -> None:
        for scope in (self._scope, self._leaving):
            if scope and entry in scope:
                scope.remove(entry)
                return

    # -- outcome ---------------------------------------------------------

    def succeed(self, result: object = None) -> None:
        """
        Record the operation's result.  The completion fires with it once the
        machine reaches a terminal state and cleanup has finished.
        """
        self._set_outcome(result)

    def fail(self, error: BaseException | Failure) -> None:
        """
        Record the operation's failure; like ``succeed``, it is delivered when
        the machine reaches a terminal state and cleanup has finished.
        """
        self._set_outcome(error if isinstance(error, Failure) else as_failure(error))

    def _set_outcome(self, outcome: object) -> None:
        if self._done:
            raise RuntimeError(f"{self.name} has already completed")
        self._outcome = outcome

    # -- feeding inputs ----------------------------------------------------

    def _feed(
        self, name: str, method: Callable[..., Any], args: tuple[Any, ...], kw: dict[str, Any]
    ) -> Any:
        """
        Run one input to completion, then everything it queued.

        This is the hot path: a loop transition costs one Automat dispatch
        plus a few attribute tests.
        """
        if self._busy:
            if not self._factory._returns_none[name]:
                raise ReentrantInputError(
                    f"{self.name}: input {name!r} returns a value, so it cannot be fed "
                    f"while a transition is running (state {self._state!r})"
                )
            self._enqueue(name, method, args, kw)
            return None
        if self._finishing:
            detail = "the operation has completed" if self._done else "the operation is finishing"
            return self._unexpected(name, detail)
        self._busy = True
        self._input = name
        try:
            result = method(self._machine, *args, **kw)
        except Exception:
            return self._failed_dispatch(name)
        if self._leaving is not None or self._queue:
            self._settle_transition()
        self._busy = False
        if self._finishing:
            self._maybe_finish()
        return result

    def _failed_dispatch(self, name: str) -> None:
        """
        The input raised: either Automat rejected it (the caller's mistake,
        raised to the caller) or a behaviour failed (the operation fails).
        """
        caught = as_failure()
        e = caught.value
        if isinstance(e, NoTransition) and self._is_ours(e, name):
            self._busy = False
            return self._unexpected(name)
        self._abort(caught)
        if self._leaving is not None or self._queue:
            self._settle_transition()
        self._busy = False
        self._maybe_finish()
        return None

    def _is_ours(self, e: NoTransition[Any, Any], name: str) -> bool:
        """
        Did Automat reject this very input, or did a behaviour raise a
        ``NoTransition`` of its own (which is a behaviour failure)?
        """
        return (
            e.symbol == name
            and self._leaving is None
            and getattr(e.state, "name", None) == self._state
        )

    def _enqueue(
        self,
        name: str,
        method: Callable[..., Any] | None,
        args: tuple[Any, ...],
        kw: dict[str, Any],
    ) -> None:
        if self._queue is None:
            self._queue = deque()
        self._queue.append((name, method, args, kw))

    def _settle_transition(self) -> None:
        """
        After a transition: release what the old state owned, then run the
        queued inputs one by one, each followed by the same.
        """
        while True:
            leaving = self._leaving
            if leaving is not None:
                self._leaving = None
                if leaving:
                    self._release_all(leaving, f"left on {self._input}")
            queue = self._queue
            if not queue:
                return
            name, method, args, kw = queue.popleft()
            self._input = name
            if method is None:
                self._cancel_step(args[0])
            elif self._finishing:
                self._log_dropped(name, "the operation is finishing")
            else:
                self._run_queued(name, method, args, kw)

    def _run_queued(
        self, name: str, method: Callable[..., Any], args: tuple[Any, ...], kw: dict[str, Any]
    ) -> None:
        try:
            method(self._machine, *args, **kw)
        except NoTransition as e:
            if not self._is_ours(e, name):
                self._abort(as_failure())
            elif self._factory.unexpected == "log":
                self._log_dropped(name, "fed from inside a transition")
            else:
                error = UnexpectedInput(
                    self.name, self._state, name, "fed from inside a transition"
                )
                self._abort(as_failure(error))
        except Exception:
            self._abort(as_failure())

    def _unexpected(self, name: str, detail: str = "") -> None:
        if self._factory.unexpected == "log":
            self._log_dropped(name, detail)
            return None
        raise UnexpectedInput(self.name, self._state, name, detail)

    def _log_dropped(self, name: str, detail: str = "") -> None:
        _LOG.warning(
            "unexpected input ignored",
            op=self.id,
            machine=self.machine,
            state=self._state,
            input=name,
            detail=detail,
        )

    def _enter(self, new: str, terminal: bool) -> None:
        """
        Called by the transition wrapper just before a state-changing
        behaviour runs: from now on acquisitions belong to ``new``.
        """
        now = self.clock.seconds()
        if self._trace:
            self._traced(new, now)
        self._leaving = self._scope if self._scope is not None else _EMPTY
        self._scope = None
        self._state = new
        self._entered_at = now
        if terminal:
            self._finishing = True

    def _loop(self) -> None:
        """
        Called by the wrapper of a loop transition when transitions are
        traced: a loop is a transition too, though it leaves nothing.
        """
        self._traced(self._state, self.clock.seconds())

    def _traced(self, new: str, now: float) -> None:
        """
        Log and record one transition (only when ``_trace`` is set).
        """
        if self._debug:
            _LOG.debug(
                "transition",
                op=self.id,
                machine=self._factory.name,
                old=self._state,
                input=self._input,
                new=new,
                seconds=now - self._entered_at,
            )
        if self._history is not None:
            self._history.append(TransitionRecord(now, self._state, self._input, new))

    # -- cancel ------------------------------------------------------------

    def _request_cancel(self, reason: str | None) -> None:
        if self._done:
            return
        if self._busy:
            self._enqueue("cancel", None, (reason,), {})
            return
        self._busy = True
        self._input = "cancel"
        self._cancel_step(reason)
        if self._leaving is not None or self._queue:
            self._settle_transition()
        self._busy = False
        if self._finishing:
            self._maybe_finish()

    def _cancel_step(self, reason: str | None) -> None:
        """
        Decide what one cancel request means now (see the module docstring).
        Runs while busy; never raises.
        """
        if self._done:
            return
        self._cancel_requests += 1
        if self._cancel_requests > 1:
            self._force(reason)
            return
        if self._finishing or self._factory._kinds[self._state] != "running":
            _LOG.info(
                "cancel too late: already finishing",
                op=self.id,
                machine=self.machine,
                state=self._state,
                reason=reason,
            )
            return
        self._cancel_reason = reason
        self._cancel_state = self._state
        _LOG.info("cancel", op=self.id, machine=self.machine, state=self._state, reason=reason)
        try:
            self._factory._cancel_method(self._machine, reason)
        except Exception:
            self._abort(as_failure())

    def _force(self, reason: str | None) -> None:
        """
        Stop waiting for cleanup: release what is still held, cancel pending
        releases, and let the completion fire as soon as we are not busy.
        """
        _LOG.info(
            "cancel forced", op=self.id, machine=self.machine, state=self._state, reason=reason
        )
        self._forced = True
        if self._cancel_state is None:
            self._cancel_reason = reason
            self._cancel_state = self._state
        self._finishing = True
        scope, self._scope = self._scope, None
        leaving, self._leaving = self._leaving, None
        if scope:
            self._release_all(scope, "forced")
        if leaving:
            self._release_all(leaving, "forced")
        pending = self._pending or []
        for d, _ in list(pending):
            d.cancel()
        for _, entry in pending:
            _LOG.warning(
                "release abandoned",
                op=self.id,
                machine=self.machine,
                resource=entry.describe(),
            )
        self._pending = None

    # -- failure and release ---------------------------------------------

    def _abort(self, failure: Failure) -> None:
        """
        The failure path: a behaviour raised, or a watched call failed with
        nobody to handle it.  Release everything and fail.
        """
        _LOG.info(
            "operation failed",
            op=self.id,
            machine=self.machine,
            state=self._state,
            error=repr(failure.value),
        )
        self._outcome = failure
        self._finishing = True
        was_busy, self._busy = self._busy, True
        scope, self._scope = self._scope, None
        leaving, self._leaving = self._leaving, None
        if scope:
            self._release_all(scope, "failure")
        if leaving:
            self._release_all(leaving, "failure")
        if self._queue:
            for name, *_ in self._queue:
                if name != "cancel":
                    self._log_dropped(name, "the operation failed")
            self._queue = None
        self._busy = was_busy
        if not was_busy:
            self._maybe_finish()

    def _release_all(self, entries: list[Resource], why: str) -> None:
        """
        Release ``entries`` newest first.  Synchronous errors are recorded at
        once; asynchronous releases are tracked until they settle.
        """
        for entry in reversed(entries):
            if entry.released:
                continue
            entry.released = True
            if self._debug:
                _LOG.debug(
                    "release",
                    op=self.id,
                    machine=self.machine,
                    state=entry.owner,
                    resource=entry.describe(),
                    why=why,
                )
            try:
                result = entry.release(entry.obj)
            except Exception:
                self._cleanup_error(as_failure(), entry)
                continue
            if isinstance(result, Deferred):
                if self._pending is None:
                    self._pending = []
                item = (result, entry)
                self._pending.append(item)
                result.addBoth(self._release_settled, item)

    def _release_settled(self, result: object, item: tuple[Deferred[Any], Resource]) -> None:
        pending = self._pending
        if pending is not None and item in pending:
            pending.remove(item)
        elif self._done:
            if isinstance(result, Failure) and not is_cancellation(result):
                self._log_cleanup_error(result, item[1], "after completion")
            return None
        if isinstance(result, Failure) and not is_cancellation(result):
            self._cleanup_error(result, item[1])
        if not self._busy and self._finishing:
            self._maybe_finish()
        return None

    def _cleanup_error(self, failure: Failure, entry: Resource) -> None:
        if self._cleanup_errors is None:
            self._cleanup_errors = []
        for error in flatten_errors(failure):
            self._cleanup_errors.append(error)
            self._log_cleanup_error(error, entry)

    def _log_cleanup_error(self, failure: Failure, entry: Resource, detail: str = "") -> None:
        _LOG.error(
            "cleanup error",
            op=self.id,
            machine=self.machine,
            state=entry.owner,
            resource=entry.describe(),
            error=repr(failure.value),
            detail=detail,
            exc_info=(type(failure.value), failure.value, failure.getTracebackObject()),  # type: ignore[no-untyped-call]
        )

    # -- finishing ---------------------------------------------------------

    def _maybe_finish(self) -> None:
        if self._finishing and not self._pending and not self._done:
            self._finish()

    def _finish(self) -> None:
        result = self._compute_result()
        self._outcome = result
        self._done = True
        if self._registry is not None:
            self._registry._remove(self)
        self._log_completion(result)
        observers, self._observers = self._observers, None
        # A copy: an observer's callback may cancel (detach) another one.
        for observer in list(observers or ()):
            if not observer.called:
                self._deliver(observer)
        final = self._final
        if final is not None:
            if not final.called:
                if isinstance(result, Failure):
                    final.errback(result)
                else:
                    final.callback(result)
        elif not self.completion.called:
            self.completion.callback(None)

    def _result(self) -> object:
        """
        The outcome delivered to everyone, once the operation is done.
        """
        return self._outcome

    def _compute_result(self) -> object:
        """
        The one outcome, combining the machine's outcome with cleanup errors.
        """
        errors = tuple(self._cleanup_errors or ())
        outcome = self._outcome
        if outcome is _NOTHING:
            if self._cancel_state is not None:
                return as_failure(
                    OperationCancelled(
                        self.name, self._cancel_state, self._cancel_reason, errors, self._forced
                    )
                )
            outcome = as_failure(
                OperationIncomplete(
                    f"{self.name} reached terminal state {self._state!r} without "
                    "calling op.succeed() or op.fail()"
                )
            )
        if errors:
            return as_failure(CleanupFailed(self.name, outcome, errors))
        return outcome

    def _deliver(self, d: Deferred[Any]) -> None:
        result = self._result()
        if isinstance(result, Failure):
            d.errback(result)
        else:
            d.callback(result)

    def _log_completion(self, result: object) -> None:
        if not isinstance(result, Failure):
            if self._debug:
                _LOG.debug("completed", op=self.id, machine=self.machine, state=self._state)
            return
        outcome = "cancelled" if isinstance(result.value, OperationCancelled) else "failed"
        _LOG.info(
            "completed",
            op=self.id,
            machine=self.machine,
            state=self._state,
            outcome=outcome,
            error=str(result.value),
        )


def _ignore(result: object) -> None:
    return None
