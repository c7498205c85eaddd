"""The query cost limit (app/resolvers/cost.py): the estimate of known documents, the dashboard's
and the benchmark's documents under the default limit, and a document over it refused before
anything runs (no SQL statement, no row written)."""

import importlib.util
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
import strawberry
from graphql import (
    GraphQLField,
    GraphQLObjectType,
    get_named_type,
    is_composite_type,
    parse,
)
from redis.asyncio import Redis

from app.db import Database
from app.resolvers.cost import (
    LIST_ESTIMATE,
    check_page_sizes,
    compile_cost,
    page_argument,
    page_size,
    unwrap,
)
from app.resolvers.schema import build_schema, schema
from app.services import auth
from app.services.audit import SYSTEM
from app.settings import Settings
from tests.api.conftest import Api, api_settings, error_code
from tests.api.world import InProcess
from tests.factories import make_niche, make_provider

ROOT = Path(__file__).resolve().parents[2]
LIMIT = Settings().graphql_max_cost
SCHEMA = schema._schema  # noqa: SLF001  (the graphql-core schema the estimate walks)

# each lead's assignments, each assignment's lead's assignments…: short, shallow, ~22,000 objects
FAN_OUT = "assignments { lead { assignments { lead { assignments { lead { assignments { id } } } } } } }"


def cost(query: str, variables: dict[str, Any] | None = None, operation: str | None = None) -> int:
    return compile_cost(SCHEMA, parse(query), operation).cost(variables)


def test_the_estimate_counts_objects_through_pages_lists_and_fragments() -> None:
    assert cost("{ niches { id name } }") == LIST_ESTIMATE
    assert cost("{ me { label scopes } }") == 1  # a list of scalars is free
    # a connection is one object; its edges, and their nodes, are the page
    assert cost("{ leads(first: 7) { edges { node { id } } pageInfo { hasNextPage } } }") == 1 + 7 + 7 + 1
    assert cost("{ leads { edges { node { id } } } }") == 1 + 20 + 20  # the argument's default
    assert cost("{ deadLetters(first: 3) { id } }") == 3  # a list with `first`
    nested = "{ leads(first: 100) { edges { node { assignments { provider { name } } } } } }"
    assert cost(nested) == 1 + 100 + 100 + 100 * LIST_ESTIMATE * 2
    # variables: the value sent, else the variable's default, else the argument's
    paged = "query($n: Int!) { leads(first: $n) { edges { node { id } } } }"
    assert cost(paged, {"n": 5}) == 1 + 5 + 5
    assert cost(paged, {"n": 100}) == 1 + 100 + 100
    assert cost("query($n: Int = 4) { leads(first: $n) { edges { node { id } } } }") == 1 + 4 + 4
    assert cost("query($n: Int) { leads(first: $n) { edges { node { id } } } }", {"n": None}) == 1 + 20 + 20
    # fragments, inline fragments and aliases all add up
    fragments = """query { a: niches { ...N } b: niches { ... on Niche { levels { id } } } }
                   fragment N on Niche { levels { id } }"""
    assert cost(fragments) == 2 * (LIST_ESTIMATE + LIST_ESTIMATE * LIST_ESTIMATE)
    # the operation asked for, and introspection not at all (bounded by the schema, off in production)
    two = "query A { niches { id } } query B { me { label } }"
    assert (cost(two, operation="A"), cost(two, operation="B")) == (LIST_ESTIMATE, 1)
    assert cost("{ __schema { types { fields { name } } } }") == 0
    assert cost(f"{{ leads(first: 100) {{ edges {{ node {{ {FAN_OUT} }} }} }} }}") > LIMIT


def _documents_in(source: str) -> Iterator[str]:
    """GraphQL documents written as string literals in a script."""
    for literal in re.findall(r'`([^`]*)`|"((?:\{|query|mutation|subscription)[^"]*)"', source):
        text = next(part for part in literal if part)
        # a word, not a prefix: "subscriptions-error" (an element's id) is no document
        if re.match(r"\s*(\{|query\b|mutation\b|subscription\b)", text) and "${" not in text:
            yield text


def test_the_dashboard_and_the_benchmark_stay_under_the_limit() -> None:
    scripts = sorted((ROOT / "app" / "static").glob("*.js"))
    documents = [doc for script in scripts for doc in _documents_in(script.read_text())]
    assert len(documents) >= 5, documents  # the refresh, login, MFA, retry, the live feed
    spec = importlib.util.spec_from_file_location("bench_api", ROOT / "bench" / "api.py")
    assert spec is not None and spec.loader is not None
    bench = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(ROOT / "bench"))
    try:
        spec.loader.exec_module(bench)
    finally:
        sys.path.remove(str(ROOT / "bench"))
    documents += [bench.LEAD, bench.LEADS100]
    for document in documents:
        estimated = compile_cost(SCHEMA, parse(document), None).cost({})
        assert estimated <= LIMIT / 2, (estimated, document)  # room to grow


@contextmanager
def _statements(db: Database) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    sa.event.listen(db.engine.sync_engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        sa.event.remove(db.engine.sync_engine, "before_cursor_execute", record)


async def _leads(db: Database) -> int:
    async with db.engine.connect() as conn:
        return int((await conn.execute(sa.text("SELECT count(*) FROM leads"))).scalar_one())


async def test_a_document_over_the_limit_is_refused_before_it_runs(admin_api: Api, db: Database) -> None:
    niche, _ = await make_niche(db, levels=[(500, 1)])
    submit = 'mutation($n: UUID!) {{ submitLead(nicheId: $n, attributes: {{state: "TX"}}) {{ {} }} }}'
    with _statements(db) as statements:
        body = await admin_api.gql(submit.format(FAN_OUT), {"n": str(niche.id)})
    assert error_code(body) == "INVALID_INPUT"
    message = body["errors"][0]["message"]
    assert f"{LIMIT:,}" in message
    assert re.search(r"cost (\d[\d,]*)", message) is not None
    assert int(re.search(r"cost ([\d,]+)", message)[1].replace(",", "")) > LIMIT  # type: ignore[index]
    assert body.get("data") is None
    assert statements == []  # not even the credential was read: no resolver ran
    assert await _leads(db) == 0
    # the same mutation under the limit runs and writes
    await admin_api.ok(submit.format("id"), {"n": str(niche.id)})
    assert await _leads(db) == 1


async def test_the_cost_follows_the_variables_sent(admin_api: Api) -> None:
    # per lead 10 + 10 + 100 objects: 100 leads is 12,201, 50 is 6,101
    paged = "query($n: Int!) { leads(first: $n) { edges { node { assignments { lead { assignments { id } } } } } } }"
    assert error_code(await admin_api.gql(paged, {"n": 100})) == "INVALID_INPUT"
    assert (await admin_api.ok(paged, {"n": 50}))["leads"]["edges"] == []  # the same document runs
    assert error_code(await admin_api.gql(paged, {"n": 100})) == "INVALID_INPUT"


@pytest.mark.parametrize(("query", "refused"), [("{ niches { id } }", True), ("{ __typename }", False)])
async def test_the_limit_is_a_setting(query: str, refused: bool) -> None:
    small = build_schema(api_settings(graphql_max_cost=LIST_ESTIMATE - 1))
    result = await small.execute(query)
    if refused:
        assert result.errors is not None
        assert result.errors[0].extensions == {"code": "INVALID_INPUT"}
        assert f"over the limit of {LIST_ESTIMATE - 1:,}" in result.errors[0].message
    else:
        assert result.errors is None
        assert result.data == {"__typename": "Query"}


def test_a_declared_page_size_bounds_its_list() -> None:
    """Not only `first`: myAssignments(recent:) sizes its snapshot, webhookOverview(failures:) its
    recentFailures (not its flaggedEndpoints); literal, variable or the argument's default."""
    feed = "subscription($r: Int!) { myAssignments(recent: $r) { snapshot assignments { id lead { id } } } }"
    assert cost(feed, {"r": 1}) == 1 + 1 * (1 + 1)
    assert cost(feed, {"r": 100}) == 1 + 100 * (1 + 1)
    assert cost("subscription { myAssignments { assignments { id } } }") == 1 + 20
    overview = "{ webhookOverview(failures: %d) { flaggedEndpoints { id } recentFailures { id } } }"
    assert cost(overview % 1) == 1 + LIST_ESTIMATE + 1
    assert cost(overview % 100) == 1 + LIST_ESTIMATE + 100


# Int arguments of fields whose result is or holds a list that are not the size of that list
NOT_PAGE_SIZES = {"Mutation.createNiche(returnWindowHours)", "Mutation.updateNiche(returnWindowHours)"}


def _holds_a_list(field: GraphQLField) -> bool:
    """Is a list of objects, or an object with one (a connection, a feed, an overview)."""
    returned, is_list = unwrap(field.type)
    if not is_composite_type(returned):
        return False
    inner = [unwrap(f.type) for f in getattr(returned, "fields", {}).values()]
    return is_list or any(is_composite_type(named) and listed for named, listed in inner)


def test_every_list_an_argument_sizes_declares_it() -> None:
    """Every Int argument of a field whose result is (or holds) a list of objects is its page size,
    known to the estimate (`first`, or declared with `page_size`), or listed in NOT_PAGE_SIZES: a new
    field with `limit: Int` fails here until the estimate counts its list by it, not LIST_ESTIMATE."""
    undeclared = []
    for type_ in SCHEMA.type_map.values():
        if not isinstance(type_, GraphQLObjectType) or type_.name.startswith("__"):
            continue
        for name, field in type_.fields.items():
            if not _holds_a_list(field):
                continue
            declared = page_argument(field)
            for argument, definition in field.args.items():
                where = f"{type_.name}.{name}({argument})"
                if get_named_type(definition.type).name != "Int" or where in NOT_PAGE_SIZES:
                    continue
                if declared is None or declared.argument != argument:
                    undeclared.append(where)
    assert undeclared == []


@strawberry.type
class _Item:
    id: int


@strawberry.type
class _Box:
    items: list[_Item]
    count: int


def _schema_with(declaration: Any) -> strawberry.Schema:
    @strawberry.type
    class Query:
        @strawberry.field
        @declaration
        def box(self, size: int = 5, name: str = "") -> _Box:
            return _Box(items=[], count=0)

    return strawberry.Schema(query=Query)


def test_a_wrong_page_size_declaration_stops_the_schema_build() -> None:
    check_page_sizes(_schema_with(page_size("size", of="items")))
    with pytest.raises(TypeError, match="not an Int argument"):
        check_page_sizes(_schema_with(page_size("name", of="items")))
    with pytest.raises(TypeError, match="not an Int argument"):
        check_page_sizes(_schema_with(page_size("limit", of="items")))
    with pytest.raises(TypeError, match="not a list"):
        check_page_sizes(_schema_with(page_size("size", of="count")))


# per assignment: itself, its lead, 10 × (an assignment, its lead, 10 assignments): 1 + 1 + 120 = 122
DEEP_FEED = """subscription($p: UUID, $r: Int!) { myAssignments(providerId: $p, recent: $r) {
  assignments { lead { assignments { lead { assignments { id } } } } } } }"""


async def test_a_subscription_over_the_limit_is_refused_before_it_runs(db: Database, redis: Redis) -> None:
    provider = await make_provider(db)
    reader = (await auth.create_api_key(db, actor=SYSTEM, name="r", scopes=["read"])).secret
    variables = {"p": str(provider.id)}
    assert cost(DEEP_FEED, {**variables, "r": 100}) == 1 + 100 * 122 > LIMIT
    async with InProcess(db, redis) as live:
        with _statements(db) as statements:
            refused = await anext(await live.subscribe(DEEP_FEED, {**variables, "r": 100}, reader))
        assert refused.errors is not None
        assert refused.errors[0].extensions == {"code": "INVALID_INPUT"}
        assert f"over the limit of {LIMIT:,}" in refused.errors[0].message
        assert statements == []  # not even the credential was read
        assert live.hub.subscribers == 0
        stream = await live.subscribe(DEEP_FEED, {**variables, "r": 1}, reader)
        try:
            first = await anext(stream)
            assert first.errors is None, first.errors
            assert first.data == {"myAssignments": {"assignments": []}}
        finally:
            await stream.aclose()  # type: ignore[attr-defined]
