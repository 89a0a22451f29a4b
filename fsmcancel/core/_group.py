"""
Child groups: a resource that runs child operations, at most C at a time,
until k of them have succeeded.

Warner's downloader asks N servers, needs k shares, fetches them in
parallel and fails over when a server stalls.  Written by hand that is a
fill loop, a success count, and "cancel the rest" in four states; Trio's
nurseries, ``asyncio.TaskGroup`` and ``DeferredList(fireOnOneCallback=...)``
each give part of it.  A group is all of it, as one resource of the state
that starts it (``op.children(...)``):

- children are started lazily from a list, a mapping or an iterator (and
  ``add``), at most ``limit`` alive at once;
- each child's outcome is fed to the machine as an input that says which
  child it was: ``on_result(key, result)`` or ``on_failure(key, failure)``;
- after ``needed`` successes the group is *enough*: it starts nothing more
  and cancels the children still running; it is *exhausted* when
  ``needed`` can no longer be reached.  Guards read both
  (``when=lambda inputs, op, group, key, result: group.enough``), so the
  branch is part of the transition, not a made-up input;
- releasing the group (leaving its state) cancels every live child and
  waits for each child's cleanup; forcing the owner forces them.  Cleanup
  errors of children the group cancelled reach the owner (rule 5), at any
  depth.  ``op.hand_over(group)`` moves it to the next state as one thing.

Outcomes arrive only while the group is owned: once released, a child's
late answer is never fed to the machine, as with ``op.watch``.

Owns: the children it started, their outcomes so far, and the errors of
those it cancelled.  Must not touch: its owner's ledger (it is one resource
in it) or its children's internals (only ``cancel``, ``force``,
``observe``, ``completion``).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from twisted.internet.defer import Deferred, DeferredList
from twisted.python.failure import Failure

from fsmcancel.core._errors import CleanupFailed, as_failure
from fsmcancel.core._releases import cleanup_errors_in, flatten_errors

if TYPE_CHECKING:
    from fsmcancel.core._operation import Operation

K = TypeVar("K")
R = TypeVar("R")

Start = Callable[[], "Operation[Any, Any, R]"]


class ChildGroup(Generic[K, R]):
    """
    Child operations run by one state; created by ``op.children(...)``.

    ``results`` and ``failures`` map keys to outcomes so far; ``live`` lists
    the keys of the children running; ``enough``, ``exhausted`` and
    ``settled`` say where the group stands.
    """

    def __init__(
        self,
        owner: str,
        starts: Iterable[tuple[K, Start[R]]] | Mapping[K, Start[R]],
        *,
        limit: int | None,
        needed: int | None,
        on_result: Callable[[K, R], object],
        on_failure: Callable[[K, Failure], object] | None,
        abort: Callable[[Failure], object],
    ) -> None:
        for what, value in (("limit", limit), ("needed", needed)):
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or value < 1
            ):
                raise ValueError(f"{owner}: children({what}=...) must be an int >= 1 or None")
        self.limit = limit
        self.needed = needed
        self.results: dict[K, R] = {}
        self.failures: dict[K, Failure] = {}
        self._owner = owner
        self._source: Iterator[tuple[K, Start[R]]] = iter(
            starts.items() if isinstance(starts, Mapping) else starts
        )
        self._added: deque[tuple[K, Start[R]]] = deque()
        self._peeked: tuple[K, Start[R]] | None = None  # pulled from the source, not started
        self._source_done = False
        self._live: dict[int, tuple[K, Operation[Any, Any, R]]] = {}
        self._stopping: list[Operation[Any, Any, Any]] = []  # cancelled by us, still cleaning up
        self._errors: list[Failure] = []
        self._on_result = on_result
        self._on_failure = on_failure
        self._abort = abort
        self._released = False
        self._filling = False
        self.started = 0

    # -- where the group stands

    @property
    def live(self) -> list[K]:
        """The keys of the children running, oldest first."""
        return [key for key, _ in self._live.values()]

    @property
    def enough(self) -> bool:
        """``needed`` children succeeded (all of them, if ``needed`` is None)."""
        if self.needed is None:
            return not self.failures and self.settled and bool(self.results)
        return len(self.results) >= self.needed

    @property
    def exhausted(self) -> bool:
        """``needed`` successes can no longer be reached."""
        if self.enough:
            return False
        if self.needed is None:
            return bool(self.failures)
        return not self._waiting() and len(self.results) + len(self._live) < self.needed

    @property
    def settled(self) -> bool:
        """Nothing is running and nothing is left to start."""
        return not self._live and not self._waiting()

    def _waiting(self) -> bool:
        """
        Is anything left to start?  Outcomes are delivered before the group
        refills (see `_outcome`), so the source may not have been asked yet:
        look one item ahead (pulled, not started) to know.
        """
        if self._peeked is None and not self._source_done and not self._added:
            self._peeked = self._pull()
        return bool(self._added) or self._peeked is not None

    def add(self, key: K, start: Start[R]) -> None:
        """
        More work: start ``start()`` (which returns a started child
        operation) when a slot is free, before what the source still holds.
        """
        if self._released:
            raise RuntimeError(f"{self._owner}: cannot add {key!r} to a released child group")
        self._added.append((key, start))
        self._fill()

    def cancel(self, key: K, reason: str | None = None) -> None:
        """
        Cancel the live children started under ``key``; their outcome is
        still delivered (an ``OperationCancelled`` failure, usually).
        """
        for k, child in list(self._live.values()):
            if k == key:
                child.cancel(reason)

    def __repr__(self) -> str:
        return (
            f"<ChildGroup of {self._owner}: {len(self._live)} live, "
            f"{len(self.results)} ok, {len(self.failures)} failed>"
        )

    # -- running children

    def _fill(self) -> None:
        """
        Start children until ``limit`` are alive, unless enough succeeded.
        Re-entrant calls (a child completing as it starts) are folded into
        the running loop.
        """
        if self._filling:
            return
        self._filling = True
        try:
            while not self._released and not self.enough:
                if self.limit is not None and len(self._live) >= self.limit:
                    return
                item = self._next()
                if item is None:
                    return
                self._start(*item)
        finally:
            self._filling = False

    def _next(self) -> tuple[K, Start[R]] | None:
        if self._added:
            return self._added.popleft()
        if self._peeked is not None:
            item, self._peeked = self._peeked, None
            return item
        return self._pull()

    def _pull(self) -> tuple[K, Start[R]] | None:
        if self._source_done:
            return None
        try:
            return next(self._source)
        except StopIteration:
            self._source_done = True
            return None

    def _start(self, key: K, start: Start[R]) -> None:
        self.started += 1
        try:
            child = start()
        except Exception:
            self._outcome(as_failure(), key, None)
            return
        self._live[id(child)] = (key, child)
        child.completion.addBoth(self._outcome, key, child)

    def _outcome(self, result: object, key: K, child: Operation[Any, Any, R] | None) -> None:
        if child is not None and self._live.pop(id(child), None) is None:
            return  # cancelled by us: _stopped or the release judges its cleanup
        if self._released:
            return
        if isinstance(result, Failure):
            self.failures[key] = result
        else:
            self.results[key] = result  # type: ignore[assignment]
            if self.enough:
                self._cancel_rest(f"enough: {len(self.results)} of the children succeeded")
        # Deliver first, refill after: work the machine adds in response
        # (a retry elsewhere, the download a query made possible) takes the
        # slot this child freed, ahead of what the source still holds, and
        # an outcome that ends the machine starts nothing it would cancel.
        try:
            if not isinstance(result, Failure):
                self._on_result(key, result)  # type: ignore[arg-type]
            elif self._on_failure is not None:
                self._on_failure(key, result)
            else:
                self._abort(result)
        except Exception:
            self._abort(as_failure())
        self._fill()

    def _cancel_rest(self, reason: str) -> None:
        """
        Enough: the children still running are no longer wanted.  Their
        outcomes are not delivered; their cleanup errors are kept for the
        owner, and the release waits for their cleanup.
        """
        rest, self._live = list(self._live.values()), {}
        for _, child in rest:
            self._stopping.append(child)
            child.observe().addBoth(self._stopped, child)
            child.cancel(reason)

    def _stopped(self, result: object, child: Operation[Any, Any, Any]) -> None:
        if child in self._stopping:
            self._stopping.remove(child)
        if isinstance(result, Failure):
            self._errors.extend(e for f in cleanup_errors_in(result) for e in flatten_errors(f))

    # -- the release

    def release(self) -> Deferred[None]:
        """
        Cancel every live child, wait for each one's cleanup (and for those
        cancelled earlier), and fail with their cleanup errors, if any.
        Cancelling the returned Deferred (the owner is being forced) forces
        every child still cleaning up.
        """
        self._released = True
        live = [child for _, child in self._live.values()]
        self._live = {}
        # Those cancelled earlier report their cleanup errors through
        # _stopped (registered first); those cancelled now through _settle.
        stopping = list(self._stopping)
        waits: list[Deferred[Any]] = [child.observe() for child in live]
        for child in live:
            child.cancel(f"its owner {self._owner} released its child group")

        def force(_: Deferred[None]) -> None:
            for child in live + stopping:
                child.force(f"its owner {self._owner} was forced")

        done: Deferred[None] = Deferred(force)
        waits += [child.observe().addErrback(_ignore) for child in stopping]
        gathered = DeferredList(waits, consumeErrors=True)
        gathered.addCallback(self._settle, done)
        return done

    def _settle(self, outcomes: list[tuple[bool, Any]], done: Deferred[None]) -> None:
        errors = list(self._errors)
        for ok, result in outcomes:
            if not ok:
                errors.extend(e for f in cleanup_errors_in(result) for e in flatten_errors(f))
        if done.called:  # forced meanwhile: the owner stopped waiting
            return
        if errors:
            done.errback(as_failure(CleanupFailed(f"{self._owner}'s child group", None, errors)))
        else:
            done.callback(None)


def _ignore(failure: Failure) -> None:
    return None


def release_group(group: ChildGroup[Any, Any]) -> Deferred[None]:
    """The release of a child group resource."""
    return group.release()
