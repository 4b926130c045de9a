"""The seed test plan (sections 3-6), translated to synchronous apiexec.

``async def`` -> ``def``, ``await x`` -> ``x``, ``async with`` -> ``with``,
``AsyncMock`` -> ``Mock``, ``aiohttp.ClientSession`` -> ``requests.Session``,
``_call_aiohttp`` -> ``_call_requests``; ``asyncio.create_task`` -> a thread,
``asyncio.sleep`` -> ``time.sleep`` (only where the plan waits on purpose).
The §4.4 call goes to a loopback mock server instead of httpbin.org.
"""

import threading
import time
import uuid
from unittest.mock import Mock

import pytest
import requests

from apiexec import (
    APICalling,
    Endpoint,
    EndpointConfig,
    Event,
    ExecutionStatus,
    Executor,
    Queue,
    QueueConfig,
    RateLimitedExecutor,
)


@pytest.fixture
def mock_endpoint():
    return Mock(spec=Endpoint)


@pytest.fixture
def mock_event():
    event = Mock(spec=Event)
    event.id = uuid.uuid4()
    return event


@pytest.fixture
def mock_api_calling():
    event = Mock(spec=APICalling)
    event.id = uuid.uuid4()
    event.required_tokens = None
    return event


# 3.1 APICalling ---------------------------------------------------------------


def test_api_calling_initialization(mock_endpoint):
    request = {"param": "value"}
    api_call = APICalling(
        endpoint=mock_endpoint,
        request=request,
        cache_control=True,
        requires_tokens=True,
    )
    assert api_call.requires_tokens is True
    assert api_call.event_type == "api_calling"
    assert api_call.event_invoke_function == mock_endpoint.call
    assert api_call.event_invoke_kwargs == {"request": request, "cache_control": True}


def test_api_calling_required_tokens(mock_endpoint):
    api_call = APICalling(endpoint=mock_endpoint, request={}, requires_tokens=True)
    api_call.required_tokens = 10
    assert api_call.required_tokens == 10


def test_api_calling_invoke(mock_endpoint):
    mock_endpoint.call = Mock(return_value={"result": "success"})
    request = {"param": "value"}
    api_call = APICalling(endpoint=mock_endpoint, request=request)
    api_call.invoke()
    mock_endpoint.call.assert_called_once_with(request=request, cache_control=False)
    assert api_call.execution.status == ExecutionStatus.COMPLETED
    assert api_call.execution.result == {"result": "success"}


# 3.2 Queue ----------------------------------------------------------------------


def test_queue_config_validation():
    config = QueueConfig(queue_capacity=100, capacity_refresh_time=1.0)
    assert config.queue_capacity == 100
    assert config.capacity_refresh_time == 1.0
    with pytest.raises(ValueError):
        QueueConfig(queue_capacity=0, capacity_refresh_time=1.0)
    with pytest.raises(ValueError):
        QueueConfig(queue_capacity=100, capacity_refresh_time=0)


def test_queue_initialization():
    queue = Queue(queue_capacity=100, capacity_refresh_time=1.0, concurrency_limit=5)
    assert queue.queue_capacity == 100
    assert queue.capacity_refresh_time == 1.0
    assert queue._concurrency_sem is not None


def test_queue_enqueue_dequeue(mock_event):
    queue = Queue(queue_capacity=100, capacity_refresh_time=1.0)
    queue.start()
    queue.enqueue(mock_event)
    dequeued_event = queue.dequeue()
    assert dequeued_event == mock_event
    assert queue.unfinished_tasks == 1
    queue.task_done()
    queue.stop()


def test_queue_concurrency_control():
    concurrency_limit = 2
    queue = Queue(
        queue_capacity=100,
        capacity_refresh_time=1.0,
        concurrency_limit=concurrency_limit,
    )
    queue.start()
    events = [Mock(spec=Event) for _ in range(concurrency_limit + 1)]
    for event in events:
        queue.enqueue(event)
    dequeued_events = [queue.dequeue() for _ in range(concurrency_limit)]
    assert dequeued_events == events[:concurrency_limit]

    got = []
    dequeue_task = threading.Thread(target=lambda: got.append(queue.dequeue()))
    dequeue_task.start()
    time.sleep(0.1)
    assert dequeue_task.is_alive()

    queue.task_done()
    dequeue_task.join(timeout=1.0)
    assert not dequeue_task.is_alive()
    assert got == [events[-1]]
    for _ in range(concurrency_limit):
        queue.task_done()
    queue.stop()


# 3.3 Executor -------------------------------------------------------------------


def test_executor_initialization():
    executor = Executor(
        event_type=Event,
        queue_config=QueueConfig(
            queue_capacity=100, capacity_refresh_time=1.0, concurrency_limit=5
        ),
    )
    assert executor.event_type == Event
    assert executor.queue_config.queue_capacity == 100
    assert executor.queue_config.capacity_refresh_time == 1.0
    assert executor.queue_config.concurrency_limit == 5
    assert executor.task_queue is None
    assert len(executor.pending) == 0
    assert len(executor.events) == 0


def test_executor_append_pop(mock_event):
    executor = Executor(
        event_type=Event,
        queue_config=QueueConfig(queue_capacity=100, capacity_refresh_time=1.0),
    )
    executor.append(mock_event)
    assert mock_event.id in executor.events
    assert mock_event.id in executor.pending
    popped_event = executor.pop(mock_event.id)
    assert popped_event == mock_event
    assert mock_event.id not in executor.events


def test_executor_process_event(mock_event):
    executor = Executor(
        event_type=Event,
        queue_config=QueueConfig(queue_capacity=100, capacity_refresh_time=1.0),
    )
    mock_event.invoke = Mock()
    mock_event.execution = Mock()
    executor.process_event(mock_event)
    mock_event.invoke.assert_called_once()


# 3.4 RateLimitedExecutor ----------------------------------------------------------


def test_rate_limited_executor_initialization():
    executor = RateLimitedExecutor(
        queue_capacity=100,
        capacity_refresh_time=1.0,
        interval=2.0,
        limit_requests=10,
        limit_tokens=1000,
        concurrency_limit=5,
    )
    assert executor.limit_requests == 10
    assert executor.limit_tokens == 1000
    assert executor.interval == 2.0
    assert executor.available_request == 10
    assert executor.available_token == 1000


def test_rate_limited_executor_request_permission_request_limits(mock_api_calling):
    executor = RateLimitedExecutor(
        queue_capacity=100,
        capacity_refresh_time=1.0,
        limit_requests=2,
        limit_tokens=None,
    )
    assert executor.request_permission(mock_api_calling) is True
    assert executor.request_permission(mock_api_calling) is True
    assert executor.request_permission(mock_api_calling) is False


def test_rate_limited_executor_request_permission_token_limits(mock_api_calling):
    executor = RateLimitedExecutor(
        queue_capacity=100,
        capacity_refresh_time=1.0,
        limit_requests=None,
        limit_tokens=100,
    )
    mock_api_calling.required_tokens = 50
    assert executor.request_permission(mock_api_calling) is True
    assert executor.available_token == 50
    assert executor.request_permission(mock_api_calling) is True
    assert executor.available_token == 0
    assert executor.request_permission(mock_api_calling) is False


# 3.5 Endpoint --------------------------------------------------------------------


def _config(**kw):
    base = dict(
        provider="test",
        endpoint="test",
        base_url="https://example.com",
        transport_type="http",
        timeout=10.0,
    )
    base.update(kw)
    return EndpointConfig(**base)


def test_endpoint_create_client():
    endpoint = Endpoint(config=_config())
    client = endpoint._create_client()
    try:
        assert isinstance(client, requests.Session)
        adapter = client.get_adapter("https://example.com/test")
        assert adapter.default_timeout[1] == 10.0
    finally:
        client.close()


def test_endpoint_context_manager():
    endpoint = Endpoint(config=_config())
    with endpoint as ep:
        assert ep.client is not None
        assert isinstance(ep.client, requests.Session)
    assert endpoint.client is None


@pytest.fixture
def mock_response():
    response = Mock()
    response.status = 200
    response.json = Mock(return_value={"result": "success"})
    response.closed = False
    response.release = Mock()
    return response


@pytest.fixture
def mock_client_session():
    session = Mock(spec=requests.Session)
    session.request = Mock()
    return session


def test_endpoint_call(mock_client_session, mock_response):
    endpoint = Endpoint(config=_config(method="POST"))
    endpoint.client = mock_client_session
    mock_client_session.request.return_value = mock_response
    result = endpoint._call_requests(
        payload={"param": "value"}, headers={"Content-Type": "application/json"}
    )
    mock_client_session.request.assert_called_once_with(
        method="POST",
        url="https://example.com/test",
        headers={"Content-Type": "application/json"},
        json={"param": "value"},
    )
    assert result == {"result": "success"}


# 4 Integration ---------------------------------------------------------------------


@pytest.fixture
def mock_endpoint_with_response():
    endpoint = Mock(spec=Endpoint)
    endpoint.call = Mock(return_value={"result": "success"})
    return endpoint


def test_api_calling_with_endpoint(mock_endpoint_with_response):
    request = {"param": "value"}
    api_call = APICalling(
        endpoint=mock_endpoint_with_response, request=request, cache_control=True
    )
    api_call.invoke()
    mock_endpoint_with_response.call.assert_called_once_with(
        request=request, cache_control=True
    )
    assert api_call.execution.status == ExecutionStatus.COMPLETED
    assert api_call.execution.result == {"result": "success"}


def test_executor_with_queue():
    executor = Executor(
        event_type=Event,
        queue_config=QueueConfig(queue_capacity=100, capacity_refresh_time=1.0),
    )
    mock_event = Mock(spec=Event)
    mock_event.id = uuid.uuid4()
    mock_event.invoke = Mock()
    mock_event.execution = Mock()
    with executor:
        executor.append(mock_event)
        executor.forward()
        time.sleep(0.5)
    mock_event.invoke.assert_called_once()


def test_rate_limited_executor_with_queue():
    executor = RateLimitedExecutor(
        queue_capacity=100,
        capacity_refresh_time=1.0,
        limit_requests=2,
        limit_tokens=None,
    )
    events = []
    for _ in range(3):
        event = Mock(spec=APICalling)
        event.id = uuid.uuid4()
        event.invoke = Mock()
        event.execution = Mock()
        event.required_tokens = None
        events.append(event)
    with executor:
        for event in events:
            executor.append(event)
        executor.forward()
        time.sleep(1.0)
    events[0].invoke.assert_called_once()
    events[1].invoke.assert_called_once()
    events[2].invoke.assert_not_called()


@pytest.mark.integration
def test_endpoint_with_real_http_client(mock_server):
    config = EndpointConfig(
        provider="test",
        endpoint="v1/models",
        base_url=mock_server.url,
        method="GET",
        transport_type="http",
        timeout=10.0,
    )
    endpoint = Endpoint(config=config)
    with endpoint as ep:
        assert ep.client is not None
        assert isinstance(ep.client, requests.Session)
        result = ep._call_requests(payload={}, headers={})
        assert isinstance(result, dict)
    assert endpoint.client is None


# 5 Resource management ---------------------------------------------------------------


def test_endpoint_resource_cleanup():
    endpoint = Endpoint(config=_config())
    with endpoint as ep:
        client = ep.client
        assert client is not None
        with pytest.raises(Exception):
            raise Exception("Test exception")
    assert endpoint.client is None


def test_endpoint_closes_client_when_block_raises():
    endpoint = Endpoint(config=_config())
    with pytest.raises(RuntimeError):
        with endpoint:
            raise RuntimeError("boom")
    assert endpoint.client is None


def test_executor_resource_cleanup():
    executor = Executor(
        event_type=Event,
        queue_config=QueueConfig(queue_capacity=100, capacity_refresh_time=1.0),
    )
    with executor as exe:
        assert exe.task_queue is not None
        assert not exe.task_queue.is_stopped()
        with pytest.raises(Exception):
            raise Exception("Test exception")
    assert executor.task_queue is None


def test_rate_limited_executor_resource_cleanup():
    executor = RateLimitedExecutor(
        queue_capacity=100,
        capacity_refresh_time=1.0,
        limit_requests=10,
        limit_tokens=1000,
    )
    with executor as exe:
        assert exe._rate_limit_replenisher_task is not None
        with pytest.raises(Exception):
            raise Exception("Test exception")
    assert executor._rate_limit_replenisher_task is None


# 6 Concurrency ----------------------------------------------------------------------


def test_queue_concurrent_operations():
    queue = Queue(queue_capacity=100, capacity_refresh_time=1.0, concurrency_limit=5)
    queue.start()
    events = [Mock(spec=Event) for _ in range(10)]
    threads = [threading.Thread(target=queue.enqueue, args=(e,)) for e in events]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=5)
    dequeued_events = []
    dequeuers = [
        threading.Thread(target=lambda: dequeued_events.append(queue.dequeue()))
        for _ in range(5)
    ]
    for t in dequeuers:
        t.start()
    for t in dequeuers:
        t.join(timeout=5)
    assert len(dequeued_events) == 5
    for event in dequeued_events:
        assert event in events
    for _ in range(5):
        queue.task_done()
    queue.stop()


def test_executor_concurrent_processing():
    executor = Executor(
        event_type=Event,
        queue_config=QueueConfig(
            queue_capacity=100, capacity_refresh_time=1.0, concurrency_limit=5
        ),
    )
    events = []
    for i in range(10):
        event = Mock(spec=Event)
        event.id = uuid.uuid4()

        def invoke_with_delay(delay=0.1 * (i % 5), i=i):
            time.sleep(delay)
            return {"result": f"success-{i}"}

        event.invoke = Mock(side_effect=invoke_with_delay)
        event.execution = Mock()
        events.append(event)
    with executor:
        for event in events:
            executor.append(event)
        executor.forward()
        while not executor.is_all_processed:
            time.sleep(0.1)
    for event in events:
        event.invoke.assert_called_once()
