"""``Executor.map``: submit lazily, yield results in input order.

Kept apart from the executor core: it only needs a ``submit`` function.

Example:
    >>> import concurrent.futures as cf
    >>> def submit(x):
    ...     f = cf.Future()
    ...     f.set_result(x * 2) if x else f.set_exception(ZeroDivisionError("x is 0"))
    ...     return f
    >>> list(map_results(submit, [1, 0, 3], window=2, timeout=None, return_exceptions=True))
    [2, ZeroDivisionError('x is 0'), 6]
"""

from __future__ import annotations

import concurrent.futures as cf
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from apiexec.execution.outcome import cancel_future


def map_results(
    submit: Callable[[Any], cf.Future[Any]],
    events: Iterable[Any],
    window: int,
    timeout: float | None,
    return_exceptions: bool,
) -> Iterator[Any]:
    """Submit ``events`` at most ``window`` ahead of the results yielded.

    Args:
        submit: Submits one event, returns its future.
        events: What to submit (may be endless).
        window: Most futures outstanding: ``submit`` never blocks on a full
            pipeline while results wait to be read.
        timeout: Seconds from this call until every result is due.
        return_exceptions: Yield exceptions in place of results.

    Raises:
        TimeoutError: A result was not ready in time.
        Exception: A call's exception, unless ``return_exceptions``.
    """
    deadline = None if timeout is None else time.monotonic() + timeout
    inflight: deque[cf.Future[Any]] = deque()
    index = 0  # position of inflight[0] in the input

    def next_result() -> Any:
        nonlocal index
        future = inflight[0]
        value = _outcome(future, index, deadline, timeout, return_exceptions)
        inflight.popleft()
        index += 1
        return value

    try:
        for event in events:
            if len(inflight) >= window:
                yield next_result()
            inflight.append(submit(event))
        while inflight:
            yield next_result()
    finally:
        for future in inflight:  # stopped early (a failure, a timeout, close())
            cancel_future(future)


def _outcome(
    future: cf.Future[Any],
    index: int,
    deadline: float | None,
    timeout: float | None,
    return_exceptions: bool,
) -> Any:
    remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
    try:
        return future.result(remaining)
    except TimeoutError:
        if future.done():  # the call itself failed with a TimeoutError
            if return_exceptions:
                return future.exception()
            raise
        raise TimeoutError(
            f"map: result {index} (0-based, in input order) was not ready within the timeout of {timeout:g}s"
        ) from None
    except Exception as exc:  # the call's failure, or CancelledError
        if return_exceptions and future.done():  # not, e.g., a signal handler's exception
            return exc
        raise
