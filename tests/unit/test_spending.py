"""BudgetAdmission: worst cases reserved, trued up from usage, refunds, waits and refusals."""

import threading
import time
from types import SimpleNamespace

import pytest

from apiexec import RateLimitedExecutor
from apiexec.errors import APIConnectionError, APIStatusError, BudgetExceeded, ConfigError, DeadlineExceeded
from apiexec.execution.admission import Chain, Unlimited
from apiexec.execution.event import Event, ExecutionStatus
from apiexec.limits.budget import MemoryBudget, from_nanos, to_nanos
from apiexec.llm.prices import Prices, UnknownPrice
from apiexec.spending import BudgetAdmission
from tests.helpers import FakeClock

# $1 per 1M input tokens, $1000 per 1M output tokens: output dominates, sums are easy.
PRICES = Prices({"m": {"input": 1.0, "output": 1000.0}})


def body(max_tokens=100, model="m"):
    return {"model": model, "max_tokens": max_tokens, "messages": [{"role": "user", "content": "hi"}]}


class Call:
    """An API-call-shaped event: a request, then an execution the test fills in."""

    def __init__(self, request, timeout=None):
        self.request = request
        self.timeout = timeout
        self.execution = SimpleNamespace(status=ExecutionStatus.PENDING, result=None, exception=None)

    def answered(self, prompt, completion):
        self.execution.status = ExecutionStatus.COMPLETED
        self.execution.result = {"model": "m", "usage": {"prompt_tokens": prompt, "completion_tokens": completion}}
        return self

    def failed(self, error):
        self.execution.status = ExecutionStatus.FAILED
        self.execution.exception = error
        return self


def policy(cap, **kwargs):
    return BudgetAdmission(max_cost=cap, prices=PRICES, **kwargs)


def admit(budget, call, stop=None, deadline=None):
    return budget.admit(call, stop=stop or threading.Event(), deadline=deadline)


def test_admit_reserves_the_worst_case():
    budget = policy(1.0)
    call = Call(body(100))
    reserved = admit(budget, call)
    assert reserved == to_nanos(PRICES.worst_case(call.request))
    assert budget.reserved == pytest.approx(from_nanos(reserved))
    assert budget.remaining == pytest.approx(1.0 - from_nanos(reserved))


def test_settle_trues_up_to_the_usage():
    budget = policy(1.0)
    call = Call(body(100))
    reserved = admit(budget, call)
    budget.settle(call.answered(10, 20), reserved)
    assert budget.spent == pytest.approx((10 * 1 + 20 * 1000) / 1e6)
    assert budget.reserved == 0


def test_refused_when_the_next_call_could_cross_the_cap():
    budget = policy(0.25)  # each call: up to ~$0.1
    calls = [Call(body(100)) for _ in range(3)]
    first, second = admit(budget, calls[0]), admit(budget, calls[1])
    budget.settle(calls[0].answered(5, 100), first)
    budget.settle(calls[1].answered(5, 100), second)
    with pytest.raises(BudgetExceeded) as caught:
        admit(budget, calls[2])
    assert caught.value.cap == 0.25 and caught.value.spent == pytest.approx(budget.spent)
    assert "model 'm', up to $" in str(caught.value) and "cap of $0.25" in str(caught.value)
    assert budget.reserved == 0


def test_a_single_call_larger_than_the_cap_is_refused_at_once():
    with pytest.raises(BudgetExceeded):
        admit(policy(0.01), Call(body(1000)))


def test_unknown_model_is_refused_naming_it():
    with pytest.raises(UnknownPrice, match="'mystery'") as caught:
        admit(policy(1.0), Call(body(model="mystery")))
    assert isinstance(caught.value, ConfigError) and caught.value.model == "mystery"
    with pytest.raises(UnknownPrice, match="names no model"):
        admit(policy(1.0), Call({"messages": []}))


def test_plain_functions_are_not_priced():
    budget = policy(1.0)
    event = Event(abs, args=(1,))
    assert admit(budget, event) == 0
    budget.settle(event, 0)
    assert budget.spent == 0


def test_an_error_answer_costs_nothing_and_a_lost_one_its_worst_case():
    budget = policy(1.0)
    refused, lost, silent = Call(body()), Call(body()), Call(body())
    reserved = [admit(budget, call) for call in (refused, lost, silent)]
    budget.settle(refused.failed(APIStatusError("bad", status_code=400)), reserved[0])
    assert budget.spent == 0
    budget.settle(lost.failed(APIConnectionError("broke mid-answer")), reserved[1])
    assert budget.spent == pytest.approx(from_nanos(reserved[1]))
    silent.execution.status = ExecutionStatus.COMPLETED  # an answer without usage
    silent.execution.result = {"choices": []}
    budget.settle(silent, reserved[2])
    assert budget.spent == pytest.approx(from_nanos(reserved[1] + reserved[2]))
    assert budget.reserved == 0


def test_release_refunds_a_call_that_never_ran():
    budget = policy(1.0)
    call = Call(body())
    budget.release(call, admit(budget, call))
    assert budget.spent == budget.reserved == 0


def test_waits_for_calls_in_flight_then_admits():
    budget = policy(0.25)
    first, second, third = Call(body()), Call(body()), Call(body())
    held = [admit(budget, first), admit(budget, second)]  # ~$0.2 reserved
    got = []
    waiter = threading.Thread(target=lambda: got.append(admit(budget, third)))
    waiter.start()
    time.sleep(0.1)
    assert not got  # it fits only once a call in flight settles
    budget.settle(first.answered(5, 10), held[0])  # cost $0.01
    waiter.join(5)
    assert got and got[0] > 0


def test_stop_ends_a_wait_with_none_and_wake_interrupts_it():
    budget = policy(0.15)
    held = admit(budget, Call(body()))
    stop = threading.Event()
    got = []
    waiter = threading.Thread(target=lambda: got.append(admit(budget, Call(body()), stop=stop)))
    waiter.start()
    time.sleep(0.05)
    stop.set()
    budget.wake()
    waiter.join(5)
    assert got == [None] and held


def test_the_deadline_ends_a_wait():
    budget = policy(0.15)
    admit(budget, Call(body()))
    with pytest.raises(DeadlineExceeded) as caught:
        admit(budget, Call(body(), timeout=0.05), deadline=time.monotonic() + 0.05)
    assert caught.value.phase == "admission"


def test_other_processes_reservations_are_waited_for_then_refused():
    store = MemoryBudget()
    clock = FakeClock(auto_advance=True)
    budget = BudgetAdmission(max_cost=0.15, prices=PRICES, store=store, shared_wait=5.0, waiter=clock)
    store.reserve(to_nanos(0.1), to_nanos(0.15))  # another process's call in flight, never settled
    with pytest.raises(BudgetExceeded, match="other processes"):
        admit(budget, Call(body()))
    assert clock.now() >= 5.0


def test_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="max_cost"):
        BudgetAdmission(max_cost=0)
    with pytest.raises(ConfigError, match="max_cost"):
        BudgetAdmission(max_cost=float("nan"))
    with pytest.raises(ConfigError, match="storage"):
        BudgetAdmission(max_cost=1, store=MemoryBudget(), storage="sqlite:///x.db")


def test_repr_and_default_prices():
    budget = BudgetAdmission(max_cost=5)
    assert budget.prices.lookup("gpt-4o-mini") is not None
    assert repr(budget) == "BudgetAdmission(max_cost=5.0, spent=0.0, reserved=0.0, storage='memory://')"


def test_in_a_chain_a_refusal_releases_the_policies_before_it():
    budget = policy(0.01)
    chain = Chain(Unlimited(), budget)
    with pytest.raises(BudgetExceeded):
        chain.admit(Call(body()), stop=threading.Event(), deadline=None)
    assert budget.reserved == 0


def test_rate_limited_executor_with_a_budget_policy_runs_plain_functions():
    budget = policy(1.0)
    with RateLimitedExecutor(limit_requests=100, policies=[budget]) as executor:
        assert executor.submit(pow, 2, 5).result(5) == 32
    assert budget.spent == 0


def test_rate_limited_executor_max_cost_builds_the_budget_policy():
    executor = RateLimitedExecutor(limit_requests=100, max_cost=0.15, prices=PRICES)
    assert executor.budget is not None and executor.budget.max_cost == 0.15 and executor.budget.prices is PRICES
    first = Call(body())
    assert executor.budget.admit(first, stop=threading.Event(), deadline=None) > 0
    executor.budget.settle(first.answered(5, 100), to_nanos(0.1))
    with pytest.raises(BudgetExceeded):
        executor.budget.admit(Call(body()), stop=threading.Event(), deadline=None)
    assert RateLimitedExecutor().budget is None


def test_a_call_that_was_never_sent_costs_nothing():
    class NotSent(Exception):
        pass

    budget = policy(1.0, unsent_errors=(NotSent,))
    call = Call(body())
    budget.settle(call.failed(NotSent("the run stopped admitting calls")), admit(budget, call))
    assert budget.spent == 0 and budget.reserved == 0


def test_sdk_calls_are_priced_from_their_keyword_arguments_and_pydantic_answers():
    from apiexec.llm.sdk import SDKCall

    class Answer:  # what openai-python returns: a pydantic model
        usage = True

        def model_dump(self):
            return {"model": "m", "usage": {"prompt_tokens": 10, "completion_tokens": 20}}

    budget = policy(1.0)
    call = SDKCall(lambda **kwargs: Answer(), {**body(), "timeout": 5, "extra_headers": {"x": "y"}})
    reserved = admit(budget, call)
    assert reserved == to_nanos(PRICES.worst_case(body()))
    call.invoke()
    budget.settle(call, reserved)
    assert budget.spent == pytest.approx((10 * 1 + 20 * 1000) / 1e6)
