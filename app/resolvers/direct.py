"""Direct resolvers: graphql-core calls them without Strawberry's per-field wrapper.

Strawberry wraps every field to build its `Info`, convert arguments and run field extensions:
about ten microseconds a field, an eighth of a nested page of 100 leads (~1,300 fields). Fields that
need none of it are handed to graphql-core as they are, when the schema is built:
- plain attributes (no resolver, no extension): one attribute read;
- resolvers declared with `direct_field`: no arguments, no permission or extension, and they read
  only `info.context` (graphql-core's info carries the same context object as Strawberry's).
A `direct_field` that does not meet that is refused when the schema is built, not at request time."""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import Any, TypeVar

import strawberry
from graphql import GraphQLObjectType
from strawberry.types.field import StrawberryField

from app.internals.strawberry_graphql import DEFINITION_BACKREF, graphql_core_schema

F = TypeVar("F", bound=Callable[..., Any])
_MARK = "__leadwheel_direct__"
# on the resolver of a plain attribute: its attrgetter (app/resolvers/completion.py reads it at once)
DIRECT_ATTRIBUTE = "__leadwheel_attribute__"


def is_direct(resolve: object) -> bool:
    """Whether graphql-core's resolver of a field is one install_direct_resolvers put there."""
    return getattr(resolve, _MARK, False) is True


def direct_field(resolver: F | None = None, *, description: str | None = None) -> Any:
    """`@strawberry.field` for a `(self, info)` resolver that graphql-core may call directly."""

    def mark(fn: F) -> Any:
        setattr(fn, _MARK, True)
        return strawberry.field(resolver=fn, description=description)

    return mark(resolver) if resolver is not None else mark


def install_direct_resolvers(schema: strawberry.Schema) -> int:
    """Replaces the wrapper of every eligible field; returns how many were replaced."""
    replaced = 0
    for graphql_type in graphql_core_schema(schema).type_map.values():
        if not isinstance(graphql_type, GraphQLObjectType) or graphql_type.name.startswith("__"):
            continue
        for name, graphql_field in graphql_type.fields.items():
            field = (graphql_field.extensions or {}).get(DEFINITION_BACKREF)
            if not isinstance(field, StrawberryField):
                continue
            resolver = _direct(graphql_type.name, name, field)
            if resolver is not None:
                graphql_field.resolve = resolver
                replaced += 1
    return replaced


def _direct(type_name: str, name: str, field: StrawberryField) -> Callable[..., Any] | None:
    base = field.base_resolver
    if base is None:
        if field.extensions:
            return None
        read = operator.attrgetter(field.python_name)

        def attribute(source: Any, _info: Any) -> Any:
            return read(source)

        setattr(attribute, _MARK, True)
        setattr(attribute, DIRECT_ATTRIBUTE, read)
        return attribute
    fn = base.wrapped_func
    if not getattr(fn, _MARK, False):
        return None
    problems = [
        problem
        for problem, found in (
            ("arguments", field.arguments),
            ("extensions or permissions", field.extensions),
            ("a signature other than (self, info)", not _self_then_info(base)),
        )
        if found
    ]
    if problems:
        raise TypeError(f"{type_name}.{name} is a direct_field but has {', '.join(problems)}")
    return fn  # type: ignore[return-value]


def _self_then_info(base: Any) -> bool:
    """graphql-core calls `resolve(source, info)`: the parameters must be exactly those two."""
    parameters = list(base.signature.parameters.values())
    return (
        len(parameters) == 2 and parameters[0] is base.self_parameter and parameters[1] is base.info_parameter
    )
