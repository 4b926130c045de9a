"""``apiexec mock-server`` as a real process: flags reach the server; Ctrl-C stops it cleanly."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import openai
import pytest

pytestmark = pytest.mark.integration

START_TIMEOUT = 30.0


@contextmanager
def mock_server_process(*flags: str, env: dict[str, str] | None = None,
                        stop: signal.Signals = signal.SIGINT) -> Iterator[str]:
    """Start ``apiexec mock-server --port 0 FLAGS``; yields its base URL (``.../v1``)."""
    proc = subprocess.Popen([sys.executable, "-m", "apiexec", "mock-server", "--port", "0", *flags],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **(env or {})})
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()  # blocks until the server prints its URL (or exits)
        match = re.search(r"(http://\S+/v1)", line)
        assert match, f"no URL in {line!r}; stderr: {proc.stderr.read() if proc.stderr else ''}"
        yield match.group(1)
        proc.send_signal(stop)
        assert proc.wait(timeout=START_TIMEOUT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_flags_reach_the_server_and_sigint_exits_zero() -> None:
    flags = ["--fault", "503", "--requests-per-minute", "600", "--request-burst", "3", "--seed", "1"]
    with mock_server_process(*flags, env={"APIEXEC_MOCK_API_KEY": "sk-proc"}) as url:
        with openai.OpenAI(base_url=url, api_key="sk-proc", max_retries=0, timeout=10) as client:
            with pytest.raises(openai.InternalServerError):  # the scripted fault comes first
                client.chat.completions.create(model="m", messages=[{"role": "user", "content": "x"}])
            raw = client.chat.completions.with_raw_response.create(model="m", messages=[{"role": "user", "content": "x"}])
            assert raw.headers["x-ratelimit-limit-requests"] == "600"
            assert raw.headers["x-ratelimit-remaining-requests"] == "2"
        with openai.OpenAI(base_url=url, api_key="wrong", max_retries=0, timeout=10) as client:
            with pytest.raises(openai.AuthenticationError):
                client.models.list()


def test_bad_setting_is_one_line_and_exit_1() -> None:
    proc = subprocess.run([sys.executable, "-m", "apiexec", "mock-server", "--port", "0", "--fault", "500,teapot"],
                          capture_output=True, text=True, timeout=START_TIMEOUT)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [
        "apiexec: error: faults: invalid fault 'teapot': expected a status 400-599, 'drop', 'slow:MS' or 'cut:N'"]


def test_port_in_use_is_one_line_and_exit_1() -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = subprocess.run([sys.executable, "-m", "apiexec", "mock-server", "--port", str(port)],
                              capture_output=True, text=True, timeout=START_TIMEOUT)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"apiexec: error: cannot listen on 127.0.0.1:{port}")


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_stop_it_cleanly(stop: signal.Signals) -> None:
    with mock_server_process(stop=stop) as url:
        with openai.OpenAI(base_url=url, api_key="k", max_retries=0, timeout=10) as client:
            assert client.models.list().data[0].id == "mock-model"
