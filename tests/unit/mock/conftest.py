"""Fixtures of the mock server's tests: servers on free loopback ports, stopped afterwards."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from apiexec.mock.server import MockServer, MockServerConfig


@pytest.fixture
def make_server() -> Iterator[Callable[..., MockServer]]:
    servers: list[MockServer] = []

    def make(*, clock: Callable[[], float] | None = None, **fields: Any) -> MockServer:
        config = MockServerConfig(**fields)
        server = MockServer(config) if clock is None else MockServer(config, clock=clock)
        servers.append(server.start())
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def server(make_server: Callable[..., MockServer]) -> MockServer:
    return make_server()


