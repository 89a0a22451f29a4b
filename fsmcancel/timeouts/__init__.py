"""
Adaptive timeouts for remote calls that can stall silently.

A call to a host that vanished without a FIN or RST stalls for 15-20
minutes before TCP (``tcp_retries2``) or Foolscap notices.  A state that
starts a remote call through `Timeouts` owns it as a resource: the call is
guarded by a timer and, when its limit fires, its Deferred is cancelled and
the machine receives a `TimedOut` input; when the state is left the call is
cancelled and nothing is reported.

The API
-------
One `Timeouts` per process (it learns)::

    timeouts = Timeouts(load_config("timeouts.toml"))

``timeouts.call(op, fn, *args, kind=, peer=, on_result=, on_failure=, on_timeout=)``
    Start ``fn(*args)`` owned by the state being entered (``op.own``; it
    calls ``op.release`` when it ends, and reads ``op.clock``).  Exactly one
    of the three callbacks runs, unless the state is left first.  Returns a
    `GuardedCall`: call its ``progress()`` for every chunk, PONG or other
    sign of life (O(1), never touches the reactor; ``progress(at=t)`` takes
    a "data last received at" timestamp).
``timeouts.hedged(op, fn, *args, kind=, peers=, ...)``
    ``fn(peer, *args)`` on ``peers[0]``; under the ``hedge`` policy, once
    the newest attempt has been silent for longer than the learned hedge
    delay (before its first sign of life, or mid-stream), the next peer is
    tried too, budget permitting.  Every attempt keeps running until one
    answers (then the others are cancelled: ``call.winner``,
    ``call.losers``); each is killed only at its own conservative limit.
    Report progress with ``call.progress(peer)``.
``timeouts.rank(kind, peers)``
    The order to try ``peers`` in: not suspect first (fewer recent stalls
    first, your order otherwise), suspect peers last, except one suspect
    peer whose probe is due, put first for one caller.
``timeouts.health(peer)``
    A `PeerStatus`: ``unknown``, ``healthy``, ``suspect``, ``probe due`` or
    ``probing``, with counts and when the next probe is due.
``timeouts.explain(kind, peer)``
    An `Explanation`: the limits the next call will get (before the first
    sign of life, between progress events, whole call, hedge delay), each a
    `Limit` with its ``source`` (``initial``, ``prior``, ``learned``,
    ``probe``, ``explore``, ``fixed``) and why; ``.lines()`` for people.
    ``fsmcancel timeouts show --state FILE`` prints it for a ``dumps()`` file.
``timeouts.dumps()`` / ``timeouts.loads(text)``
    Everything learned, as JSON, so a restarted process does not start cold.

How limits are learned
----------------------
* **Silence, not latency** (``idle``, the default): a stall is declared
  when a call has been silent for ``idle.multiplier`` (3.5) times the
  ``idle.quantile`` (p99) of the silences live calls of its kind showed:
  before their first sign of life, or between two progress events (and
  from the last one to the answer).  Every gap is learned, however short
  (a stream 5 ms apart trains the model).
  The distributions are kept as log-scale histograms (6% bins), so Pareto
  pauses are seen as they are, not through a normal fit.
* **Learn from the kind**: a peer's estimate reads its own histogram plus
  its kind's pool (every peer's observations), weighted by their counts:
  a new peer of a known kind gets the kind's limit on its first call.
  ``initial`` applies only while the whole kind has fewer than 20
  observations (and never below 3.5 times the longest seen), then fades
  out linearly by the 333rd (at p99: when the p99's upper confidence bound
  first lies inside the data).
* **Stalls are their own population**: a call given up at its limit is
  counted as a stall (for health) and never enters the live estimates, so
  they stay identifiable however frequent stalls are: no ratchet to the cap,
  no hold at ``initial``.  Calls their caller cancelled are censored live
  observations (Kaplan-Meier).  The multiplier's headroom lets live calls
  slower than the estimate complete and be learned (no collapse onto the
  fast majority).
* **Health instead of backoff**: a stall never lengthens any call's limit.
  ``health.suspect_after`` (2) stalls in a row with no sign of life make a
  peer suspect; it is probed ``health.probe_interval`` later, and each
  probe that stalls multiplies the interval by ``backoff`` (up to
  ``health.probe_max``): the only place backoff is left, bounding what a
  dead peer costs.  A sign of life revives it.
* **Peers slower than their kind** are learned by a generous limit
  (``health.probe_multiplier``, 4x): on the probe of a peer never seen
  alive, and on a few exploratory calls of a peer that answers but whose
  calls time out more than the kind's stalls explain.

Policies (per call kind and per peer):

``fixed``
    A constant whole-call deadline (``deadline.initial``).
``deadline``
    A whole-call deadline learned from latencies: ``deadline.quantile`` *
    ``deadline.multiplier``.  Needs no progress signal, but cannot detect a
    stall faster than the slowest live calls take.
``idle`` (default)
    The silence limits above; ``deadline.max`` remains a hard limit.
``hedge``
    ``idle``, plus `Timeouts.hedged` starts backups after the
    ``hedge.quantile`` of the silences, within the ``hedge.budget``.  An
    attempt dropped after being silent past the hedge delay tells its
    peer's health (the recent stall share, weighed by how far into its
    limit the silence went; a strike, with no sign of life), so a dead
    peer that backups keep rescuing is still made suspect.

Configuration
-------------
TOML (or a dict of the same shape); every key is optional::

    [default]
    policy = "idle"
    backoff = 2.0              # probe interval multiplier per failed probe

    [default.deadline]
    initial = "10s"
    min = "250ms"
    max = "30m"
    quantile = 0.999
    multiplier = 2.0
    window = 1000

    [default.idle]
    initial = "3s"
    min = "1s"
    max = "30s"
    quantile = 0.99
    multiplier = 3.5
    window = 200

    [default.hedge]
    initial = "1s"
    min = "10ms"
    max = "10s"
    quantile = 0.95
    budget = 0.05
    burst = 10

    [default.health]
    suspect_after = 2
    probe_interval = "10s"
    probe_max = "5m"
    probe_multiplier = 4.0

    [kinds.get_share]          # overrides for one call kind
    policy = "hedge"

    [peers."v0-abc"]           # overrides for one peer
    idle.max = "1m"

Durations need a unit: ``us``, ``ms``, ``s``, ``m``, ``h`` ("250ms", "5s",
"2m").

Precedence, lowest first: built-in defaults < TOML file < dict <
environment; and for a call of kind K to peer P: ``default`` < ``kinds.K`` <
``peers.P`` (merged knob by knob).

Environment variables: ``FSMCANCEL_TIMEOUTS__<SECTION>__<KNOB...>``, with
``__`` separating levels, case-insensitive, validated like the file::

    FSMCANCEL_TIMEOUTS__DEFAULT__IDLE__MULTIPLIER=5
    FSMCANCEL_TIMEOUTS__KINDS__GET_SHARE__POLICY=hedge
    FSMCANCEL_TIMEOUTS__PEERS__V0_ABC__DEADLINE__MAX=2m

A kind or peer named in an environment variable matches the name used in
the file ignoring case and treating ``-``, ``.`` and other punctuation as
``_``; otherwise the lowercased name is used.

Bad configuration raises `ConfigError` naming every bad key path (or
variable) and value; nothing is applied unless everything is valid.
``fsmcancel timeouts check FILE`` loads it exactly so (environment
included).
"""

from fsmcancel.timeouts._config import ConfigError, TimeoutConfig, rule_label
from fsmcancel.timeouts._estimators import Limit
from fsmcancel.timeouts._guard import GuardedCall, TimedOut
from fsmcancel.timeouts._health import PeerStatus
from fsmcancel.timeouts._hedge import HedgedCall
from fsmcancel.timeouts._loading import load_config
from fsmcancel.timeouts._rule import Rule
from fsmcancel.timeouts._timeouts import Explanation, Timeouts

__all__ = [
    "ConfigError",
    "Explanation",
    "GuardedCall",
    "HedgedCall",
    "Limit",
    "PeerStatus",
    "Rule",
    "TimedOut",
    "TimeoutConfig",
    "Timeouts",
    "load_config",
    "rule_label",
]
