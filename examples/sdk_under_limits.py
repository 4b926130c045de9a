"""The official openai and anthropic SDKs, called under apiexec's limits.

Run it (against the built-in mock server: no key, no network)::

    python examples/sdk_under_limits.py

What it shows:

* ``http_client(openai)`` / ``http_client(anthropic)``: an httpx client whose
  transport reports to the executor — every attempt takes a request from the
  bucket (the SDK's own retries included), every response's rate-limit
  headers sync the buckets, a 429's ``retry-after`` pauses every call;
* ``sdk_call(client.chat.completions.create, ...)``: the SDK call as an
  executor event, reserving its estimated tokens and reporting its usage;
* the answers are the SDKs' own pydantic objects.

The mock server is told to answer the first request with a 429: the SDK
retries it, through the executor's buckets.
"""

from __future__ import annotations

import sys

import anthropic
import openai

from apiexec import RateLimitedExecutor
from apiexec.llm.sdk import http_client, sdk_call
from apiexec.mock import MockServer, MockServerConfig


def main() -> int:
    with MockServer(MockServerConfig(requests_per_minute=6000)) as mock:
        mock.script(["429:200"])  # the first request is rate limited for 200 ms
        oai = openai.OpenAI(base_url=f"{mock.url}/v1", api_key="sk-mock", http_client=http_client(openai))
        ant = anthropic.Anthropic(base_url=mock.url, api_key="sk-ant-mock", http_client=http_client(anthropic))
        executor = RateLimitedExecutor(limit_requests=500, limit_tokens=200_000, concurrency_limit=8)
        with oai, ant, executor:
            chats = [
                sdk_call(oai.chat.completions.create, model="gpt-4o-mini", max_tokens=50,
                         messages=[{"role": "user", "content": f"Say hello to {name}"}])
                for name in ("Ada", "Grace", "Edsger")
            ]
            messages = [
                sdk_call(ant.messages.create, model="claude-3-5-haiku-latest", max_tokens=50,
                         messages=[{"role": "user", "content": f"Say goodbye to {name}"}])
                for name in ("Ada", "Grace")
            ]
            completions = list(executor.map(chats))
            replies = list(executor.map(messages))
        for call, completion in zip(chats, completions):
            print(f"openai:    {completion.choices[0].message.content!r} "
                  f"({completion.usage.total_tokens} tokens, reserved {call.required_tokens}, attempts {call.execution.attempts})")
        for reply in replies:
            print(f"anthropic: {reply.content[0].text!r} ({reply.usage.input_tokens + reply.usage.output_tokens} tokens)")
        snapshot = executor.metrics.snapshot()
        print(f"responses {snapshot.get('responses')}, 429s {snapshot.get('rate_limited')}, retries {snapshot.get('retries')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
