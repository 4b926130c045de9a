"""``import apiexec`` loads only what every program needs (issue 18: import time).

Checked in a fresh interpreter: tenacity (until a first retry), tokenizers,
storage backends, the mock server, progress bars, the batch runner, spending
caps and adaptive limits stay unloaded, while every public name still resolves.
"""

import json
import subprocess
import sys

NOT_AT_IMPORT = (
    "tenacity",
    "tiktoken",
    "redis",
    "sqlite3",
    "tqdm",
    "apiexec.mock",
    "apiexec.batch",
    "apiexec.spending",
    "apiexec.llm.prices",
    "apiexec.limits.adaptive_gate",
    "apiexec.cli",
    "apiexec.http.event_stream",
    "apiexec.http.sse",
)

PROBE = f"""
import json, sys
import apiexec
# coverage, measuring this subprocess under the suite, keeps its data in SQLite
measured = "coverage" in sys.modules
loaded = [m for m in {NOT_AT_IMPORT!r} if m in sys.modules and not (measured and m == "sqlite3")]
missing = [n for n in apiexec.__all__ if getattr(apiexec, n, None) is None]
print(json.dumps({{"loaded": loaded, "missing": missing}}))
"""


def probe(code):
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_import_apiexec_leaves_optional_parts_unloaded_and_names_resolve():
    # The probe reads sys.modules before resolving the lazy names.
    result = probe(PROBE)
    assert result["loaded"] == []
    assert result["missing"] == []


def test_a_first_retry_loads_tenacity_a_success_does_not():
    code = """
import json, sys
from unittest.mock import Mock
import responses
from apiexec import Endpoint, EndpointConfig
URL = "https://api.example.com/v1/chat"
with responses.RequestsMock() as rsps:
    rsps.post(URL, json={"ok": 1})
    ep = Endpoint(EndpointConfig(provider="t", endpoint="chat", base_url="https://api.example.com/v1"), sleep=Mock())
    ep.call({"a": 1})
    after_success = "tenacity" in sys.modules
    rsps.replace("POST", URL, status=503, json={"error": {"message": "busy"}})
    rsps.add("POST", URL, json={"ok": 2})
    ep.call({"a": 1})
print(json.dumps({"after_success": after_success, "after_retry": "tenacity" in sys.modules}))
"""
    assert probe(code) == {"after_success": False, "after_retry": True}


LAYER_PROBE = """
import json, sys
before = set(sys.modules)
from apiexec import {name}
print(json.dumps(sorted(m for m in set(sys.modules) - before)))
"""


def _loaded_by(name):
    return set(probe(LAYER_PROBE.format(name=name)))


def test_import_apiexec_alone_loads_neither_requests_nor_the_executor():
    loaded = set(probe("import json, sys; import apiexec; print(json.dumps(sorted(sys.modules)))"))
    assert "requests" not in loaded and "urllib3" not in loaded
    assert not {m for m in loaded if m.startswith(("apiexec.execution", "apiexec.http", "apiexec.limits"))}


def test_each_public_name_loads_its_own_layer_only():
    executor = _loaded_by("RateLimitedExecutor")
    assert "apiexec.execution.executor" in executor and "apiexec.limits.bucket" in executor
    assert "apiexec.limits.storage" not in executor  # SQLite/Redis backends: only for a storage URL
    endpoint = _loaded_by("Endpoint")
    assert "requests" in endpoint and "apiexec.http.endpoint" in endpoint
    assert "apiexec.execution.executor" not in endpoint and "apiexec.rate_limited" not in endpoint


def test_the_main_names_build_only_the_public_config_dataclasses():
    """Internal records are plain classes (each dataclass costs a compile at import)."""
    code = """
import json, sys
from apiexec import APICalling, Endpoint, RateLimitedExecutor
import dataclasses
mods = [m for m in sys.modules if m.startswith("apiexec")]
found = []
for name in mods:
    for value in vars(sys.modules[name]).values():
        if isinstance(value, type) and value.__module__ == name and dataclasses.is_dataclass(value):
            found.append(f"{name}.{value.__name__}")
print(json.dumps(sorted(found)))
"""
    assert probe(code) == [
        "apiexec.http.config.EndpointConfig",
        "apiexec.http.rate_limit_headers.RateLimitInfo",
        "apiexec.limits.rate_limits.RateLimits",
    ]
