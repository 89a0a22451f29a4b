"""
The inspector page in a real browser: Debian's Chromium, headless.

The poetry proxy runs with ``--inspect`` while two clients wait for a poem
from a slow server, so the page shows live operations holding real
connections.  Chromium loads it; the test checks the DOM it built (the
rows, the diagram of each machine with the current state highlighted) and
takes a screenshot, whose path it prints.  A second test loads a page of
operations with hostile names and checks that nothing in them became markup.

Skipped, saying why, where no Chromium is installed (``.ci/run`` installs
Debian's ``chromium``).
"""

from __future__ import annotations

import shutil
import struct
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from fsmcancel import Registry
from fsmcancel.inspector import listen_inspector
from tests.html_dom import Element, current_node_titles, node_fills, parse
from tests.reactor_util import iterate_until, run_until
from tests.test_inspector import (
    EVIL_MACHINE,
    EVIL_RESOURCE,
    EVIL_STATE,
    evil_machine,
    finish,
    graphviz,
    group_of,
)
from tests.test_poetry_proxy import Running, Spawn, connect, slow_server, spawn

__all__ = ["spawn"]  # the fixture, imported for this module's tests

CHROMIUM = next(
    (path for name in ("chromium", "chromium-browser") if (path := shutil.which(name))), None
)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no Chromium to load the page in (Debian: apt-get install chromium; .ci/run does)",
)

#: Without these, Chromium as root on a machine with no network hangs or
#: refuses to start.
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--window-size=1280,1400",
]


def browse(
    url: str, profile: Path, *action: str, wait: Any = None
) -> subprocess.CompletedProcess[str]:
    """
    Run headless Chromium on ``url`` with ``action`` (``--dump-dom`` or
    ``--screenshot=PATH``).  ``wait(process)`` keeps this process's reactor
    going while it runs, for a page served from this process.
    """
    assert CHROMIUM is not None
    command = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *action, url]
    if wait is None:
        return subprocess.run(command, capture_output=True, text=True, timeout=90, check=False)
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        wait(process)
        out, err = process.communicate(timeout=90)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    return subprocess.CompletedProcess(command, process.returncode, out, err)


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def rows(dom: Element) -> dict[str, tuple[str, str, list[str]]]:
    """
    Each operation row: name -> (machine, state, resources).
    """
    found = {}
    for row in dom.find_all(lambda e: e.tag == "tr" and "data-op-id" in e.attrs):
        cells = row.by_tag("td")
        resources = [li.text for li in row.by_tag("li")]
        found[cells[0].text] = (cells[1].text, cells[2].text, resources)
    return found


def test_the_page_in_chromium_while_operations_are_live(spawn: Spawn, tmp_path: Path) -> None:
    server = slow_server(spawn, delay=5.0, chunk=10)  # never finishes within the test
    proxy: Running = spawn(
        "examples.poetry_proxy",
        "--port=0",
        f"--upstream=127.0.0.1:{server.port}",
        "--inspect=0",
    )
    url = proxy.expect(r"^inspector on (http://127\.0\.0\.1:\d+/)$")[1].group(1)
    clients = [connect(proxy.port), connect(proxy.port)]
    proxy.expect(r"\bsubscribed\b.*subscribers=2\b", "err")
    server.expect(r"^sent 10 bytes to ")  # the download is receiving
    try:
        dumped = browse(url, tmp_path / "profile", "--dump-dom")
        assert dumped.returncode == 0, dumped.stderr
        dom = parse(dumped.stdout)
        live = rows(dom)
        requests = {name: row for name, row in live.items() if row[0] == "proxy-request"}
        downloads = {name: row for name, row in live.items() if row[0] == "poem-download"}
        assert (
            sorted(row[1:] for row in requests.values())
            == [("waiting", ["client connection", "subscription", "poem"])] * 2
        )
        assert list(downloads.values()) == [
            ("poem-download", "receiving", ["upstream connection", "poem"])
        ]
        for machine, state in (("proxy-request", "waiting"), ("poem-download", "receiving")):
            section = group_of(dom, machine, state)
            if graphviz():
                [svg] = section.by_tag("svg")
                assert current_node_titles(svg) == [state]
                fills = node_fills(svg)
                assert list(fills.values()).count(fills[state]) == 1, fills
            else:
                [mark] = section.by_tag("mark")
                assert state in mark.text

        screenshot = tmp_path / "inspector.png"
        shot = browse(url, tmp_path / "profile", f"--screenshot={screenshot}")
        assert shot.returncode == 0, shot.stderr
        assert png_size(screenshot) == (1280, 1400)
        assert screenshot.stat().st_size > 20_000  # a page, not a blank
        print(f"\nscreenshot of the inspector with live operations: {screenshot}")
    finally:
        for client in clients:
            client.close()


def test_hostile_names_stay_text_in_chromium(tmp_path: Path) -> None:
    registry = Registry()
    op = evil_machine(object(), registry=registry)
    op.inputs.start()
    port: Any = listen_inspector(registry)
    url = f"http://127.0.0.1:{port.getHost().port}/"

    def serve_until_done(process: subprocess.Popen[str]) -> None:
        # The page is served from this process: keep its reactor going.
        deadline = time.monotonic() + 90
        iterate_until(lambda: process.poll() is not None, timeout=deadline - time.monotonic())

    try:
        dumped = browse(url, tmp_path / "profile", "--dump-dom", wait=serve_until_done)
    finally:
        finish([op])
        run_until(port.stopListening())
    assert dumped.returncode == 0, dumped.stderr
    dom = parse(dumped.stdout)
    # Nothing injected: no script ran or was added, no image element exists.
    assert not dom.by_tag("script") and not dom.by_tag("img")
    [(name, (machine, state, resources))] = rows(dom).items()
    assert (machine, state, resources) == (EVIL_MACHINE, EVIL_STATE, [EVIL_RESOURCE])
    assert name == f"{EVIL_MACHINE}#{op.id}"
    if graphviz():
        assert current_node_titles(group_of(dom, EVIL_MACHINE, EVIL_STATE)) == [EVIL_STATE]
