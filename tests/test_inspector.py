"""
The inspector (``fsmcancel.inspector``) over real HTTP on 127.0.0.1, with
live operations holding real connections, in this process (the reactor is
iterated, see ``reactor_util``).  The page in a real browser is tested in
``test_inspector_browser.py``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import pytest
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import TCP4ClientEndpoint
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.python.failure import Failure
from twisted.web.client import Agent, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.server import Site

from examples._servers import SlowLineServer, listen_slow_lines
from examples.fetch_line import Target, fetch_line_machine
from fsmcancel import Cancellable, Operation, OperationBuilder, Registry
from fsmcancel.diagram import GraphvizNotFound, find_dot
from fsmcancel.inspector import Inspector, listen_inspector
from tests.html_dom import Element, current_node_titles, node_fills, parse
from tests.reactor_util import iterate_until, outcome_of, reactor, run_until

# -- a machine whose names are hostile ------------------------------------------

EVIL_MACHINE = '<script>alert("machine")</script>'
EVIL_STATE = '"><img src=x onerror=alert(1)> -- -->'
EVIL_RESOURCE = "</td></tr><script>alert(2)</script> & co"


class Evil(Cancellable, Protocol):
    def start(self) -> None: ...


_e = OperationBuilder(Evil, object, name=EVIL_MACHINE)
evil_idle = _e.state("idle")
evil_running = _e.state(EVIL_STATE, resources=[EVIL_RESOURCE])
evil_done = _e.terminal_state("done")


@evil_idle.upon(Evil.start).to(evil_running)
def _evil_start(inputs: Evil, op: Operation[Evil, object]) -> None:
    op.own(object(), lambda _: None, name=EVIL_RESOURCE)


evil_idle.upon(Evil.cancel).to(evil_done).returns(None)
evil_running.upon(Evil.cancel).to(evil_done).returns(None)
evil_machine = _e.build()


# -- fixtures --------------------------------------------------------------------


@dataclass
class Live:
    registry: Registry
    server: SlowLineServer
    lines: list[Operation[Any, Any]]
    evil: Operation[Evil, object]
    url: str

    def all(self) -> list[Operation[Any, Any]]:
        return [*self.lines, self.evil]


@dataclass
class Response:
    code: int
    headers: Headers
    body: bytes

    def header(self, name: str) -> str:
        values = self.headers.getRawHeaders(name) or [""]
        return str(values[0])

    def json(self) -> Any:
        assert self.header("content-type") == "application/json"
        return json.loads(self.body)

    def dom(self) -> Element:
        assert self.header("content-type") == "text/html; charset=utf-8"
        return parse(self.body)


class Direct:
    """
    Connects to the URL's IP address directly: ``Agent(reactor)`` resolves
    names in the reactor's thread pool, which does not run while a test
    iterates the reactor.
    """

    def endpointForURI(self, uri: Any) -> TCP4ClientEndpoint:
        return TCP4ClientEndpoint(reactor, uri.host.decode(), uri.port)


def get(url: str, **headers: str) -> Response:
    agent = Agent.usingEndpointFactory(reactor, Direct())
    sent = Headers({name.replace("_", "-"): [value] for name, value in headers.items()})
    response = run_until(agent.request(b"GET", url.encode(), sent))
    body: Deferred[bytes] = Deferred()
    response.deliverBody(Body(body))
    return Response(response.code, response.headers, run_until(body))


class Body(TwistedProtocol):
    """
    Collects a response body (``readBody`` warns about the transport an
    endpoint-factory agent gives it).
    """

    def __init__(self, done: Deferred[bytes]) -> None:
        self.done = done
        self.data = b""

    def dataReceived(self, data: bytes) -> None:
        self.data += data

    def connectionLost(self, reason: Failure = Failure(ResponseDone())) -> None:  # noqa: B008
        if reason.check(ResponseDone, PotentialDataLoss):
            self.done.callback(self.data)
        else:
            self.done.errback(reason)


def start_live(registry: Registry, count: int = 2) -> tuple[SlowLineServer, list[Any]]:
    """
    ``count`` fetch-line operations, each holding a connection to a server
    that never answers (within the test).
    """
    server = listen_slow_lines(delay=3600)
    listening: Any = server.port
    endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", listening.getHost().port)
    lines = []
    for _ in range(count):
        op = fetch_line_machine(Target(endpoint), registry=registry)
        op.inputs.start()
        lines.append(op)
    iterate_until(lambda: all(op.state == "reading" for op in lines), what="connections")
    return server, lines


def stop_server(server: SlowLineServer) -> None:
    listening: Any = server.port
    run_until(listening.stopListening())


def finish(ops: list[Operation[Any, Any]]) -> None:
    for op in ops:
        op.cancel("the test is over")
        outcome_of(op.completion)


@pytest.fixture
def live() -> Iterator[Live]:
    registry = Registry(history=5)
    server, lines = start_live(registry)
    evil = evil_machine(object(), registry=registry)
    evil.inputs.start()
    port: Any = listen_inspector(registry)
    address = port.getHost()
    try:
        yield Live(registry, server, lines, evil, f"http://127.0.0.1:{address.port}/")
    finally:
        finish([*lines, evil])
        run_until(port.stopListening())
        stop_server(server)


def graphviz() -> bool:
    try:
        find_dot()
    except GraphvizNotFound:
        return False
    return True


needs_graphviz = pytest.mark.skipif(
    not graphviz(), reason="Graphviz's dot is not installed (Debian: apt-get install graphviz)"
)


def row_of(dom: Element, op: Operation[Any, Any]) -> Element:
    [row] = dom.find_all(lambda e: e.tag == "tr" and e.attrs.get("data-op-id") == str(op.id))
    return row


def group_of(dom: Element, machine: str, state: str) -> Element:
    [group] = dom.find_all(
        lambda e: (
            e.tag == "section"
            and e.attrs.get("data-machine") == machine
            and e.attrs.get("data-state") == state
        )
    )
    return group


# -- GET / -------------------------------------------------------------------------


@needs_graphviz
def test_the_page_lists_live_operations_with_their_state_highlighted(live: Live) -> None:
    page = get(live.url)
    assert page.code == 200
    dom = page.dom()
    assert dom.find_all(lambda e: e.attrs.get("id") == "count")[0].text == "3"
    for op in live.lines:
        row = row_of(dom, op)
        cells = [td.text for td in row.by_tag("td")]
        assert cells[0] == op.name and cells[1] == "fetch-line" and cells[2] == "reading"
        assert re.fullmatch(r"\d+ ms|\d+\.\d s", cells[3]), cells[3]
        assert [li.text for li in row.by_tag("li")] == ["connection"]
        # The state links to its machine's diagram.
        [link] = [a for a in row.by_tag("a") if a.attrs.get("href", "").startswith("#")]
        group = group_of(dom, "fetch-line", "reading")
        assert link.attrs["href"] == "#" + group.attrs["id"]
    group = group_of(dom, "fetch-line", "reading")
    [svg] = group.by_tag("svg")
    assert current_node_titles(svg) == ["reading"]
    # The highlighted node is drawn unlike every other one.
    fills = node_fills(svg)
    assert list(fills.values()).count(fills["reading"]) == 1
    assert fills["reading"] not in ("none", "white", "#ffffff")


def test_the_page_refreshes_itself_and_loads_nothing_from_anywhere(live: Live) -> None:
    page = get(live.url)
    dom = page.dom()
    [refresh] = dom.find_all(lambda e: e.attrs.get("http-equiv") == "refresh")
    assert float(refresh.attrs["content"]) > 0
    assert not dom.by_tag("script") and not dom.by_tag("link") and not dom.by_tag("img")
    for element in dom.iter():
        for name in ("src", "href", "xlink:href", "action"):
            value = element.attrs.get(name, "")
            assert not re.match(r"(?i)\s*(\w+:|//)", value), (element.tag, name, value)
    csp = page.header("content-security-policy")
    assert "default-src 'none'" in csp and "script-src" not in csp


def test_hostile_names_are_escaped_everywhere(live: Live) -> None:
    page = get(live.url)
    text = page.body.decode()
    for raw in (EVIL_MACHINE, EVIL_STATE, EVIL_RESOURCE):
        assert raw not in text
    assert "<script" not in text and "<img" not in text
    dom = page.dom()
    assert not dom.by_tag("script") and not dom.by_tag("img")
    row = row_of(dom, live.evil)
    cells = [td.text for td in row.by_tag("td")]
    assert cells[1] == EVIL_MACHINE and cells[2] == EVIL_STATE
    assert [li.text for li in row.by_tag("li")] == [EVIL_RESOURCE]
    assert row.attrs["data-state"] == EVIL_STATE
    group = group_of(dom, EVIL_MACHINE, EVIL_STATE)
    if graphviz():
        assert current_node_titles(group) == [EVIL_STATE]
    # The detail page and the JSON say the same, safely.
    detail = get(f"{live.url}operations/{live.evil.id}", accept="text/html").body.decode()
    assert "<script" not in detail and "<img" not in detail
    data = get(f"{live.url}operations.json").json()
    [evil] = [o for o in data["operations"] if o["id"] == live.evil.id]
    assert (evil["machine"], evil["state"], evil["resources"]) == (
        EVIL_MACHINE,
        EVIL_STATE,
        [EVIL_RESOURCE],
    )


def test_without_graphviz_the_page_shows_a_text_view(
    live: Live, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no dot on it
    dom = get(live.url).dom()
    group = group_of(dom, "fetch-line", "reading")
    assert not group.by_tag("svg")
    [view] = group.by_tag("pre")
    [mark] = view.by_tag("mark")
    assert mark.text.split() == ["\u25b6", "reading", "owns:", "connection"]
    assert "connecting (initial)" not in view.text  # the initial state is idle
    assert "idle (initial)" in view.text and "line \u2192 closing  (got_line)" in view.text
    assert "Graphviz is not installed" in group.text


@needs_graphviz
def test_each_machine_and_state_is_drawn_once() -> None:
    registry = Registry()
    server, lines = start_live(registry, count=3)

    class CountingReactor:
        """The real reactor, counting the processes spawned through it."""

        spawned = 0

        def spawnProcess(self, *args: Any, **kw: Any) -> Any:
            self.spawned += 1
            return reactor.spawnProcess(*args, **kw)

    counting = CountingReactor()
    port = reactor.listenTCP(0, Site(Inspector(registry, reactor=counting)), interface="127.0.0.1")
    url = f"http://127.0.0.1:{port.getHost().port}/"
    try:
        for _ in range(3):
            assert get(url).code == 200
        assert counting.spawned == 1  # three operations, one (machine, state)
        get(f"{url}operations/{lines[0].id}", accept="text/html")
        assert counting.spawned == 1  # the same diagram
        lines[0].cancel("moving on")
        outcome_of(lines[0].completion)
        assert get(url).code == 200
        assert counting.spawned == 1
    finally:
        finish(lines)
        run_until(port.stopListening())
        stop_server(server)


# -- JSON ------------------------------------------------------------------------


def test_operations_json_is_the_same_data(live: Live) -> None:
    response = get(f"{live.url}operations.json")
    assert response.code == 200
    data = response.json()
    assert [o["id"] for o in data["operations"]] == [op.id for op in live.all()]
    for entry, op in zip(data["operations"], live.all(), strict=True):
        assert entry["name"] == op.name and entry["machine"] == op.machine
        assert entry["state"] == op.state and entry["resources"] == list(op.resources)
        assert entry["seconds_in_state"] >= 0 and entry["url"] == f"operations/{op.id}"


# -- one operation -------------------------------------------------------------------


def test_one_operation_with_its_recent_transitions(live: Live) -> None:
    op = live.lines[0]
    data = get(f"{live.url}operations/{op.id}").json()  # no Accept: JSON
    assert data["id"] == op.id and data["state"] == "reading" and data["history_kept"] == 5
    steps = [(h["old"], h["input"], h["new"]) for h in data["history"]]
    assert steps[:2] == [("idle", "start", "connecting"), ("connecting", "connected", "reading")]
    assert all(h["seconds_ago"] >= 0 for h in data["history"])
    # ".json" is JSON whatever the client accepts.
    forced = get(f"{live.url}operations/{op.id}.json", accept="text/html").json()
    assert forced["id"] == op.id
    assert [(h["old"], h["input"], h["new"]) for h in forced["history"]][:2] == steps[:2]

    page = get(f"{live.url}operations/{op.id}", accept="text/html,*/*")
    dom = page.dom()
    [state] = dom.find_all(lambda e: e.attrs.get("id") == "state")
    assert state.text == "reading"
    [table] = dom.find_all(lambda e: e.attrs.get("id") == "history")
    rows = [[td.text for td in tr.by_tag("td")][1:] for tr in table.by_tag("tr")[1:]]
    assert rows[:2] == [["idle", "start", "connecting"], ["connecting", "connected", "reading"]]
    if graphviz():
        assert current_node_titles(dom) == ["reading"]


def test_history_off_says_how_to_turn_it_on() -> None:
    registry = Registry()
    server, lines = start_live(registry, count=1)
    port: Any = listen_inspector(registry)
    try:
        url = f"http://127.0.0.1:{port.getHost().port}/operations/{lines[0].id}"
        assert get(url).json()["history"] == []
        assert "Registry(history=N)" in get(url, accept="text/html").body.decode()
    finally:
        finish(lines)
        run_until(port.stopListening())
        stop_server(server)


@pytest.mark.parametrize("accept", ["application/json", "text/html"])
def test_unknown_or_finished_operations_are_a_clear_404(live: Live, accept: str) -> None:
    finished = live.lines[1]
    finish([finished])
    cases = {
        "operations/999999": "no live operation with id 999999",
        f"operations/{finished.id}": f"no live operation with id {finished.id}: it has completed",
        "operations/abc": "not an operation id: 'abc'",
    }
    for path, message in cases.items():
        response = get(live.url + path, accept=accept)
        assert response.code == 404, path
        if accept == "text/html":
            [error] = response.dom().find_all(lambda e: e.attrs.get("id") == "error")
            assert error.text.startswith(message), error.text
        else:
            assert response.json()["error"].startswith(message)
    response = get(live.url + "nowhere", accept=accept)
    assert response.code == 404 and b"the inspector serves /, /operations.json" in response.body


# -- where it listens ---------------------------------------------------------------


def test_it_binds_127_0_0_1_and_answers_only_to_loopback_names(live: Live) -> None:
    port: Any = listen_inspector(live.registry)
    try:
        assert port.getHost().host == "127.0.0.1"
        url = f"http://127.0.0.1:{port.getHost().port}/"
        assert get(url, host="localhost").code == 200
        refused = get(url, host="attacker.example")  # DNS rebinding
        assert refused.code == 403 and b"answers only to" in refused.body
        assert b"live operation" not in refused.body
    finally:
        run_until(port.stopListening())


def test_mounted_under_a_path_its_links_still_work(live: Live) -> None:
    root = Resource()
    root.putChild(b"debug", Inspector(live.registry))
    port = reactor.listenTCP(0, Site(root), interface="127.0.0.1")
    base = f"http://127.0.0.1:{port.getHost().port}"
    try:
        redirect = get(f"{base}/debug")
        assert redirect.code == 302 and redirect.header("location").endswith("/debug/")
        dom = get(f"{base}/debug/").dom()
        link = row_of(dom, live.lines[0]).by_tag("a")[0].attrs["href"]
        assert get(f"{base}/debug/{link}", accept="text/html").code == 200
    finally:
        run_until(port.stopListening())


def test_only_a_registry_can_be_inspected() -> None:
    with pytest.raises(TypeError, match="takes an fsmcancel Registry, not"):
        Inspector([])  # type: ignore[arg-type]
