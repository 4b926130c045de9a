"""Endpoint: one HTTP API endpoint over one pooled ``requests.Session``.

``call(request)`` is a chain of short steps::

    call ─ cache? ─ deadline ─ retry policy ─ _call_requests ─ _send ─ session.request ─ _parse

``stream(request)`` is the same chain up to the first event, then a
generator over the server-sent events (see :mod:`apiexec.http.event_stream`)::

    stream ─ deadline ─ retry policy ─ _open_stream ─ _send(stream=True) ─ first event
           ─ yield events ... ─ EventStream.close (drain briefly, release)

The pieces live beside this module: the session and its pool in
:mod:`~apiexec.http.session`, every error mapping and redaction in
:mod:`~apiexec.http.error_map`, the total deadline in
:mod:`~apiexec.http.deadline`, the retry rules in :mod:`~apiexec.http.retry`.

The session is created lazily (thread-safely) or by ``with endpoint:``, and
closed when the block is left, also after an exception. One Endpoint (and
its session) is shared by every worker thread; consume one stream on one
thread.

Example:
    >>> cfg = EndpointConfig(provider="local", endpoint="chat/completions",
    ...                      base_url="http://127.0.0.1:8000/v1")
    >>> with Endpoint(cfg) as ep:                            # doctest: +SKIP
    ...     ep.call({"model": "m", "messages": [{"role": "user", "content": "hi"}]})
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Generator, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any

import requests

from apiexec.call_context import note_attempt, note_response, wait_before_retry
from apiexec.errors import APIExecError
from apiexec.http.cache import ResponseCache, cache_key
from apiexec.http.config import EndpointConfig
from apiexec.http.credentials import ACTIVE_SECRETS
from apiexec.http.deadline import CURRENT_ALARM, WATCHDOG, Alarm, CallDeadline
from apiexec.http.error_map import BODY_ERRORS, ErrorMapper, is_error_body
from apiexec.http.rate_limit_headers import tag_dialect
from apiexec.http.request_template import RequestTemplate
from apiexec.http.retry import is_retryable, log_retry, retry_policy
from apiexec.http.session import create_session

if TYPE_CHECKING:  # loaded by the first stream (import time)
    from apiexec.http.event_stream import EventStream

logger = logging.getLogger(__name__)


class Endpoint:
    """Calls one endpoint, with pooling, retries, a deadline, typed errors and a cache.

    Args:
        config: Where and how to call.
        sleep: How retries wait (tests inject a recorder). The default
            sleeps, and ends at once when the executor running the call
            shuts down.

    Raises:
        TypeError: ``config`` is not an :class:`EndpointConfig`.

    Example:
        >>> ep = Endpoint.for_provider("openai", "chat/completions")   # doctest: +SKIP
    """

    def __init__(self, config: EndpointConfig, *, sleep: Callable[[float], Any] = wait_before_retry) -> None:
        if not isinstance(config, EndpointConfig):
            raise TypeError(f"config must be an EndpointConfig, not {type(config).__name__}")
        self.config = config
        self.client: requests.Session | None = None
        self._client_lock = threading.Lock()
        self._sleep = sleep
        self._retrying_policy: Any = None  # built at the first retry (tenacity is not imported before)
        self._errors = ErrorMapper(config)
        #: The headers every call sends, built once (calls without extra headers share it).
        self._base_headers: dict[str, str] = {"Content-Type": "application/json", **config.request_headers()}
        self._template: RequestTemplate | None = None
        dialect = config.header_dialect
        self._dialect = None if dialect in (None, "auto") else dialect
        self.cache = ResponseCache(config.cache_size, config.cache_ttl)

    @classmethod
    def for_provider(cls, provider: str, endpoint: str | None = None, **overrides: Any) -> Endpoint:
        """An endpoint from a provider preset (see :mod:`apiexec.http.presets`)."""
        from apiexec.http.presets import preset_config

        return cls(preset_config(provider, endpoint, **overrides))

    # -- session life-cycle ---------------------------------------------------

    def _create_client(self) -> requests.Session:
        """A new session with a pool sized to ``pool_maxsize`` and timeouts."""
        return create_session(self.config)

    def _session(self) -> requests.Session:
        client = self.client
        if client is None:
            with self._client_lock:
                if self.client is None:
                    self.client = self._create_client()
                    ACTIVE_SECRETS.add(self.config.secrets())
                client = self.client
        return client

    def _template_for(self, session: requests.Session) -> RequestTemplate | None:
        """The prepared request of ``session``, built at its first call; None for requests' path."""
        template = self._template
        if template is None or template.session is not session:
            template = RequestTemplate.for_session(
                session, self.config.method, self.config.request_url(), self._base_headers
            )
            if template is None:
                return None
            self._template = template  # a race builds two equal templates: harmless
        return template if template.usable(session) else None

    def close(self) -> None:
        """Close the session and its connections. Safe to call twice."""
        with self._client_lock:
            old, self.client = self.client, None
            self._template = None
        if old is not None:
            ACTIVE_SECRETS.remove(self.config.secrets())
            old.close()

    def __enter__(self) -> Endpoint:
        self._session()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- calling --------------------------------------------------------------

    def call(
        self,
        request: Mapping[str, Any],
        cache_control: bool = False,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> Any:
        """Send ``request`` as JSON and return the parsed JSON response.

        Args:
            request: The request body.
            cache_control: Answer an identical earlier request from the cache.
            headers: Extra headers for this call.

        Returns:
            The parsed JSON body (None for an empty body).

        Raises:
            ServiceRefused: 401/402/403, or a quota/billing 429: retrying
                cannot help.
            RateLimitError: 429 after the last retry, or at once when the
                server asked to wait longer than ``retry_after_cap``.
            APIStatusError: Another error status, after retries where retryable.
            APIConnectionError: Connection failed after retries.
            APITimeoutError: Timed out after retries.
            ResponseTooLarge: The body passed ``max_body_bytes``.
            DeadlineExceeded: The call's total deadline passed.
            APIError: A success status with an ``{"error": ...}`` body, or a
                body that is not JSON.
        """
        payload = dict(request)
        key = cache_key(self.config.method, self.config.full_url, payload) if cache_control else None
        if key is not None:
            cached = self.cache.get(key)
            if cached is not None:
                return cached
        send_headers = self._headers(headers)
        deadline = CallDeadline(self.config.total_timeout)
        result = self._retried(deadline, self._attempt, payload, send_headers, deadline)
        if key is not None and result is not None:
            self.cache.put(key, result)
        return result

    def _retried(self, deadline: CallDeadline, attempt: Callable[..., Any], *args: Any) -> Any:
        """``attempt(*args)`` under the retry policy; tenacity only after a retryable failure.

        Most calls succeed at once: building a tenacity copy for them costs
        more than the rest of our own work per call. The first attempt runs
        bare; when it fails with a retryable error, the policy takes over as
        if it had run that attempt itself (same attempt numbers, waits,
        ``before_sleep`` log, deadline and limiter gating).
        """
        try:
            return attempt(*args)
        except Exception as exc:
            if self.config.max_retries <= 0 or not is_retryable(exc):
                raise
            first: BaseException | None = exc

        def resumed(*call_args: Any) -> Any:
            nonlocal first
            if first is not None:  # the policy's attempt 1 is the one already made
                failure, first = first, None
                raise failure
            return attempt(*call_args)

        return self._policy(deadline)(resumed, *args)

    @property
    def _retrying(self) -> Any:
        """The retry policy (tenacity), built once, at the first retry."""
        policy = self._retrying_policy
        if policy is None:
            config = self.config
            policy = self._retrying_policy = retry_policy(
                max_retries=config.max_retries,
                backoff_base=config.backoff_base,
                backoff_max=config.backoff_max,
                retry_after_cap=config.retry_after_cap,
                sleep=self._sleep,
            )
        return policy

    def _policy(self, deadline: CallDeadline) -> Any:
        """This call's copy of the retry policy; no backoff outlasts its deadline."""

        failed: list[BaseException | None] = [None]

        def before_sleep(state: Any) -> None:
            log_retry(state)
            failed[0] = state.outcome.exception() if state.outcome is not None else None

        def sleep(seconds: float) -> None:
            if seconds >= deadline.left():
                raise deadline.error("retry") from failed[0]  # with the failure it would have retried
            self._sleep(seconds)

        return self._retrying.copy(sleep=sleep, before_sleep=before_sleep)

    def _headers(self, extra: Mapping[str, str] | None) -> dict[str, str]:
        """The call's headers; without extras the shared dict (never mutated)."""
        if not extra:
            return self._base_headers
        return {**self._base_headers, **extra}

    def _attempt(self, payload: Mapping[str, Any], headers: Mapping[str, str], deadline: CallDeadline) -> Any:
        """One attempt of :meth:`call`, its socket watched by the deadline's alarm."""
        alarm = self._arm(deadline)
        token = CURRENT_ALARM.set(alarm)
        try:
            return self._call_requests(payload, headers)
        except APIExecError:
            raise
        except BODY_ERRORS as exc:
            raise self._errors.transport_error(exc, phase="response", deadline=deadline, alarm=alarm) from exc
        finally:
            CURRENT_ALARM.reset(token)
            alarm.cancel()

    def _arm(self, deadline: CallDeadline) -> Alarm:
        deadline.check("connect")
        alarm = WATCHDOG.alarm(deadline)
        alarm.set(deadline.at, "deadline")
        return alarm

    def _call_requests(self, payload: Mapping[str, Any], headers: Mapping[str, str]) -> Any:
        """One attempt: send, map transport errors, parse the response."""
        return self._parse(self._send(payload, headers))

    def _send(self, payload: Mapping[str, Any], headers: Mapping[str, str], **options: Any) -> requests.Response:
        """Count the attempt and send the request; map transport errors."""
        session = self._session()
        note_attempt()
        try:
            template = self._template_for(session) if not options.keys() - {"stream"} else None
            if template is not None:
                return template.send(payload, headers, stream=options.get("stream", False))
            url = self.config.request_url()
            if self.config.method == "GET":
                return session.request(method="GET", url=url, headers=headers, params=payload, **options)
            return session.request(method=self.config.method, url=url, headers=headers, json=payload, **options)
        except requests.RequestException as exc:
            alarm = CURRENT_ALARM.get()
            if alarm is None:
                raise self._errors.transport_error(exc, phase="connect") from exc
            # The connection joins the alarm once the request is sent.
            phase = "response" if alarm.sent else "connect"
            raise self._errors.transport_error(exc, phase=phase, deadline=alarm.deadline, alarm=alarm) from exc

    def _note(self, response: requests.Response) -> None:
        headers: Mapping[str, str] = response.headers
        dialect = self._dialect
        if dialect is not None and isinstance(headers, Mapping):
            if isinstance(headers, requests.structures.CaseInsensitiveDict):
                # Tag the response's own headers: no copy per response.
                headers.rate_limit_dialect = dialect  # type: ignore[attr-defined]
            else:
                headers = tag_dialect(headers, dialect)
        note_response(response.status_code, headers)

    def _parse(self, response: requests.Response) -> Any:
        self._note(response)
        if not response.ok:
            raise self._errors.status_error(response.status_code, response.reason, response.headers, response.text)
        if not response.content:
            return None
        try:
            body = response.json()
        except ValueError as exc:
            raise self._errors.not_json(response.status_code) from exc
        if is_error_body(body):
            raise self._errors.body_error(response.status_code, body)
        return body

    # -- streaming ------------------------------------------------------------

    def stream(
        self,
        request: Mapping[str, Any],
        *,
        headers: Mapping[str, str] | None = None,
    ) -> Generator[dict[str, Any], None, None]:
        """Send ``request`` with ``"stream": true``; yield its events as they arrive.

        Each item is the parsed JSON ``data`` of one server-sent event:
        OpenAI ``chat.completion.chunk`` dicts (the closing ``data: [DONE]``
        is not yielded), or Anthropic events, whose ``type`` is their
        ``event:`` name. :func:`apiexec.llm.stream_assembly.assemble` joins them
        into the final message. OpenAI sends ``usage`` only when the request
        asks for it with ``stream_options={"include_usage": True}``.

        Nothing is sent until the first item is asked for. Up to the first
        event the retry policy of :meth:`call` applies (connection errors,
        408/409/429/5xx, ``retry-after``, a stream cut before its first
        event); once an event was yielded, a failure raises and is not
        retried, as the consumer has already seen data. The first event and
        each next one must come within ``timeout``; the whole stream within
        the call's total deadline. The cache never applies.

        The response is always closed when the generator ends, also when the
        consumer stops early (``break`` or ``close()``).

        Args:
            request: The request body (not modified).
            headers: Extra headers for this call.

        Yields:
            One dict per event.

        Raises:
            ServiceRefused: 401/402/403, or a quota/billing 429.
            APIStatusError: An error status, after retries where retryable.
            RateLimitError: 429 after the last retry.
            APIStreamIncomplete: The body ended before the stream's final
                event (``[DONE]``, a ``finish_reason``, ``message_stop``).
            APIConnectionError: Connection failed after retries, or broke
                during the stream.
            APITimeoutError: Timed out after retries, or no next event in time.
            DeadlineExceeded: The call's total deadline passed.
            ResponseTooLarge: The stream passed ``max_body_bytes``.
            APIError: The stream reported an error event, an event is not a
                JSON object, or the server answered JSON instead of a stream.

        Example:
            >>> for chunk in endpoint.stream({"model": "m", "messages": msgs}):  # doctest: +SKIP
            ...     print(chunk["choices"][0]["delta"].get("content", ""), end="")
        """
        payload = {**request, "stream": True}
        send_headers = self._headers({"Accept": "text/event-stream", **(headers or {})})
        deadline = CallDeadline(self.config.total_timeout)
        events, first = self._retried(deadline, self._open_stream, payload, send_headers, deadline)
        try:
            if first is None:  # "[DONE]" at once: complete, and empty
                return
            yield first
            yield from events
        finally:
            events.close()

    def _open_stream(
        self, payload: Mapping[str, Any], headers: Mapping[str, str], deadline: CallDeadline | None = None
    ) -> tuple[EventStream, dict[str, Any] | None]:
        """One attempt: send, check the answer, read up to the first event."""
        from apiexec.http.event_stream import EventStream

        deadline = deadline or CallDeadline(self.config.total_timeout)
        alarm = self._arm(deadline)
        token = CURRENT_ALARM.set(alarm)
        try:
            response = self._send(payload, headers, stream=True)
        except BaseException:
            alarm.cancel()
            raise
        finally:
            CURRENT_ALARM.reset(token)
        events = EventStream(response, self.config, self._errors, deadline, alarm)
        try:
            self._note(response)
            if not response.ok:
                text = _bounded_text(response, self.config.max_body_bytes)
                raise self._errors.status_error(response.status_code, response.reason, response.headers, text)
            self._check_event_stream(response)
            return events, next(events, None)
        except APIExecError:
            events.close()
            raise
        except BODY_ERRORS as exc:
            events.close()
            raise self._errors.transport_error(exc, phase="response", deadline=deadline, alarm=alarm) from exc
        except BaseException:
            events.close()
            raise

    def _check_event_stream(self, response: requests.Response) -> None:
        content_type = response.headers.get("Content-Type", "")
        if content_type.split(";")[0].strip().lower() == "application/json":
            text = _bounded_text(response, self.config.max_body_bytes)
            raise self._errors.not_event_stream(response.status_code, text)

    def __repr__(self) -> str:
        state = "open" if self.client is not None else "closed"
        return f"Endpoint(provider={self.config.provider!r}, url={self._errors.url!r}, {state})"


def _bounded_text(response: requests.Response, limit: int) -> str:
    """The body of a streamed response as text, read up to ``limit`` bytes."""
    chunks, total = [], 0
    for chunk in response.iter_content(64 * 1024):
        chunks.append(chunk)
        total += len(chunk)
        if total >= limit:
            break
    return b"".join(chunks)[:limit].decode(response.encoding or "utf-8", "replace")
