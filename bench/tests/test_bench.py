"""The measuring instrument is measured too: each piece of bench/ on tiny inputs.

    python -m pytest -q -p no:cacheprovider --no-cov -o addopts="" bench/tests

Needs nginx and the ``bench`` extra (``pip install -e '.[bench]'``); every
test starts its own nginx on a free loopback port and takes a few seconds
at most.
"""

import os
import signal
import subprocess
import sys
import time

import pytest
import requests

pytestmark = [pytest.mark.nginx, pytest.mark.timeout(120)]


def test_nginx_answers_a_chat_completion_and_logs_it():
    from nginx import Nginx

    with Nginx() as server:
        response = requests.post(server.chat_url, json={"model": "m", "messages": []}, timeout=5)
        assert response.status_code == 200
        assert response.headers["content-type"] == "application/json"
        assert response.json()["usage"]["total_tokens"] == 10
        directory = server.dir
    assert not directory.exists()  # its temporary directory is gone
    assert server.statuses() == [200]  # the log survives the stop
    server.stop()  # safe twice


def test_nginx_limit_req_refuses_above_rate_plus_burst_with_an_openai_style_429():
    from nginx import Nginx

    with Nginx(rate=5, burst=3) as server, requests.Session() as session:
        statuses = [session.post(server.chat_url, json={}, timeout=5).status_code for _ in range(10)]
        refused = session.post(server.chat_url, json={}, timeout=5)
    # 1 + burst at once (a few more only if the loop took >= 200 ms), the rest refused
    assert 4 <= statuses.count(200) <= 6, statuses
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"
    assert server.statuses().count(429) == statuses.count(429) + 1


def test_nginx_stops_when_the_process_that_started_it_is_killed(tmp_path):
    code = (
        "import sys, time; sys.path.insert(0, sys.argv[1]); from nginx import Nginx\n"
        "s = Nginx().start(); print(s._proc.pid, flush=True); time.sleep(60)\n"
    )
    bench = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    parent = subprocess.Popen([sys.executable, "-c", code, bench], stdout=subprocess.PIPE, text=True)
    master = int(parent.stdout.readline())
    os.kill(master, 0)  # running
    parent.kill()  # no atexit, no __exit__: only the parent-death signal can stop nginx
    parent.wait(10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            os.kill(master, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    os.kill(master, signal.SIGKILL)
    pytest.fail("nginx outlived the process that started it")


def test_child_usage_measures_the_command_alone():
    import child_usage

    ballast = bytearray(300 << 20)  # the benchmark process is big ...
    ballast[::4096] = b"x" * len(ballast[::4096])
    small = child_usage.run([sys.executable, "-c", "pass"])
    big = child_usage.run([sys.executable, "-c", "x = bytearray(100 << 20); x[::4096] = b'y' * len(x[::4096])"])
    del ballast
    assert small.exit_code == 0 and small.peak_rss_mib < 60  # ... which the child's figure does not include
    assert 100 < big.peak_rss_mib < 200
    assert child_usage.run([sys.executable, "-c", "import sys; sys.exit(3)"]).exit_code == 3
    slow = child_usage.run([sys.executable, "-c", "import time; time.sleep(30)"], timeout=0.5)
    assert slow.timed_out and slow.wall < 10 and slow.exit_code == -signal.SIGKILL


def test_peers_every_client_completes_every_call():
    import peers

    results = peers.run([4], {4: 20}, {4: 1}, list(peers.CLIENTS), log=lambda line: None)
    (result,) = results
    assert set(result.samples) == set(peers.CLIENTS)
    markdown = peers.render(results)
    assert "| apiexec |" in markdown and "1.00x" in markdown  # the reference's own ratio
    assert all(result.calls_per_s(name) > 0 for name in peers.CLIENTS)


def test_peers_a_failing_client_is_reported_not_counted():
    import peers

    with pytest.raises(RuntimeError, match="2 of 3"):
        peers.measure(lambda base, calls, width, start: start() or calls - 1, "http://unused", 3, 1)
    with pytest.raises(RuntimeError, match="start"):
        peers.measure(lambda base, calls, width, start: calls, "http://unused", 3, 1)


def test_pacing_counts_from_the_server_and_apiexec_is_not_refused():
    import pacing

    row = pacing.measure("apiexec", pacing.SCENARIOS[1], 60, deadline=20)
    assert row.outcome.ok == 60 and row.rejected == 0 and row.sent == 60
    # 20 at once, then 200/s: the other 40 take about 0.2 s
    assert row.wall > 0.15
    unpaced = pacing.measure("no client limit", pacing.SCENARIOS[1], 60, deadline=20)
    assert unpaced.rejected > 0 and unpaced.rejected + unpaced.answered_ok == unpaced.sent == 60
    assert "calls lost" in unpaced.used_text


def test_vs_cookbook_runs_apiexec_and_says_when_the_cookbook_is_skipped(capsys):
    import vs_cookbook

    markdown, runs = vs_cookbook.main(["--lines", "200", "--rounds", "1", "--cookbook", "/nonexistent/cookbook.py"])
    assert "cookbook comparison skipped" in markdown
    assert runs[0]["rows_ok"] == 200 and runs[0]["peak_rss_mib"] > 10
    floors = {r["client"]: r for r in runs if r["client"].startswith("floor")}
    assert sorted(floors) == ["floor, 1 thread(s)", "floor, 16 thread(s)"]
    assert all(r["rows_ok"] == r["rows"] == 200 and r["exit_code"] == 0 for r in floors.values())
    assert "| floor, 16 thread(s) |" in markdown


def test_the_floor_client_ends_with_an_error_instead_of_waiting_forever(tmp_path):
    import vs_cookbook

    from tests.helpers import free_port

    inp = tmp_path / "in.jsonl"
    vs_cookbook.write_input(inp, 100)  # more lines than the reader's queue holds: a dead worker would block it
    port = free_port()  # nothing listens there: every call is refused
    done = subprocess.run(
        [sys.executable, str(vs_cookbook.FLOOR_CLIENT), str(inp), str(tmp_path / "out.jsonl"),
         f"http://127.0.0.1:{port}/v1", "--workers", "2"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1 and "floor client:" in done.stderr


def test_vs_cookbook_runs_a_script_with_the_cookbooks_interface(tmp_path):
    """A stand-in with the cookbook's function and URL parser: the wrapper patches and runs it."""
    import vs_cookbook

    script = tmp_path / "fake_cookbook.py"
    script.write_text(
        "import json, re, requests, tiktoken\n"
        "def api_endpoint_from_url(url):\n"
        "    return re.search('^https://[^/]+/v\\\\d+/(.+)$', url)[1]\n"
        "async def process_api_requests_from_file(requests_filepath, save_filepath, request_url, api_key,\n"
        "        max_requests_per_minute, max_tokens_per_minute, token_encoding_name, max_attempts, logging_level):\n"
        "    assert api_endpoint_from_url(request_url) == 'chat/completions'\n"
        "    enc = tiktoken.get_encoding(token_encoding_name)\n"
        "    with open(requests_filepath) as f, open(save_filepath, 'w') as out:\n"
        "        for line in f:\n"
        "            body = json.loads(line); enc.encode(body['messages'][0]['content'])\n"
        "            out.write(json.dumps([body, requests.post(request_url, json=body).json()]) + '\\n')\n"
    )
    markdown, runs = vs_cookbook.main(["--lines", "50", "--rounds", "1", "--cookbook", str(script)])
    cookbook = [r for r in runs if r["client"] == "cookbook script"]
    assert cookbook and cookbook[0]["rows_ok"] == 50 and cookbook[0]["exit_code"] == 0
    assert "vs cookbook" in markdown and "cookbook token counting" in markdown


def test_batch_memory_answers_every_line():
    import batch_memory

    (result,) = batch_memory.run([300], log=lambda line: None)
    assert result["ok"] == 300 and result["exit"] == 0 and result["peak_rss_mib"] > 10


def test_run_all_writes_the_tables_and_the_plot(tmp_path, monkeypatch):
    import peers
    import run_all

    real = peers.main
    monkeypatch.setattr(peers, "main", lambda argv: real(["--widths", "2,4", "--calls", "10", "--rounds", "1"]))
    out, png = tmp_path / "latest.md", tmp_path / "plot.png"
    run_all.main(["--only", "peers", "--output", str(out), "--plot", str(png), "--quick"])
    text = out.read_text()
    assert "## Head to head" in text and "**4 wide**" in text and "load " in text
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (tmp_path / "latest.json").exists()
