"""
What the share finder tells its user: per-server statistics, the error
that names the shares that cannot be had, and the ``--json`` summary.

Kept apart from the machines (`examples.share_machines`) and from the
plain-Twisted comparison (``tests/benchmarks/share_finder_plain.py``),
which both record into `ServerStats` and raise `SharesUnavailable`, so that
counting their orchestration lines counts control flow, not bookkeeping
classes both need.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from twisted.python.failure import Failure

from examples.share_protocol import Request, ServerError


@dataclass
class ServerStats:
    """
    What one server did: requests sent, requests given up as stalled or
    failed (with what went wrong, ``problems``), and the longest silence
    after which a share download from it was given up.
    """

    queries: int = 0
    gets: int = 0
    stalls: int = 0
    errors: int = 0
    problems: list[str] = field(default_factory=list)
    longest_share_stall: float = 0.0

    def sent(self, request: Request) -> None:
        if request.share is None:
            self.queries += 1
        else:
            self.gets += 1

    def error(self, request: Request, failure: Failure) -> ServerError:
        """Record a failed request; return the error to fail it with."""
        self.errors += 1
        cause = failure.value
        what = str(cause) if isinstance(cause, ServerError) else failure.getErrorMessage()
        return self._problem(ServerError(f"{request}: {what}"))

    def stall(self, request: Request, silence: float) -> ServerError:
        """Record a request given up after ``silence`` seconds without data."""
        self.stalls += 1
        if request.share is not None:
            self.longest_share_stall = max(self.longest_share_stall, silence)
        return self._problem(ServerError(f"{request}: stalled: silent for {silence:.2f}s", silence))

    def _problem(self, error: ServerError) -> ServerError:
        self.problems.append(str(error))
        return error


@dataclass(frozen=True)
class Found:
    """Every share: the file (shares 0..K-1 in order) and who served each."""

    data: bytes
    sources: dict[int, str]


class Stats(dict[str, ServerStats]):
    """`ServerStats` by server, created on first use."""

    def __missing__(self, server: str) -> ServerStats:
        stats = self[server] = ServerStats()
        return stats


class SharesUnavailable(Exception):
    """
    Some shares cannot be had: ``missing`` maps each to what its holders
    did (``(server, error)``; empty when no server said it holds it).
    """

    def __init__(self, si: str, missing: Iterable[int], failures: Mapping[Request, Failure]):
        self.missing = {
            n: [(r.server, str(f.value)) for r, f in failures.items() if r.share == n]
            for n in missing
        }
        lines = [f"cannot get shares {', '.join(map(str, self.missing))} of {si}:"]
        for n, tried in self.missing.items():
            said = "; ".join(f"{server}: {error}" for server, error in tried)
            lines.append(f"  share {n}: {said or 'no server that answered holds it'}")
        super().__init__("\n".join(lines))


def summary(
    servers: Iterable[str],
    stats: Mapping[str, ServerStats],
    sources: Mapping[int, str],
    missing: Iterable[int],
    most_connections: int,
) -> dict[str, object]:
    """The ``--json`` object; every server is listed, asked or not."""

    def row(server: str) -> dict[str, object]:
        s = stats.get(server, ServerStats())
        served = sum(1 for used in sources.values() if used == server)
        return {
            "queries": s.queries,
            "gets": s.gets,
            "shares": served,
            "stalls": s.stalls,
            "errors": s.errors,
            "problems": s.problems,
        }

    longest = max((s.longest_share_stall for s in stats.values()), default=0.0)
    return {
        "shares": {str(n): server for n, server in sorted(sources.items())},
        "missing": sorted(missing),
        "servers": {server: row(server) for server in servers},
        "max_stall_detection_seconds": round(longest, 3),
        "max_open_connections": most_connections,
    }
