"""Shared fixtures: a loopback mock server, small event helpers, a redis-server."""

import logging
import os
import shutil
import socket
import subprocess
import time

import pytest

from apiexec.mock.server import MockServer, MockServerConfig
from tests.helpers import free_port


@pytest.fixture
def mock_server():
    """A fresh built-in mock server on a free loopback port."""
    with MockServer(MockServerConfig()) as server:
        yield server


# -- a real redis-server on loopback ---------------------------------------------

REDIS_START_TIMEOUT = 10.0


def _missing(what):
    """Fail on CI (the dependency must be there), skip on a laptop."""
    message = f"{what} is needed for this test"
    if os.environ.get("CI"):
        pytest.fail(message + " (CI is set: not skipping)")
    pytest.skip(message)


class RedisProcess:
    """A ``redis-server`` of our own on a free loopback port; no persistence."""

    def __init__(self, executable, password=None):
        self.password = password
        for _ in range(3):  # the free port may be taken between probe and bind
            self.port = free_port()
            args = [executable, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
            if password:
                args += ["--requirepass", password]
            self.process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
            if self._wait_ready():
                return
            self.stop()
        output = self.process.stdout.read().decode(errors="replace") if self.process.stdout else ""
        pytest.fail(f"redis-server did not start: {output[-500:]}")

    @property
    def url(self):
        auth = f":{self.password}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    def _wait_ready(self):
        deadline = time.monotonic() + REDIS_START_TIMEOUT
        ping = b"PING\r\n" if not self.password else f"AUTH {self.password}\r\nPING\r\n".encode()
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1.0) as sock:
                    sock.sendall(ping)
                    answer = b""
                    while b"PONG" not in answer and b"ERR" not in answer:
                        chunk = sock.recv(100)
                        if not chunk:
                            break
                        answer += chunk
                    if b"PONG" in answer:
                        return True
            except OSError:
                pass
            time.sleep(0.02)
        return False

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self.process.stdout:
            self.process.stdout.close()


@pytest.fixture(scope="session")
def redis_executable():
    """Path of redis-server (and redis-py importable), or skip/fail."""
    executable = shutil.which("redis-server") or ("/usr/bin/redis-server" if os.path.exists("/usr/bin/redis-server") else None)
    if executable is None:
        _missing("redis-server")
    try:
        import redis  # noqa: F401
    except ImportError:
        _missing("redis-py (pip install apiexec[redis])")
    return executable


@pytest.fixture(scope="session")
def redis_server(redis_executable):
    """One redis-server for the whole session; tests use distinct keys."""
    server = RedisProcess(redis_executable)
    yield server
    server.stop()


@pytest.fixture
def start_redis(redis_executable):
    """Start private redis-servers (to stop mid-test); all stopped at the end."""
    servers = []

    def start(password=None):
        servers.append(RedisProcess(redis_executable, password))
        return servers[-1]

    yield start
    for server in servers:
        server.stop()


_APIEXEC_LOGGER = logging.getLogger("apiexec")  # apiexec is imported above: its NullHandler is set
#: The library's own logger set-up, as importing apiexec leaves it.
_LIBRARY_LOGGING = (list(_APIEXEC_LOGGER.handlers), _APIEXEC_LOGGER.level, _APIEXEC_LOGGER.propagate)


@pytest.fixture(autouse=True)
def _restore_apiexec_logger():
    """Give every test the library's own logger set-up.

    Some tests configure logging as an application would (the Django
    example's ``LOGGING`` replaces the ``apiexec`` logger's handlers and
    level, possibly in a module-scoped fixture; the CLI calls
    ``basicConfig``); the next test must still see a NullHandler and
    records propagating at every level.
    """
    logger = _APIEXEC_LOGGER
    logger.handlers[:], logger.level, logger.propagate = list(_LIBRARY_LOGGING[0]), *_LIBRARY_LOGGING[1:]
    logger.disabled = False
    yield
    logger.handlers[:], logger.level, logger.propagate = list(_LIBRARY_LOGGING[0]), *_LIBRARY_LOGGING[1:]
    logger.disabled = False
