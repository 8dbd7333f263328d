"""Every setting is a flag of ``parley serve``, generated from ``Settings``."""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import pytest

from parley.cli.main import build_settings, make_parser
from parley.settings import Settings


def serve_parser() -> argparse.ArgumentParser:
    sub = next(a for a in make_parser()._actions if isinstance(a, argparse._SubParsersAction))
    parser: argparse.ArgumentParser = sub.choices["serve"]
    return parser


def test_every_setting_is_a_flag_and_every_flag_a_setting() -> None:
    flags = {
        action.dest: action
        for action in serve_parser()._actions
        if action.dest != "help" and not isinstance(action, argparse._SubParsersAction)
    }
    assert set(flags) == set(Settings.model_fields)
    for name, field in Settings.model_fields.items():
        action = flags[name]
        assert action.option_strings[0] == "--" + name.replace("_", "-")
        assert field.description and field.description in (action.help or "")
        assert f"PARLEY_{name.upper()}" in (action.help or "")


@pytest.mark.parametrize(
    ("argv", "name", "value"),
    [
        (["--port", "0"], "port", 0),
        (["--heartbeat-interval", "2.5"], "heartbeat_interval", 2.5),
        (["--no-group-commit"], "group_commit", False),
        (["--rate-limits", "off"], "rate_limits", "off"),
        (["--data-dir", "/srv/parley"], "data_dir", Path("/srv/parley")),
        (["--replay-cache", "0"], "replay_cache", 0),
    ],
)
def test_a_flag_sets_its_setting(
    argv: list[str], name: str, value: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(f"PARLEY_{name.upper()}", raising=False)
    args = make_parser().parse_args(["serve", *argv])
    assert getattr(build_settings(args), name) == value


def test_a_flag_wins_over_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PARLEY_PORT", "9001")
    assert build_settings(make_parser().parse_args(["serve"])).port == 9001
    assert build_settings(make_parser().parse_args(["serve", "--port", "9002"])).port == 9002


def test_admin_takes_the_data_dir_before_or_after_its_command() -> None:
    for argv in (
        ["admin", "--data-dir", "/x", "migrate"],
        ["admin", "migrate", "--data-dir", "/x"],
    ):
        assert make_parser().parse_args(argv).data_dir == "/x"
    assert make_parser().parse_args(["admin", "migrate"]).data_dir is None


def test_serving_imports_no_benchmark_code() -> None:
    """``parley serve`` builds its parser and the server without the benchmark (a
    fifth of the package) or its extra's libraries; ``parley bench`` still parses."""
    probe = (
        "import sys\n"
        "from parley.cli.main import make_parser\n"
        "import parley.gateway.server\n"
        "make_parser('serve').parse_args(['serve'])\n"
        "print(sorted(m for m in sys.modules if m.startswith(('parley.cli.bench', "
        "'matplotlib', 'aiohttp', 'numpy'))))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert done.stdout.strip() == "[]", done.stdout
    args = make_parser("bench").parse_args(["bench", "fanout", "--receivers", "3"])
    assert args.receivers == 3
