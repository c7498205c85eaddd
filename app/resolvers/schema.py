"""The schema: Query + Mutation, with the limits and the one error mapping always on, and
introspection only where the IDE is (development by default). `schema` is what
`strawberry export-schema app.resolvers.schema:schema` prints into schema.graphql."""

from __future__ import annotations

from collections.abc import Callable

import strawberry
from strawberry.extensions import (
    DisableIntrospection,
    MaxAliasesLimiter,
    MaxTokensLimiter,
    QueryDepthLimiter,
    SchemaExtension,
)
from strawberry.schema.config import StrawberryConfig

from app.resolvers.errors import ClientErrors
from app.resolvers.mutations import Mutation
from app.resolvers.query import Query
from app.schema.scalars import SCALARS
from app.settings import Settings


def build_schema(settings: Settings) -> strawberry.Schema:
    # factories, not instances: each request gets its own extension state
    extensions: list[Callable[[], SchemaExtension] | type[SchemaExtension]] = [
        lambda: QueryDepthLimiter(max_depth=settings.graphql_max_depth),
        lambda: MaxTokensLimiter(max_token_count=settings.graphql_max_tokens),
        lambda: MaxAliasesLimiter(max_alias_count=settings.graphql_max_aliases),
        ClientErrors,
    ]
    if not settings.ide_enabled:
        extensions.append(DisableIntrospection)
    return strawberry.Schema(
        query=Query,
        mutation=Mutation,
        extensions=extensions,
        config=StrawberryConfig(scalar_map=SCALARS),
    )


schema = build_schema(Settings())
