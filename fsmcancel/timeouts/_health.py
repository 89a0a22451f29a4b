"""
Peer health: which peers look dead, when to probe them, and an order in
which to try peers.

Why this replaces exponential backoff of timeouts: backing off a *call's*
limit after timeouts makes a dead peer slower to detect on every call
(5, 10, 20, 30 s), exactly when it matters most, and concurrent stalls to one
peer counted as "consecutive".  Here a stall never lengthens any call's
limit.  Instead, as in Finagle's failure accrual and Envoy's outlier
detection:

* ``suspect_after`` consecutive stalls with no sign of life in between make
  a peer **suspect**.  `rank` puts suspect peers last, so callers that
  rank their candidates steer new calls away from them.
* A suspect peer is **probed** ``probe_interval`` later: `rank` puts it first
  for one caller, and the next call to it is the probe.  Any sign of life
  revives the peer.  A probe that stalls again multiplies the interval by the
  rule's ``backoff`` (up to ``probe_max``): that is where backoff still earns
  its place, keeping what a dead peer costs its callers to one stalled call
  per interval, growing while it stays dead.
* A probe of a peer **never seen alive** gets a generous limit
  (``probe_multiplier`` times the usual): such a peer may be dead, or alive
  but slower than its kind, and only waiting longer tells.  A peer that was
  answering and went silent is probed with the usual limit, so a dead peer
  is never detected more slowly than on its first stall.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from fsmcancel.timeouts._rule import Rule

#: Weight of the newest call in a peer's recent stall share.
_RECENT = 0.05


@dataclass(frozen=True)
class PeerStatus:
    """
    What is known about one peer's health, for ranking and for people.

    ``state`` is ``"unknown"`` (never called), ``"healthy"``, ``"suspect"``,
    ``"probe due"`` (suspect, and a probe may be sent now) or ``"probing"``
    (a probe is running).  ``recent_stalls`` is the share of recent calls
    that stalled (a call a hedge dropped for its silence counting in part,
    see `PeerHealth.bypassed`); ``probe_in`` the seconds until the next
    probe is due (None unless suspect).
    """

    peer: str
    state: str
    strikes: int
    calls: int
    stalls: int
    recent_stalls: float
    seen_alive: bool
    last_alive: float | None
    failed_probes: int
    probe_in: float | None


class PeerHealth:
    """The health record of one peer, across call kinds."""

    __slots__ = (
        "calls",
        "cap",
        "claimed_until",
        "failed_probes",
        "inflight",
        "last_alive",
        "probe_at",
        "probing",
        "recent",
        "silent",
        "stalls",
        "strikes",
        "suspect",
    )

    def __init__(self) -> None:
        self.strikes = 0
        self.suspect = False
        self.probe_at = 0.0
        self.failed_probes = 0
        self.probing = False
        self.claimed_until = 0.0
        self.last_alive: float | None = None
        self.calls = 0
        self.stalls = 0
        self.recent = 0.0
        #: The last call ended in a stall without any sign of life.
        self.silent = False
        #: While calls keep stalling silently, the limit of the first of
        #: them: later calls never get more (the estimate may drift up
        #: meanwhile; a dead peer must not be detected more slowly).
        self.cap: float | None = None
        #: Calls to this peer still running: when one stalls silently, the
        #: others' silence is judged by the same limit from then on.
        self.inflight: set[Any] = set()

    @property
    def seen_alive(self) -> bool:
        return self.last_alive is not None

    def due(self, now: float) -> bool:
        return self.suspect and not self.probing and now >= self.probe_at

    def probe_next(self, now: float) -> bool:
        """Whether the next call to this peer is its probe (due, or claimed by `rank`)."""
        return self.due(now) or (self.suspect and not self.probing and now < self.claimed_until)

    def start(self, now: float) -> bool:
        """A call to this peer starts; True if it is the probe."""
        if self.probe_next(now):
            self.probing = True
            self.claimed_until = 0.0
            return True
        return False

    def alive(self, now: float) -> None:
        """A sign of life: an answer (even an error) or progress."""
        self.last_alive = now
        self.silent = False
        self.cap = None
        self.strikes = 0
        self.suspect = False
        self.probing = False
        self.failed_probes = 0

    def ended(
        self,
        stalled: bool,
        probe: bool,
        now: float,
        rule: Rule,
        *,
        silent: bool = False,
        limit: float | None = None,
    ) -> None:
        """
        A call ended: ``stalled`` if given up at its limit, ``silent`` if it
        never showed a sign of life, ``limit`` its limit before one.
        """
        self.calls += 1
        self.recent += _RECENT * ((1.0 if stalled else 0.0) - self.recent)
        if probe:
            self.probing = False
        if not stalled:
            return
        self.stalls += 1
        self.silent = silent
        if silent and limit is not None and (self.cap is None or limit < self.cap):
            self.cap = limit
            for call in list(self.inflight):
                call.tighten(limit)
        self._strike(now, rule, probe)

    def bypassed(self, now: float, rule: Rule, share: float, *, silent: bool, probe: bool) -> None:
        """
        A call was dropped because another peer's attempt answered first,
        while this one had been silent for longer than the hedge delay:
        ``share`` is how much of its own limit that silence reached.  It was
        not given up at its limit, so it is no stall (nothing is capped), but
        it is evidence all the same, weighed by ``share``: a hedge delay's
        silence is weak evidence once (a live peer shows one now and then),
        strong evidence call after call.  It counts that much in the recent
        share `rank` reads, and, with no sign of life at all, as a strike.
        Without this, a dead peer whose calls backups always rescue is never
        made suspect nor ranked down.
        """
        self.calls += 1
        self.recent += _RECENT * (min(1.0, share) - self.recent)
        if silent:
            self._strike(now, rule, probe)

    def _strike(self, now: float, rule: Rule, probe: bool) -> None:
        self.strikes += 1
        if probe:
            self.failed_probes += 1
            self.probe_at = now + self.interval(rule)
        elif not self.suspect and self.strikes >= rule.health.suspect_after:
            self.suspect = True
            self.probe_at = now + self.interval(rule)

    def interval(self, rule: Rule) -> float:
        h = rule.health
        steps = min(self.failed_probes, 64)
        return float(min(h.probe_max, h.probe_interval * rule.backoff**steps))

    def status(self, peer: str, now: float) -> PeerStatus:
        if self.suspect:
            state = "probing" if self.probing else "probe due" if self.due(now) else "suspect"
        else:
            state = "healthy" if self.calls or self.seen_alive else "unknown"
        return PeerStatus(
            peer=peer,
            state=state,
            strikes=self.strikes,
            calls=self.calls,
            stalls=self.stalls,
            recent_stalls=round(self.recent, 6),
            seen_alive=self.seen_alive,
            last_alive=self.last_alive,
            failed_probes=self.failed_probes,
            probe_in=max(0.0, self.probe_at - now) if self.suspect else None,
        )

    # -- persistence

    def export(self) -> dict[str, Any]:
        return {
            "strikes": self.strikes,
            "suspect": self.suspect,
            "failed_probes": self.failed_probes,
            "last_alive": self.last_alive,
            "calls": self.calls,
            "stalls": self.stalls,
            "recent": self.recent,
        }

    @classmethod
    def load(cls, data: Any, where: str, now: float, rule: Rule) -> PeerHealth:
        """
        Rebuild from `export`.  Clock readings do not survive a restart, so
        a suspect peer's probe is due one interval after loading, and a
        peer seen alive is remembered as seen alive, not when.
        """
        if not isinstance(data, dict):
            raise ValueError(f"{where}: expected an object, got {data!r}")
        h = cls()
        for name in ("strikes", "failed_probes", "calls", "stalls"):
            value = data.get(name, 0)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{where}.{name}: expected a non-negative integer, got {value!r}")
            setattr(h, name, value)
        suspect = data.get("suspect", False)
        if not isinstance(suspect, bool):
            raise ValueError(f"{where}.suspect: expected true or false, got {suspect!r}")
        recent = data.get("recent", 0.0)
        if isinstance(recent, bool) or not isinstance(recent, (int, float)) or not 0 <= recent <= 1:
            raise ValueError(f"{where}.recent: expected a share between 0 and 1, got {recent!r}")
        h.suspect = suspect
        h.recent = float(recent)
        if data.get("last_alive") is not None:
            h.last_alive = now
        if suspect:
            h.probe_at = now + h.interval(rule)
        return h


def _group(health: PeerHealth | None, now: float) -> int:
    if health is None or not health.suspect:
        return 1
    return 3


def _stall_bucket(health: PeerHealth | None) -> int:
    # Coarse, so that small differences in luck do not override the
    # caller's own order (which may spread load on purpose).
    if health is None:
        return 0
    share = health.recent
    return 0 if share < 0.01 else 1 if share < 0.05 else 2 if share < 0.2 else 3


def rank(
    peers: Sequence[str], records: dict[str, PeerHealth], now: float, rule_of: Any
) -> list[str]:
    """
    ``peers`` in the order to try them: peers not suspect first (fewer
    recent stalls first, the caller's order otherwise), suspect peers last,
    except that one suspect peer whose probe is due is put first, once: the
    caller that got this order sends the probe.
    """
    probe: str | None = None
    for peer in peers:
        health = records.get(peer)
        if probe is None and health is not None and health.due(now) and now >= health.claimed_until:
            probe = peer
            # Claimed for one probe interval; if no call to it starts, the
            # claim lapses and the next rank() offers it again.
            health.claimed_until = now + rule_of(peer).health.probe_interval
            health.probe_at = health.claimed_until
    ordered = sorted(
        (p for p in peers if p != probe),
        key=lambda p: (_group(records.get(p), now), (records.get(p) or PeerHealth()).strikes,
                       _stall_bucket(records.get(p))),
    )  # fmt: skip
    return [probe, *ordered] if probe is not None else ordered
