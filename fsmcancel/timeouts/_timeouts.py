"""
`Timeouts`: the estimators of one process, and the entry points a state's
behaviour uses to start guarded calls.

It depends on fsmcancel's operation only through the small `Operation`
protocol below (``clock``, ``own``, ``release``), so the timeouts can be
used, and tested, without the rest of the core.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol, TypeVar

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from fsmcancel.timeouts._clock import ReactorTime, seconds_of
from fsmcancel.timeouts._config import TimeoutConfig, load_config
from fsmcancel.timeouts._estimators import KeyEstimator
from fsmcancel.timeouts._guard import GuardedCall, TimedOut
from fsmcancel.timeouts._hedge import HedgeBudget, HedgedCall
from fsmcancel.timeouts._rule import HedgeRule, Rule

T = TypeVar("T")
R = TypeVar("R")

#: Version of the `Timeouts.export_state` format.
STATE_VERSION = 1


class Operation(Protocol):
    """What a guarded call needs from fsmcancel's operation."""

    @property
    def clock(self) -> ReactorTime: ...

    def own(self, resource: R, release: Callable[[R], object], *, name: str | None = None) -> R: ...

    def release(self, resource: object) -> object: ...


def _cancel(call: GuardedCall[Any] | HedgedCall[Any]) -> None:
    call.cancel()


class Timeouts:
    """
    Adaptive timeouts for remote calls: one estimator per (peer, kind).

    ``max_keys`` bounds how many keys are remembered (least recently used
    are forgotten), so a process talking to ever-new peers does not grow
    without bound; each key is bounded by its windows.
    """

    def __init__(self, config: TimeoutConfig | None = None, *, max_keys: int = 10_000) -> None:
        # No configuration given: the defaults with the environment's
        # overrides, the documented precedence (``load_config()``).
        self.config = load_config() if config is None else config
        self._max_keys = max_keys
        self._keys: OrderedDict[tuple[str, str], tuple[Rule, KeyEstimator]] = OrderedDict()
        self._budgets: dict[str, HedgeBudget] = {}
        self._clocks: dict[int, tuple[ReactorTime, Callable[[], float]]] = {}

    # -- starting calls

    def call(
        self,
        op: Operation,
        fn: Callable[..., Deferred[T]],
        *args: Any,
        kind: str,
        peer: str,
        on_result: Callable[[T], object],
        on_failure: Callable[[Failure], object],
        on_timeout: Callable[[TimedOut], object],
    ) -> GuardedCall[T]:
        """
        Start ``fn(*args)`` as a resource of the state being entered (or the
        current one), guarded by the rule for (``kind``, ``peer``).

        Exactly one of ``on_result``, ``on_failure`` or ``on_timeout``
        (given a `TimedOut`) is called, unless the state is left first: then
        the call is cancelled and none is.
        """
        call = self.guard(
            op.clock,
            kind,
            peer,
            on_result=on_result,
            on_failure=on_failure,
            on_timeout=on_timeout,
            end=op.release,
        )
        op.own(call, _cancel, name=f"{kind} call to {peer}")
        call.start(fn, *args)
        return call

    def hedged(
        self,
        op: Operation,
        fn: Callable[..., Deferred[T]],
        *args: Any,
        kind: str,
        peers: Sequence[str],
        on_result: Callable[[T], object],
        on_failure: Callable[[Failure], object],
        on_timeout: Callable[[TimedOut], object],
    ) -> HedgedCall[T]:
        """
        Start ``fn(peer, *args)`` on ``peers[0]``; under the ``hedge`` policy,
        after the adaptive hedge delay start it on the next peer, budget
        permitting.  The first answer wins and the others are cancelled.
        Under any other policy only ``peers[0]`` is tried, so hedging can be
        switched per kind or peer from configuration alone.
        """
        call = HedgedCall(self, op, fn, args, kind, peers, on_result, on_failure, on_timeout)
        op.own(call, _cancel, name=f"hedged {kind} call")
        call.start()
        return call

    def guard(
        self,
        clock: ReactorTime,
        kind: str,
        peer: str,
        *,
        on_result: Callable[[T], object],
        on_failure: Callable[[Failure], object],
        on_timeout: Callable[[TimedOut], object],
        end: Callable[[GuardedCall[T]], object],
    ) -> GuardedCall[T]:
        """A `GuardedCall` not yet started nor owned (for composing calls)."""
        rule, estimator = self._key(kind, peer)
        shared = self._clocks.get(id(clock))
        if shared is None or shared[0] is not clock:
            if len(self._clocks) > 16:
                self._clocks.clear()
            shared = self._clocks[id(clock)] = (clock, seconds_of(clock))
        return GuardedCall(
            clock, estimator, rule, kind, peer, on_result, on_failure, on_timeout, end, shared[1]
        )

    # -- estimators

    def rule(self, kind: str, peer: str) -> Rule:
        return self._key(kind, peer)[0]

    def estimator(self, kind: str, peer: str) -> KeyEstimator:
        return self._key(kind, peer)[1]

    def budget(self, kind: str, rule: HedgeRule) -> HedgeBudget:
        budget = self._budgets.get(kind)
        if budget is None:
            budget = self._budgets[kind] = HedgeBudget(rule)
        return budget

    def _key(self, kind: str, peer: str) -> tuple[Rule, KeyEstimator]:
        key = (peer, kind)
        entry = self._keys.get(key)
        if entry is None:
            rule = self.config.rule(kind, peer)
            entry = self._keys[key] = (rule, KeyEstimator(rule))
            if len(self._keys) > self._max_keys:
                self._keys.popitem(last=False)
        else:
            self._keys.move_to_end(key)
        return entry

    # -- persistence

    def export_state(self) -> dict[str, Any]:
        """
        Everything learned, as JSON-serialisable data, so a restarted
        process does not start cold.  Configuration is not included: the
        restarted process applies its own.
        """
        return {
            "version": STATE_VERSION,
            "keys": [
                {"peer": peer, "kind": kind, **est.export()}
                for (peer, kind), (_, est) in self._keys.items()
            ],
        }

    def import_state(self, state: Mapping[str, Any]) -> None:
        """
        Load what `export_state` produced (possibly by an older process).

        All keys are parsed before any is installed, so bad state changes
        nothing.  Windows are re-bounded by the current configuration.
        """
        if not isinstance(state, Mapping) or state.get("version") != STATE_VERSION:
            raise ValueError(f"not fsmcancel timeout state version {STATE_VERSION}")
        loaded: list[tuple[tuple[str, str], Rule, KeyEstimator]] = []
        for entry in state.get("keys", []):
            try:
                peer, kind = str(entry["peer"]), str(entry["kind"])
                rule = self.config.rule(kind, peer)
                loaded.append(((peer, kind), rule, KeyEstimator.load(rule, entry)))
            except (KeyError, TypeError, ValueError) as e:
                raise ValueError(f"bad timeout state entry {entry!r}: {e}") from None
        for key, rule, est in loaded:
            self._keys[key] = (rule, est)
            self._keys.move_to_end(key)
        while len(self._keys) > self._max_keys:
            self._keys.popitem(last=False)

    def dumps(self) -> str:
        """`export_state` as a JSON string."""
        return json.dumps(self.export_state(), separators=(",", ":"))

    def loads(self, text: str) -> None:
        """`import_state` from a JSON string."""
        self.import_state(json.loads(text))
