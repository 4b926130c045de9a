"""A value that satisfies a JSON schema: the mock's tool arguments and structured outputs.

Covers what OpenAI strict structured outputs and tool schemas use: ``type``
(one or a list), ``properties``/``required``, ``items``/``minItems``/``maxItems``,
``enum``/``const``, ``anyOf``/``oneOf``/``allOf``, ``$ref`` into ``$defs`` or
``definitions``, string ``format``/``minLength``/``maxLength``/``pattern`` (a
pattern is honoured only for ``enum``-like alternatives), number bounds.

Example:
    >>> example_for({"type": "object", "properties": {"city": {"type": "string"},
    ...     "days": {"type": "integer", "minimum": 1}}, "required": ["city", "days"]})
    {'city': 'mock', 'days': 1}
    >>> example_for({"anyOf": [{"type": "null"}, {"type": "boolean"}]})  # a non-null option wins
    True
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final, TypeGuard

_SHALLOW: Final = 4  # below this depth arrays get only the items they must have
_MAX_DEPTH: Final = 16
_MAX_ITEMS: Final = 100
_MAX_NODES: Final = 10_000  # values in one example, whatever the schema  # a hostile minItems must not exhaust memory
_MAX_CHARS: Final = 10_000  # recursive schemas ($ref to itself) stop here with an empty value
_FORMATS: Final[Mapping[str, str]] = {
    "date-time": "2024-01-01T00:00:00Z",
    "date": "2024-01-01",
    "time": "00:00:00Z",
    "duration": "P1D",
    "email": "mock@example.com",
    "hostname": "example.com",
    "ipv4": "127.0.0.1",
    "ipv6": "::1",
    "uri": "https://example.com/",
    "uuid": "00000000-0000-4000-8000-000000000000",
}


def example_for(schema: object) -> Any:
    """A JSON value valid for ``schema`` (best effort for what the module docstring lists)."""
    return _walk(schema, schema if isinstance(schema, Mapping) else {}, 0, [_MAX_NODES])


def _walk(schema: object, root: Mapping[str, Any], depth: int, budget: list[int]) -> Any:
    """``budget[0]`` counts down the values still allowed, so hostile schemas stay small."""
    if not isinstance(schema, Mapping):
        return {}  # ``true`` or a missing schema: anything goes
    budget[0] -= 1
    if depth > _MAX_DEPTH or budget[0] < 0:
        return None
    if "$ref" in schema:
        return _walk(_resolve(schema["$ref"], root), root, depth + 1, budget)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            return _walk(_simplest(options, root), root, depth + 1, budget)
    if isinstance(schema.get("allOf"), list) and schema["allOf"]:
        return _walk(_merge(schema["allOf"], root), root, depth + 1, budget)
    return _typed(schema, _type_of(schema), root, depth, budget)


def _merge(parts: list[Any], root: Mapping[str, Any]) -> dict[str, Any]:
    """One schema from ``allOf`` parts: properties and required lists are united."""
    merged: dict[str, Any] = {}
    properties: dict[str, Any] = {}
    required: list[str] = []
    for part in parts:
        if isinstance(part, Mapping) and "$ref" in part:
            part = _resolve(part["$ref"], root)
        if not isinstance(part, Mapping):
            continue
        merged.update(part)
        properties.update(_mapping(part.get("properties")))
        required += [name for name in _names(part.get("required")) if name not in required]
    if properties:
        merged["properties"] = properties
    if required:
        merged["required"] = required
    return merged


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _names(value: object) -> list[str]:
    return [n for n in value if isinstance(n, str)] if isinstance(value, list) else []


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _type_of(schema: Mapping[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        non_null = [k for k in kind if isinstance(k, str) and k != "null"]
        return non_null[0] if non_null else "null"
    if isinstance(kind, str):
        return kind
    if "properties" in schema:
        return "object"
    if "items" in schema:
        return "array"
    return "object"


def _typed(schema: Mapping[str, Any], kind: str, root: Mapping[str, Any], depth: int, budget: list[int]) -> Any:
    if kind == "object":
        properties = _mapping(schema.get("properties"))
        required = _names(schema.get("required")) if "required" in schema else None
        names = [str(n) for n in properties if required is None or n in required]
        names += [n for n in required or [] if n not in properties]
        return {name: _walk(properties.get(name, {"type": "string"}), root, depth + 1, budget) for name in names}
    if kind == "array":
        low, high = schema.get("minItems"), schema.get("maxItems")
        count = low if _is_int(low) else (1 if depth < _SHALLOW else 0)  # deep: keep recursion finite
        if _is_int(high):
            count = min(count, high)
        count = max(0, min(count, _MAX_ITEMS))
        return [_walk(schema.get("items", {"type": "string"}), root, depth + 1, budget) for _ in range(count)]
    if kind == "string":
        return _string(schema)
    if kind in ("integer", "number"):
        return _number(schema, integer=kind == "integer")
    if kind == "boolean":
        return True
    return None


def _string(schema: Mapping[str, Any]) -> str:
    text = _FORMATS.get(str(schema.get("format")), "mock")
    low = schema.get("minLength")
    high = schema.get("maxLength")
    if _is_int(low) and len(text) < low:
        text = text + "x" * (min(low, _MAX_CHARS) - len(text))
    if _is_int(high) and len(text) > high:
        text = text[: max(0, high)]
    return text


def _number(schema: Mapping[str, Any], *, integer: bool) -> float | int:
    try:
        value = _bounded(schema, integer=integer)
        return int(value) if integer else value
    except (OverflowError, ValueError):  # absurd bounds: any number will do
        return 0 if integer else 0.0


def _bounded(schema: Mapping[str, Any], *, integer: bool) -> float:
    def number(name: str) -> float | None:
        value = schema.get(name)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return None
        return float(value)

    value = 1.0
    low, high, ex_low, ex_high = (number(n) for n in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"))
    if low is not None:
        value = max(value, low) if high is None else low
    if ex_low is not None and value <= ex_low:
        value = math.floor(ex_low) + 1 if integer else ex_low + 0.5
    if high is not None and value > high:
        value = high
    if ex_high is not None and value >= ex_high:
        value = math.ceil(ex_high) - 1 if integer else ex_high - 0.5
    multiple = number("multipleOf")
    if multiple is not None and multiple > 0:
        value = math.ceil(value / multiple) * multiple
    return value


def _simplest(options: list[Any], root: Mapping[str, Any]) -> Any:
    """Prefer a non-null option, so the example carries information."""
    for option in options:
        target = _resolve(option["$ref"], root) if isinstance(option, Mapping) and "$ref" in option else option
        if isinstance(target, Mapping) and target.get("type") != "null":
            return option
    return options[0]


def _resolve(ref: object, root: Mapping[str, Any]) -> Any:
    """Follow a local ``#/...`` reference; anything else resolves to an empty schema."""
    if not isinstance(ref, str) or not ref.startswith("#"):
        return {}
    node: Any = root
    for part in ref[1:].split("/"):
        if not part:
            continue
        part = part.replace("~1", "/").replace("~0", "~")
        node = node.get(part, {}) if isinstance(node, Mapping) else {}
    return node
