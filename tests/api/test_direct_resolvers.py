"""Direct resolvers (app/resolvers/direct.py): what may skip Strawberry's wrapper, and what may not."""

from __future__ import annotations

import pytest
import strawberry

from app.resolvers.context import Info
from app.resolvers.direct import direct_field, install_direct_resolvers
from app.resolvers.schema import schema


@strawberry.type
class Item:
    name: str
    secret: strawberry.Private[str]

    @direct_field
    def shout(self, info: Info) -> str:
        return f"{self.name.upper()} for {info.context['who']}"


@strawberry.type
class Query:
    @strawberry.field
    def item(self) -> Item:
        return Item(name="roof", secret="x")


def test_marked_and_plain_fields_resolve_without_the_wrapper() -> None:
    built = strawberry.Schema(query=Query)
    # Item.name and Item.shout; Query.item has an unmarked resolver and keeps Strawberry's wrapper
    assert install_direct_resolvers(built) == 2
    fields = built._schema.type_map["Item"].fields  # noqa: SLF001
    shout = Item.__strawberry_definition__.get_field("shout")  # type: ignore[attr-defined]
    assert fields["shout"].resolve is shout.base_resolver.wrapped_func
    result = built.execute_sync("{ item { name shout } }", context_value={"who": "Ana"})
    assert result.errors is None
    assert result.data == {"item": {"name": "roof", "shout": "ROOF for Ana"}}


@strawberry.type
class Bad:
    @direct_field
    def greet(self, info: Info, name: str) -> str:
        return name


@strawberry.type
class BadQuery:
    @strawberry.field
    def bad(self) -> Bad:
        return Bad()


def test_a_direct_field_with_arguments_is_refused_when_the_schema_is_built() -> None:
    with pytest.raises(TypeError, match=r"Bad.greet is a direct_field but has arguments"):
        install_direct_resolvers(strawberry.Schema(query=BadQuery))


def test_the_app_schema_resolves_its_relations_directly() -> None:
    fields = schema._schema.type_map["Assignment"].fields  # noqa: SLF001
    for name in ("provider", "competitionLevel", "lead", "priceChargedCents"):
        assert not getattr(fields[name].resolve, "_is_default", False), name
