"""
Run to completion: how an input moves the machine, and what goes wrong.

An input runs to completion before the next one starts: the transition's
behaviour runs, then the resources of the state it left are released, then
any input fed meanwhile (from a behaviour, a release, a completion callback)
runs, in order.  Only inputs declared ``-> None`` can be queued that way.

Errors, and whose they are:

- An input the current state does not accept is the *caller's* mistake: it
  raises ``UnexpectedInput`` to the caller and changes nothing (or is logged
  and dropped if the machine was built with ``unexpected="log"``).  So do
  wrong arguments (checked against the input's signature before anything
  runs).  A queued input that turns out to be unexpected is a bug in the
  machine, and fails the operation.
- A behaviour that raises is the *operation's* failure: everything held is
  released and the completion fails with that exception.  It is not
  re-raised to whoever fed the input; the completion is where the failure of
  an operation is reported.

Owns: ``_busy``, ``_queue``, ``_input``, ``_state`` and ``_entered_at``.
The hottest path (one input, no queue, not finishing) is inlined in the
generated input methods (``_factory.py``) and mirrors `Dispatching._feed`.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from automat import NoTransition

from fsmcancel.core import _events
from fsmcancel.core._errors import ReentrantInputError, UnexpectedInput, as_failure
from fsmcancel.core._ledger import EMPTY

if TYPE_CHECKING:
    from twisted.python.failure import Failure


Queued = tuple[str, Callable[..., Any] | None, tuple[Any, ...], dict[str, Any]]

if TYPE_CHECKING:
    from fsmcancel.core._fields import OperationFields as MixinBase
else:
    MixinBase = object


class Dispatching(MixinBase):
    """
    The input half of an operation (mixed into ``Operation``).
    """

    __slots__ = ()

    def _feed(
        self, name: str, method: Callable[..., Any], args: tuple[Any, ...], kw: dict[str, Any]
    ) -> Any:
        """
        Run one input to completion, then everything it queued.
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
            return self._unexpected(name, getattr(e, "detail", ""))
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
                self._cancel_step(*args)
            elif self._finishing:
                _events.dropped(self, name, "the operation is finishing")
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
            else:
                detail = "; ".join(
                    filter(None, ["fed from inside a transition", getattr(e, "detail", "")])
                )
                if self._factory.unexpected == "log":
                    _events.dropped(self, name, detail)
                else:
                    self._abort(as_failure(UnexpectedInput(self.name, self._state, name, detail)))
        except Exception:
            self._abort(as_failure())

    def _unexpected(self, name: str, detail: str = "") -> None:
        if self._factory.unexpected == "log":
            _events.dropped(self, name, detail)
            return None
        raise UnexpectedInput(self.name, self._state, name, detail)

    # -- entering states ---------------------------------------------------

    def _enter(self, new: str, ending: int) -> None:
        """
        Called by the transition wrapper just before a state-changing
        behaviour runs: from now on acquisitions belong to ``new``.
        ``ending`` is 1 for a cleanup state (the cleanup grace starts) and 2
        for a terminal one (the operation is finishing).
        """
        now = self.clock.seconds()
        if self._trace:
            self._traced(new, now)
        self._leaving = self._scope if self._scope is not None else EMPTY
        self._scope = None
        self._from = self._state
        self._state = new
        self._entered_at = now
        if ending:
            if ending == 2:
                self._finishing = True
            else:
                self._start_grace()

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
            _events.transition(self, self._state, self._input, new, now - self._entered_at)
        if self._history is not None:
            from fsmcancel.core._operation import TransitionRecord

            self._history.append(TransitionRecord(now, self._state, self._input, new))

    # -- the failure path --------------------------------------------------

    def _abort(self, failure: Failure) -> None:
        """
        A behaviour raised, or a watched call failed with nobody to handle
        it: release everything and fail.  The first failure is the one
        reported; a later one (a behaviour that raised because its call had
        already failed, say) is logged and does not replace it.
        """
        if self._aborted:
            _events.failed_again(self, failure)
        else:
            state = self._from if self._leaving is not None else self._state
            _events.failed(self, state, failure)
            self._aborted = True
            self._outcome = failure
        self._finishing = True
        was_busy, self._busy = self._busy, True
        self._release_held("failure")
        if self._queue:
            for name, *_ in self._queue:
                if name != "cancel":
                    _events.dropped(self, name, "the operation failed")
            self._queue = None
        self._busy = was_busy
        if not was_busy:
            self._maybe_finish()
