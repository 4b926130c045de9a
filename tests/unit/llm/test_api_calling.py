"""APICalling: argument checks and the token reservation a rate limiter reads."""

from unittest.mock import Mock

import pytest

from apiexec import APICalling, Endpoint, ExecutionStatus
from apiexec.llm.tokens import estimate_tokens

BODY = {"model": "gpt-4o-mini", "max_tokens": 50, "messages": [{"role": "user", "content": "Hello there"}]}


@pytest.fixture
def endpoint():
    return Mock(spec=Endpoint)


# -- construction ---------------------------------------------------------------------------------


@pytest.mark.parametrize("request_", [[("model", "m")], '{"model": "m"}', None], ids=["pairs", "json-text", "none"])
def test_request_that_is_not_a_mapping_is_refused_up_front(endpoint, request_):
    with pytest.raises(TypeError, match=rf"^request must be a mapping, not {type(request_).__name__}$"):
        APICalling(endpoint, request_)
    endpoint.call.assert_not_called()


@pytest.mark.parametrize("on_chunk", ["print", 42, ["a"]], ids=["str", "int", "list"])
def test_on_chunk_that_is_not_callable_is_refused_up_front(endpoint, on_chunk):
    # Refused when the call is built, not on the worker thread at the first chunk.
    with pytest.raises(TypeError, match=rf"^on_chunk must be callable, not {type(on_chunk).__name__}$"):
        APICalling(endpoint, BODY, on_chunk=on_chunk)
    endpoint.stream.assert_not_called()


# -- required_tokens --------------------------------------------------------------------------------


def test_required_tokens_is_estimated_only_when_the_call_is_metered(endpoint):
    assert APICalling(endpoint, BODY).required_tokens is None
    assert APICalling(endpoint, BODY, requires_tokens=True).required_tokens == estimate_tokens(BODY)


def test_explicit_required_tokens_wins_and_none_goes_back_to_the_estimate(endpoint):
    call = APICalling(endpoint, BODY, requires_tokens=True)
    call.required_tokens = 0  # zero is a valid reservation
    assert call.required_tokens == 0
    call.required_tokens = 1234
    assert call.required_tokens == 1234
    call.required_tokens = None
    assert call.required_tokens == estimate_tokens(BODY)


@pytest.mark.parametrize("value", [-1, True, False, 1.5, 10.0, "10"], ids=repr)
def test_bad_required_tokens_are_refused_and_the_old_value_is_kept(endpoint, value):
    call = APICalling(endpoint, BODY)
    call.required_tokens = 7
    with pytest.raises(ValueError) as info:
        call.required_tokens = value
    assert str(info.value) == f"required_tokens must be an int >= 0 or None, not {value!r}"
    assert call.required_tokens == 7


# -- used_tokens ------------------------------------------------------------------------------------


def test_used_tokens_is_read_from_the_usage_only_once_the_call_completed(endpoint):
    endpoint.call.return_value = {"usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12}}
    call = APICalling(endpoint, BODY)
    assert call.used_tokens is None  # not run yet
    call.invoke()
    assert call.used_tokens == 12


def test_used_tokens_reads_each_result_once(endpoint, monkeypatch):
    import apiexec.llm.api_calling as module

    reads = []
    real = module.usage_tokens
    monkeypatch.setattr(module, "usage_tokens", lambda result: reads.append(result) or real(result))
    endpoint.call.side_effect = [
        {"usage": {"total_tokens": 12}},
        {"usage": {"total_tokens": 30}},
    ]
    call = APICalling(endpoint, BODY)
    call.invoke()
    assert [call.used_tokens for _ in range(4)] == [12] * 4  # the limiter, the summary and the cost all ask
    assert len(reads) == 1
    call.invoke()  # run again: a new result is read afresh
    assert call.used_tokens == 30 and len(reads) == 2


def test_failed_call_reports_no_used_tokens(endpoint):
    endpoint.call.side_effect = RuntimeError("boom")
    call = APICalling(endpoint, BODY)
    call.invoke()
    assert call.execution.status is ExecutionStatus.FAILED
    assert call.used_tokens is None
