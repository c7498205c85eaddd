"""The schema: Query + Mutation, with the limits (depth, tokens, aliases, cost) and the one error
mapping always on, and introspection only where the IDE is (development by default). `schema` is what
`strawberry export-schema app.resolvers.schema:schema` prints into schema.graphql."""

from __future__ import annotations

from collections.abc import Callable

import strawberry
from graphql import GraphQLError
from strawberry.extensions import (
    AddValidationRules,
    DisableIntrospection,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    QueryDepthLimiter,
    SchemaExtension,
)
from strawberry.schema.config import StrawberryConfig
from strawberry.types import ExecutionContext

from app.resolvers.caching import DocumentCache
from app.resolvers.cost import ValidationWithCostLimit, check_page_sizes
from app.resolvers.direct import install_direct_resolvers
from app.resolvers.errors import ClientErrors
from app.resolvers.executor import EventScopedExecutor
from app.resolvers.mutations import Mutation
from app.resolvers.query import Query
from app.resolvers.sharing import check_sharing
from app.resolvers.subscription import Subscription
from app.schema.scalars import SCALARS
from app.settings import Settings


class _Schema(strawberry.Schema):
    def process_errors(
        self, errors: list[GraphQLError], execution_context: ExecutionContext | None = None
    ) -> None:
        """Strawberry logs every error at ERROR with its traceback (a NOT_FOUND, a mistyped TOTP code,
        a restarting PostgreSQL) before ClientErrors maps it: a terminal or log where defects drown.
        ClientErrors logs what needs an operator: a defect in full with its request id
        (graphql.unexpected), an outage in one line (graphql.unavailable)."""


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
    built = _Schema(
        query=Query,
        mutation=Mutation,
        subscription=Subscription,
        extensions=extensions,
        config=StrawberryConfig(scalar_map=SCALARS),
        execution_context_class=EventScopedExecutor,
    )
    install_direct_resolvers(built)
    check_sharing(built)  # a shared subscription must not reach a field that depends on who asks
    check_page_sizes(built)  # each declared page size names a real argument and list
    return built


schema = build_schema(Settings())
