"""
The inspector's ``twisted.web`` resource and the helper that serves it.

Owns: routing (``/``, ``/operations.json``, ``/operations/<id>``), the JSON
views, the loopback ``Host`` check and the security headers.  The HTML is
``_html``'s, the diagrams ``_diagrams``'s; what is live is the
``Registry``'s.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import structlog
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IListeningPort
from twisted.python.failure import Failure
from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET, Site

from fsmcancel.core import Operation, Registry
from fsmcancel.inspector._diagrams import DiagramCache
from fsmcancel.inspector._html import Group, Row, Step, error_page, index_page, operation_page

#: The ``Host`` names a loopback-bound inspector answers to.
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "[::1]", "::1"})

_LOG = structlog.get_logger("fsmcancel")

_SECURITY_HEADERS = {
    # Nothing is loaded from anywhere: no scripts at all, styles and SVG
    # inline only.
    b"content-security-policy": (
        b"default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
        b"base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    b"x-content-type-options": b"nosniff",
    b"referrer-policy": b"no-referrer",
    b"cache-control": b"no-store",
}

Op = Operation[Any, Any]
#: ``twisted.web.server.Request``, whose methods are not annotated.
Request = Any


class Inspector(Resource):
    """
    The inspector of the live operations in ``registry``.

    :param registry: the operations to show: those created with
        ``registry=`` this registry and not completed yet.
    :param refresh: seconds between automatic reloads of a page.
    :param limit: at most this many operations on the HTML page (all of
        them are in ``operations.json``).
    :param hosts: if given, the only ``Host`` names (without port) it
        answers to; others get a 403.
    :param reactor: spawns Graphviz's ``dot`` (an ``IReactorProcess``); the
        global reactor by default.
    """

    isLeaf = True

    def __init__(
        self,
        registry: Registry,
        *,
        refresh: float = 2.0,
        limit: int = 200,
        hosts: Iterable[str] | None = None,
        reactor: Any = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        if not isinstance(registry, Registry):
            raise TypeError(
                f"Inspector(registry=...) takes an fsmcancel Registry, not {registry!r}"
            )
        if reactor is None:
            from twisted.internet import reactor
        self.registry = registry
        self.refresh = refresh
        self.limit = limit
        self.hosts = None if hosts is None else frozenset(h.lower() for h in hosts)
        self._diagrams = DiagramCache(reactor)

    # -- routing -----------------------------------------------------------

    def render_GET(self, request: Request) -> bytes | int:
        """
        Route by path: ``/``, ``/operations.json``, ``/operations/<id>``.
        """
        for name, value in _SECURITY_HEADERS.items():
            request.setHeader(name, value)
        host = (request.getRequestHostname() or b"").decode("ascii", "replace").lower()
        if self.hosts is not None and host not in self.hosts:
            allowed = ", ".join(sorted(self.hosts))
            return self._error(request, 403, f"this inspector answers only to {allowed}")
        path = [segment.decode("utf-8", "replace") for segment in request.postpath or []]
        if not path:
            # Mounted under a path: without the slash, relative links break.
            request.redirect(request.prePathURL() + b"/")
            return b""
        if path == [""]:
            return self._later(request, self._index())
        if path == ["operations.json"]:
            return _json(request, {"operations": [_describe(op) for op in self._live()]})
        if len(path) == 2 and path[0] == "operations":
            return self._operation(request, path[1])
        return self._error(
            request,
            404,
            f"no page {'/'.join(path)!r}: the inspector serves /, /operations.json "
            "and /operations/<id>",
        )

    def _live(self) -> list[Op]:
        return self.registry.operations()

    # -- pages -------------------------------------------------------------

    def _index(self) -> Deferred[bytes]:
        ops = self._live()
        total = len(ops)
        grouped: dict[tuple[int, str], list[Op]] = {}
        for op in ops[: self.limit]:
            grouped.setdefault((id(op.spec), op.state), []).append(op)
        keys = [(members[0].spec, members[0].state) for members in grouped.values()]
        rows = [[_row(op) for op in members] for members in grouped.values()]

        def page(_: object) -> bytes:
            groups = [
                Group(f"g{i}", spec.name, state, self._diagrams.get(spec, state), tuple(members))
                for i, ((spec, state), members) in enumerate(zip(keys, rows, strict=True))
            ]
            return index_page(groups, total, self.refresh)

        return self._diagrams.ready(keys).addCallback(page)

    def _operation(self, request: Request, segment: str) -> bytes | int:
        as_json = segment.endswith(".json")
        wanted = segment[: -len(".json")] if as_json else segment
        accept = (request.getHeader(b"accept") or b"").decode("latin-1")
        as_json = as_json or "text/html" not in accept
        if not (wanted.isascii() and wanted.isdigit()):
            return self._error(request, 404, f"not an operation id: {wanted!r}", as_json)
        op = next((op for op in self._live() if op.id == int(wanted)), None)
        if op is None:
            message = (
                f"no live operation with id {wanted}: it has completed (completed "
                "operations leave the registry) or never existed"
            )
            return self._error(request, 404, message, as_json)
        now = op.clock.seconds()
        kept = self.registry.history
        steps = [Step(now - r.at, r.old, r.input, r.new) for r in op.history] if kept else None
        if as_json:
            history = [
                {
                    "at": r.at,
                    "seconds_ago": now - r.at,
                    "old": r.old,
                    "input": r.input,
                    "new": r.new,
                }
                for r in op.history
            ]
            return _json(request, {**_describe(op), "history_kept": kept, "history": history})
        row, spec, state = _row(op), op.spec, op.state

        def page(_: object) -> bytes:
            return operation_page(row, self._diagrams.get(spec, state), steps, self.refresh)

        return self._later(request, self._diagrams.ready([(spec, state)]).addCallback(page))

    def _error(self, request: Request, status: int, message: str, as_json: bool = False) -> bytes:
        request.setResponseCode(status)
        if as_json:
            return _json(request, {"error": message})
        request.setHeader(b"content-type", b"text/html; charset=utf-8")
        home = "../" * max(len(request.postpath or []) - 1, 0) or "./"
        return error_page(status, message, home)

    def _later(self, request: Request, body: Deferred[bytes]) -> int:
        """
        Answer with ``body`` once the diagrams it needs are drawn, unless the
        client has gone by then.
        """
        gone: list[object] = []
        request.notifyFinish().addBoth(gone.append)
        request.setHeader(b"content-type", b"text/html; charset=utf-8")

        def send(page: bytes) -> None:
            if not gone:
                request.write(page)
                request.finish()

        def failed(reason: Failure) -> None:
            _LOG.error("inspector page failed", exc_info=reason.value)
            if not gone:
                request.setResponseCode(500)
                request.write(error_page(500, f"the page failed: {reason.value!r}", "./"))
                request.finish()

        body.addCallbacks(send, failed)
        return NOT_DONE_YET


def _row(op: Op) -> Row:
    cancel_requested = bool(op.describe().get("cancel_requested", False))
    kind = op.spec.state(op.state).kind
    return Row(
        op.id,
        op.name,
        op.machine,
        op.state,
        kind,
        op.time_in_state,
        op.resources,
        cancel_requested,
    )


def _describe(op: Op) -> dict[str, object]:
    return {**op.describe(), "name": op.name, "url": f"operations/{op.id}"}


def _json(request: Request, data: object) -> bytes:
    request.setHeader(b"content-type", b"application/json")
    return json.dumps(data, indent=1).encode() + b"\n"


class _QuietSite(Site):
    """
    A ``Site`` that keeps no access log: a page that refreshes itself every
    two seconds would otherwise fill the application's log.
    """

    noisy = False
    displayTracebacks = False

    def log(self, request: http.Request) -> None:
        return None


def listen_inspector(
    registry: Registry,
    port: int = 0,
    *,
    interface: str = "127.0.0.1",
    reactor: Any = None,
    refresh: float = 2.0,
) -> IListeningPort:
    """
    Serve an `Inspector` of ``registry`` on ``interface:port`` (127.0.0.1
    and any free port by default); return the listening port
    (``.getHost().port`` says which, ``.stopListening()`` stops it).
    """
    if reactor is None:
        from twisted.internet import reactor
    loopback = interface in LOOPBACK_HOSTS or interface.startswith("127.")
    hosts = LOOPBACK_HOSTS | {interface} if loopback else None
    site = _QuietSite(  # type: ignore[no-untyped-call]
        Inspector(registry, refresh=refresh, hosts=hosts, reactor=reactor)
    )
    listening: IListeningPort = reactor.listenTCP(port, site, interface=interface)
    return listening
