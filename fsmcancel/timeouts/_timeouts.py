"""
`Timeouts`: what one process has learned (per kind, per (kind, peer), per
peer), the entry points a state's behaviour uses to start guarded calls, and
the answers to "what will the next call get, and why?".

It depends on fsmcancel's operation only through the small `Operation`
protocol below (``clock``, ``own``, ``release``), so the timeouts can be
used, and tested, without the rest of the core.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast

from twisted.internet.defer import Deferred
from twisted.python.failure import Failure

from fsmcancel.timeouts import _state
from fsmcancel.timeouts._clock import ReactorTime, seconds_of
from fsmcancel.timeouts._config import TimeoutConfig
from fsmcancel.timeouts._estimators import KeyEstimator, Limit, Pool
from fsmcancel.timeouts._guard import GuardedCall, Plan, TimedOut
from fsmcancel.timeouts._health import PeerHealth, PeerStatus, rank
from fsmcancel.timeouts._hedge import HedgeBudget, HedgedCall
from fsmcancel.timeouts._loading import load_config
from fsmcancel.timeouts._rule import HedgeRule, Rule

T = TypeVar("T")
R = TypeVar("R")


class Operation(Protocol):
    """What a guarded call needs from fsmcancel's operation."""

    @property
    def clock(self) -> ReactorTime: ...

    def own(self, resource: R, release: Callable[[R], object], *, name: str | None = None) -> R: ...

    def release(self, resource: object) -> object: ...


def _cancel(call: GuardedCall[Any] | HedgedCall[Any]) -> None:
    call.cancel()


@dataclass(frozen=True)
class Explanation:
    """
    What the next call of ``kind`` to ``peer`` will get, and why: its limit
    before the first sign of life, between progress events, as a whole,
    the hedge delay (under the ``hedge`` policy), and the peer's health.
    ``own`` and ``pooled`` count the observations of this peer and of the
    whole kind.
    """

    kind: str
    peer: str
    policy: str
    first_sign: Limit
    silence: Limit
    deadline: Limit
    hedge: Limit | None
    health: PeerStatus
    own: int
    pooled: int

    def lines(self) -> list[str]:
        """The explanation as text, one limit a line."""
        h = self.health
        probe = f", probe in {h.probe_in:.1f}s" if h.probe_in is not None else ""
        rows = [
            f"kind={self.kind} peer={self.peer} policy={self.policy}: "
            f"{self.own} own observations, {self.pooled} of the kind",
            f"  health: {h.state} ({h.calls} calls, {h.stalls} stalled, "
            f"{h.strikes} in a row, recent stall share {h.recent_stalls:.1%}{probe})",
        ]
        limits = [("first sign", self.first_sign), ("silence", self.silence)]
        limits.append(("deadline", self.deadline))
        if self.hedge is not None:
            limits.append(("hedge after", self.hedge))
        for name, limit in limits:
            rows.append(f"  {name}: {limit.seconds:.3f}s [{limit.source}] {limit.why}")
        return rows


class Timeouts:
    """
    Adaptive timeouts for remote calls: one estimator per (kind, peer), a
    pool per kind (the prior of its new peers), a health record per peer.

    ``max_keys`` bounds how many keys (and peers) are remembered (least
    recently used are forgotten), so a process talking to ever-new peers
    does not grow without bound; each key is bounded by its histograms.
    """

    def __init__(
        self,
        config: TimeoutConfig | None = None,
        *,
        max_keys: int = 10_000,
        clock: ReactorTime | None = None,
    ) -> None:
        # No configuration given: the defaults with the environment's
        # overrides, the documented precedence (``load_config()``).
        self.config = load_config() if config is None else config
        self._max_keys = max_keys
        self._keys: OrderedDict[tuple[str, str], tuple[Rule, KeyEstimator]] = OrderedDict()
        self._pools: dict[str, Pool] = {}
        self._peers: OrderedDict[str, PeerHealth] = OrderedDict()
        self._budgets: dict[str, HedgeBudget] = {}
        self._clocks: dict[int, tuple[ReactorTime, Callable[[], float]]] = {}
        #: The clock health is judged by when no call supplies one (`rank`,
        #: `explain`); the last clock a call used, else the global reactor.
        self._clock = clock

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
        Start ``fn(peer, *args)`` on ``peers[0]``; under the ``hedge``
        policy, once the newest attempt has been silent for longer than the
        learned hedge delay (before its first sign of life, or between
        progress events), start it on the next peer too, budget permitting.
        Attempts keep running until one answers; the others are cancelled
        then.  Report progress with ``call.progress(peer)``.  Under any
        other policy only ``peers[0]`` is tried, so hedging can be switched
        per kind or peer from configuration alone.
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
        self._clock = clock
        health = self._health(peer)
        plan = self._plan(rule, estimator, health, shared[1](), start=True)
        return GuardedCall(
            clock, estimator, health, rule, plan, kind, peer,
            on_result, on_failure, on_timeout, end, shared[1],
        )  # fmt: skip

    def _plan(
        self, rule: Rule, est: KeyEstimator, health: PeerHealth, now: float, *, start: bool
    ) -> Plan:
        """
        The limits of the next call.  With ``start``, the call is starting:
        a due probe or exploration is spent on it.
        """
        first = est.silence_limit(rule, False)
        generous = rule.health.probe_multiplier
        high = max(rule.idle.max, rule.deadline.max if rule.policy == "deadline" else 0.0)
        probe = health.start(now) if start else health.probe_next(now)
        if health.silent and health.cap is not None and health.cap < first.seconds:
            why = f"capped at the limit of the first of its silent stalls; {first.why}"
            first = Limit(health.cap, "suspect", why)
        elif health.suspect:
            first = Limit(first.seconds, "suspect", first.why)
        if probe and not health.seen_alive:
            why = "probe of a peer never seen alive: slower than its kind, or dead?"
            return Plan(first.scaled(generous, high, "probe", why), generous, True)
        if probe:
            why = "probe of a suspect peer, usual limit: " + first.why
            return Plan(Limit(first.seconds, "probe", why), 1.0, True)
        # Not after a call that never showed a sign of life: that peer may
        # be dead, and must be detected as fast as before.
        if est.explore and not health.silent and not health.suspect:
            if start:
                est.explore -= 1
            why = "explore: a call timed out, then the peer answered; slower than the limit?"
            return Plan(first.scaled(generous, high, "explore", why), generous, False)
        return Plan(first, 1.0, False)

    # -- what is known

    def rule(self, kind: str, peer: str) -> Rule:
        return self._key(kind, peer)[0]

    def estimator(self, kind: str, peer: str) -> KeyEstimator:
        return self._key(kind, peer)[1]

    def pool(self, kind: str) -> Pool:
        """What every peer of ``kind`` has taught: the prior of a new peer."""
        pool = self._pools.get(kind)
        if pool is None:
            pool = self._pools[kind] = Pool(self.config.rule(kind, None))
        return pool

    def health(self, peer: str) -> PeerStatus:
        """The health of ``peer``: healthy, suspect, probe due, probing or unknown."""
        record = self._peers.get(peer) or PeerHealth()
        return record.status(peer, self._now())

    def rank(self, kind: str, peers: Sequence[str]) -> list[str]:
        """
        ``peers`` in the order to try them for a call of ``kind``: healthy
        peers first (fewer recent stalls first, your order otherwise),
        suspect peers last, except that a suspect peer whose probe is due is
        put first for one caller, whose call to it is the probe.
        """
        return rank(peers, self._peers, self._now(), lambda p: self.rule(kind, p))

    def explain(self, kind: str, peer: str) -> Explanation:
        """What the next call of ``kind`` to ``peer`` will get, and why."""
        rule, est = self._peek(kind, peer)
        record = self._peers.get(peer) or PeerHealth()
        now = self._now()
        plan = self._plan(rule, est, record, now, start=False)
        silence = est.silence_limit(rule, True)
        if plan.factor != 1.0:
            silence = silence.scaled(plan.factor, rule.idle.max, plan.first.source, plan.first.why)
        hedge = est.hedge_delay(rule, False) if rule.policy == "hedge" else None
        return Explanation(
            kind, peer, rule.policy, plan.first, silence, est.deadline(rule), hedge,
            record.status(peer, now), est.first.seen + est.gaps.seen, est.pool.first.seen
            + est.pool.gaps.seen,
        )  # fmt: skip

    def known(self) -> list[tuple[str, str]]:
        """Every (kind, peer) something was learned about, oldest first."""
        return list(self._keys)

    def budget(self, kind: str, rule: HedgeRule) -> HedgeBudget:
        budget = self._budgets.get(kind)
        if budget is None:
            budget = self._budgets[kind] = HedgeBudget(rule)
        return budget

    def _now(self) -> float:
        if self._clock is None:
            from twisted.internet import reactor

            self._clock = cast(ReactorTime, reactor)
        assert self._clock is not None
        return self._clock.seconds()

    def _health(self, peer: str) -> PeerHealth:
        record = self._peers.get(peer)
        if record is None:
            record = self._peers[peer] = PeerHealth()
            if len(self._peers) > self._max_keys:
                self._peers.popitem(last=False)
        else:
            self._peers.move_to_end(peer)
        return record

    def _peek(self, kind: str, peer: str) -> tuple[Rule, KeyEstimator]:
        """The key's rule and estimator, without remembering a new key."""
        entry = self._keys.get((kind, peer))
        if entry is not None:
            return entry
        rule = self.config.rule(kind, peer)
        return rule, KeyEstimator(rule, self._pools.get(kind) or Pool(rule))

    def _key(self, kind: str, peer: str) -> tuple[Rule, KeyEstimator]:
        key = (kind, peer)
        entry = self._keys.get(key)
        if entry is None:
            rule = self.config.rule(kind, peer)
            entry = self._keys[key] = (rule, KeyEstimator(rule, self.pool(kind)))
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
        return _state.export_state(self._pools, self._keys, self._peers)

    def import_state(self, state: Mapping[str, Any]) -> None:
        """
        Load what `export_state` produced.  Everything is parsed before
        anything is installed, so bad state changes nothing; ``ValueError``
        names the entry and field that is wrong.
        """
        pools, keys, peers = _state.import_state(state, self.config, self._now())
        self._pools.update(pools)
        for key, (rule, est) in keys.items():
            est.pool = self.pool(key[0])
            est.pool_gaps = est.pool.gaps
            self._keys[key] = (rule, est)
            self._keys.move_to_end(key)
        self._peers.update(peers)
        while len(self._keys) > self._max_keys:
            self._keys.popitem(last=False)

    def dumps(self) -> str:
        """`export_state` as a JSON string."""
        return _state.dumps(self.export_state())

    def loads(self, text: str) -> None:
        """`import_state` from a JSON string."""
        self.import_state(_state.loads(text))
