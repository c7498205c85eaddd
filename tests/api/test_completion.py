"""Direct subtrees completed by a plan (app/resolvers/completion.py): the same answer as graphql-core's
own path, and graphql-core's path whenever the plan cannot answer (an awaitable, an error, a null
in a non-null position), with the error at its path."""

from __future__ import annotations

import asyncio
import enum
from typing import Any

import pytest
import strawberry
from graphql import Executor

from app.resolvers.completion import DirectCompletion
from app.resolvers.context import Info
from app.resolvers.direct import direct_field, install_direct_resolvers


@strawberry.enum
class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


@strawberry.type
class Leaf:
    name: str
    colour: Colour
    note: str | None


@strawberry.type
class Node:
    id: int
    leaves: list[Leaf]

    @direct_field
    def first(self, info: Info) -> Leaf | None:
        return self.leaves[0] if self.leaves else None

    @direct_field
    def later(self, info: Info) -> Leaf | None:
        """An awaitable, as a relation not prefetched is."""

        async def load() -> Leaf | None:
            await asyncio.sleep(0)
            return self.leaves[-1] if self.leaves else None

        return load()  # type: ignore[return-value]

    @direct_field
    def broken(self, info: Info) -> Leaf | None:
        raise ValueError(f"broken {self.id}")

    @direct_field
    def required(self, info: Info) -> Leaf:
        return None  # type: ignore[return-value]

    @direct_field
    def who(self, info: Info) -> str:
        return str(info.context["who"])


def nodes() -> list[Node]:
    return [
        Node(
            id=i,
            leaves=[
                Leaf(name=f"l{i}{j}", colour=Colour.RED if j else Colour.BLUE, note=None) for j in range(2)
            ],
        )
        for i in range(3)
    ]


@strawberry.type
class Query:
    @strawberry.field
    async def nodes(self) -> list[Node]:
        return nodes()


def schemas() -> tuple[strawberry.Schema, strawberry.Schema]:
    planned = strawberry.Schema(query=Query, execution_context_class=DirectCompletion)
    install_direct_resolvers(planned)
    plain = strawberry.Schema(query=Query)
    install_direct_resolvers(plain)
    return planned, plain


async def both(query: str) -> tuple[Any, Any]:
    planned, plain = schemas()
    context = {"who": "Ana"}
    return await planned.execute(query, context_value=context), await plain.execute(
        query, context_value=context
    )


async def test_a_direct_subtree_answers_as_graphql_core_does_without_its_per_field_machinery(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    query = """{ nodes { __typename id again: id who leaves { name colour note } first { name colour }
      ... on Node { first { note } } } }"""
    planned, plain = await both(query)
    assert planned.errors is None
    assert planned.data == plain.data
    assert list(planned.data["nodes"][0]) == list(plain.data["nodes"][0])  # selection order kept
    calls: list[str] = []
    execute_field = Executor.execute_field

    def counted(self: Any, parent_type: Any, *args: Any) -> Any:
        calls.append(parent_type.name)
        return execute_field(self, parent_type, *args)

    monkeypatch.setattr(Executor, "execute_field", counted)
    await schemas()[0].execute(query, context_value={"who": "Ana"})
    assert calls == ["Query"]  # everything under nodes came from the plan


async def test_an_awaitable_or_an_error_goes_to_graphql_core_with_its_path() -> None:
    planned, plain = await both("{ nodes { id later { name } broken { name } } }")
    assert planned.data == plain.data
    assert planned.data["nodes"][0] == {"id": 0, "later": {"name": "l01"}, "broken": None}
    assert sorted((e.path, e.message) for e in planned.errors) == sorted(
        (e.path, e.message) for e in plain.errors
    )
    assert [e.path for e in planned.errors][:1] == [["nodes", 0, "broken"]]


async def test_a_null_in_a_non_null_position_nulls_the_parent_as_graphql_core_does() -> None:
    planned, plain = await both("{ nodes { id required { name } } }")
    assert planned.data is None  # Node.required, [Node!]! and Query.nodes are all non-null
    assert plain.data is None
    assert [e.message for e in planned.errors] == [e.message for e in plain.errors]
    assert "Cannot return null for non-nullable field Node.required" in planned.errors[0].message


async def test_a_request_whose_plan_gave_up_is_not_kept_alive() -> None:
    """A give-up is a fresh exception each time: one shared instance would keep every traceback it
    was raised through, and each request's context (its principal, its loaded rows) with it."""
    import gc
    import weakref

    class Context(dict[str, str]):  # a dict cannot be weakly referenced; a subclass can
        pass

    planned = schemas()[0]
    gone: list[weakref.ref[Context]] = []
    for _ in range(5):
        context = Context(who="Ana")
        result = await planned.execute("{ nodes { id later { name } } }", context_value=context)
        assert result.errors is None
        gone.append(weakref.ref(context))
        del context, result
    gc.collect()
    assert [ref() for ref in gone] == [None] * 5
