"""Shared fixtures: a loopback mock server and small event helpers."""

import pytest

from apiexec.mock_server import MockServer, MockServerConfig


@pytest.fixture
def mock_server():
    """A fresh built-in mock server on a free loopback port."""
    with MockServer(MockServerConfig()) as server:
        yield server
