"""Parse each distinct document once. Strawberry's ParserCache (0.341) raises a syntax error from
inside its hook, where no extension maps it; this one stores nothing on an error and lets
Strawberry parse the text itself, so the error takes the normal path. ValidationCache keys on the
parsed document object, so it only hits when parsing is cached like this."""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache

from graphql import DocumentNode, GraphQLError, parse
from strawberry.extensions import SchemaExtension


@lru_cache(maxsize=512)
def _parse(query: str, max_tokens: int | None) -> DocumentNode:
    return parse(query, max_tokens=max_tokens)


class DocumentCache(SchemaExtension):
    def on_parse(self) -> Iterator[None]:
        context = self.execution_context
        if context.query and context.graphql_document is None:
            try:
                context.graphql_document = _parse(context.query, context.parse_options.get("max_tokens"))
            except GraphQLError:
                pass  # Strawberry parses it again and reports the error itself
        yield
