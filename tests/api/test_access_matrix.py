"""The access matrix, generated from the schema: every query, mutation and subscription, asked by
an admin, A's provider user, A's provider key, B's provider user, a read-only admin key and no
credential, with A's ids and then B's ids in its arguments. The answer codes must be the rule's;
a provider principal's answers never hold the other side's data (ids, emails, contact details),
and its calls with the other side's ids change nothing of that side. An operation without a rule
fails `test_every_operation_has_a_rule`: adding an operation means adding its line to RULES."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa
from graphql import GraphQLObjectType, GraphQLSchema, GraphQLType, get_named_type, is_non_null_type
from graphql.pyutils import Undefined
from redis.asyncio import Redis

from app.db import Database
from app.resolvers.schema import build_schema
from tests.api.conftest import Api, api_settings
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
    "leads": operator_read(none, per_side=False),
    "assignments": own_read(lambda w, s: {"leadId": s.lead, "providerId": s.provider}),
    "distributionStatus": operator_read(lambda w, s: {"leadId": s.lead}),
    "distributionRun": operator_read(lambda w, s: {"id": s.run}),
    "deadLetters": operator_read(none, per_side=False),
    "niches": operator_read(none, per_side=False),
    "niche": operator_read(lambda w, s: {"id": s.niche}),
    "providers": own_read(none, per_side=False),
    "provider": own_read(lambda w, s: {"id": s.provider}),
    "providerUsers": operator_read(lambda w, s: {"providerId": s.provider}),
    "auditLog": operator_read(lambda w, s: {"entityId": s.lead}),
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
    "distributionProgress": operator_read(lambda w, s: {"runId": s.run}),
    "nicheActivity": operator_read(lambda w, s: {"nicheId": s.niche}),
    "batchProgress": operator_read(lambda w, s: {"batchId": s.batch}),
    "myAssignments": own_read(lambda w, s: {"providerId": s.provider}),
    # webhooks: a buyer manages its own endpoints and reads its own delivery log (the bodies carry
    # the leads' contact details: not for read-only operators)
    "webhookEndpoints": own_read(lambda w, s: {"providerId": s.provider}),
    "webhookEndpoint": own_read(lambda w, s: {"id": s.webhook_endpoint}),
    "webhookDeliveries": Rule(
        lambda w, s: {"providerId": s.provider}, read_key=FORBIDDEN, own=ALLOWED, foreign=NOT_FOUND
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
    root = ROOTS[kind]
    assert root is not None
    field = root.fields[name]
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


OWNED_STATE = sa.text("""
SELECT (SELECT row_to_json(p)::text FROM providers p WHERE p.id = :p),
       (SELECT string_agg(row_to_json(s)::text, ',' ORDER BY s.id) FROM subscriptions s
        WHERE s.provider_id = :p),
       (SELECT string_agg(row_to_json(l)::text, ',' ORDER BY l.id) FROM ledger_entries l
        WHERE l.provider_id = :p),
       (SELECT string_agg(k.id || ':' || coalesce(k.revoked_at::text, ''), ',' ORDER BY k.id)
        FROM api_keys k WHERE k.provider_id = :p),
       (SELECT string_agg(u.id || ':' || coalesce(u.disabled_at::text, '') || u.email, ',' ORDER BY u.id)
        FROM provider_users u WHERE u.provider_id = :p),
       (SELECT count(*) FROM assignments a WHERE a.provider_id = :p),
       (SELECT count(*) FROM provider_invites i JOIN provider_users u ON u.id = i.provider_user_id
        WHERE u.provider_id = :p)
""")


async def owned_state(db: Database, provider_id: uuid.UUID) -> tuple[Any, ...]:
    async with db.engine.connect() as conn:
        return tuple((await conn.execute(OWNED_STATE, {"p": provider_id})).one())


@dataclass
class Asker:
    label: str
    credential: str | None
    provider: Side | None  # the side a provider principal belongs to
    is_key: bool = False


def expected(rule: Rule, asker: Asker, side: Side | None, world: World) -> str:
    if asker.credential is None:
        return rule.anon
    if asker.provider is None:
        return rule.admin if asker.label == "admin" else rule.read_key
    if asker.is_key and rule.key is not None:
        return rule.key
    own = side is None or side is asker.provider
    return rule.own if own else rule.foreign


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
        Asker("B's user", world.b.user_token, world.b),
        Asker("admin", world.admin_token, None),  # last: its mutations may change the sides
    ]
    sides: list[Side | None] = [world.a, world.b] if rule.per_side else [None]
    wrong: list[str] = []
    async with InProcess(db, redis) as live:
        for side in sides:
            for asker in askers:
                variables = {
                    k: str(v) if isinstance(v, uuid.UUID) else v
                    for k, v in rule.args(world, side or world.a).items()
                }
                foreign = asker.provider is not None and side is not None and side is not asker.provider
                before = await owned_state(db, side.provider) if foreign and side else None
                body = await ask(api, live, name, variables, asker.credential)
                got, want = outcome(body, rule), expected(rule, asker, side, world)
                whose = f"{side.name.upper()}'s" if side else "no"
                where = f"{asker.label} on {whose} ids"
                if got != want:
                    wrong.append(f"{where}: {got}, expected {want}: {body.get('errors') or body.get('data')}")
                if asker.provider is not None and body.get("data"):
                    seen = leaked(body["data"], world.other(asker.provider).secrets)
                    if seen:
                        wrong.append(f"{where}: the other side's data leaked: {seen}")
                if before is not None and side is not None and await owned_state(db, side.provider) != before:
                    wrong.append(f"{where}: changed the other side's data")
    assert wrong == [], f"{name}:\n" + "\n".join(wrong)
