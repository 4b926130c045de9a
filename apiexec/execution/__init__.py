"""The execution layer: events, the bounded queue, the executor core, admission.

Never imports the limits, http, llm, batch or mock layers: rate limits reach
the executor only as an admission policy passed in.

Example:
    >>> from apiexec.execution import Executor
    >>> with Executor() as ex:
    ...     ex.submit(max, 3, 7).result()
    7
"""

from apiexec.execution.admission import Admission, Chain, Unlimited
from apiexec.execution.event import Event, Execution, ExecutionStatus
from apiexec.execution.executor import Executor, ExecutorState
from apiexec.execution.work_queue import Queue, QueueConfig

__all__ = [
    "Admission",
    "Chain",
    "Event",
    "Execution",
    "ExecutionStatus",
    "Executor",
    "ExecutorState",
    "Queue",
    "QueueConfig",
    "Unlimited",
]
