"""Every error code of SPEC §5, the query limits, and: rejected input writes nothing."""

import json
import uuid

import asyncpg
import httpx
import pytest
import sqlalchemy as sa
from redis.asyncio import Redis
from redis.backoff import NoBackoff
from redis.exceptions import AuthenticationError as RedisAuthenticationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry
from sqlalchemy.exc import DBAPIError

from app.db import Database
from app.main import create_app
from app.progress.publish import NullPublisher
from app.resolvers.errors import unavailable
from app.services import auth
from app.tasks.dispatch import InlineDispatcher
from tests.api.conftest import Api, api_settings, error_code
from tests.conftest import TABLES


async def _row_counts(db: Database) -> dict[str, int]:
    counts = {}
    async with db.engine.connect() as conn:
        for table in [t.strip() for t in TABLES.split(",")]:
            counts[table] = (await conn.execute(sa.text(f"SELECT count(*) FROM {table}"))).scalar_one()
    return counts


async def _niche_and_lead(api: Api) -> tuple[str, str]:
    niche = (await api.ok('mutation { createNiche(name: "N") { id } }'))["createNiche"]["id"]
    lead = (
        await api.ok(
            'mutation($n: UUID!) { submitLead(nicheId: $n, attributes: {state: "TX"}) { id } }', {"n": niche}
        )
    )["submitLead"]["id"]
    return niche, lead


BAD_INPUTS = [
    ('mutation { createNiche(name: "  ") { id } }', {}, "name"),
    (
        'mutation($n: UUID!) { createCompetitionLevel(nicheId: $n, name: "L", priceCents: -1, maxRecipients: 1) { id } }',
        {},
        "priceCents",
    ),
    (
        'mutation($n: UUID!) { createCompetitionLevel(nicheId: $n, name: "L", priceCents: 1, maxRecipients: 0) { id } }',
        {},
        "maxRecipients",
    ),
    ('mutation { createProvider(name: "P", email: "not-an-email") { id } }', {}, "email"),
    (
        'mutation { topUpBalance(providerId: "00000000-0000-0000-0000-000000000001", amountCents: 0, reference: "r") { id } }',
        {},
        "amountCents",
    ),
    (
        "mutation($p: UUID!, $l: UUID!) { subscribeProvider(providerId: $p, competitionLevelId: $l, "
        'filters: [{field: "state", op: "like", value: "T"}]) { id } }',
        {},
        "filters[0].op",
    ),
    ('mutation($n: UUID!) { submitLead(nicheId: $n, attributes: "just text") { id } }', {}, "attributes"),
    ("query { leads(first: 101) { edges { cursor } } }", {}, "first"),
    ('query { leads(after: "bm90LWEtY3Vyc29y") { edges { cursor } } }', {}, "after"),
    ('mutation($id: UUID!) { rejectLead(id: $id, reason: "") { id } }', {}, "reason"),
    ('mutation { createApiKey(name: "k", scopes: ["root"]) { secret } }', {}, "scopes"),
    ('mutation { createNiche(name: "a\\u0000b") { id } }', {}, "name"),
    (
        'mutation($n: UUID!) { submitLead(nicheId: $n, attributes: {note: "x\\u0000"}) { id } }',
        {},
        "attributes",
    ),
    (
        "mutation($p: UUID!, $l: UUID!) { subscribeProvider(providerId: $p, competitionLevelId: $l, "
        'filters: [{field: "state", op: "eq", value: "\\u0000"}]) { id } }',
        {},
        "filters",
    ),
]


async def test_bad_input_is_invalid_input_names_the_field_and_writes_nothing(
    admin_api: Api, db: Database
) -> None:
    niche, lead = await _niche_and_lead(admin_api)
    level = (
        await admin_api.ok(
            'mutation($n: UUID!) { createCompetitionLevel(nicheId: $n, name: "L", priceCents: 1, maxRecipients: 1) { id } }',
            {"n": niche},
        )
    )["createCompetitionLevel"]["id"]
    provider = (await admin_api.ok('mutation { createProvider(name: "P", email: "p@example.test") { id } }'))[
        "createProvider"
    ]["id"]
    before = await _row_counts(db)
    variables = {"n": niche, "p": provider, "l": level, "id": lead}
    for query, _, field in BAD_INPUTS:
        used = {k: v for k, v in variables.items() if f"${k}" in query}
        body = await admin_api.gql(query, used)
        assert error_code(body) == "INVALID_INPUT", (query, body)
        assert body["errors"][0]["extensions"].get("field") == field, (query, body)
    assert await _row_counts(db) == before


async def test_malformed_requests_are_invalid_input(admin_api: Api) -> None:
    cases = [
        "{ niches { id ",  # syntax
        "{ niches { nope } }",  # validation
        '{ lead(id: "not-a-uuid") { id } }',  # scalar parsing
        "{ " + " ".join(f"a{i}: niches {{ id }}" for i in range(31)) + " }",  # aliases
        "{ leads { edges { node { assignments { lead { assignments { lead { assignments { lead { assignments "
        "{ lead { id } } } } } } } } } } } }",  # depth
        "{ niches { " + "id " * 2100 + "} }",  # tokens
    ]
    for query in cases:
        assert error_code(await admin_api.gql(query)) == "INVALID_INPUT", query
    body = await admin_api.gql("query($a: Cents!) { niches { id } }", {"a": 1.5})
    assert error_code(body) == "INVALID_INPUT"
    huge = await admin_api.client.post(
        "/graphql", content=b"{" + b" " * 300_000 + b"}", headers={"content-type": "application/json"}
    )
    assert huge.status_code == 413
    assert huge.json()["errors"][0]["extensions"]["code"] == "INVALID_INPUT"


async def test_not_found_conflict_and_not_distributable(admin_api: Api, db: Database) -> None:
    missing = await admin_api.gql("query($id: UUID!) { lead(id: $id) { id } }", {"id": str(uuid.uuid4())})
    assert error_code(missing) == "NOT_FOUND"
    niche, lead = await _niche_and_lead(admin_api)
    assert error_code(await admin_api.gql('mutation { createNiche(name: "N") { id } }')) == "CONFLICT"
    pending = await admin_api.gql(
        'mutation($id: UUID!) { distributeLead(leadId: $id, idempotencyKey: "a") { id } }', {"id": lead}
    )
    assert error_code(pending) == "LEAD_NOT_DISTRIBUTABLE"
    await admin_api.ok("mutation($id: UUID!) { approveLead(id: $id) { id } }", {"id": lead})
    assert (
        error_code(await admin_api.gql("mutation($id: UUID!) { approveLead(id: $id) { id } }", {"id": lead}))
        == "CONFLICT"
    )
    await admin_api.ok(
        'mutation($id: UUID!) { distributeLead(leadId: $id, idempotencyKey: "k") { id } }', {"id": lead}
    )
    other = (
        await admin_api.ok(
            "mutation($n: UUID!) { submitLead(nicheId: $n, attributes: {}) { id } }", {"n": niche}
        )
    )["submitLead"]["id"]
    await admin_api.ok("mutation($id: UUID!) { approveLead(id: $id) { id } }", {"id": other})
    reused = await admin_api.gql(
        'mutation($id: UUID!) { distributeLead(leadId: $id, idempotencyKey: "k") { id } }', {"id": other}
    )
    assert error_code(reused) == "CONFLICT"
    assert reused["errors"][0]["extensions"]["field"] == "idempotencyKey"


async def test_unexpected_failure_is_internal_with_a_request_id_and_no_details(
    api: Api, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture[str]
) -> None:
    """A defect (here a service that trips over its own data) stays INTERNAL: logged in full, and
    the client gets a request id and nothing of the details."""

    async def broken(*args: object, **kwargs: object) -> None:
        settings: dict[str, str] = {}
        settings["smtp_host"] += "secret-host.internal"  # KeyError: a bug, not an outage

    monkeypatch.setattr(auth, "login", broken)
    response = await api.client.post(
        "/graphql", json={"query": 'mutation { login(email: "a@b.test", password: "x") { challenge } }'}
    )
    assert response.status_code == 200  # only UNAVAILABLE changes the HTTP status
    assert "Retry-After" not in response.headers
    error = response.json()["errors"][0]
    assert error["extensions"]["code"] == "INTERNAL"
    assert error["extensions"]["requestId"] in error["message"]
    assert "Traceback" not in response.text
    assert "smtp_host" not in response.text
    # logged in full server-side, as one JSON line carrying the same request id
    logged = [json.loads(line) for line in capfd.readouterr().err.splitlines() if line.startswith("{")]
    unexpected = [entry for entry in logged if "graphql.unexpected" in entry.get("event", "")]
    assert unexpected
    assert unexpected[0]["request_id"] == error["extensions"]["requestId"]
    assert unexpected[0]["level"] == "error"
    assert "Traceback" in unexpected[0]["exception"]
    assert [entry for entry in logged if entry["level"] == "error"] == unexpected[:1]  # logged once


async def test_a_clients_mistake_is_not_logged_as_an_error(
    admin_api: Api, capfd: pytest.CaptureFixture[str]
) -> None:
    capfd.readouterr()
    missing = await admin_api.gql("query($id: UUID!) { lead(id: $id) { id } }", {"id": str(uuid.uuid4())})
    assert error_code(missing) == "NOT_FOUND"
    assert error_code(await admin_api.gql('mutation { createNiche(name: "  ") { id } }')) == "INVALID_INPUT"
    logged = [json.loads(line) for line in capfd.readouterr().err.splitlines() if line.startswith("{")]
    assert [entry for entry in logged if entry["level"] in ("error", "critical")] == []


async def test_redis_out_of_reach_is_unavailable_with_503_and_retry_after(
    db: Database, capfd: pytest.CaptureFixture[str]
) -> None:
    dead = Redis.from_url("redis://127.0.0.1:1", retry=Retry(NoBackoff(), 0))  # nothing listens there
    settings = api_settings()
    app = create_app(settings, db=db, redis=dead, dispatcher=InlineDispatcher(db, settings, NullPublisher()))
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            response = await client.post(
                "/graphql",
                json={"query": 'mutation { login(email: "a@b.test", password: "x") { challenge } }'},
            )
    await dead.aclose()
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "2"
    error = response.json()["errors"][0]
    assert error["extensions"] == {"code": "UNAVAILABLE", "retryAfterSeconds": 2}
    assert error["message"].startswith("Redis cannot be reached")
    assert "127.0.0.1" not in response.text
    logged = capfd.readouterr().err
    assert "graphql.unavailable" in logged
    assert "graphql.unexpected" not in logged


def _wrapped(orig: BaseException, *, invalidated: bool = False) -> DBAPIError:
    """An asyncpg error as SQLAlchemy raises it."""
    return DBAPIError("SELECT 1", {}, orig, connection_invalidated=invalidated)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("cause", "server"),
    [
        # connecting: no socket file, refused, timed out; starting up or shutting down; full
        (FileNotFoundError(2, "No such file or directory"), "PostgreSQL"),
        (ConnectionRefusedError(111, "Connection refused"), "PostgreSQL"),
        (TimeoutError(), "PostgreSQL"),
        (
            _wrapped(asyncpg.exceptions.CannotConnectNowError("the database system is starting up")),
            "PostgreSQL",
        ),
        (asyncpg.exceptions.CannotConnectNowError("the database system is shutting down"), "PostgreSQL"),
        (_wrapped(asyncpg.exceptions.TooManyConnectionsError("sorry, too many clients")), "PostgreSQL"),
        # a connection the server dropped: administrator or crash shutdown, mid-statement
        (_wrapped(asyncpg.exceptions.AdminShutdownError("terminating connection")), "PostgreSQL"),
        (_wrapped(asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed")), "PostgreSQL"),
        (_wrapped(asyncpg.exceptions.InterfaceError("connection is closed"), invalidated=True), "PostgreSQL"),
        (RedisConnectionError("Error 111 connecting to 127.0.0.1:6379"), "Redis"),
        (RedisTimeoutError("Timeout reading from socket"), "Redis"),
        # defects and bad input: never retried by the client
        (_wrapped(asyncpg.exceptions.UniqueViolationError("duplicate key")), None),
        (_wrapped(asyncpg.exceptions.UndefinedColumnError("column does not exist")), None),
        (_wrapped(asyncpg.exceptions.InterfaceError("another operation is in progress")), None),
        (asyncpg.exceptions.InvalidPasswordError("password authentication failed"), None),
        (RedisAuthenticationError("invalid password"), None),
        (KeyError("smtp_host"), None),
        (None, None),
    ],
)
def test_which_failures_are_unavailable(cause: BaseException | None, server: str | None) -> None:
    outage = unavailable(cause)
    if server is None:
        assert outage is None
    else:
        assert outage is not None
        assert str(outage).startswith(f"{server} cannot be reached")


async def test_a_value_postgresql_refuses_is_invalid_input(api: Api) -> None:
    """No validator sees this one: PostgreSQL's data exception itself maps to INVALID_INPUT."""
    body = await api.gql(
        'mutation($e: String!) { login(email: $e, password: "x") { challenge } }',
        {"e": "a\x00b@example.test"},
    )
    assert error_code(body) == "INVALID_INPUT"
    assert "NUL" in body["errors"][0]["message"]
