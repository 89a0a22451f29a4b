"""
Adaptive timeouts for remote calls that can stall silently.

A call to a host that vanished without a FIN or RST stalls for 15-20
minutes before TCP (``tcp_retries2``) or Foolscap notices.  A state that
starts a remote call through `Timeouts.call` owns it as a resource: the call
is guarded by a timer and, when the rule fires, its Deferred is cancelled and
the machine receives a `TimedOut` input; when the state is left the call is
cancelled and nothing is reported.

Policies (per call kind and per peer):

``fixed``
    A constant whole-call deadline (``deadline.initial``).
``deadline``
    A whole-call deadline learned from latencies: ``deadline.quantile`` *
    ``deadline.multiplier``.  Needs no progress signal, but cannot detect a
    stall faster than the slowest live calls take.
``idle`` (default)
    A stall is declared when the silence since the last progress (each body
    chunk, PONG, or data-last-received timestamp) is improbable given the
    gaps seen so far (phi accrual).  ``deadline.max`` remains a hard limit.
``hedge``
    ``idle``, plus `Timeouts.hedged` starts a backup on another peer after the
    peer's ``hedge.quantile`` latency, within the ``hedge.budget``.

Every learned value stays within the section's ``min``..``max``; a cold key
uses ``initial``; consecutive timeouts multiply the timeouts by ``backoff``.
Timed-out and cancelled calls are censored observations (see
``_estimators``), so they neither collapse nor ratchet the estimates.

Configuration
-------------
TOML (or a dict of the same shape); every key is optional::

    [default]
    policy = "idle"
    backoff = 2.0

    [default.deadline]
    initial = "10s"
    min = "250ms"
    max = "30m"
    quantile = 0.999
    multiplier = 2.0
    window = 1000

    [default.idle]
    initial = "5s"
    min = "1s"
    max = "30s"
    threshold = 8.0
    min_std = "100ms"
    acceptable_pause = "1s"
    window = 200

    [default.hedge]
    initial = "1s"
    min = "10ms"
    max = "10s"
    quantile = 0.95
    budget = 0.05
    burst = 10

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

    FSMCANCEL_TIMEOUTS__DEFAULT__IDLE__THRESHOLD=8
    FSMCANCEL_TIMEOUTS__KINDS__GET_SHARE__POLICY=hedge
    FSMCANCEL_TIMEOUTS__PEERS__V0_ABC__DEADLINE__MAX=2m

A kind or peer named in an environment variable matches the name used in
the file ignoring case and treating ``-``, ``.`` and other punctuation as
``_``; otherwise the lowercased name is used.

Bad configuration raises `ConfigError` naming every bad key path (or
variable) and value; nothing is applied unless everything is valid.
"""

from fsmcancel.timeouts._config import ConfigError, TimeoutConfig, load_config, rule_label
from fsmcancel.timeouts._estimators import Limit
from fsmcancel.timeouts._guard import GuardedCall, TimedOut
from fsmcancel.timeouts._health import PeerStatus
from fsmcancel.timeouts._hedge import HedgedCall
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
