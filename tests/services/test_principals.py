"""The principal rules every service applies (app/services/principals.py)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable

import pytest
import sqlalchemy as sa

from app.db import Database
from app.engine.distribute import distribute_lead
from app.errors import Forbidden, NotFound
from app.models.audit import ActorType
from app.models.billing import LedgerKind, Provider, ProviderStatus
from app.progress.publish import NullPublisher
from app.services import api_keys, audit, batches, billing, leads, niches, preview, retries, runs, stats
from app.services.audit import SYSTEM, Actor
from app.services.pages import PageKey
from app.services.principals import check_own, own_provider_id, require_operator, scope_to_own
from app.settings import Settings
from app.tasks.dispatch import InlineDispatcher
from tests.factories import make_lead, make_niche, make_provider, subscribe

A, B = uuid.uuid4(), uuid.uuid4()
BUYER = Actor(ActorType.USER, uuid.uuid4(), scopes=frozenset({"provider:read"}), provider_id=A)


def test_an_operator_reaches_what_it_asks_for() -> None:
    assert own_provider_id(SYSTEM, None) is None
    assert own_provider_id(SYSTEM, B) == B
    check_own(SYSTEM, B, "provider", B)
    require_operator(SYSTEM, "creating a niche")


def test_a_provider_reaches_only_its_own_and_a_foreign_id_looks_missing() -> None:
    assert own_provider_id(BUYER, None) == A
    assert own_provider_id(BUYER, A) == A
    with pytest.raises(NotFound):
        own_provider_id(BUYER, B)
    check_own(BUYER, A, "provider", A)
    with pytest.raises(NotFound) as missing:
        check_own(BUYER, B, "provider", B)
    assert str(missing.value) == f"provider {B} does not exist"
    with pytest.raises(Forbidden):
        require_operator(BUYER, "creating a niche")


def test_scoped_statements_filter_in_sql() -> None:
    stmt = sa.select(Provider.__table__)  # type: ignore[attr-defined]
    assert scope_to_own(stmt, Provider.__table__.c.id, SYSTEM) is stmt  # type: ignore[attr-defined]
    scoped = scope_to_own(stmt, Provider.__table__.c.id, BUYER)  # type: ignore[attr-defined]
    assert "WHERE providers.id = " in str(scoped)


async def test_the_services_refuse_a_provider_principal_what_is_not_its_own(db: Database) -> None:
    """In the services themselves (not only the resolvers' permission classes): an operator's
    operation is FORBIDDEN, another provider's row NOT_FOUND, and nothing is written."""
    niche, (level,) = await make_niche(db, levels=[(1000, 1)])
    mine, theirs = await make_provider(db, balance_cents=5000), await make_provider(db, balance_cents=5000)
    their_subscription = await subscribe(db, theirs, level)
    lead = await make_lead(db, niche)
    result = await distribute_lead(db, lead_id=lead.id)
    buyer = Actor(
        ActorType.USER,
        uuid.uuid4(),
        scopes=frozenset({"provider:read", "provider:write"}),
        provider_id=mine.id,
    )
    dispatcher = InlineDispatcher(db, Settings(_env_file=None), NullPublisher())  # type: ignore[call-arg]
    operator_only: list[Awaitable[object]] = [
        niches.create_niche(db, actor=buyer, name="N"),
        niches.update_level(db, actor=buyer, level_id=level.id, price_cents=1),
        niches.get_niche(db, niche.id, actor=buyer),
        niches.list_niches(db, actor=buyer),
        billing.create_provider(db, actor=buyer, name="P", email="p@x.test"),
        billing.top_up(db, actor=buyer, provider_id=mine.id, amount_cents=1, reference="r"),
        billing.adjust_balance(
            db, actor=buyer, provider_id=mine.id, amount_cents=1, kind=LedgerKind.ADJUSTMENT
        ),
        billing.subscribe(db, actor=buyer, provider_id=mine.id, competition_level_id=level.id),
        billing.set_provider_status(db, actor=buyer, provider_id=mine.id, status=ProviderStatus.SUSPENDED),
        leads.submit_lead(db, actor=buyer, niche_id=niche.id, attributes={}),
        leads.approve_lead(db, actor=buyer, lead_id=lead.id),
        leads.reject_lead(db, actor=buyer, lead_id=lead.id, reason="r"),
        leads.list_leads(db, actor=buyer, niche_id=None, status=None, first=10, after=None),
        runs.request_distribution(
            db, actor=buyer, lead_id=lead.id, idempotency_key=None, dispatcher=dispatcher
        ),
        runs.get_run(db, result.run_id, actor=buyer),
        runs.run_snapshot(db, result.run_id, actor=buyer),
        retries.retry_distribution(db, actor=buyer, run_id=result.run_id, dispatcher=dispatcher),
        retries.dead_letters(db, actor=buyer),
        batches.request_batch(db, actor=buyer, niche_id=None, status=None, limit=1, dispatcher=dispatcher),
        audit.list_audit(db, actor=buyer, where=audit.AuditFilter(), first=10, after=None),
        preview.preview_distribution(db, actor=buyer, lead_id=lead.id),
    ]
    for call in operator_only:
        with pytest.raises(Forbidden):
            await call
    foreign: list[Awaitable[object]] = [
        billing.get_provider(db, theirs.id, actor=buyer),
        billing.list_ledger(db, actor=buyer, provider_id=theirs.id, first=10, after=None),
        billing.pause_subscription(db, actor=buyer, subscription_id=their_subscription.id),
        leads.get_lead(db, lead.id, actor=buyer),  # assigned to the other provider
        leads.list_assignments(db, actor=buyer, lead_id=None, provider_id=theirs.id, first=10, after=None),
        leads.recent_assignments(db, actor=buyer, provider_id=theirs.id, limit=5),
        # a lead assigned to the other provider only: absent, as a lead that does not exist
        leads.list_assignments(db, actor=buyer, lead_id=lead.id, provider_id=None, first=10, after=None),
    ]
    for call in foreign:
        with pytest.raises(NotFound):
            await call
    own = await billing.list_providers(db, actor=buyer, first=10, after=None)
    assert [p.id for p in own.items] == [mine.id]
    assert (
        await billing.get_provider(db, theirs.id, actor=SYSTEM)
    ).balance_cents == 4000  # charged once, nothing else


OPERATOR_KEY = Actor(ActorType.API_KEY, uuid.uuid4(), scopes=frozenset({"admin", "read"}))


async def test_statistics_and_the_export_are_for_operators(db: Database) -> None:
    """They span every provider: a provider principal is refused in the service itself (FORBIDDEN,
    at the call, before any row is read), an operator, person or key, gets them."""
    niche, (level,) = await make_niche(db, levels=[(1000, 1)])
    provider = await make_provider(db, balance_cents=5000)
    await subscribe(db, provider, level)
    await distribute_lead(db, lead_id=(await make_lead(db, niche)).id)
    buyer = Actor(ActorType.USER, uuid.uuid4(), scopes=frozenset({"provider:read"}), provider_id=provider.id)
    with pytest.raises(Forbidden, match="operators"):
        await stats.distribution_stats(db, actor=buyer, niche_id=niche.id, since=None, until=None)
    with pytest.raises(Forbidden, match="operators"):
        stats.assignments_csv(db, actor=buyer, since=None, until=None, niche_id=niche.id)
    for operator in (SYSTEM, OPERATOR_KEY):
        (found,) = await stats.distribution_stats(
            db, actor=operator, niche_id=niche.id, since=None, until=None
        )
        assert (found.assignments, found.revenue_cents) == (1, 1000)
        lines = [chunk async for chunk in stats.assignments_csv(db, actor=operator, since=None, until=None)]
        assert "".join(lines).count("\n") == 2  # the header and the one assignment


async def _keys(db: Database) -> int:
    async with db.engine.connect() as conn:
        return int((await conn.execute(sa.text("SELECT count(*) FROM api_keys"))).scalar_one())


async def test_a_key_cannot_make_or_revoke_a_key_not_even_an_operators(db: Database) -> None:
    """In the service, not only in the resolver's permission class: an operator's API key (admin
    scope) is FORBIDDEN to make a key, and to revoke one, and nothing is written."""
    made = await api_keys.create_api_key(db, actor=SYSTEM, name="ops", scopes=["admin"])
    with pytest.raises(Forbidden, match="a key cannot"):
        await api_keys.create_api_key(db, actor=OPERATOR_KEY, name="minted", scopes=["admin"])
    with pytest.raises(Forbidden, match="a key cannot"):
        await api_keys.revoke_api_key(db, actor=OPERATOR_KEY, key_id=made.key.id)
    assert await _keys(db) == 1
    async with db.engine.connect() as conn:
        revoked = await conn.scalar(
            sa.text("SELECT revoked_at FROM api_keys WHERE id = :id"), {"id": made.key.id}
        )
    assert revoked is None
    person = Actor(ActorType.USER, uuid.uuid4(), scopes=frozenset({"admin"}))
    await api_keys.create_api_key(db, actor=person, name="by a person", scopes=["read"])
    assert await _keys(db) == 2


async def test_a_leads_assignments_a_provider_did_not_get_are_not_found(db: Database) -> None:
    """SPEC §10: for a provider principal, a lead none of whose assignments is its own answers
    NOT_FOUND with the same message as a lead that does not exist (no existence leak); its own lead
    lists its assignment, also past the end of its pages. An operator lists a lead's assignments,
    none for a lead without any and for one that does not exist."""
    niche, (level,) = await make_niche(db, levels=[(1000, 2)])
    mine, theirs = await make_provider(db, balance_cents=5000), await make_provider(db, balance_cents=5000)
    await subscribe(db, theirs, level)
    theirs_only = await make_lead(db, niche)
    await distribute_lead(db, lead_id=theirs_only.id)
    await subscribe(db, mine, level)
    shared = await make_lead(db, niche)
    await distribute_lead(db, lead_id=shared.id)
    unassigned, missing = await make_lead(db, niche), uuid.uuid4()
    buyer = Actor(ActorType.USER, uuid.uuid4(), scopes=frozenset({"provider:read"}), provider_id=mine.id)

    async def listed(actor: Actor, lead_id: uuid.UUID, after: PageKey | None = None) -> list[uuid.UUID]:
        page = await leads.list_assignments(
            db, actor=actor, lead_id=lead_id, provider_id=None, first=10, after=after
        )
        return [a.provider_id for a in page.items]

    messages = []
    for lead_id in (theirs_only.id, unassigned.id, missing):
        with pytest.raises(NotFound) as absent:
            await listed(buyer, lead_id)
        messages.append(str(absent.value).replace(str(lead_id), "<id>"))
    assert messages == ["lead <id> does not exist"] * 3
    assert await listed(buyer, shared.id) == [mine.id]
    (own,) = (
        await leads.list_assignments(
            db, actor=buyer, lead_id=shared.id, provider_id=None, first=1, after=None
        )
    ).items
    assert await listed(buyer, shared.id, after=PageKey(own.created_at, own.id)) == []  # past the end
    with pytest.raises(NotFound):  # a cursor does not open a foreign lead either
        await listed(buyer, theirs_only.id, after=PageKey(own.created_at, uuid.UUID(int=2**128 - 1)))
    assert sorted(map(str, await listed(SYSTEM, shared.id))) == sorted([str(mine.id), str(theirs.id)])
    assert await listed(SYSTEM, theirs_only.id) == [theirs.id]
    assert await listed(SYSTEM, unassigned.id) == []
    assert await listed(SYSTEM, missing) == []
