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
from app.services import audit, batches, billing, leads, niches, preview, retries, runs
from app.services.audit import SYSTEM, Actor
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
    ]
    for call in foreign:
        with pytest.raises(NotFound):
            await call
    own = await billing.list_providers(db, actor=buyer, first=10, after=None)
    assert [p.id for p in own.items] == [mine.id]
    assert (
        await leads.list_assignments(db, actor=buyer, lead_id=lead.id, provider_id=None, first=10, after=None)
    ).items == []
    assert (
        await billing.get_provider(db, theirs.id, actor=SYSTEM)
    ).balance_cents == 4000  # charged once, nothing else
