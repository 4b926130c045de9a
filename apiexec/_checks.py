"""Checks shared by the configuration classes; each raises ConfigError naming the field.

Example:
    >>> check_positive_number("timeout", 2.5)
    >>> check_int("max_retries", -1, low=0)
    Traceback (most recent call last):
    ...
    apiexec.errors.ConfigError: max_retries: must be an int >= 0, got -1
"""

from __future__ import annotations

import math
from typing import Any

from apiexec.errors import ConfigError


def check_positive_number(field: str, value: Any) -> None:
    """A finite int or float > 0 (bools are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(field, f"must be a finite number > 0, got {value!r}")


def check_int(field: str, value: Any, low: int) -> None:
    """An int (not a bool) >= ``low``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(field, f"must be an int >= {low}, got {value!r}")


def check_at_most(field: str, value: Any, high: float) -> None:
    """A number <= ``high``: refuses absurd settings before they fail later.

    Example:
        >>> check_at_most("timeout", 1e30, 86_400)
        Traceback (most recent call last):
        ...
        apiexec.errors.ConfigError: timeout: must be at most 86400, got 1e+30
    """
    if value > high:
        raise ConfigError(field, f"must be at most {high:g}, got {value!r}")
