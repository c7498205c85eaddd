"""The schema: Query + Mutation, with the limits (depth, tokens, aliases, cost) and the one error
mapping always on, and introspection only where the IDE is (development by default). `schema` is what
`strawberry export-schema app.resolvers.schema:schema` prints into schema.graphql."""

from __future__ import annotations

from collections.abc import Callable

import strawberry
from strawberry.extensions import (
    AddValidationRules,
    DisableIntrospection,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    QueryDepthLimiter,
    SchemaExtension,
)
from strawberry.schema.config import StrawberryConfig

from app.resolvers.caching import DocumentCache
from app.resolvers.cost import ValidationWithCostLimit
from app.resolvers.direct import install_direct_resolvers
from app.resolvers.errors import ClientErrors
from app.resolvers.executor import EventScopedExecutor
from app.resolvers.mutations import Mutation
from app.resolvers.query import Query
from app.resolvers.subscription import Subscription
from app.schema.scalars import SCALARS
from app.settings import Settings


def build_schema(settings: Settings) -> strawberry.Schema:
    # The limit rules are built once: ValidationCache keys on the rule classes, and each limiter
    # instance makes new ones. Extensions are factories, so each request has its own state.
    limit_rules = [
        *QueryDepthLimiter(max_depth=settings.graphql_max_depth).validation_rules,
        *MaxAliasesLimiter(max_alias_count=settings.graphql_max_aliases).validation_rules,
    ]
    extensions: list[Callable[[], SchemaExtension] | type[SchemaExtension]] = [
        ClientErrors,  # first, so it is the outermost and maps the errors of every other step
        lambda: MaxTokensLimiter(max_token_count=settings.graphql_max_tokens),
        lambda: AddValidationRules(limit_rules),
        # scripts and dashboards send the same few documents: parse, validate and cost each once
        DocumentCache,
        lambda: ValidationWithCostLimit(max_cost=settings.graphql_max_cost, maxsize=512),
    ]
    if not settings.ide_enabled:
        extensions.append(DisableIntrospection)
    built = strawberry.Schema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        extensions=extensions,
        config=StrawberryConfig(scalar_map=SCALARS),
        execution_context_class=EventScopedExecutor,
    )
    install_direct_resolvers(built)
    return built


schema = build_schema(Settings())
