"""The mock server's OpenAI Batch API and Anthropic Message Batches, through the official SDKs.

Batch progress runs on the server's clock: these tests drive a FakeClock, so
every status is exact and nothing sleeps.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import openai
import pytest
from anthropic.types.messages import MessageBatch, MessageBatchIndividualResponse
from openai.types import Batch, FileObject
from openai.types.chat import ChatCompletion
from openai.types.responses import Response

from apiexec.mock.server import MockServer, MockServerConfig
from tests.helpers import FakeClock

pytestmark = pytest.mark.integration

SCALE = 10.0  # seconds per step; the fake clock makes it free


def chat_line(custom_id: str, text: str = "hi", url: str = "/v1/chat/completions", **body: Any) -> dict[str, Any]:
    body = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": text}], **body}
    return {"custom_id": custom_id, "method": "POST", "url": url, "body": body}


def jsonl(lines: list[dict[str, Any]]) -> bytes:
    return "\n".join(json.dumps(line) for line in lines).encode() + b"\n"


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(start=100.0)


@pytest.fixture
def make_server(clock: FakeClock) -> Iterator[Callable[..., MockServer]]:
    servers: list[MockServer] = []

    def make(**fields: Any) -> MockServer:
        server = MockServer(MockServerConfig(**fields), clock=clock).start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def oai(make_server: Callable[..., MockServer]) -> Iterator[openai.OpenAI]:
    server = make_server(batch_time_scale=SCALE)
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="k", max_retries=0, timeout=10) as client:
        yield client


@pytest.fixture
def ant(make_server: Callable[..., MockServer]) -> Iterator[anthropic.Anthropic]:
    server = make_server(batch_time_scale=SCALE)
    with anthropic.Anthropic(base_url=server.url, api_key="k", max_retries=0, timeout=10) as client:
        yield client


def upload(client: openai.OpenAI, lines: list[dict[str, Any]]) -> FileObject:
    raw = client.files.with_raw_response.create(file=("in.jsonl", jsonl(lines)), purpose="batch")
    return FileObject.model_validate(raw.http_response.json())


def retrieve(client: openai.OpenAI, batch_id: str) -> Batch:
    return Batch.model_validate(client.batches.with_raw_response.retrieve(batch_id).http_response.json())


def rows(client: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    assert file_id is not None
    return [json.loads(line) for line in client.files.content(file_id).text.splitlines()]


# --------------------------------------------------------------------------- OpenAI


def test_openai_batch_life_on_the_clock(oai: openai.OpenAI, clock: FakeClock) -> None:
    lines = [chat_line("a"), chat_line("b", "second"), chat_line("bad", messages=[])]
    file = upload(oai, lines)
    assert (file.purpose, file.status, file.filename, file.bytes) == ("batch", "processed", "in.jsonl",
                                                                      len(jsonl(lines)))
    batch = oai.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="24h",
                               metadata={"run": "1"})
    assert batch.status == "validating" and batch.metadata == {"run": "1"}
    seen = []
    for _ in range(7):
        current = retrieve(oai, batch.id)
        seen.append((current.status, current.request_counts.completed, current.request_counts.failed))  # type: ignore[union-attr]
        clock.advance(SCALE)
    assert seen == [("validating", 0, 0), ("in_progress", 0, 0), ("in_progress", 1, 0), ("in_progress", 2, 0),
                    ("finalizing", 2, 1), ("completed", 2, 1), ("completed", 2, 1)]
    done = retrieve(oai, batch.id)
    stamps = [done.created_at, done.in_progress_at, done.finalizing_at, done.completed_at]
    assert stamps == sorted(stamps) and done.expires_at == done.created_at + 24 * 3600  # type: ignore[operator]
    assert done.usage is not None and done.usage.total_tokens > 0
    output = rows(oai, done.output_file_id)
    assert [r["custom_id"] for r in output] == ["a", "b"]
    for row in output:
        assert row["id"].startswith("batch_req_") and row["error"] is None
        assert row["response"]["status_code"] == 200 and row["response"]["request_id"].startswith("req_")
        ChatCompletion.model_validate(row["response"]["body"])
    (error,) = rows(oai, done.error_file_id)
    assert error["custom_id"] == "bad" and error["response"]["status_code"] == 400
    assert error["response"]["body"]["error"]["param"] == "messages" and error["error"] is None
    assert FileObject.model_validate(oai.files.retrieve(done.output_file_id).model_dump()).purpose == "batch_output"  # type: ignore[arg-type]


def test_openai_batch_of_responses_and_embeddings_at_scale_zero(make_server: Callable[..., MockServer]) -> None:
    server = make_server()
    with openai.OpenAI(base_url=f"{server.url}/v1", api_key="k", max_retries=0) as client:
        lines = [{"custom_id": "r", "method": "POST", "url": "/v1/responses", "body": {"model": "m", "input": "x"}}]
        batch = client.batches.create(input_file_id=upload(client, lines).id, endpoint="/v1/responses",
                                      completion_window="24h")
        assert batch.status == "completed"  # scale 0: done at once
        Response.model_validate(rows(client, batch.output_file_id)[0]["response"]["body"])
        lines = [{"custom_id": "e", "method": "POST", "url": "/v1/embeddings", "body": {"model": "e", "input": "x"}}]
        batch = client.batches.create(input_file_id=upload(client, lines).id, endpoint="/v1/embeddings",
                                      completion_window="24h")
        assert rows(client, batch.output_file_id)[0]["response"]["body"]["object"] == "list"
    assert server.stats.by_status[200] == server.stats.requests  # batches call nothing online


def test_openai_batch_cancel_keeps_what_was_done(oai: openai.OpenAI, clock: FakeClock) -> None:
    batch = oai.batches.create(input_file_id=upload(oai, [chat_line(f"r{i}") for i in range(5)]).id,
                               endpoint="/v1/chat/completions", completion_window="24h")
    clock.advance(SCALE * 3)  # validated, then two requests done
    cancelling = oai.batches.cancel(batch.id)
    assert cancelling.status == "cancelling" and cancelling.cancelling_at is not None
    clock.advance(SCALE)
    cancelled = retrieve(oai, batch.id)
    assert cancelled.status == "cancelled" and cancelled.cancelled_at is not None
    assert cancelled.request_counts is not None and cancelled.request_counts.completed == 2
    assert [r["custom_id"] for r in rows(oai, cancelled.output_file_id)] == ["r0", "r1"]
    with pytest.raises(openai.BadRequestError):
        oai.batches.cancel(batch.id)


def test_openai_batch_that_does_not_validate_fails(oai: openai.OpenAI, clock: FakeClock) -> None:
    lines = [chat_line("a"), chat_line("a"), chat_line("b", url="/v1/embeddings"), {"custom_id": "c"}]
    batch = oai.batches.create(input_file_id=upload(oai, lines).id, endpoint="/v1/chat/completions",
                               completion_window="24h")
    clock.advance(SCALE)
    failed = retrieve(oai, batch.id)
    assert failed.status == "failed" and failed.failed_at is not None and failed.output_file_id is None
    assert failed.errors is not None
    assert [(e.code, e.line) for e in failed.errors.data or []] == [
        ("duplicate_custom_id", 2), ("mismatched_endpoint", 3), ("invalid_method", 4)]


def test_openai_batch_create_checks_its_arguments(oai: openai.OpenAI) -> None:
    file = upload(oai, [chat_line("a")])
    with pytest.raises(openai.BadRequestError) as caught:
        oai.batches.create(input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h")
    assert caught.value.param == "input_file_id"
    with pytest.raises(openai.BadRequestError):
        oai.batches.create(input_file_id=file.id, endpoint="/v1/moderations", completion_window="24h")  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError):
        oai.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions", completion_window="1h")  # type: ignore[arg-type]
    with pytest.raises(openai.BadRequestError):
        oai.files.create(file=("x.jsonl", b"{}"), purpose="nonsense")  # type: ignore[arg-type]
    with pytest.raises(openai.NotFoundError):
        oai.batches.retrieve("batch_nope")


def test_openai_lists_page_and_files_delete(oai: openai.OpenAI) -> None:
    file = upload(oai, [chat_line("a")])
    ids = [oai.batches.create(input_file_id=file.id, endpoint="/v1/chat/completions",
                              completion_window="24h").id for _ in range(3)]
    first = oai.batches.list(limit=2)
    assert [b.id for b in first.data] == ids[::-1][:2] and first.has_more
    assert [b.id for b in oai.batches.list(limit=2)] == ids[::-1]  # the SDK follows ``after``
    assert file.id in [f.id for f in oai.files.list(purpose="batch")]
    deleted = oai.files.delete(file.id)
    assert deleted.deleted and deleted.id == file.id
    with pytest.raises(openai.NotFoundError):
        oai.files.retrieve(file.id)


# --------------------------------------------------------------------------- Anthropic


def params(text: str = "hi", **extra: Any) -> dict[str, Any]:
    return {"model": "claude-mock", "max_tokens": 50, "messages": [{"role": "user", "content": text}], **extra}


def batch_of(client: anthropic.Anthropic, batch_id: str) -> MessageBatch:
    return MessageBatch.model_validate(client.messages.batches.with_raw_response.retrieve(batch_id).http_response.json())


def test_anthropic_batch_life_and_results(ant: anthropic.Anthropic, clock: FakeClock) -> None:
    requests = [{"custom_id": "a", "params": params()}, {"custom_id": "b", "params": params(max_tokens=None)},
                {"custom_id": "c", "params": params("third")}]
    created = ant.messages.batches.create(requests=requests)  # type: ignore[arg-type]
    assert created.processing_status == "in_progress" and created.request_counts.processing == 3
    assert created.results_url is None
    clock.advance(SCALE * 2)
    middle = batch_of(ant, created.id)
    assert (middle.request_counts.processing, middle.request_counts.succeeded, middle.request_counts.errored) == (1, 1, 1)
    with pytest.raises(anthropic.AnthropicError):
        list(ant.messages.batches.results(created.id))  # not ended yet: the SDK sees no results_url
    with pytest.raises(anthropic.BadRequestError):  # and the server refuses too
        ant.get(f"/v1/messages/batches/{created.id}/results", cast_to=object)
    clock.advance(SCALE)
    ended = batch_of(ant, created.id)
    assert ended.processing_status == "ended" and ended.ended_at is not None and ended.results_url
    assert ended.request_counts.succeeded == 2 and ended.request_counts.errored == 1
    results = list(ant.messages.batches.results(created.id))
    for result in results:
        MessageBatchIndividualResponse.model_validate(result.model_dump())
    assert [(r.custom_id, r.result.type) for r in results] == [("a", "succeeded"), ("b", "errored"), ("c", "succeeded")]
    assert results[0].result.message.usage.service_tier == "batch"  # type: ignore[union-attr]
    assert results[1].result.error.error.type == "invalid_request_error"  # type: ignore[union-attr]
    assert ant.messages.batches.delete(created.id).type == "message_batch_deleted"
    with pytest.raises(anthropic.NotFoundError):
        ant.messages.batches.retrieve(created.id)


def test_anthropic_batch_cancel(ant: anthropic.Anthropic, clock: FakeClock) -> None:
    created = ant.messages.batches.create(requests=[{"custom_id": f"r{i}", "params": params()} for i in range(4)])  # type: ignore[misc]
    clock.advance(SCALE * 1.5)
    canceling = ant.messages.batches.cancel(created.id)
    assert canceling.processing_status == "canceling" and canceling.cancel_initiated_at is not None
    with pytest.raises(anthropic.BadRequestError):
        ant.messages.batches.delete(created.id)  # still processing
    clock.advance(SCALE)
    ended = batch_of(ant, created.id)
    assert ended.processing_status == "ended"
    assert (ended.request_counts.succeeded, ended.request_counts.canceled) == (1, 3)
    assert [r.result.type for r in ant.messages.batches.results(created.id)] == ["succeeded"] + ["canceled"] * 3


def test_anthropic_batch_checks_requests_and_lists(ant: anthropic.Anthropic) -> None:
    for bad in ([], [{"custom_id": "bad id!", "params": params()}],
                [{"custom_id": "x", "params": params()}, {"custom_id": "x", "params": params()}]):
        with pytest.raises(anthropic.BadRequestError):
            ant.messages.batches.create(requests=bad)  # type: ignore[arg-type]
    ids = [ant.messages.batches.create(requests=[{"custom_id": "a", "params": params()}]).id for _ in range(3)]  # type: ignore[list-item]
    page = ant.messages.batches.list(limit=2)
    assert [b.id for b in page.data] == ids[::-1][:2] and page.has_more
    assert page.first_id == ids[2] and page.last_id == ids[1]
    assert [b.id for b in ant.messages.batches.list(limit=2)] == ids[::-1]  # the SDK follows after_id


def test_openai_batch_on_the_real_clock() -> None:
    server = MockServer(MockServerConfig(batch_time_scale=0.02)).start()
    try:
        with openai.OpenAI(base_url=f"{server.url}/v1", api_key="k", max_retries=0) as client:
            batch = client.batches.create(input_file_id=upload(client, [chat_line("a"), chat_line("b")]).id,
                                          endpoint="/v1/chat/completions", completion_window="24h")
            statuses = {batch.status}
            deadline = time.monotonic() + 10
            while batch.status != "completed":
                assert time.monotonic() < deadline, f"batch stuck in {batch.status}"
                threading.Event().wait(0.01)  # poll as a client would
                batch = client.batches.retrieve(batch.id)
                statuses.add(batch.status)
        assert "validating" in statuses and batch.request_counts.completed == 2  # type: ignore[union-attr]
    finally:
        server.stop()
