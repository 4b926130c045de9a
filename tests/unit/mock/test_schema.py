"""The mock's JSON-schema examples are valid for their schema (checked by jsonschema)."""

from __future__ import annotations

import json
from typing import Any

import jsonschema
import pytest

from apiexec.mock.answers.schema import example_for

SCHEMAS: list[dict[str, Any]] = [
    {"type": "object", "properties": {}},
    {"type": "string", "minLength": 10, "maxLength": 12},
    {"type": "string", "format": "date-time"},
    {"type": "string", "format": "email"},
    {"type": "integer", "minimum": 5, "maximum": 9},
    {"type": "integer", "exclusiveMinimum": 5},
    {"type": "number", "exclusiveMaximum": 0},
    {"type": "number", "minimum": 0.5, "multipleOf": 0.25},
    {"type": "boolean"},
    {"type": "null"},
    {"type": ["null", "integer"], "minimum": 3},
    {"enum": ["a", "b"]},
    {"const": 42},
    {"type": "array", "items": {"type": "integer"}, "minItems": 3, "maxItems": 3},
    {"type": "array", "items": {"type": "string"}, "maxItems": 0},
    {"anyOf": [{"type": "null"}, {"type": "string", "enum": ["x"]}]},
    {"oneOf": [{"type": "integer"}, {"type": "string"}]},
    {"allOf": [{"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]},
               {"properties": {"b": {"type": "integer"}}, "required": ["b"]}]},
    {"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a", "extra"]},
    {
        "type": "object",
        "properties": {"root": {"$ref": "#/$defs/node"}},
        "required": ["root"],
        "additionalProperties": False,
        "$defs": {"node": {"type": "object", "properties": {"value": {"type": "integer"},
                                                            "children": {"type": "array",
                                                                         "items": {"$ref": "#/$defs/node"}}},
                           "required": ["value", "children"], "additionalProperties": False}},
    },
    {"definitions": {"u": {"type": "string", "format": "uuid"}}, "$ref": "#/definitions/u"},
]


@pytest.mark.parametrize("schema", SCHEMAS)
def test_example_is_valid(schema: dict[str, Any]) -> None:
    jsonschema.validate(example_for(schema), schema)


def test_recursive_schema_terminates() -> None:
    schema = {"$defs": {"n": {"type": "array", "items": {"$ref": "#/$defs/n"}, "minItems": 1}}, "$ref": "#/$defs/n"}
    example_for(schema)  # returns at the depth bound instead of recursing forever


def test_optional_properties_are_left_out_when_required_is_given() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "string"}}, "required": ["b"]}
    assert example_for(schema) == {"b": "mock"}


def test_hostile_schemas_stay_small() -> None:
    wide = {"$defs": {"n": {"type": "array", "minItems": 100, "items": {"$ref": "#/$defs/n"}}}, "$ref": "#/$defs/n"}
    assert len(json.dumps(example_for(wide))) < 200_000
    assert len(example_for({"type": "array", "minItems": 10**9})) == 100
    assert len(example_for({"type": "string", "minLength": 10**9})) == 10_000
    assert example_for({"type": "integer", "minimum": 1e308, "multipleOf": 1e-300}) == 0


@pytest.mark.parametrize("schema", [{"required": True}, {"type": [1, None]}, {"properties": 3}, {"allOf": [1, {}]},
                                    {"anyOf": "x"}, {"$ref": 5}, {"type": "array", "items": 5, "maxItems": "2"}])
def test_malformed_schemas_do_not_raise(schema: dict[str, Any]) -> None:
    json.dumps(example_for(schema))
