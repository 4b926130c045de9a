"""``apiexec mock-server`` flags: one per MockServerConfig field."""

from __future__ import annotations

import argparse
import dataclasses

import pytest

from apiexec.mock import command
from apiexec.mock.config import MockServerConfig


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    command.add_arguments(parser)
    return parser.parse_args(list(argv))


def test_every_config_field_has_a_flag() -> None:
    args = parse(
        "--host", "0.0.0.0", "--port", "0", "--latency-ms", "5", "--latency-jitter-ms", "2",
        "--requests-per-minute", "600", "--request-burst", "10", "--tokens-per-minute", "9000",
        "--token-burst", "900", "--limits-per-key", "--fail-rate", "0.1", "--drop-rate", "0.05",
        "--fault", "500,drop", "--fault", "slow:10", "--seed", "7", "--api-key", "k1", "--api-key", "k2",
        "--batch-time-scale", "0.5", "--record-bodies",
    )
    config = command.config_from_args(args, environ={})
    expected = MockServerConfig(
        host="0.0.0.0", port=0, latency_ms=5, latency_jitter_ms=2, requests_per_minute=600, request_burst=10,
        tokens_per_minute=9000, token_burst=900, limits_per_key=True, fail_rate=0.1, drop_rate=0.05,
        faults=("500", "drop", "slow:10"), seed=7, api_key="k1", api_keys=("k2",), batch_time_scale=0.5,
        record_bodies=True,
    )
    assert config == expected
    # every field was set to a non-default value, so no field lacks a flag
    defaults = MockServerConfig()
    unset = [f.name for f in dataclasses.fields(MockServerConfig)
             if getattr(config, f.name) == getattr(defaults, f.name) and f.name not in ("port",)]
    assert unset == []


def test_defaults_and_key_from_the_environment() -> None:
    config = command.config_from_args(parse(), environ={command.API_KEY_ENV: "from-env"})
    assert (config.port, config.api_key, config.requests_per_minute, config.faults) == (8000, "from-env", None, ())
    assert command.config_from_args(parse("--api-key", "flag"), environ={command.API_KEY_ENV: "env"}).api_key == "flag"


@pytest.mark.parametrize("argv", [["--fail-rate", "2"], ["--latency-ms", "-1"], ["--latency-ms", "nan"],
                                  ["--request-burst", "0.5"], ["--requests-per-minute", "0"], ["--port", "x"],
                                  ["--batch-time-scale", "inf"]])
def test_bad_values_are_usage_errors(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse(*argv)
    assert argv[0] in capsys.readouterr().err


def test_bad_fault_is_a_one_line_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert command.run(parse("--port", "0", "--fault", "teapot")) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["apiexec: error: faults: invalid fault 'teapot': expected a status 400-599, 'drop', 'slow:MS' or 'cut:N'"]


def test_the_command_module_imports_no_server() -> None:
    import subprocess
    import sys

    code = "import sys, apiexec.mock.command; print('apiexec.mock.server' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "False"
