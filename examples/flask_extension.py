"""A Flask extension: one apiexec executor per app and process, the Flask way.

``examples/flask_app/app.py`` keeps its executor at module level; an app
factory (several apps, tests building a fresh app each) wants an extension
instead, written as Flask's own extensions are: created unbound, bound with
``init_app(app)``, its state kept in ``app.extensions``::

    from flask import Flask
    from flask_extension import APIExec

    llm = APIExec()

    def create_app():
        app = Flask(__name__)
        app.config.update(APIEXEC_BASE_URL="https://api.openai.com/v1", APIEXEC_API_KEY_ENV="OPENAI_API_KEY")
        llm.init_app(app)
        return app

    @app.post("/chat")
    def chat():
        answer = llm.chat([{"role": "user", "content": request.json["prompt"]}])
        return {"answer": answer["choices"][0]["message"]["content"]}

Run this file for a demo against the built-in mock server::

    python examples/flask_extension.py

Lifecycle:

* ``init_app`` creates the endpoint and executor; no thread starts until the
  first call, and a process forked later (gunicorn ``--preload``) restarts
  the executor by itself.
* **teardown**: at the end of each request, calls the request submitted and
  never waited for are cancelled if they have not started: nothing is sent
  for a client that is gone (the view returned early, or raised).
* ``shutdown(app)`` (also at interpreter exit, which is how gunicorn workers
  end on SIGTERM): calls in flight finish, the rest are cancelled, the
  connection pool closes.

Configuration (``app.config``): ``APIEXEC_BASE_URL`` (required),
``APIEXEC_API_KEY_ENV`` (the variable holding the key; None: no auth),
``APIEXEC_MODEL``, ``APIEXEC_LIMIT_REQUESTS``/``APIEXEC_LIMIT_TOKENS`` per
``APIEXEC_INTERVAL`` seconds, ``APIEXEC_STORAGE``/``APIEXEC_KEY`` (one quota
shared by every worker), ``APIEXEC_CONCURRENCY``, ``APIEXEC_DEADLINE`` (seconds).
"""

from __future__ import annotations

import atexit
import concurrent.futures as cf
import threading
import weakref
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from flask import Flask, current_app, g

from apiexec import APICalling, Endpoint, EndpointConfig, RateLimitedExecutor

DEFAULTS: Mapping[str, Any] = {
    "APIEXEC_API_KEY_ENV": None,
    "APIEXEC_MODEL": "gpt-4o-mini",
    "APIEXEC_LIMIT_REQUESTS": 500,
    "APIEXEC_LIMIT_TOKENS": 200_000,
    "APIEXEC_INTERVAL": 60.0,
    "APIEXEC_STORAGE": "memory://",
    "APIEXEC_KEY": "llm",
    "APIEXEC_CONCURRENCY": 16,
    "APIEXEC_DEADLINE": 30.0,
}


@dataclass
class _State:
    """What one app holds: its endpoint, its executor, its settings."""

    endpoint: Endpoint
    executor: RateLimitedExecutor
    model: str
    deadline: float
    lock: threading.Lock = field(default_factory=threading.Lock)


class APIExec:
    """The extension. Create it once, bind it to each app with :meth:`init_app`."""

    def __init__(self, app: Flask | None = None) -> None:
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        """Create the app's endpoint and executor; register the teardown and exit hooks.

        Raises:
            ValueError: ``APIEXEC_BASE_URL`` is missing, or a limit is invalid
                (apiexec's message names the setting).
        """
        for name, value in DEFAULTS.items():
            app.config.setdefault(name, value)
        config = app.config
        if not config.get("APIEXEC_BASE_URL"):
            raise ValueError("APIEXEC_BASE_URL: must be set (e.g. https://api.openai.com/v1)")
        key_env = config["APIEXEC_API_KEY_ENV"]
        endpoint = Endpoint(
            EndpointConfig(
                provider="openai",
                base_url=config["APIEXEC_BASE_URL"],
                endpoint="chat/completions",
                api_key_env=key_env,
                auth_type="bearer" if key_env else "none",
                pool_maxsize=int(config["APIEXEC_CONCURRENCY"]),
            )
        )
        executor = RateLimitedExecutor(
            limit_requests=config["APIEXEC_LIMIT_REQUESTS"],
            limit_tokens=config["APIEXEC_LIMIT_TOKENS"],
            interval=config["APIEXEC_INTERVAL"],
            concurrency_limit=int(config["APIEXEC_CONCURRENCY"]),
            storage=config["APIEXEC_STORAGE"],
            key=config["APIEXEC_KEY"],
        )
        executor.start()  # starts no thread: workers start with the first call
        app.extensions["apiexec"] = _State(endpoint, executor, config["APIEXEC_MODEL"], float(config["APIEXEC_DEADLINE"]))
        app.teardown_request(_cancel_unclaimed)
        # A weak reference: an app dropped (a test's) is not kept alive by the exit hook.
        atexit.register(_shutdown_at_exit, self, weakref.ref(app))

    # -- use from views -----------------------------------------------------------------

    @staticmethod
    def _state(app: Flask | None = None) -> _State:
        app = app or current_app._get_current_object()  # type: ignore[attr-defined]
        try:
            return app.extensions["apiexec"]
        except KeyError:
            raise RuntimeError("APIExec.init_app(app) was not called for this app") from None

    @property
    def executor(self) -> RateLimitedExecutor:
        """The current app's executor."""
        return self._state().executor

    def submit(self, body: Mapping[str, Any]) -> cf.Future[Any]:
        """Submit one chat request (the model filled in); the request owns the future.

        The call's deadline is ``APIEXEC_DEADLINE``; if the request ends
        without waiting for it and it has not started, teardown cancels it.
        """
        state = self._state()
        call = APICalling(state.endpoint, {"model": state.model, **body}, requires_tokens=True)
        call.timeout = state.deadline
        future = state.executor.submit(call)
        g.setdefault("apiexec_futures", []).append(future)
        return future

    def chat(self, messages: list[dict[str, Any]], **options: Any) -> Any:
        """One chat call, waited for: the parsed answer, or the call's exception."""
        future = self.submit({"messages": messages, **options})
        return future.result(timeout=self._state().deadline + 5.0)  # the deadline ends the call first

    def shutdown(self, app: Flask) -> None:
        """Finish the calls in flight, cancel the rest, close the pool. Safe twice."""
        state = app.extensions.get("apiexec")
        if state is None:
            return
        with state.lock:
            state.executor.shutdown(wait=True)
            state.endpoint.close()


def _shutdown_at_exit(extension: APIExec, app_ref: weakref.ref[Flask]) -> None:
    app = app_ref()
    if app is not None:
        extension.shutdown(app)


def _cancel_unclaimed(exc: BaseException | None) -> None:
    """Teardown: cancel the request's calls that have not started; nobody will read them."""
    for future in g.pop("apiexec_futures", ()):
        future.cancel()  # a no-op for calls running or done


def create_app(base_url: str, **config: Any) -> Flask:
    """A small app using the extension: ``POST /chat`` and ``POST /fanout``."""
    from flask import request

    llm = APIExec()
    app = Flask(__name__)
    app.config.update(APIEXEC_BASE_URL=base_url, **config)
    llm.init_app(app)

    @app.post("/chat")
    def chat() -> Any:
        prompt = (request.get_json(silent=True) or {}).get("prompt")
        if not isinstance(prompt, str) or not prompt:
            return {"error": "prompt: must be a non-empty string"}, 400
        answer = llm.chat([{"role": "user", "content": prompt}], max_tokens=50)
        return {"answer": answer["choices"][0]["message"]["content"]}

    @app.post("/fanout")
    def fanout() -> Any:
        """Submits many calls, waits for the first only: teardown cancels the rest."""
        futures = [llm.submit({"messages": [{"role": "user", "content": f"n{n}"}], "max_tokens": 5})
                   for n in range(int(request.args.get("n", "10")))]
        first = futures[0].result(timeout=30)
        return {"first": first["choices"][0]["message"]["content"], "submitted": len(futures)}

    app.extensions["apiexec_ext"] = llm
    return app


if __name__ == "__main__":
    from apiexec.mock import MockServer

    with MockServer() as mock:
        demo = create_app(f"{mock.url}/v1")
        client = demo.test_client()
        print(client.post("/chat", json={"prompt": "Hello"}).get_json())
        print(client.post("/chat", json={"prompt": ""}).get_json())
        demo.extensions["apiexec_ext"].shutdown(demo)
