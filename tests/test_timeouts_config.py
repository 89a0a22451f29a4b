"""
Timeout configuration: durations, schema, precedence, every error path, and
the ``fsmcancel timeouts`` command.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fsmcancel.timeouts import ConfigError, TimeoutConfig, load_config, rule_label
from fsmcancel.timeouts._cli import add_parser
from fsmcancel.timeouts._duration import DurationError, format_duration, parse_duration


class TestDuration:
    @pytest.mark.parametrize(
        ("text", "seconds"),
        [("250ms", 0.25), ("5s", 5.0), ("2m", 120.0), ("1.5s", 1.5), ("1h", 3600.0),
         ("100us", 1e-4), (" 0s ", 0.0), (".5s", 0.5)],
    )  # fmt: skip
    def test_parse(self, text: str, seconds: float) -> None:
        assert parse_duration(text) == pytest.approx(seconds)

    @pytest.mark.parametrize("text", ["5x", "-3s", "5", "", "s", "5 s s", "1e3s", "inf s"])
    def test_malformed(self, text: str) -> None:
        with pytest.raises(DurationError, match="not a duration"):
            parse_duration(text)

    @pytest.mark.parametrize("value", [5, 2.5, True, None])
    def test_bare_numbers_refused(self, value: object) -> None:
        with pytest.raises(DurationError, match="with a unit"):
            parse_duration(value)

    @pytest.mark.parametrize("seconds", [0.0, 0.25, 1.0, 5.0, 90.0, 120.0, 1200.0, 7200.0, 1e-4])
    def test_format_round_trips(self, seconds: float) -> None:
        assert parse_duration(format_duration(seconds)) == pytest.approx(seconds)

    def test_format_readable(self) -> None:
        assert [format_duration(s) for s in (0.25, 5, 120, 1200)] == ["250ms", "5s", "2m", "20m"]


def errors(**kwargs: Any) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load_config(**{"env": {}, **kwargs})
    return [str(p) for p in info.value.problems]


class TestLoad:
    def test_defaults(self) -> None:
        config = load_config(env={})
        rule = config.rule("any", "peer")
        assert rule.policy == "idle"
        assert (rule.idle.quantile, rule.idle.multiplier) == (0.99, 3.5)
        assert rule.health.suspect_after == 2
        assert rule.deadline.min == 0.25
        assert rule_label(config, "read") == "idle p99\u00d73.5, 1s..30s"

    def test_labels(self) -> None:
        config = load_config(
            env={},
            data={
                "kinds": {
                    "a": {"policy": "deadline", "deadline": {"max": "30s"}},
                    "b": {"policy": "fixed"},
                    "c": {"policy": "hedge"},
                }
            },
        )
        assert rule_label(config, "a") == "deadline p99.9\u00d72, 250ms..30s"
        assert rule_label(config, "b") == "fixed 10s"
        assert rule_label(config, "c") == "hedge p95 ≤5%, idle p99\u00d73.5, 1s..30s"

    def test_precedence(self, tmp_path: Path) -> None:
        path = tmp_path / "t.toml"
        path.write_text(
            '[default]\npolicy = "deadline"\nidle.multiplier = 9\n'
            '[kinds.get]\nidle.multiplier = 10\nidle.max = "1m"\n'
            '[peers."v0-a"]\nidle.multiplier = 11\n'
        )
        config = load_config(
            path,
            data={"default": {"idle": {"min": "2s"}}, "kinds": {"get": {"idle": {"min": "3s"}}}},
            env={
                "FSMCANCEL_TIMEOUTS__DEFAULT__POLICY": "idle",
                "fsmcancel_timeouts__kinds__GET__idle__window": "50",
                "FSMCANCEL_TIMEOUTS__PEERS__V0_A__IDLE__MAX": "2m",
                "UNRELATED": "x",
            },
        )
        assert config.rule().policy == "idle"  # env beats file
        assert config.rule("get").idle.multiplier == 10  # kind beats default
        assert config.rule("get", "v0-a").idle.multiplier == 11  # peer beats kind
        assert config.rule("get").idle.min == 3.0  # dict beats default
        assert config.rule("other").idle.min == 2.0
        assert config.rule("get").idle.window == 50  # env, case-insensitive
        assert config.rule("get", "v0-a").idle.max == 120.0  # env matched "v0-a"
        effective = config.effective("get", "v0-a")
        assert effective["idle.multiplier"].source == f"file {path}"
        assert effective["idle.min"].source == "dict"
        assert effective["idle.max"].source == "env FSMCANCEL_TIMEOUTS__PEERS__V0_A__IDLE__MAX"
        assert effective["backoff"].source == "default"

    def test_immutable(self) -> None:
        config = load_config(env={})
        assert isinstance(config, TimeoutConfig)
        with pytest.raises(TypeError):
            config.default["policy"] = config.default["backoff"]  # type: ignore[index]

    def test_environment_defaults_to_os_environ(self, monkeypatch: pytest.MonkeyPatch) -> None:
        monkeypatch.setenv("FSMCANCEL_TIMEOUTS__DEFAULT__BACKOFF", "3")
        assert load_config().rule().backoff == 3.0


class TestErrors:
    def test_unknown_keys_suggest(self) -> None:
        assert errors(data={"default": {"idle": {"multipler": 8}}}) == [
            "default.idle.multipler: unknown key 'multipler'; did you mean 'multiplier'?"
        ]
        assert errors(data={"defaults": {}}) == [
            "defaults: unknown key 'defaults'; did you mean 'default'?"
        ]
        assert errors(data={"kinds": {"get": {"polcy": "idle"}}}) == [
            "kinds.get.polcy: unknown key 'polcy'; did you mean 'policy'?"
        ]
        assert "valid:" in errors(data={"default": {"zzzz": 1}})[0]

    @pytest.mark.parametrize(
        ("data", "message"),
        [
            ({"idle": {"min": "0s"}}, "default.idle.min: '0s' must be greater than zero"),
            ({"deadline": {"max": "5x"}}, "default.deadline.max: '5x' is not a duration"),
            ({"hedge": {"initial": "-3s"}}, "default.hedge.initial: '-3s' is not a duration"),
            ({"idle": {"max": 30}}, "default.idle.max: expected a duration string"),
            ({"idle": {"multiplier": "high"}}, "default.idle.multiplier: expected a number"),
            ({"idle": {"quantile": 0}}, "default.idle.quantile: 0 is outside (0, 1)"),
            (
                {"health": {"suspect_after": 0}},
                "default.health.suspect_after: 0 must be at least 1",
            ),
            ({"health": {"probe_interval": "0s"}}, "default.health.probe_interval: '0s' must be"),
            ({"deadline": {"quantile": 1.0}}, "default.deadline.quantile: 1.0 is outside (0, 1)"),
            ({"hedge": {"budget": 1.5}}, "default.hedge.budget: 1.5 is outside [0, 1]"),
            ({"backoff": 0.5}, "default.backoff: 0.5 is outside [1, ∞)"),
            ({"backoff": True}, "default.backoff: expected a number, got bool"),
            ({"idle": {"window": 2.5}}, "default.idle.window: expected an integer, got float"),
            ({"idle": {"window": 1}}, "default.idle.window: 1 must be at least 4"),
            ({"policy": "adaptive"}, "default.policy: unknown policy 'adaptive'"),
            ({"policy": "idel"}, "did you mean 'idle'?"),
            ({"policy": 3}, "default.policy: expected a policy name, got int"),
            ({"idle": 5}, "default.idle: expected a table, got 5"),
        ],
    )
    def test_bad_values(self, data: dict[str, Any], message: str) -> None:
        (problem,) = errors(data={"default": data})
        assert message in problem

    def test_min_above_max_names_both_sources(self) -> None:
        (problem,) = errors(
            data={"default": {"idle": {"min": "40s", "initial": "45s"}}},
        )
        assert problem == "default.idle: min 40s (dict) > max 30s (default)"

    def test_min_above_max_across_layers(self) -> None:
        problems = errors(
            data={"kinds": {"get": {"deadline": {"max": "100ms"}}}},
        )
        assert problems == ["kinds.get.deadline: min 250ms (default) > max 100ms (dict)"]
        problems = errors(
            data={
                "kinds": {"get": {"idle": {"min": "20s"}}},
                "peers": {"p": {"idle": {"max": "10s"}}},
            },
        )
        assert problems == ["peers.p with kinds.get.idle: min 20s (dict) > max 10s (dict)"]

    def test_initial_outside_bounds(self) -> None:
        # A built-in initial is clamped into the user's bounds...
        config = load_config(env={}, data={"kinds": {"get": {"idle": {"min": "20s"}}}})
        assert config.rule("get").idle.initial == 20.0
        # ...but one the user wrote contradicts them.
        assert errors(data={"default": {"idle": {"initial": "40s"}}}) == [
            "default.idle: initial 40s (dict) is outside min..max 1s..30s"
        ]

    def test_every_problem_reported_nothing_applied(self) -> None:
        problems = errors(
            data={"default": {"idle": {"min": "5x", "quantile": -1}, "policy": "nope"}},
            env={"FSMCANCEL_TIMEOUTS__DEFAULT__BACKOFF": "fast"},
        )
        assert len(problems) == 4
        assert problems[-1].startswith("FSMCANCEL_TIMEOUTS__DEFAULT__BACKOFF: expected a number")

    def test_environment_errors(self) -> None:
        assert errors(env={"FSMCANCEL_TIMEOUTS__DEFAULT__IDLE__MULTIPLER": "8"}) == [
            "FSMCANCEL_TIMEOUTS__DEFAULT__IDLE__MULTIPLER: unknown knob 'idle.multipler'; "
            "did you mean FSMCANCEL_TIMEOUTS__DEFAULT__IDLE__MULTIPLIER?"
        ]
        (problem,) = errors(env={"FSMCANCEL_TIMEOUTS__NOPE__X": "1"})
        assert problem.startswith("FSMCANCEL_TIMEOUTS__NOPE__X: expected FSMCANCEL_TIMEOUTS__")
        (problem,) = errors(env={"FSMCANCEL_TIMEOUTS__KINDS__GET__IDLE__MAX": "-3s"})
        assert problem.startswith("FSMCANCEL_TIMEOUTS__KINDS__GET__IDLE__MAX: '-3s' is not")

    def test_wrong_shapes(self) -> None:
        assert errors(data={"kinds": 3}) == ["kinds: expected a table of names, got 3"]
        assert errors(data={"peers": {"p": "x"}}) == ["peers.p: expected a table, got 'x'"]

    def test_bad_toml(self, tmp_path: Path) -> None:
        path = tmp_path / "bad.toml"
        path.write_text("[default\n")
        (problem,) = errors(path=path)
        assert problem.startswith(f"{path}: not valid TOML")


def run_cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    import argparse

    parser = argparse.ArgumentParser(prog="fsmcancel")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    status: int = args.func(args)
    out, err = capsys.readouterr()
    return status, out, err


class TestCli:
    def test_check_ok(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        path = tmp_path / "t.toml"
        path.write_text('[kinds.get]\npolicy = "hedge"\n')
        assert run_cli(["timeouts", "check", str(path)], capsys) == (0, f"{path}: ok\n", "")

    def test_check_invalid(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        path = tmp_path / "t.toml"
        path.write_text('[default.idle]\nmin = "5x"\n')
        status, out, err = run_cli(["timeouts", "check", str(path)], capsys)
        assert (status, out) == (1, "")
        assert "default.idle.min: '5x' is not a duration" in err

    def test_check_unreadable(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        status, out, err = run_cli(["timeouts", "check", str(tmp_path / "missing")], capsys)
        assert (status, out) == (2, "")
        assert "cannot read" in err

    def test_show_sources(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        path = tmp_path / "t.toml"
        path.write_text('[default.idle]\nmultiplier = 9\n[peers."v0-a"]\ndeadline.max = "20m"\n')
        monkeypatch.setenv("FSMCANCEL_TIMEOUTS__DEFAULT__IDLE__MAX", "1m")
        status, out, err = run_cli(["timeouts", "show", "--config", str(path)], capsys)
        assert status == 0 and err == ""
        words = " ".join(out.split())  # column widths aside
        assert f"idle.multiplier = 9 # file {path}" in words
        assert 'idle.max = "1m" # env FSMCANCEL_TIMEOUTS__DEFAULT__IDLE__MAX' in words
        assert 'policy = "idle" # default' in words
        assert '[peers.v0-a]  # idle p99\u00d79, 1s..1m\ndeadline.max = "20m"  # file' in out

    def test_show_resolved(self, capsys: pytest.CaptureFixture[str]) -> None:
        status, out, _ = run_cli(["timeouts", "show", "--kind", "get", "--peer", "p"], capsys)
        assert status == 0
        expected = "# effective timeouts for kind=get peer=p: idle p99\u00d73.5, 1s..30s"
        assert out.startswith(expected)

    def test_show_invalid(
        self, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setenv("FSMCANCEL_TIMEOUTS__DEFAULT__POLICY", "bogus")
        status, out, err = run_cli(["timeouts", "show"], capsys)
        assert (status, out) == (1, "")
        assert "FSMCANCEL_TIMEOUTS__DEFAULT__POLICY: unknown policy 'bogus'" in err

    def test_check_agrees_with_the_program_on_environment_overrides(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
    ) -> None:
        # The file alone is fine; with the environment the program runs in it
        # is not, and check must say so, naming the variable, as load_config does.
        path = tmp_path / "t.toml"
        path.write_text('[default.idle]\nmax = "10s"\n')
        monkeypatch.setenv("FSMCANCEL_TIMEOUTS__DEFAULT__IDLE__MIN", "20s")
        with pytest.raises(ConfigError):
            load_config(path)
        status, out, err = run_cli(["timeouts", "check", str(path)], capsys)
        assert (status, out) == (1, "")
        assert "min 20s (env FSMCANCEL_TIMEOUTS__DEFAULT__IDLE__MIN) > max 10s" in err
        monkeypatch.setenv("FSMCANCEL_TIMEOUTS__DEFAULT__IDLE__MIN", "2s")
        status, out, _ = run_cli(["timeouts", "check", str(path)], capsys)
        assert status == 0
        assert (
            out
            == f"{path}: ok (with FSMCANCEL_TIMEOUTS__DEFAULT__IDLE__MIN from the environment)\n"
        )

    def test_show_a_mistyped_kind_says_did_you_mean(
        self, tmp_path: Path, capsys: pytest.CaptureFixture[str]
    ) -> None:
        path = tmp_path / "t.toml"
        path.write_text('[kinds.blob-body]\npolicy = "hedge"\n[peers.mirror-1]\nidle.max = "1m"\n')
        status, out, err = run_cli(
            ["timeouts", "show", "--config", str(path), "--kind", "blbo-body"], capsys
        )
        assert (status, out) == (1, "")
        assert f"no kind 'blbo-body' in {path} (kinds: blob-body); did you mean 'blob-body'?" in err
        status, out, err = run_cli(
            ["timeouts", "show", "--config", str(path), "--peer", "mirror-2"], capsys
        )
        assert status == 1 and "did you mean 'mirror-1'?" in err
        # A name unlike any the file knows is just a kind with no overrides.
        status, out, err = run_cli(
            ["timeouts", "show", "--config", str(path), "--kind", "ping"], capsys
        )
        assert status == 0 and "says nothing about kind 'ping': the defaults apply" in err
        assert out.startswith("# effective timeouts for kind=ping")

    def test_main_dispatches(self, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
        from fsmcancel.cli import main

        path = tmp_path / "t.toml"
        path.write_text("")
        assert main(["timeouts", "check", str(path)]) == 0
