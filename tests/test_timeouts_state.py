"""
Saying what it knows: `Timeouts.explain`, the `dumps()`/`loads()` state
(round trip, bad files refused naming what is wrong, version 1 converted),
and ``fsmcancel timeouts show --state`` (also on a stdout that is not UTF-8).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from twisted.internet.task import Clock

from fsmcancel.timeouts import Timeouts, load_config
from tests.test_timeouts_config import run_cli
from tests.test_timeouts_guard import setup
from tests.test_timeouts_health import stall, warm

ROOT = Path(__file__).resolve().parents[1]


def learned() -> tuple[Clock, Timeouts]:
    """A process that learned two kinds and has a suspect peer."""
    clock, op, t, _, remote = setup({"kinds": {"blob": {"policy": "hedge"}}})
    warm(clock, t, op, remote)
    for peer in ("m1", "m2"):
        t.estimator("blob", peer).first_sign(0.05)
        t.estimator("blob", peer).gap(0.01)
    stall(clock, t, op, remote, "c")
    stall(clock, t, op, remote, "c")
    return clock, t


def limits(t: Timeouts) -> list[tuple[Any, ...]]:
    def of(limit: Any) -> Any:
        return None if limit is None else (round(limit.seconds, 9), limit.source)

    return [
        (e.kind, e.peer, of(e.first_sign), of(e.silence), of(e.deadline), of(e.hedge),
         e.health.state, e.own)
        for e in (t.explain(k, p) for k, p in t.known())
    ]  # fmt: skip


class TestExplain:
    def test_says_what_the_next_call_gets_and_why(self) -> None:
        _, t = learned()
        text = "\n".join(t.explain("get", "a").lines())
        assert "kind=get peer=a policy=idle" in text
        assert "first sign: 1.107s [prior] silence before the first sign: 3.5 x p99" in text
        assert "health: healthy (134 calls, 0 stalled, 0 in a row" in text
        assert "hedge after" not in text
        suspect = "\n".join(t.explain("get", "c").lines())
        assert "health: suspect" in suspect and "probe in 10.0s" in suspect
        cold = t.explain("never-seen", "x")
        assert cold.first_sign.source == "initial" and "the kind is new" in cold.first_sign.why
        assert t.explain("blob", "m1").hedge is not None


class TestState:
    def test_round_trip(self) -> None:
        clock, a = learned()
        text = a.dumps()
        json.loads(text)  # plain JSON
        b = Timeouts(a.config, clock=clock)
        b.loads(text)
        assert limits(b) == limits(a)
        assert b.export_state()["keys"] == a.export_state()["keys"]
        assert b.health("c").state == "suspect"

    @pytest.mark.parametrize(
        ("state", "message"),
        [
            ("[1, 2]", "expected an object, got [1, 2]"),
            ('{"version": 99}', "version is 99"),
            ('{"version": 2, "extra": 1}', "unknown field 'extra'"),
            ('{"version": 2, "keys": {}}', "keys: expected a list"),
            ('{"version": 2, "keys": [{"kind": "k"}]}', "keys[0].peer: expected a name"),
            ('{"version": 2, "keys": [{"kind": "k", "peer": "p", "first": {"events": {"x": 1}}}]}',
             "keys[0].first.events: bin 'x' is not an integer"),
            ('{"version": 2, "keys": [{"kind": "k", "peer": "p", "gaps": {"events": {"3": -1}}}]}',
             "keys[0].gaps.events[3]: bad count -1"),
            ('{"version": 2, "keys": [{"kind": "k", "peer": "p", "calls": "many"}]}',
             "keys[0].calls: expected a non-negative integer, got 'many'"),
            ('{"version": 2, "kinds": {"k": {"latency": []}}}',
             "kinds['k'].latency: expected an object, got []"),
            ('{"version": 2, "peers": {"p": {"suspect": "yes"}}}',
             "peers['p'].suspect: expected true or false, got 'yes'"),
            ('{"version": 1, "keys": [{"kind": "k", "peer": "p", "latency": [[-1, 0]]}]}',
             "keys[0].latency: bad duration [-1, 0]"),
            ("{not json", "not JSON"),
        ],
    )  # fmt: skip
    def test_bad_state_is_refused_naming_what_is_wrong_and_changes_nothing(
        self, state: str, message: str
    ) -> None:
        _, t = learned()
        before = t.export_state()
        with pytest.raises(ValueError) as info:
            t.loads(state)
        assert message in str(info.value)
        assert t.export_state() == before

    def test_version_1_state_is_converted(self) -> None:
        old = {
            "version": 1,
            "keys": [
                {"peer": "p", "kind": "k", "latency": [[0.2, 0.0], [5.0, 1.0]],
                 "first": [[0.3, 0.0]] * 400, "gaps": [1.0, 1.1], "timeouts": 2},
            ],
        }  # fmt: skip
        t = Timeouts(load_config(env={}), clock=Clock())
        t.import_state(old)
        est = t.estimator("k", "p")
        assert (est.first.seen, est.gaps.seen, est.latency.seen) == (400, 2, 2)
        assert t.explain("k", "p").first_sign.source == "learned"

    def test_keys_bounded(self) -> None:
        t = Timeouts(load_config(env={}), max_keys=10, clock=Clock())
        for i in range(100):
            t.estimator("k", f"peer{i}")
        assert len(t.export_state()["keys"]) == 10


class TestShowState:
    def write(self, tmp_path: Path) -> Path:
        _, t = learned()
        path = tmp_path / "state.json"
        path.write_text(t.dumps())
        return path

    def test_prints_what_each_peer_gets(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = self.write(tmp_path)
        status, out, err = run_cli(["timeouts", "show", "--state", str(path)], capsys)
        assert status == 0 and err == ""
        assert out.startswith(f"# what the next call will get, from {path}\n")
        assert "kind=get peer=a policy=idle" in out and "kind=blob peer=m1" in out
        assert "health: suspect" in out
        status, out, _ = run_cli(
            ["timeouts", "show", "--state", str(path), "--kind", "get", "--peer", "c"], capsys
        )
        assert status == 0 and out.count("kind=") == 1 and "suspect" in out

    def test_a_mistyped_name_says_did_you_mean(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = self.write(tmp_path)
        status, out, err = run_cli(
            ["timeouts", "show", "--state", str(path), "--kind", "blbo"], capsys
        )
        assert (status, out) == (1, "")
        assert f"no kind 'blbo' in {path} (kinds: blob, get); did you mean 'blob'?" in err

    def test_a_bad_state_file_is_refused(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = tmp_path / "state.json"
        path.write_text('{"version": 2, "keys": [{"kind": "k", "peer": 3}]}')
        status, out, err = run_cli(["timeouts", "show", "--state", str(path)], capsys)
        assert (status, out) == (1, "")
        assert f"{path}: not a usable timeout state: keys[0].peer: expected a name" in err
        status, _, err = run_cli(["timeouts", "show", "--state", str(tmp_path / "no")], capsys)
        assert status == 2 and "cannot read" in err


@pytest.mark.parametrize("encoding", ["ascii", "latin-1"])
def test_show_on_a_stdout_that_is_not_utf8(tmp_path: Path, encoding: str) -> None:
    _, t = learned()
    state = tmp_path / "state.json"
    state.write_text(t.dumps())
    env = {**os.environ, "PYTHONIOENCODING": encoding}
    env.pop("PYTHONUTF8", None)
    for args in (["timeouts", "show"], ["timeouts", "show", "--state", str(state)]):
        done = subprocess.run(
            [sys.executable, "-m", "fsmcancel.cli", *args],
            cwd=ROOT, env=env, capture_output=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0 and b"Traceback" not in done.stderr, done.stderr
        out = done.stdout.decode(encoding)
        assert "p99x3.5, 1s..30s" in out or "p99\u00d73.5, 1s..30s" in out or "kind=get" in out
        if encoding == "ascii" and args[-1] == "show":
            assert "idle p99x3.5, 1s..30s" in out
