"""The id arguments of an operation, read from the schema: every argument of type ID or UUID, and
every such field of an input-object argument (a path such as ("input", "providerId")), with the
helpers the access matrix fills, swaps and drops them with."""

from __future__ import annotations

import copy
import uuid
from typing import Any

from graphql import (
    GraphQLArgument,
    GraphQLField,
    GraphQLInputField,
    GraphQLInputObjectType,
    GraphQLScalarType,
    get_named_type,
    is_list_type,
    is_non_null_type,
)
from graphql.pyutils import Undefined

ID_SCALARS = {"ID", "UUID"}

Path = tuple[str, ...]


def id_paths(field: GraphQLField) -> list[Path]:
    paths: list[Path] = []
    _walk((), dict(field.args), paths)
    return paths


def _walk(prefix: Path, slots: dict[str, Any], paths: list[Path]) -> None:
    for name, slot in slots.items():
        named = get_named_type(slot.type)
        if isinstance(named, GraphQLScalarType) and named.name in ID_SCALARS:
            paths.append((*prefix, name))
        elif isinstance(named, GraphQLInputObjectType):
            inner: list[Path] = []
            _walk((*prefix, name), dict(named.fields), inner)
            listed = is_list_type(slot.type.of_type if is_non_null_type(slot.type) else slot.type)
            assert not (inner and listed), f"ids in an input list at {(*prefix, name)}: teach the matrix"
            paths.extend(inner)


def optional(field: GraphQLField, path: Path) -> bool:
    """May the last step of `path` be left out (nullable, or with a default)?"""
    slot: GraphQLArgument | GraphQLInputField = field.args[path[0]]
    for step in path[1:]:
        named = get_named_type(slot.type)
        assert isinstance(named, GraphQLInputObjectType)
        slot = named.fields[step]
    return not is_non_null_type(slot.type) or slot.default_value is not Undefined


def get(args: dict[str, Any], path: Path) -> Any:
    value: Any = args
    for step in path:
        if not isinstance(value, dict) or step not in value:
            return None
        value = value[step]
    return value


def with_value(args: dict[str, Any], path: Path, value: Any) -> dict[str, Any]:
    out = copy.deepcopy(args)
    inner = out
    for step in path[:-1]:
        inner = inner[step]
    inner[path[-1]] = value
    return out


def without(args: dict[str, Any], paths: list[Path]) -> dict[str, Any]:
    out = copy.deepcopy(args)
    for path in paths:
        inner = get(out, path[:-1]) if len(path) > 1 else out
        if isinstance(inner, dict):
            inner.pop(path[-1], None)
    return out


def plain(value: Any) -> Any:
    """Variables as JSON sends them: UUIDs as strings, all the way down."""
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value
