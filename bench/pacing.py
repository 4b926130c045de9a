"""Pacing against a real rate limit: nginx ``limit_req`` at 200 requests/s.

A provider states a limit per minute and enforces it over short windows
(OpenAI's rate-limit guide: a per-minute limit may be enforced as a
per-second one; 12,000/min behaves like about 200/s). Two servers, each a
fresh nginx (so each client starts against an empty zone):

* **1 s window** - ``limit_req rate=200r/s burst=200 nodelay``; every client
  is configured the way the provider states the limit: *12,000 per minute*.
* **burst 20** - ``limit_req rate=200r/s burst=20 nodelay``; every client is
  configured as *200 per second, burst 20*, as far as it can say so.

Clients, 16 threads (or 16 wide), 1,000 calls each:

* **apiexec** - ``RateLimitedExecutor(limit_requests=12_000, interval=60)``
  / ``(limit_requests=200, interval=1, burst=20)`` + ``Endpoint`` (its own
  retries on 429, with backoff, stay on: they are part of what a user gets);
* **requests-ratelimiter** - ``LimiterSession(per_minute=12_000)`` /
  ``LimiterSession(per_second=200)``: its ``burst=N`` widens the window to N
  seconds (``burst=20`` would allow 4,000 at once), so a token-bucket burst
  of 20 cannot be said; ``max_delay`` bounds its waits;
* **pyrate-limiter** - ``Limiter(Rate(12_000, Duration.MINUTE))`` (its
  default sliding-window bucket) / a ``TokenBucket`` with
  ``Rate(200, Duration.SECOND, burst=20)``; each call ``try_acquire`` first,
  then ``requests``;
* **no client limit** - plain ``requests`` in threads: what the server does
  to a client that does not pace at all.

The server's own access log counts what it received and refused; a run that
has not finished after :data:`RUN_DEADLINE` seconds stops taking new calls
(the rest count as "not done"). "% of 200/s used" is the time the server
needs, at its rate, for the calls it answered beyond its burst, over the
time the run took: 100 % is the best possible, as in
``tests/integration/test_pacing_nginx.py``. It says how well a client paced
only when every call was done; a client that lost calls to 429s merely kept
the server busy (shown in brackets).

    python bench/pacing.py                 # 1,000 calls per client and server
    python bench/pacing.py --quick         # 400 calls, no run past 6 s
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import inspect
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Final

import requests
from nginx import Nginx
from report import Load, machine, num, table
from requests.adapters import HTTPAdapter

from apiexec import APICalling, Endpoint, EndpointConfig, RateLimitedExecutor

SERVER_RATE: Final = 200  # requests per second
THREADS: Final = 16
CALLS: Final = 1_000
QUICK_CALLS: Final = 400
#: No run takes new calls after this many seconds (a client stuck in a
#: minute-long back-off must not hold the whole benchmark).
RUN_DEADLINE: Final = 20.0
QUICK_RUN_DEADLINE: Final = 6.0
#: Longest a limiter may block one call (requests-ratelimiter ``max_delay``,
#: pyrate ``timeout``) before the call counts as failed in the client.
MAX_DELAY: Final = 5.0
BODY: Final = {"model": "bench", "messages": [{"role": "user", "content": "Say ok."}], "max_tokens": 5}


@dataclass(frozen=True)
class Scenario:
    """A server limit and how every client is configured against it."""

    name: str
    burst: int  # nginx burst (nodelay)
    per_minute: bool  # clients configured as 12,000/min (True) or 200/s burst 20 (False)

    @property
    def client_config(self) -> str:
        return "12,000 per minute" if self.per_minute else "200 per second, burst 20"

    @property
    def server_config(self) -> str:
        return f"rate={SERVER_RATE}r/s burst={self.burst} nodelay"


SCENARIOS: Final = (
    Scenario("1 s window", burst=SERVER_RATE, per_minute=True),
    Scenario("burst 20", burst=20, per_minute=False),
)


@dataclass
class Outcome:
    """What the client saw: calls that ended well, failed, or were never started."""

    ok: int = 0
    failed: int = 0
    not_started: int = 0


# ------------------------------------------------------------------ clients
# Each sends ``calls`` chat POSTs to ``url`` paced for ``scenario`` and
# returns its Outcome; none takes a new call after ``deadline`` (monotonic).


def _threads(one: Callable[[], bool], calls: int, deadline: float) -> Outcome:
    """Runs ``one`` ``calls`` times on THREADS threads; stops starting calls at the deadline."""
    outcome = Outcome()
    lock = threading.Lock()
    left = [calls]

    def worker() -> None:
        while True:
            with lock:
                if left[0] == 0:
                    return
                if time.monotonic() > deadline:
                    outcome.not_started += left[0]
                    left[0] = 0
                    return
                left[0] -= 1
            try:
                good = one()
            except Exception:  # a limiter's timeout, a connection error: the call failed
                good = False
            with lock:
                if good:
                    outcome.ok += 1
                else:
                    outcome.failed += 1

    with cf.ThreadPoolExecutor(THREADS) as pool:
        for future in [pool.submit(worker) for _ in range(THREADS)]:
            future.result()
    return outcome


def _session(session: requests.Session | None = None) -> requests.Session:
    session = session or requests.Session()
    session.mount("http://", HTTPAdapter(pool_connections=1, pool_maxsize=THREADS))
    return session


def run_apiexec(url: str, scenario: Scenario, calls: int, deadline: float) -> Outcome:
    base, _, path = url.partition("/v1/")
    if scenario.per_minute:
        limits: dict[str, Any] = {"limit_requests": 12_000, "interval": 60.0}
    elif "burst" in inspect.signature(RateLimitedExecutor).parameters:
        limits = {"limit_requests": SERVER_RATE, "interval": 1.0, "burst": 20}
    else:  # an apiexec without burst= on the executor: the same bucket, spelt on the backend
        from apiexec.limits.bucket import MemoryBackend
        from apiexec.limits.rate_limits import RateLimits

        limits = {"backend": MemoryBackend(limits=RateLimits.per_second(requests=SERVER_RATE, burst=20))}
    endpoint = Endpoint(EndpointConfig(provider="bench", base_url=base, endpoint="v1/" + path, pool_maxsize=THREADS))
    outcome = Outcome()
    with endpoint, RateLimitedExecutor(concurrency_limit=THREADS, **limits) as executor:

        def events():  # type: ignore[no-untyped-def]
            for index in range(calls):
                if time.monotonic() > deadline:
                    outcome.not_started = calls - index
                    return
                yield APICalling(endpoint, BODY)

        for result in executor.map(events(), return_exceptions=True):
            if isinstance(result, BaseException):
                outcome.failed += 1
            else:
                outcome.ok += 1
    return outcome


def run_requests_ratelimiter(url: str, scenario: Scenario, calls: int, deadline: float) -> Outcome:
    from requests_ratelimiter import LimiterSession

    rate = {"per_minute": 12_000} if scenario.per_minute else {"per_second": SERVER_RATE}
    with _session(LimiterSession(**rate, max_delay=MAX_DELAY)) as session:
        return _threads(lambda: session.post(url, json=BODY, timeout=10).status_code == 200, calls, deadline)


def run_pyrate_limiter(url: str, scenario: Scenario, calls: int, deadline: float) -> Outcome:
    from pyrate_limiter import Duration, Limiter, Rate, StateBucket, TokenBucket

    if scenario.per_minute:
        limiter = Limiter(Rate(12_000, Duration.MINUTE))
    else:
        limiter = Limiter(StateBucket([Rate(SERVER_RATE, Duration.SECOND, burst=20)], algorithm=TokenBucket()))
    with _session() as session:

        def one() -> bool:
            if not limiter.try_acquire("bench", timeout=MAX_DELAY):
                return False
            return session.post(url, json=BODY, timeout=10).status_code == 200

        return _threads(one, calls, deadline)


def run_unpaced(url: str, scenario: Scenario, calls: int, deadline: float) -> Outcome:
    with _session() as session:
        return _threads(lambda: session.post(url, json=BODY, timeout=10).status_code == 200, calls, deadline)


CLIENTS: Final[dict[str, Callable[[str, Scenario, int, float], Outcome]]] = {
    "apiexec": run_apiexec,
    "requests-ratelimiter": run_requests_ratelimiter,
    "pyrate-limiter": run_pyrate_limiter,
    "no client limit": run_unpaced,
}


# --------------------------------------------------------------- measuring


@dataclass
class Row:
    """One client against one server."""

    scenario: Scenario
    client: str
    calls: int
    outcome: Outcome
    wall: float
    sent: int
    rejected: int
    answered_ok: int
    load: str

    @property
    def achieved(self) -> float:
        return self.answered_ok / self.wall

    @property
    def used(self) -> float:
        """Share of the server's rate used after its burst (1.0 = the best possible)."""
        beyond = max(0, self.answered_ok - self.scenario.burst)
        return beyond / SERVER_RATE / self.wall

    @property
    def used_text(self) -> str:
        """``used`` as a percentage; only meaningful when every call was done."""
        done = self.outcome.ok == self.calls
        return f"{self.used:.1%}" if done else f"({self.used:.1%}, calls lost)"


def measure(client: str, scenario: Scenario, calls: int, deadline: float = RUN_DEADLINE) -> Row:
    with Load() as load, Nginx(rate=SERVER_RATE, burst=scenario.burst) as server:
        start = time.monotonic()
        outcome = CLIENTS[client](server.chat_url, scenario, calls, start + deadline)
        wall = time.monotonic() - start
    statuses = server.statuses()  # complete: the server has stopped
    return Row(scenario, client, calls, outcome, wall, len(statuses), statuses.count(429), statuses.count(200),
               load.text())  # fmt: skip


def run(clients: Sequence[str], calls: int, deadline: float = RUN_DEADLINE, log: Callable[[str], None] = print
        ) -> list[Row]:  # fmt: skip
    rows = []
    for scenario in SCENARIOS:
        for client in clients:
            row = measure(client, scenario, calls, deadline)
            log(f"  {scenario.name:<10} {client:<20} {row.rejected:>4} rejected, {row.outcome.ok:>4} ok, "
                f"{row.wall:5.2f}s, {row.used:6.1%} of {SERVER_RATE}/s used")  # fmt: skip
            rows.append(row)
    return rows


def render(rows: Sequence[Row]) -> str:
    parts = []
    for scenario in SCENARIOS:
        mine = [r for r in rows if r.scenario == scenario]
        if not mine:
            continue
        body = [
            [r.client, num(r.rejected), num(r.sent), num(r.outcome.ok), num(r.outcome.failed + r.outcome.not_started),
             f"{r.wall:.2f} s", num(r.achieved), r.used_text, r.load]
            for r in mine
        ]  # fmt: skip
        parts.append(
            f"**{scenario.name}** - nginx `{scenario.server_config}`; clients configured as "
            f'"{scenario.client_config}"; {num(mine[0].calls)} calls, {THREADS} wide\n\n'
            + table(
                [
                    "client",
                    "429s",
                    "requests sent",
                    "calls ok",
                    "calls not done",
                    "wall",
                    "ok/s",
                    f"% of {SERVER_RATE}/s used",
                    "load before -> after",
                ],
                body,
            )  # fmt: skip
        )
    return "\n\n".join(parts)


def to_json(rows: Sequence[Row]) -> list[dict[str, Any]]:
    return [
        {"scenario": r.scenario.name, "client": r.client, "calls": r.calls, "rejected": r.rejected, "sent": r.sent,
         "ok": r.outcome.ok, "failed": r.outcome.failed, "not_started": r.outcome.not_started, "wall": r.wall,
         "used": r.used, "load": r.load}
        for r in rows
    ]  # fmt: skip


def main(argv: Sequence[str] | None = None) -> tuple[str, list[dict[str, Any]]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--quick", action="store_true", help=f"{QUICK_CALLS} calls per run, {QUICK_RUN_DEADLINE:g} s at most"
    )
    parser.add_argument("--calls", type=int, default=None, help=f"calls per run (default {CALLS:,})")
    parser.add_argument("--clients", default=",".join(CLIENTS), help="comma-separated, from: " + ", ".join(CLIENTS))
    args = parser.parse_args(argv)
    clients = args.clients.split(",")
    unknown = [c for c in clients if c not in CLIENTS]
    if unknown:
        parser.error(f"--clients: unknown {', '.join(unknown)}")
    calls = args.calls or (QUICK_CALLS if args.quick else CALLS)
    print(machine(), flush=True)
    deadline = QUICK_RUN_DEADLINE if args.quick else RUN_DEADLINE
    rows = run(clients, calls, deadline, log=lambda line: print(line, flush=True))
    markdown = render(rows)
    print("\n" + markdown)
    return markdown, to_json(rows)


if __name__ == "__main__":
    main()
