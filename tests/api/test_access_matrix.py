"""The access matrix, generated from the schema: every query, mutation and subscription, asked by
an admin, A's provider user, A's provider key, A's read-only provider key, B's provider user, a
read-only admin key and no credential. Every id argument (inside input objects too) is tried with
A's id and with B's, and where an operation takes several, each alone and each of the other side's
among the asker's own (A's provider with B's endpoint). The answer codes must be the rule's (a
foreign id NOT_FOUND, an operator operation FORBIDDEN, every write FORBIDDEN to a read-only key);
a provider principal's answers never hold the other side's data (ids, emails, contact details); a
refused call or a read changes nothing of either side, and a provider's calls nothing of the other
side (every provider-owned table, tests/api/owned_state.py). An operation without a rule fails
`test_every_operation_has_a_rule`, an id argument a rule leaves empty
`test_every_id_argument_is_filled`."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, fields
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from graphql import (
    GraphQLField,
    GraphQLObjectType,
    GraphQLSchema,
    GraphQLType,
    get_named_type,
    is_non_null_type,
)
from graphql.pyutils import Undefined
from redis.asyncio import Redis

from app.db import Database
from app.main import create_app
from app.progress.publish import RedisPublisher
from app.resolvers.schema import build_schema
from app.services import api_keys
from app.services.audit import SYSTEM
from app.tasks.dispatch import InlineDispatcher
from tests.api.conftest import Api, api_settings
from tests.api.id_args import Path, get, id_paths, optional, plain, with_value, without
from tests.api.owned_state import OWNED_TABLES, changed_tables, owned_state
from tests.api.world import InProcess, Side, World, build_world, leaked

ALLOWED, FORBIDDEN, NOT_FOUND, UNAUTHENTICATED = "ALLOWED", "FORBIDDEN", "NOT_FOUND", "UNAUTHENTICATED"

Args = Callable[[World, Side], dict[str, Any]]


@dataclass(frozen=True)
class Rule:
    """Expected answer per principal. `own` / `foreign`: a provider principal with its own side's
    ids / the other side's; `key`: a provider's API key when it differs from its user."""

    args: Args
    read_key: str
    own: str
    foreign: str
    admin: str = ALLOWED
    key: str | None = None
    anon: str = UNAUTHENTICATED
    per_side: bool = True  # False: no ids in the arguments; asked once per principal
    # answers that mean "let through, refused by the business rules" (the world's lead is
    # distributed already, ...): they count as ALLOWED; any other error does not
    business: frozenset[str] = frozenset()
    one_of: bool = False  # the id arguments are alternatives: each is sent alone


def operator_write(args: Args, per_side: bool = True, business: frozenset[str] = frozenset()) -> Rule:
    return Rule(
        args, read_key=FORBIDDEN, own=FORBIDDEN, foreign=FORBIDDEN, per_side=per_side, business=business
    )


def operator_read(args: Args, per_side: bool = True) -> Rule:
    return Rule(args, read_key=ALLOWED, own=FORBIDDEN, foreign=FORBIDDEN, per_side=per_side)


def own_read(args: Args, per_side: bool = True) -> Rule:
    return Rule(args, read_key=ALLOWED, own=ALLOWED, foreign=NOT_FOUND, per_side=per_side)


def own_write(args: Args) -> Rule:
    return Rule(args, read_key=FORBIDDEN, own=ALLOWED, foreign=NOT_FOUND)


def public(args: Args, code: str) -> Rule:
    """Signing-in steps: whoever asks, forged secrets answer `code`."""
    return Rule(args, admin=code, read_key=code, own=code, foreign=code, anon=code, per_side=False)


def _unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def none(w: World, s: Side) -> dict[str, Any]:
    return {}


RULES: dict[str, Rule] = {
    # queries
    "lead": own_read(lambda w, s: {"id": s.lead}),
    "leads": operator_read(lambda w, s: {"nicheId": s.niche}),
    "assignments": own_read(lambda w, s: {"leadId": s.lead, "providerId": s.provider}),
    "distributionStatus": operator_read(lambda w, s: {"leadId": s.lead}),
    "distributionRun": operator_read(lambda w, s: {"id": s.run}),
    "deadLetters": operator_read(none, per_side=False),
    "niches": operator_read(none, per_side=False),
    "niche": operator_read(lambda w, s: {"id": s.niche}),
    "providers": own_read(none, per_side=False),
    "provider": own_read(lambda w, s: {"id": s.provider}),
    "providerUsers": operator_read(lambda w, s: {"providerId": s.provider}),
    "auditLog": operator_read(lambda w, s: {"entityId": s.lead, "actorId": s.user}),
    "previewDistribution": operator_read(lambda w, s: {"leadId": s.lead}),
    "distributionStats": operator_read(
        lambda w, s: {"nicheId": s.niche, "from": (datetime.now(UTC) - timedelta(days=1)).isoformat()}
    ),
    "returns": own_read(lambda w, s: {"providerId": s.provider}),
    "me": Rule(none, read_key=ALLOWED, own=ALLOWED, foreign=ALLOWED, per_side=False),
    # mutations: signing in
    "login": public(
        lambda w, s: {"email": "nobody@example.test", "password": "not the password"}, UNAUTHENTICATED
    ),
    "verifyMfa": public(lambda w, s: {"challenge": "lwc_forged", "code": "123456"}, UNAUTHENTICATED),
    "logout": Rule(none, read_key=ALLOWED, own=ALLOWED, foreign=ALLOWED, per_side=False),
    "acceptInvite": public(
        lambda w, s: {"token": "lwi_forged", "password": "a long enough password"}, UNAUTHENTICATED
    ),
    "confirmEnrollment": public(lambda w, s: {"token": "lwe_forged", "code": "123456"}, UNAUTHENTICATED),
    # API keys: people only; a provider user for its own provider
    "createApiKey": Rule(
        lambda w, s: {"name": "k", "scopes": ["provider:read"], "providerId": s.provider},
        read_key=FORBIDDEN,
        own=ALLOWED,
        foreign=NOT_FOUND,
        key=FORBIDDEN,
    ),
    "revokeApiKey": Rule(
        lambda w, s: {"id": s.victim_key}, read_key=FORBIDDEN, own=ALLOWED, foreign=NOT_FOUND, key=FORBIDDEN
    ),
    # provider users: operators
    "inviteProviderUser": operator_write(
        lambda w, s: {"providerId": s.provider, "email": _unique("new") + "@x.test"}
    ),
    "disableProviderUser": operator_write(lambda w, s: {"id": s.victim_user}),
    "enableProviderUser": operator_write(lambda w, s: {"id": s.victim_user}),
    "removeProviderUser": operator_write(lambda w, s: {"id": s.victim_user}),
    # niches and levels
    "createNiche": operator_write(lambda w, s: {"name": _unique("N")}, per_side=False),
    "updateNiche": operator_write(lambda w, s: {"id": s.niche, "name": _unique("N")}),
    "createCompetitionLevel": operator_write(
        lambda w, s: {"nicheId": s.niche, "name": "L", "priceCents": 1, "maxRecipients": 1}
    ),
    "updateCompetitionLevel": operator_write(lambda w, s: {"id": s.level, "name": _unique("L")}),
    "deleteCompetitionLevel": operator_write(lambda w, s: {"id": s.level}),
    # providers and money
    "createProvider": operator_write(
        lambda w, s: {"name": "P", "email": _unique("p") + "@x.test"}, per_side=False
    ),
    "setProviderStatus": operator_write(lambda w, s: {"id": s.provider, "status": "SUSPENDED"}),
    "topUpBalance": operator_write(
        lambda w, s: {"providerId": s.provider, "amountCents": 100, "reference": _unique("r")}
    ),
    "adjustBalance": operator_write(
        lambda w, s: {"providerId": s.provider, "amountCents": 100, "kind": "ADJUSTMENT"}
    ),
    "subscribeProvider": operator_write(
        lambda w, s: {"providerId": s.provider, "competitionLevelId": w.other(s).level}
    ),
    "pauseSubscription": own_write(lambda w, s: {"id": s.subscription}),
    "resumeSubscription": own_write(lambda w, s: {"id": s.subscription}),
    # buyer controls: a buyer sets its own
    "setProviderTimezone": own_write(lambda w, s: {"providerId": s.provider, "timezone": "America/Chicago"}),
    "setProviderCaps": own_write(
        lambda w, s: {"providerId": s.provider, "caps": [{"period": "DAY", "maxLeads": 1000}]}
    ),
    "setSubscriptionCaps": own_write(
        lambda w, s: {"subscriptionId": s.subscription, "caps": [{"period": "WEEK", "maxSpendCents": 10**9}]}
    ),
    "setSubscriptionSchedule": own_write(lambda w, s: {"subscriptionId": s.subscription, "schedule": None}),
    "setSubscriptionFilters": own_write(lambda w, s: {"subscriptionId": s.subscription, "filters": []}),
    # returns: a buyer asks for its own; operators decide (the first decision wins, later ones CONFLICT)
    "requestReturn": Rule(
        lambda w, s: {"assignmentId": s.assignment, "reason": "INVALID_CONTACT"},
        read_key=FORBIDDEN,
        own=ALLOWED,
        foreign=NOT_FOUND,
        business=frozenset({"CONFLICT"}),
    ),
    "approveReturn": operator_write(lambda w, s: {"id": s.return_}, business=frozenset({"CONFLICT"})),
    "rejectReturn": operator_write(
        lambda w, s: {"id": s.return_, "note": "no"}, business=frozenset({"CONFLICT"})
    ),
    # leads and distribution
    "submitLead": operator_write(lambda w, s: {"nicheId": s.niche, "attributes": {"state": "TX"}}),
    "approveLead": operator_write(lambda w, s: {"id": s.lead}, business=frozenset({"CONFLICT"})),
    "rejectLead": operator_write(
        lambda w, s: {"id": s.lead, "reason": "spam"}, business=frozenset({"CONFLICT"})
    ),
    "distributeLead": operator_write(
        lambda w, s: {"leadId": s.lead}, business=frozenset({"LEAD_NOT_DISTRIBUTABLE"})
    ),
    "retryDistribution": operator_write(lambda w, s: {"runId": s.run}, business=frozenset({"CONFLICT"})),
    "distributeLeads": operator_write(lambda w, s: {"nicheId": s.niche}),
    # subscriptions
    "distributionProgress": Rule(  # exactly one of runId and leadId: each is sent alone
        lambda w, s: {"runId": s.run, "leadId": s.lead},
        read_key=ALLOWED,
        own=FORBIDDEN,
        foreign=FORBIDDEN,
        one_of=True,
    ),
    "nicheActivity": operator_read(lambda w, s: {"nicheId": s.niche}),
    "batchProgress": operator_read(lambda w, s: {"batchId": s.batch}),
    "myAssignments": own_read(lambda w, s: {"providerId": s.provider}),
    # webhooks: a buyer manages its own endpoints and reads its own delivery log (the bodies carry
    # the leads' contact details: not for read-only operators)
    "webhookEndpoints": own_read(lambda w, s: {"providerId": s.provider}),
    "webhookEndpoint": own_read(lambda w, s: {"id": s.webhook_endpoint}),
    "webhookDeliveries": Rule(
        lambda w, s: {"providerId": s.provider, "endpointId": s.webhook_endpoint},
        read_key=FORBIDDEN,
        own=ALLOWED,
        foreign=NOT_FOUND,
    ),
    "webhookDelivery": Rule(
        lambda w, s: {"id": s.webhook_delivery}, read_key=FORBIDDEN, own=ALLOWED, foreign=NOT_FOUND
    ),
    "webhookOverview": Rule(none, read_key=FORBIDDEN, own=ALLOWED, foreign=ALLOWED, per_side=False),
    "createWebhookEndpoint": own_write(
        lambda w, s: {
            "input": {
                "providerId": str(s.provider),
                "url": "https://93.184.215.14/hook",  # public, and created disabled: never sent to
                "events": ["LEAD_ASSIGNED"],
                "enabled": False,
            }
        }
    ),
    "updateWebhookEndpoint": own_write(
        lambda w, s: {"id": s.webhook_endpoint, "input": {"description": _unique("crm")}}
    ),
    "rotateWebhookSecret": own_write(lambda w, s: {"id": s.webhook_endpoint}),
    "deleteWebhookEndpoint": own_write(lambda w, s: {"id": s.victim_endpoints.pop()}),
    "sendTestWebhook": own_write(lambda w, s: {"endpointId": s.webhook_endpoint}),
    "redeliverWebhook": own_write(lambda w, s: {"deliveryId": s.webhook_delivery}),
}

SCHEMA: GraphQLSchema = build_schema(api_settings())._schema  # noqa: SLF001
ROOTS = {
    "query": SCHEMA.query_type,
    "mutation": SCHEMA.mutation_type,
    "subscription": SCHEMA.subscription_type,
}
OPERATIONS = {name: kind for kind, root in ROOTS.items() if root for name in root.fields}


def test_every_operation_has_a_rule() -> None:
    missing = sorted(set(OPERATIONS) - set(RULES))
    stale = sorted(set(RULES) - set(OPERATIONS))
    assert missing == [], f"operations without an access rule (add them to RULES): {missing}"
    assert stale == [], f"rules for operations that no longer exist: {stale}"


def fake_world() -> World:
    """Sides with fresh ids and no rows: what the rules' arguments are checked against."""

    def side(name: str) -> Side:
        values: dict[str, Any] = {"name": name, "provider_email": "", "contact": {}, "user_token": ""}
        values |= {"key_secret": "", "victim_user_email": ""}
        for f in fields(Side):
            if f.name not in values:
                values[f.name] = (
                    [uuid.uuid4() for _ in range(3)] if f.name == "victim_endpoints" else uuid.uuid4()
                )
        values.pop("secrets")
        return Side(**values)

    return World(side("a"), side("b"), uuid.uuid4(), "", "", uuid.uuid4(), {})


def ids_of(side: Side) -> set[str]:
    found: set[str] = set()
    for f in fields(side):
        value = getattr(side, f.name)
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, uuid.UUID):
                found.add(str(item))
    return found


def test_every_id_argument_is_filled() -> None:
    """Each id argument of each operation gets one of the side's ids, different for A and B: the
    matrix tries every one of them with the other side's. Only rules that let a provider through
    must use the side's own ids throughout (an operator rule may cross sides, as subscribeProvider
    does with a level it has no subscription to yet)."""
    world = fake_world()
    own_ids, both_ids = ids_of(world.a), ids_of(world.a) | ids_of(world.b)
    wrong = []
    for name, rule in RULES.items():
        if name not in OPERATIONS:
            continue
        paths = id_paths(field_of(name))
        if not rule.per_side:
            if paths:
                wrong.append(f"{name}: takes ids {paths}, but its rule is asked once without ids")
            continue
        a, b = plain(rule.args(world, world.a)), plain(rule.args(world, world.b))
        allowed_ids = own_ids if ALLOWED in (rule.own, rule.key) else both_ids
        for path in paths:
            if get(a, path) not in allowed_ids:
                wrong.append(f"{name}: {'.'.join(path)} is {get(a, path)!r}, not one of A's ids")
            elif get(a, path) == get(b, path):
                wrong.append(f"{name}: {'.'.join(path)} is the same for A and B")
    assert wrong == [], "\n".join(wrong)


def test_owned_state_covers_every_provider_table() -> None:
    """Derived from the metadata: every table with a provider's id, and what hangs off them."""
    assert {
        "providers",
        "subscriptions",
        "ledger_entries",
        "assignments",
        "api_keys",
        "provider_users",
        "provider_invites",
        "access_tokens",
        "webhook_endpoints",
        "webhook_deliveries",
        "returns",
        "notifications",
    } <= set(OWNED_TABLES)
    assert not {"leads", "niches", "competition_levels", "admin_users"} & set(OWNED_TABLES)


FEW = "(first: 3)"


def selection(graphql_type: GraphQLType, depth: int) -> str:
    """Every field without required arguments, nested `depth` object levels deep: what a curious
    client would ask for (lists a few items long, so the document stays under the query cost limit)."""
    named = get_named_type(graphql_type)
    if not isinstance(named, GraphQLObjectType):
        return ""
    parts = []
    for name, field in named.fields.items():
        if any(is_non_null_type(a.type) and a.default_value is Undefined for a in field.args.values()):
            continue
        if isinstance(get_named_type(field.type), GraphQLObjectType):
            inner = selection(field.type, depth - 1) if depth > 1 else ""
            if inner:
                parts.append(f"{name}{FEW if 'first' in field.args else ''} {inner}")
        else:
            parts.append(name)
    return "{ " + " ".join(parts) + " }" if parts else ""


def document(name: str, variables: dict[str, Any]) -> str:
    kind = OPERATIONS[name]
    field = field_of(name)
    declared = ", ".join(f"${arg}: {field.args[arg].type}" for arg in variables)
    passed = ", ".join(
        [f"{arg}: ${arg}" for arg in variables]
        + (["first: 3"] if "first" in field.args and "first" not in variables else [])
    )
    head = f"{kind}({declared})" if declared else kind
    call = f"{name}({passed})" if passed else name
    return f"{head} {{ {call} {selection(field.type, 5)} }}"


def outcome(body: dict[str, Any], rule: Rule) -> str:
    errors = body.get("errors")
    if not errors:
        return ALLOWED
    code = str(errors[0].get("extensions", {}).get("code"))
    return ALLOWED if code in rule.business else code


# mutations a provider's key calls that write none of its data: a read-only key may call them too
WRITE_NO_DATA = {"logout"}


def field_of(name: str) -> GraphQLField:
    root = ROOTS[OPERATIONS[name]]
    assert root is not None
    field: GraphQLField = root.fields[name]
    return field


@dataclass
class Asker:
    label: str
    credential: str | None
    provider: Side | None  # the side a provider principal belongs to
    is_key: bool = False
    read_only: bool = False  # a provider key with `provider:read` alone


@dataclass(frozen=True)
class Variant:
    """One call's arguments; `foreign`: the id paths filled from the other side than the asker's."""

    label: str
    args: dict[str, Any]
    foreign: frozenset[Path]


def variants(name: str, rule: Rule, world: World, asker: Asker) -> list[Variant]:
    """The asker's side's ids, then the other side's; where an operation takes several ids, each
    also alone (the others left out when they may be) and, for a provider principal, each of the
    other side's among its own side's others (A's provider with B's endpoint)."""
    if not rule.per_side:
        return [Variant("no ids", plain(rule.args(world, world.a)), frozenset())]
    field = field_of(name)
    paths = id_paths(field)
    home = asker.provider or world.a
    away = world.other(home)
    own, other = plain(rule.args(world, home)), plain(rule.args(world, away))
    out: list[Variant] = []
    for side, args in ((home, own), (away, other)):
        foreign = frozenset(paths) if asker.provider is not None and side is away else frozenset()
        tag = f"{side.name.upper()}'s"
        if not rule.one_of:
            out.append(Variant(f"{tag} ids", args, foreign))
        if len(paths) < 2:
            continue
        for path in paths:
            alone = without(args, [p for p in paths if p != path and optional(field, p)])
            if rule.one_of or alone != args:
                out.append(Variant(f"{tag} {'.'.join(path)} alone", alone, foreign & {path}))
    if asker.provider is not None and len(paths) > 1 and not rule.one_of:
        for path in paths:
            mixed = with_value(own, path, get(other, path))
            label = f"{home.name.upper()}'s ids with {away.name.upper()}'s {'.'.join(path)}"
            out.append(Variant(label, mixed, frozenset({path})))
    return out


def writes_provider_data(name: str, rule: Rule) -> bool:
    """A mutation a provider's full key may call on its own ids: one that writes its data."""
    return OPERATIONS[name] == "mutation" and name not in WRITE_NO_DATA and (rule.key or rule.own) == ALLOWED


def expected(name: str, rule: Rule, asker: Asker, variant: Variant) -> str:
    if asker.credential is None:
        return rule.anon
    if asker.provider is None:
        return rule.admin if asker.label == "admin" else rule.read_key
    if asker.is_key and rule.key is not None:
        return rule.key
    if asker.read_only and writes_provider_data(name, rule):
        return FORBIDDEN  # `provider:write` missing: refused before any id is looked at
    return rule.foreign if variant.foreign else rule.own


async def ask(
    api: Api, live: InProcess, name: str, variables: dict[str, Any], credential: str | None
) -> dict[str, Any]:
    query = document(name, variables)
    if OPERATIONS[name] != "subscription":
        return await api.gql(query, variables, token=credential or "")
    stream = await live.subscribe(query, variables, credential)
    try:
        result = await asyncio.wait_for(anext(stream), 1.0)
    except TimeoutError:
        return {"data": None}  # open and waiting for events: it was let through
    finally:
        await stream.aclose()  # type: ignore[attr-defined]
    body: dict[str, Any] = {"data": result.data}
    if result.errors:
        body["errors"] = [{"message": e.message, "extensions": e.extensions} for e in result.errors]
    return body


class NoWebhookSending(InlineDispatcher):
    """Distributions and notifications at once, as in the other API tests, but no webhook sender:
    it sends every provider's due deliveries, so A's test message would also move B's delivery
    rows. Here a delivery row changes only through the call under test."""

    async def wake_webhooks(self) -> None:
        return None


@pytest.fixture
async def api(db: Database, redis: Redis) -> AsyncIterator[Api]:
    settings = api_settings()
    dispatcher = NoWebhookSending(db, settings, RedisPublisher(redis))
    app = create_app(settings, db=db, redis=redis, dispatcher=dispatcher)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield Api(client)


async def read_only_key(db: Database, side: Side) -> str:
    made = await api_keys.create_api_key(
        db, actor=SYSTEM, name=f"{side.name}-reader", scopes=["provider:read"], provider_id=side.provider
    )
    return made.secret


@pytest.mark.parametrize("name", sorted(RULES))
async def test_access(name: str, api: Api, db: Database, redis: Redis) -> None:
    if name not in OPERATIONS:
        pytest.skip("no such operation (test_every_operation_has_a_rule says so)")
    rule = RULES[name]
    world = await build_world(db, redis)
    askers = [
        Asker("no credential", None, None),
        Asker("read-only admin key", world.read_key, None),
        Asker("A's user", world.a.user_token, world.a),
        Asker("A's key", world.a.key_secret, world.a, is_key=True),
        Asker("A's read-only key", await read_only_key(db, world.a), world.a, is_key=True, read_only=True),
        Asker("B's user", world.b.user_token, world.b),
        Asker("admin", world.admin_token, None),  # last: its mutations may change the sides
    ]
    wrong: list[str] = []
    async with InProcess(db, redis) as live:
        for asker in askers:
            for variant in variants(name, rule, world, asker):
                where = f"{asker.label} on {variant.label}"
                # the admin's writes change the sides; everyone else's are checked
                watched = [] if asker.label == "admin" else [world.a, world.b]
                before = [await owned_state(db, side.provider) for side in watched]
                body = await ask(api, live, name, variant.args, asker.credential)
                got, want = outcome(body, rule), expected(name, rule, asker, variant)
                if got != want:
                    answer = str(body.get("errors") or body.get("data"))[:300]
                    wrong.append(f"{where}: {got}, expected {want}: {answer}")
                if asker.provider is not None and body.get("data"):
                    seen = leaked(body["data"], world.other(asker.provider).secrets)
                    if seen:
                        wrong.append(f"{where}: the other side's data leaked: {seen}")
                for side, then in zip(watched, before, strict=True):
                    # nothing changes on a refusal or a read; a provider never changes the other side
                    may_change = (
                        got == ALLOWED
                        and OPERATIONS[name] == "mutation"
                        and (asker.provider is None or asker.provider is side)
                    )
                    changed = changed_tables(then, await owned_state(db, side.provider))
                    if changed and not may_change:
                        wrong.append(f"{where}: changed {side.name.upper()}'s {changed}")
    assert wrong == [], f"{name}:\n" + "\n".join(wrong)
