"""Immutable value classes without the dataclass machinery.

``@dataclass`` writes and compiles code for every class it decorates, and
importing :mod:`dataclasses` pulls in :mod:`inspect`, :mod:`ast` and
:mod:`dis`: together about a third of what ``import apiexec`` cost beyond
requests. The few small immutable values on the import path of the executor
and the endpoint (:class:`~apiexec.execution.work_queue.QueueConfig`,
:class:`~apiexec.limits.bucket.ServerLimits`) derive from :class:`Frozen`
instead: fields in ``__slots__``, set once in ``__init__`` through
:meth:`Frozen._assign`; equality, hashing, ``repr`` and pickling by those
fields, in their order; assignment refused as a frozen dataclass refuses it.

Example:
    >>> class Point(Frozen):
    ...     __slots__ = ("x", "y")
    ...
    ...     def __init__(self, x: int = 0, y: int = 0) -> None:
    ...         self._assign(x=x, y=y)
    >>> Point(1, 2), Point(1, 2) == Point(1, 2), Point(1, 2).replace(y=5)
    (Point(x=1, y=2), True, Point(x=1, y=5))
    >>> Point().x = 3
    Traceback (most recent call last):
    ...
    apiexec._record.FrozenFieldError: cannot assign to field 'x'
"""

from __future__ import annotations

from typing import Any, TypeVar

__all__ = ["Frozen", "FrozenFieldError"]

_F = TypeVar("_F", bound="Frozen")


class FrozenFieldError(AttributeError):
    """A field of an immutable value was assigned or deleted."""


class Frozen:
    """Base of small immutable values: fields are the subclass's ``__slots__``."""

    __slots__ = ()

    def _assign(self, **values: Any) -> None:
        """Set fields once, from ``__init__`` (the only way to set them)."""
        for name, value in values.items():
            object.__setattr__(self, name, value)

    def _fields(self) -> tuple[str, ...]:
        return self.__slots__  # a subclass's field names

    def _values(self) -> tuple[Any, ...]:
        return tuple(getattr(self, name) for name in self._fields())

    def replace(self: _F, **changes: Any) -> _F:
        """A copy with ``changes`` applied (validated again by ``__init__``)."""
        values = dict(zip(self._fields(), self._values(), strict=True))
        values.update(changes)
        return type(self)(**values)

    def __setattr__(self, name: str, value: Any) -> None:
        raise FrozenFieldError(f"cannot assign to field {name!r}")

    def __delattr__(self, name: str) -> None:
        raise FrozenFieldError(f"cannot delete field {name!r}")

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        return self._values() == other._values()

    def __hash__(self) -> int:
        return hash(self._values())

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in self._fields())
        return f"{type(self).__name__}({fields})"

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        return (type(self), self._values())
