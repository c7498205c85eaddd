"""Which subscriptions may share one execution of an event among their subscribers
(app/resolvers/executor.py) and relay its encoded payload (app/resolvers/relay.py): only those
whose result cannot depend on who asks (STYLE §5b). Principals see different things (a provider
its own assignments and the contact details of its own leads, a read-only key no contact details
at all), so a result computed for one subscriber and sent to another would be a leak.

A subscription opts in with `shared_subscription`; the schema build (`check_sharing`) refuses it,
as `direct.py` refuses a direct field it cannot serve, when any field its type reaches is
viewer-dependent:
- marked `viewer_dependent` (its value differs by principal: Lead.attributes);
- or resolved with `info` (it may read the principal or the principal-scoped loaders);
- or guarded by permissions or field extensions (they ask who is asking).
Plain attributes and resolvers of `self` alone are the same for everyone. The executor and the
relay share only for the subscriptions the check passed (kept in the graphql-core schema's
extensions), so no selection of any other subscription is ever sent to two principals."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import strawberry
from graphql import (
    GraphQLInterfaceType,
    GraphQLNamedType,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLType,
    GraphQLUnionType,
    get_named_type,
)
from graphql.language import FieldNode, OperationDefinitionNode
from strawberry.types.field import StrawberryField

from app.internals.strawberry_graphql import DEFINITION_BACKREF, graphql_core_schema

F = TypeVar("F", bound=Callable[..., Any])
_VIEWER = "__leadwheel_viewer_dependent__"
_SHARED = "__leadwheel_shared_subscription__"
SHARED_SUBSCRIPTIONS = "leadwheel_shared_subscriptions"  # key in GraphQLSchema.extensions


def viewer_dependent(resolver: F) -> F:
    """Marks a field resolver whose value depends on the principal; put it under the
    `@strawberry.field` decorator."""
    setattr(resolver, _VIEWER, True)
    return resolver


def shared_subscription(resolver: F) -> F:
    """Marks a subscription whose events may be executed once and sent to every subscriber of the
    same document and variables; put it under `@strawberry.subscription`."""
    setattr(resolver, _SHARED, True)
    return resolver


def check_sharing(schema: strawberry.Schema) -> frozenset[str]:
    """The subscriptions that may share, recorded on the schema; TypeError for a shared one whose
    type reaches a viewer-dependent field."""
    graphql_schema: GraphQLSchema = graphql_core_schema(schema)
    shared: set[str] = set()
    subscription = graphql_schema.subscription_type
    for name, graphql_field in (subscription.fields if subscription else {}).items():
        field = (graphql_field.extensions or {}).get(DEFINITION_BACKREF)
        if not isinstance(field, StrawberryField) or field.base_resolver is None:
            continue
        if not getattr(field.base_resolver.wrapped_func, _SHARED, False):
            continue
        found = viewer_dependent_fields(graphql_field.type)
        if found:
            raise TypeError(
                f"Subscription.{name} is a shared_subscription, but its result depends on who asks "
                f"through {', '.join(found)}: one subscriber's result would be sent to another"
            )
        shared.add(name)
    frozen = frozenset(shared)
    graphql_schema.extensions[SHARED_SUBSCRIPTIONS] = frozen
    return frozen


def viewer_dependent_fields(root: GraphQLType) -> list[str]:
    """Every viewer-dependent field reachable from `root`, as Type.field."""
    found: list[str] = []
    seen: set[str] = set()
    pending: list[GraphQLNamedType] = [get_named_type(root)]
    while pending:
        named = pending.pop()
        if named.name in seen:
            continue
        seen.add(named.name)
        if isinstance(named, GraphQLUnionType):
            pending.extend(named.types)
            continue
        if not isinstance(named, GraphQLObjectType | GraphQLInterfaceType):
            continue  # scalars and enums
        for name, graphql_field in named.fields.items():
            field = (graphql_field.extensions or {}).get(DEFINITION_BACKREF)
            if not isinstance(field, StrawberryField) or _depends_on_viewer(field):
                found.append(f"{named.name}.{name}")
            pending.append(get_named_type(graphql_field.type))
    return sorted(found)


def _depends_on_viewer(field: StrawberryField) -> bool:
    if field.extensions or field.permission_classes:
        return True
    base = field.base_resolver
    if base is None:
        return False  # a plain attribute of the payload
    return bool(getattr(base.wrapped_func, _VIEWER, False)) or base.info_parameter is not None


def shared_names(graphql_schema: GraphQLSchema) -> frozenset[str]:
    found = graphql_schema.extensions.get(SHARED_SUBSCRIPTIONS)
    return found if isinstance(found, frozenset) else frozenset()


def root_field(operation: OperationDefinitionNode) -> str | None:
    """The subscription's one root field, written as a field (a fragment at the root: None, never
    shared)."""
    selections = operation.selection_set.selections
    if len(selections) == 1 and isinstance(selections[0], FieldNode):
        return selections[0].name.value
    return None
