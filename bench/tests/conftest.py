"""The benchmark scripts import each other by bare name (``from nginx import Nginx``), as they do when run."""

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parent.parent
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))


def pytest_configure(config):
    config.addinivalue_line("markers", "nginx: needs the nginx executable (skipped without it)")


@pytest.fixture(autouse=True)
def _needs_nginx(request):
    from nginx import find_nginx

    if request.node.get_closest_marker("nginx") and find_nginx() is None:
        pytest.skip("nginx is not installed")
