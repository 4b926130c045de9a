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
from typing import Any, Final

_SHALLOW: Final = 4  # below this depth arrays get only the items they must have
_MAX_DEPTH: Final = 16  # recursive schemas ($ref to itself) stop here with an empty value
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


def example_for(schema: object, root: Mapping[str, Any] | None = None, depth: int = 0) -> Any:
    """A JSON value valid for ``schema`` (best effort for what the module docstring lists)."""
    if not isinstance(schema, Mapping):
        return {}  # ``true`` or a missing schema: anything goes
    root = schema if root is None else root
    if depth > _MAX_DEPTH:
        return None
    if "$ref" in schema:
        return example_for(_resolve(schema["$ref"], root), root, depth + 1)
    if "const" in schema:
        return schema["const"]
    if isinstance(schema.get("enum"), list) and schema["enum"]:
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        options = schema.get(key)
        if isinstance(options, list) and options:
            return example_for(_simplest(options, root), root, depth + 1)
    if isinstance(schema.get("allOf"), list) and schema["allOf"]:
        return example_for(_merge(schema["allOf"], root), root, depth + 1)
    return _typed(schema, _type_of(schema), root, depth)


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
        properties.update(part.get("properties") or {})
        required += [name for name in part.get("required") or [] if name not in required]
    if properties:
        merged["properties"] = properties
    if required:
        merged["required"] = required
    return merged


def _type_of(schema: Mapping[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        non_null = [k for k in kind if k != "null"]
        return non_null[0] if non_null else "null"
    if isinstance(kind, str):
        return kind
    if "properties" in schema:
        return "object"
    if "items" in schema:
        return "array"
    return "object"


def _typed(schema: Mapping[str, Any], kind: str, root: Mapping[str, Any], depth: int) -> Any:
    if kind == "object":
        properties = schema.get("properties")
        properties = properties if isinstance(properties, Mapping) else {}
        required = schema.get("required")
        names = list(properties) if not isinstance(required, list) else [n for n in properties if n in required]
        names += [n for n in (required or []) if isinstance(n, str) and n not in properties]
        return {name: example_for(properties.get(name, {"type": "string"}), root, depth + 1) for name in names}
    if kind == "array":
        low, high = schema.get("minItems"), schema.get("maxItems")
        count = low if isinstance(low, int) else (1 if depth < _SHALLOW else 0)  # deep: keep recursion finite
        if isinstance(high, int):
            count = min(count, high)
        return [example_for(schema.get("items", {"type": "string"}), root, depth + 1) for _ in range(count)]
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
    if isinstance(low, int) and len(text) < low:
        text = text + "x" * (low - len(text))
    if isinstance(high, int) and len(text) > high:
        text = text[:high]
    return text


def _number(schema: Mapping[str, Any], *, integer: bool) -> float | int:
    value = 1.0
    low, high = schema.get("minimum"), schema.get("maximum")
    ex_low, ex_high = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
    if isinstance(low, (int, float)):
        value = max(value, float(low)) if high is None else float(low)
    if isinstance(ex_low, (int, float)) and value <= ex_low:
        value = math.floor(ex_low) + 1 if integer else ex_low + 0.5
    if isinstance(high, (int, float)) and value > high:
        value = float(high)
    if isinstance(ex_high, (int, float)) and value >= ex_high:
        value = math.ceil(ex_high) - 1 if integer else ex_high - 0.5
    multiple = schema.get("multipleOf")
    if isinstance(multiple, (int, float)) and multiple > 0:
        value = math.ceil(value / multiple) * multiple
    return int(value) if integer else value


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
