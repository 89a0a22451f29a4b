"""
States own resources: the ledger of what each state holds.

What a behaviour acquires with ``own``/``watch``/``children``/``call_later``
belongs to the state being entered (or the current state, in a loop or outside a
transition).  When the machine leaves a state, its resources are released
in reverse order of acquisition, after the transition's behaviour has run,
unless handed over with ``hand_over``.  A release that raises is recorded
and logged and the others still run; a release that returns a Deferred is
waited for, and the completion fires only once it has settled.

While transitions are traced, what a state acquires is checked against what
it declares (``resources=``, ``children=``), so its diagram cannot lie
unnoticed.

Owns: ``_scope`` (what the current state holds), ``_leaving`` (what the
state being left held, until the transition settles), ``_pending`` (releases
still running), ``_cleanup_errors`` and ``_undeclared``.  Must not touch:
*when* to release, which the dispatcher, the cancel protocol and the failure
path decide.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall
from twisted.python.failure import Failure

from fsmcancel.core import _events
from fsmcancel.core._errors import as_failure
from fsmcancel.core._releases import (
    Release,
    Resource,
    default_release,
    flatten_errors,
    is_cancellation,
)

if TYPE_CHECKING:
    from fsmcancel.core._group import ChildGroup
    from fsmcancel.core._operation import Operation

T = TypeVar("T")
K = TypeVar("K")
R = TypeVar("R")


#: What a state that owned nothing leaves behind; never mutated.
EMPTY: list[Resource] = []

if TYPE_CHECKING:
    from fsmcancel.core._fields import OperationFields as MixinBase
else:
    MixinBase = object


class Ledger(MixinBase):
    """
    The resource half of an operation (mixed into ``Operation``).
    """

    __slots__ = ()

    # -- acquiring ---------------------------------------------------------

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
            from fsmcancel.core._operation import Operation

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
        from fsmcancel.core._operation import Operation

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
            from fsmcancel.core._operation import Operation

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

    def children(
        self,
        starts: Iterable[tuple[K, Callable[[], Operation[Any, Any, R]]]]
        | Mapping[K, Callable[[], Operation[Any, Any, R]]],
        *,
        on_result: Callable[[K, R], object],
        on_failure: Callable[[K, Failure], object] | None = None,
        limit: int | None = None,
        needed: int | None = None,
        name: str | None = None,
    ) -> ChildGroup[K, R]:
        """
        Run child operations as one resource of the state: ``starts`` gives
        ``(key, start)`` pairs, where ``start()`` creates and starts a child
        and returns it; at most ``limit`` run at once; each outcome is fed as
        ``on_result(key, result)`` or ``on_failure(key, failure)`` (with no
        ``on_failure``, a child's failure fails this operation).  After
        ``needed`` successes the rest are cancelled.  See ``ChildGroup``.
        """
        from fsmcancel.core._group import ChildGroup, release_group

        group: ChildGroup[K, R] = ChildGroup(
            self.name,
            starts,
            limit=limit,
            needed=needed,
            on_result=on_result,
            on_failure=on_failure,
            abort=self._abort,
        )
        self._acquire(Resource(group, release_group, name or "child group"))
        group._fill()
        return group

    def call_later(
        self, delay: float, f: Callable[..., object], *args: Any, **kw: Any
    ) -> IDelayedCall:
        """
        ``clock.callLater``, owned by the state: leaving it disarms the timer.
        """
        call = self.clock.callLater(delay, f, *args, **kw)
        self._acquire(Resource(call, default_release(call), None))  # type: ignore[arg-type]
        return call

    def hand_over(self, resource: T, *more: object) -> T:
        """
        Keep ``resource`` (and ``more``) alive across the transition that is
        running: they move from the state being left to the state being
        entered.  All or nothing: if one of them is not owned by the state
        being left, nothing moves.  Returns ``resource``.
        """
        leaving = self._leaving or []
        entries = []
        for thing in (resource, *more):
            entry = next((e for e in leaving if e.obj is thing), None)
            if entry is None:
                raise ValueError(
                    f"{self.name}: {thing!r} is not owned by the state being left "
                    "(hand_over only works inside a transition that leaves its owner)"
                )
            entries.append(entry)
        for entry in entries:
            leaving.remove(entry)
            self._acquire(entry)
        return resource

    def resource(self, name: str) -> Any:
        """
        The object the current state holds under ``name`` (the newest, if
        several have it), for ``release`` or ``hand_over``.  During a
        transition, what the state being left holds is found too.
        """
        for scope in (self._scope, self._leaving):
            for entry in reversed(scope or ()):
                if entry.describe() == name:
                    return entry.obj
        held = [e.describe() for e in (*(self._scope or ()), *(self._leaving or ()))]
        raise KeyError(
            f"{self.name}: state {self._state!r} holds no resource named {name!r}; "
            f"it holds: {', '.join(held) or 'nothing'}"
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

    @property
    def resources(self) -> tuple[str, ...]:
        """
        What the current state holds, in acquisition order.
        """
        return tuple(r.describe() for r in self._scope or ())

    @property
    def undeclared_resources(self) -> tuple[tuple[str, str], ...]:
        """
        ``(state, resource)`` for each thing a state acquired without
        declaring it (``resources=`` or ``children=``), so that its diagram
        would not show it.  Only checked while transitions are traced (debug
        logging, a ``Registry(history=N)``, or ``fsmcancel.testing``).
        """
        return tuple(self._undeclared or ())

    def _acquire(self, entry: Resource) -> Resource:
        entry.owner = self._state
        if self._trace:
            self._check_declared(entry)
        if self._finishing:
            # Nothing may be held once the operation is finishing, but what a
            # behaviour acquires must still be released.  After a failure or
            # a force that is the ordinary "start a call, then arm its timer"
            # whose call had already failed: release it and carry on, so the
            # first error stays the one reported.  On the way to a terminal
            # state it is a mistake in the machine: release it, then say so.
            self._release_all([entry], "acquired while finishing")
            if self._aborted or self._forced:
                return entry
            raise RuntimeError(
                f"{self.name}: cannot acquire {entry.describe()} on the way to terminal "
                f"state {self._state!r}: terminal states own nothing (it was released)"
            )
        if self._scope is None:
            self._scope = [entry]
        else:
            self._scope.append(entry)
        return entry

    def _check_declared(self, entry: Resource) -> None:
        """
        Does the state's declaration name what it acquires?  A child
        operation may be declared by its machine's name, and a per-peer
        resource named ``"<what> to <peer>"`` by ``"<what>"``.
        """
        declared = self._factory._declared.get(self._state, ())
        name = entry.describe()
        # "<what> to <peer>" (a timeouts call) is declared as "<what>".
        if name in declared or name.partition(" to ")[0] in declared:
            return
        machine = getattr(entry.obj, "machine", None)
        if isinstance(machine, str) and machine in declared:
            return
        if self._undeclared is None:
            self._undeclared = []
        self._undeclared.append((self._state, name))
        if self._debug:
            _events.undeclared(self, entry, declared)

    def _forget(self, entry: Resource) -> None:
        for scope in (self._scope, self._leaving):
            if scope and entry in scope:
                scope.remove(entry)
                return

    # -- releasing ---------------------------------------------------------

    def _release_held(self, why: str) -> None:
        """
        Release everything still held: the current state's resources and
        those of a state being left.
        """
        scope, self._scope = self._scope, None
        leaving, self._leaving = self._leaving, None
        if scope:
            self._release_all(scope, why)
        if leaving:
            self._release_all(leaving, why)

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
                _events.release(self, entry, why)
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
                _events.cleanup_error(self, result, item[1], "after completion")
            return None
        if isinstance(result, Failure) and not is_cancellation(result):
            self._cleanup_error(result, item[1])
        if not self._busy and self._finishing:
            self._maybe_finish()
        return None

    def _abandon_pending(self) -> None:
        """
        Stop waiting for asynchronous releases (the operation is forced).
        Cancelling each lets it finish now if it can (a child group forces
        its children); what cannot is abandoned, and logged.
        """
        pending = list(self._pending or ())
        for d, _ in pending:
            d.cancel()
        for _, entry in self._pending or ():
            _events.abandoned(self, entry)
        self._pending = None

    def _cleanup_error(self, failure: Failure, entry: Resource) -> None:
        if self._cleanup_errors is None:
            self._cleanup_errors = []
        for error in flatten_errors(failure):
            self._cleanup_errors.append(error)
            _events.cleanup_error(self, error, entry)


def _ignore(result: object) -> None:
    return None
