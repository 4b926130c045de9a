"""Plain value classes that replaced dataclasses on the import path keep their behaviour."""

import pickle

import pytest

from apiexec._record import FrozenFieldError
from apiexec.call_context import CallContext
from apiexec.errors import ConfigError
from apiexec.execution.event import Execution, ExecutionStatus
from apiexec.execution.runtime import WorkItem
from apiexec.execution.work_queue import QueueConfig
from apiexec.limits.bucket import ServerLimits, TokenBucket


def test_frozen_values_compare_hash_and_refuse_assignment():
    a = ServerLimits(limit_requests=600, remaining_requests=10)
    assert a == ServerLimits(600, 10) and hash(a) == hash(ServerLimits(600, 10))
    assert a != ServerLimits(600, 11) and a != (600, 10, None, None, None, None)
    with pytest.raises(AttributeError):  # FrozenFieldError, as a frozen dataclass raises one
        a.limit_requests = 1  # type: ignore[misc]
    with pytest.raises(FrozenFieldError):
        del a.reset_tokens
    assert repr(a).startswith("ServerLimits(limit_requests=600, remaining_requests=10, reset_requests=None")


def test_frozen_values_replace_and_pickle():
    config = QueueConfig(queue_capacity=5, concurrency_limit=2)
    assert config.replace(queue_capacity=7) == QueueConfig(7, config.capacity_refresh_time, 2)
    assert pickle.loads(pickle.dumps(config)) == config
    with pytest.raises(ConfigError):
        config.replace(queue_capacity=0)  # validated again


@pytest.mark.parametrize("bad", [{"queue_capacity": 0}, {"capacity_refresh_time": -1.0}, {"concurrency_limit": 0}])
def test_queue_config_still_validates_each_field(bad):
    with pytest.raises(ConfigError):
        QueueConfig(**bad)


def test_mutable_records_keep_fields_equality_and_repr():
    bucket = TokenBucket(capacity=10.0, rate=1.0, level=10.0, stamp=0.0)
    assert bucket.ceiling == 10.0  # at least the capacity
    assert bucket == TokenBucket(10.0, 1.0, 10.0, 0.0, 5.0) and bucket != "bucket"
    assert "capacity=10.0" in repr(bucket)
    assert Execution() == Execution() and Execution(status=ExecutionStatus.COMPLETED) != Execution()
    assert Execution().__eq__("x") is NotImplemented
    with pytest.raises(TypeError):
        hash(Execution())
    context = CallContext()
    context.observers.append(print)
    assert CallContext().observers == [] and "attempts=0" in repr(context)
    item = WorkItem(event="e")
    assert not item.future.done() and "accepted=False" in repr(item)
