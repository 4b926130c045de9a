"""MockServerConfig checks."""

from __future__ import annotations

from typing import Any

import pytest

from apiexec.mock.server import MockServerConfig


@pytest.mark.parametrize(
    ("fields", "name"),
    [
        ({"host": ""}, "host"),
        ({"port": -1}, "port"),
        ({"port": 70000}, "port"),
        ({"latency_ms": -1}, "latency_ms"),
        ({"latency_jitter_ms": float("nan")}, "latency_jitter_ms"),
        ({"requests_per_minute": 0}, "requests_per_minute"),
        ({"request_burst": 5}, "request_burst"),
        ({"requests_per_minute": 60, "request_burst": 0.5}, "request_burst"),
        ({"tokens_per_minute": -5}, "tokens_per_minute"),
        ({"tokens_per_minute": 100, "token_burst": "x"}, "token_burst"),
        ({"fail_rate": 1.5}, "fail_rate"),
        ({"drop_rate": -0.1}, "drop_rate"),
        ({"fail_rate": 0.6, "drop_rate": 0.6}, "drop_rate"),
        ({"seed": "1"}, "seed"),
        ({"api_key": ""}, "api_key"),
        ({"record_bodies": 1}, "record_bodies"),
    ],
)
def test_config_validation_names_the_field(fields: dict[str, Any], name: str) -> None:
    with pytest.raises(ValueError, match=name):
        MockServerConfig(**fields)


def test_config_is_frozen_and_keyword_only() -> None:
    config = MockServerConfig(requests_per_minute=60)
    with pytest.raises(AttributeError):
        config.port = 1  # type: ignore[misc]
    with pytest.raises(TypeError):
        MockServerConfig("127.0.0.1")  # type: ignore[call-arg]
