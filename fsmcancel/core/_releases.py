"""
How each kind of resource is released.

A state owns what it acquired.  Releasing must *really* free the thing (close
the connection, stop the timer), and must not turn the consequences of our
own cancellation into errors: a ``Deferred`` we cancel fails with
``CancelledError`` (or, from some Twisted APIs, with a different error that
only says "you cancelled me", see Twisted #9696), and nobody should see that
as an "Unhandled error in Deferred".

Owns: ``Resource`` (one thing owned, and how to let go of it), the
release functions, and the judgement of which failures are our own
cancellation.  Must not touch: the ledger's lists.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.error import (
    ConnectingCancelledError,
    ConnectionAborted,
    ConnectionDone,
    ConnectionLost,
    DNSLookupError,
)
from twisted.python.failure import Failure

from fsmcancel.core._errors import CleanupFailed, OperationCancelled, as_failure

if TYPE_CHECKING:
    from fsmcancel.core._operation import Operation

Release = Callable[[Any], object]

# Failures that only report that we cancelled or closed the thing ourselves.
# DNSLookupError is here because HostnameEndpoint turns a cancelled connect
# into one (Twisted #9696); asyncio's and concurrent.futures' CancelledError
# because a cancelled ``Deferred.fromFuture`` fails with them.  Only
# Deferreds we cancelled are judged by this.
_CANCELLATION: tuple[type[BaseException], ...] = (
    CancelledError,
    asyncio.CancelledError,
    concurrent.futures.CancelledError,
    ConnectingCancelledError,
    ConnectionAborted,
    ConnectionDone,
    ConnectionLost,
    DNSLookupError,
)


def is_cancellation(failure: Failure) -> bool:
    """
    Does ``failure`` only say "this was cancelled"?

    Twisted's HTTP client wraps the cause in ``ResponseNeverReceived`` and
    friends (anything with a ``reasons`` list); those count when every
    wrapped reason does.  An ``OperationCancelled`` carrying cleanup errors
    does not count: those errors must travel on.
    """
    value = failure.value
    if isinstance(value, OperationCancelled):
        return not value.cleanup_errors
    if isinstance(value, _CANCELLATION):
        return True
    reasons = getattr(value, "reasons", None)
    if isinstance(reasons, list) and reasons:
        return all(isinstance(r, Failure) and is_cancellation(r) for r in reasons)
    return False


def _settle_after_cancel(result: object) -> object:
    """
    Turn what a cancelled Deferred fired with into the release's own outcome.
    """
    if isinstance(result, Failure) and not is_cancellation(result):
        return result
    return None


def release_deferred(d: Deferred[Any]) -> Deferred[None]:
    """
    Cancel ``d`` and report only failures that are not about cancelling.

    ``cancel()`` always leaves ``d`` fired (Twisted errbacks it if the
    canceller did not), unless it is paused on an inner Deferred, in which
    case the cancel is forwarded there; either way the outcome arrives through
    the callback we add after it.
    """
    d.cancel()
    settled: Deferred[None] = Deferred()
    d.addBoth(_settle_after_cancel).addBoth(_fire, settled)
    return settled


def _fire(result: object, settled: Deferred[None]) -> None:
    if settled.called:  # forced meanwhile: the owner stopped waiting
        return
    if isinstance(result, Failure):
        settled.errback(result)
    else:
        settled.callback(None)


def release_delayed_call(call: Any) -> None:
    if call.active():
        call.cancel()


def release_transport(transport: Any) -> None:
    """
    Close a connection now.

    ``abortConnection`` drops buffered data and closes within this reactor
    turn, which is what a cancel means; ``loseConnection`` would keep a
    stalled peer's connection open until the buffer drains, i.e. forever.
    """
    abort = getattr(transport, "abortConnection", None)
    if abort is not None:
        abort()
    else:
        transport.loseConnection()


def release_operation(child: Operation[Any, Any]) -> Deferred[None]:
    """
    Cancel a child operation and wait until it has finished cleaning up.

    If the child is already winding down (its protocol cancelled it, say),
    the cancel changes nothing and we wait for the cleanup it is doing.
    Cancelling the wait (the owner is being forced) forces the child in
    turn, as Twisted forwards a cancel to the Deferred a cancelled one is
    waiting on.  Only the child's cleanup errors become ours; the child's own
    outcome was abandoned with it (the child logs its completion).
    """
    child.cancel(f"owner left the state that owned {child.name}")
    settled: Deferred[None] = Deferred(lambda _: child.force("its owner was forced"))
    child.observe().addBoth(_settle_child, child).addBoth(_fire, settled)
    return settled


def _settle_child(result: object, child: Operation[Any, Any]) -> object:
    if not isinstance(result, Failure):
        return None
    errors = cleanup_errors_in(result)
    if errors:
        return as_failure(CleanupFailed(child.name, None, errors))
    return None


def default_release(resource: object) -> Release | None:
    """
    Pick the release for a resource of a kind fsmcancel knows.
    """
    from fsmcancel.core._operation import Operation

    if isinstance(resource, Deferred):
        return release_deferred
    if isinstance(resource, Operation):
        return release_operation
    if callable(getattr(resource, "active", None)) and callable(getattr(resource, "cancel", None)):
        return release_delayed_call
    if callable(getattr(resource, "loseConnection", None)):
        return release_transport
    return None


def cleanup_errors_in(failure: Failure) -> list[Failure]:
    """
    Every cleanup error carried by an operation's outcome, at any depth.

    An outcome carries them in ``OperationCancelled.cleanup_errors`` or
    ``CleanupFailed.errors``; a ``CleanupFailed`` may also have failed
    with an outcome that carries more (a child that failed with its own
    cleanup errors, used as the parent's outcome).  One entry per error keeps
    "every cleanup error reaches the outer completion" true however deep.
    """
    value = failure.value
    if isinstance(value, CleanupFailed):
        found = [leaf for error in value.errors for leaf in flatten_errors(error)]
        if isinstance(value.outcome, Failure):
            found += cleanup_errors_in(value.outcome)
        return found
    if isinstance(value, OperationCancelled):
        return [leaf for error in value.cleanup_errors for leaf in flatten_errors(error)]
    return []


def flatten_errors(failure: Failure) -> list[Failure]:
    """
    The individual cleanup errors a failed release stands for: those it
    carries (a child's, wrapped), or itself.
    """
    return cleanup_errors_in(failure) or [failure]


class Resource:
    """
    One thing a state owns, and how to let go of it.
    """

    __slots__ = ("name", "obj", "owner", "release", "released")

    def __init__(self, obj: object, release: Release, name: str | None) -> None:
        self.obj = obj
        self.release = release
        self.name = name
        self.released = False
        self.owner = ""  # the state that owns it, set when acquired

    def describe(self) -> str:
        if self.name is not None:
            return self.name
        from fsmcancel.core._operation import Operation

        if isinstance(self.obj, Operation):
            return self.obj.name
        return type(self.obj).__name__

    def __repr__(self) -> str:
        return f"<Resource {self.describe()}{' released' if self.released else ''}>"
