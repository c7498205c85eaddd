"""Endpoints: input checks (nothing written on bad input), manual disabling, deletion, and the
principal rules (a provider reaches only its own; a foreign id looks missing)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import asyncpg
import pytest
import sqlalchemy as sa

from app.db import Database
from app.engine.distribute import distribute_lead
from app.errors import Conflict, InvalidInput, NotFound
from app.models.audit import ActorType
from app.models.webhooks import DeliveryStatus, WebhookEvent
from app.services.audit import SYSTEM, Actor
from app.services.webhooks import deliveries, endpoints
from app.services.webhooks.endpoints import MAX_ENDPOINTS_PER_PROVIDER, EndpointChanges
from app.services.webhooks.sender import send_due
from tests.factories import make_lead, make_niche, make_provider, subscribe
from tests.factories.webhooks import SETTINGS, make_endpoint
from tests.receiver import Receiver
from tests.services.webhooks.test_deliveries import Woken


def buyer(provider_id: uuid.UUID) -> Actor:
    return Actor(ActorType.USER, uuid.uuid4(), scopes=frozenset({"read"}), provider_id=provider_id)


async def count(db: Database, table: str) -> int:
    async with db.engine.connect() as conn:
        return int((await conn.execute(sa.text(f"SELECT count(*) FROM {table}"))).scalar_one())


async def enqueue(db: Database, provider_id: uuid.UUID, **data: Any) -> None:
    async with db.begin() as session:
        await deliveries.enqueue_event(
            session, provider_id=provider_id, event_type=WebhookEvent.LEAD_ASSIGNED, data=data
        )


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"events": []}, "events"),
        ({"events": ["lead.sold"]}, "events"),
        ({"url": "ftp://x.test/"}, "url"),
        ({"url": "http://10.0.0.1/hook"}, "url"),
        ({"description": "x" * 501}, "description"),
        ({"description": "bad\x00"}, "description"),
    ],
)
async def test_bad_input_is_refused_and_nothing_is_written(
    db: Database, kwargs: dict[str, Any], field: str
) -> None:
    provider = await make_provider(db)
    args: dict[str, Any] = {"url": "http://127.0.0.1:9/hook", "events": ["lead.assigned"]} | kwargs
    settings = (
        SETTINGS
        if "10.0.0.1" not in args["url"]
        else SETTINGS.model_copy(update={"webhook_allow_private_networks": False})
    )
    with pytest.raises(InvalidInput) as refused:
        await endpoints.create_endpoint(db, actor=SYSTEM, provider_id=provider.id, settings=settings, **args)
    assert refused.value.field == field
    assert await count(db, "webhook_endpoints") == 0


async def test_a_missing_provider_and_too_many_endpoints(db: Database) -> None:
    with pytest.raises(NotFound):
        await endpoints.create_endpoint(
            db,
            actor=SYSTEM,
            provider_id=uuid.uuid4(),
            url="http://127.0.0.1:9/",
            events=["lead.assigned"],
            settings=SETTINGS,
        )
    provider = await make_provider(db)
    for _ in range(MAX_ENDPOINTS_PER_PROVIDER):
        await make_endpoint(db, provider, "http://127.0.0.1:9/")
    with pytest.raises(Conflict):
        await make_endpoint(db, provider, "http://127.0.0.1:9/")


async def test_updates_and_manual_disabling(db: Database, receiver: Receiver) -> None:
    provider = await make_provider(db)
    created = await make_endpoint(db, provider, "http://127.0.0.1:9/old")
    receiver.secrets.append(created.secret)
    woken = Woken()
    changed = await endpoints.update_endpoint(
        db,
        actor=SYSTEM,
        endpoint_id=created.endpoint.id,
        changes=EndpointChanges(
            url=receiver.url, description=" CRM ", events=["return.decided", "lead.assigned"]
        ),
        settings=SETTINGS,
        dispatcher=woken,
    )
    assert (changed.url, changed.description, changed.events) == (
        receiver.url,
        "CRM",
        ["return.decided", "lead.assigned"],
    )
    await enqueue(db, provider.id, n=1)
    disabled = await endpoints.update_endpoint(
        db,
        actor=SYSTEM,
        endpoint_id=changed.id,
        changes=EndpointChanges(enabled=False),
        settings=SETTINGS,
        dispatcher=woken,
    )
    assert (disabled.enabled, disabled.disabled_reason) == (False, "MANUAL")
    await enqueue(db, provider.id, n=2)  # disabled by a person: new events are not queued
    assert await send_due(db, SETTINGS) == 0  # and what waited is held
    await endpoints.update_endpoint(
        db,
        actor=SYSTEM,
        endpoint_id=changed.id,
        changes=EndpointChanges(enabled=True),
        settings=SETTINGS,
        dispatcher=woken,
    )
    assert woken.wakes == 1
    assert await send_due(db, SETTINGS) == 1
    assert [r.payload["data"] for r in receiver.received] == [{"n": 1}]


async def test_deleting_fails_what_waits_and_keeps_the_log(db: Database) -> None:
    provider = await make_provider(db)
    created = await make_endpoint(db, provider, "http://127.0.0.1:9/", enabled=False)
    await endpoints.update_endpoint(
        db,
        actor=SYSTEM,
        endpoint_id=created.endpoint.id,
        changes=EndpointChanges(enabled=True),
        settings=SETTINGS,
        dispatcher=Woken(),
    )
    await enqueue(db, provider.id)
    await endpoints.delete_endpoint(db, actor=SYSTEM, endpoint_id=created.endpoint.id)
    with pytest.raises(NotFound):
        await endpoints.get_endpoint(db, actor=SYSTEM, endpoint_id=created.endpoint.id)
    page = await deliveries.list_deliveries(
        db,
        actor=SYSTEM,
        where=deliveries.DeliveryFilter(endpoint_id=created.endpoint.id),
        first=10,
        after=None,
    )
    assert [(d.status, d.last_error) for d in page.items] == [(DeliveryStatus.FAILED, "endpoint deleted")]
    with pytest.raises(Conflict, match="deleted"):
        await deliveries.redeliver(db, actor=SYSTEM, delivery_id=page.items[0].id, dispatcher=Woken())


async def test_a_delete_waits_for_a_distribution_in_flight_and_fails_its_deliveries(
    db: Database, database_url: str
) -> None:
    """The engine holds the provider's row lock from its pick to its commit, which writes the
    deliveries: a delete waits for it, then finds those deliveries and fails them, so none is left
    waiting for an endpoint that is gone."""
    provider = await make_provider(db)
    created = await make_endpoint(db, provider, "http://127.0.0.1:9/")
    engine = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        tx = engine.transaction()
        await tx.start()
        await engine.execute("SELECT 1 FROM providers WHERE id = $1 FOR NO KEY UPDATE", provider.id)
        deleting = asyncio.create_task(
            endpoints.delete_endpoint(db, actor=SYSTEM, endpoint_id=created.endpoint.id)
        )
        await asyncio.sleep(0.3)
        assert not deleting.done()  # waiting for the provider's lock
        await engine.execute(  # the delivery the engine's write statement inserts
            """INSERT INTO webhook_deliveries (endpoint_id, provider_id, event_type, subject_id, payload,
                                               status, next_attempt_at)
               VALUES ($1, $2, 'lead.assigned', gen_random_uuid(), '{}', 'PENDING', now())""",
            created.endpoint.id,
            provider.id,
        )
        await tx.commit()
        await asyncio.wait_for(deleting, 10)
    finally:
        await engine.close()
    async with db.engine.connect() as conn:
        statuses = (
            (
                await conn.execute(
                    sa.text("SELECT status FROM webhook_deliveries WHERE endpoint_id = :e"),
                    {"e": created.endpoint.id},
                )
            )
            .scalars()
            .all()
        )
    assert statuses == [DeliveryStatus.FAILED]


async def test_a_provider_reaches_only_its_own(db: Database) -> None:
    mine, theirs = await make_provider(db), await make_provider(db)
    me = buyer(mine.id)
    own = await endpoints.create_endpoint(
        db, actor=me, provider_id=None, url="http://127.0.0.1:9/", events=["lead.assigned"], settings=SETTINGS
    )
    assert own.endpoint.provider_id == mine.id
    foreign = await make_endpoint(db, theirs, "http://127.0.0.1:9/")
    await enqueue(db, mine.id)
    await enqueue(db, theirs.id)
    foreign_delivery = (
        await deliveries.list_deliveries(
            db, actor=SYSTEM, where=deliveries.DeliveryFilter(provider_id=theirs.id), first=10, after=None
        )
    ).items[0]

    with pytest.raises(NotFound):
        await endpoints.create_endpoint(
            db,
            actor=me,
            provider_id=theirs.id,
            url="http://127.0.0.1:9/",
            events=["lead.assigned"],
            settings=SETTINGS,
        )
    missing = uuid.uuid4()
    for endpoint_id in (foreign.endpoint.id, missing):
        with pytest.raises(NotFound) as found:
            await endpoints.get_endpoint(db, actor=me, endpoint_id=endpoint_id)
        assert str(found.value) == f"webhook endpoint {endpoint_id} does not exist"
        with pytest.raises(NotFound):
            await endpoints.update_endpoint(
                db,
                actor=me,
                endpoint_id=endpoint_id,
                changes=EndpointChanges(description="x"),
                settings=SETTINGS,
                dispatcher=Woken(),
            )
        with pytest.raises(NotFound):
            await endpoints.rotate_secret(
                db, actor=me, endpoint_id=endpoint_id, overlap_hours=1, settings=SETTINGS
            )
        with pytest.raises(NotFound):
            await endpoints.delete_endpoint(db, actor=me, endpoint_id=endpoint_id)
        with pytest.raises(NotFound):
            await deliveries.send_test(db, actor=me, endpoint_id=endpoint_id, dispatcher=Woken())
        with pytest.raises(NotFound):
            await deliveries.list_deliveries(
                db, actor=me, where=deliveries.DeliveryFilter(endpoint_id=endpoint_id), first=10, after=None
            )
    for delivery_id in (foreign_delivery.id, missing):
        with pytest.raises(NotFound):
            await deliveries.get_delivery(db, actor=me, delivery_id=delivery_id)
        with pytest.raises(NotFound):
            await deliveries.redeliver(db, actor=me, delivery_id=delivery_id, dispatcher=Woken())
    with pytest.raises(NotFound):
        await deliveries.list_deliveries(
            db, actor=me, where=deliveries.DeliveryFilter(provider_id=theirs.id), first=10, after=None
        )

    assert [e.id for e in await endpoints.list_endpoints(db, actor=me, provider_id=None)] == [own.endpoint.id]
    page = await deliveries.list_deliveries(
        db, actor=me, where=deliveries.DeliveryFilter(), first=10, after=None
    )
    assert {d.provider_id for d in page.items} == {mine.id}
    overview = await deliveries.overview(db, actor=me)
    assert overview.pending == 1
    assert (await deliveries.overview(db, actor=SYSTEM)).pending == 2


async def test_an_endpoint_deleted_while_a_distribution_waits_for_its_buyer_gets_nothing(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine plans, then its write waits for the buyer's row lock, which the deletion holds;
    the deletion commits. The write's view of the endpoints predates it, but the buyer's revision
    moved: it writes nothing and plans again, and the endpoint gets no new event."""
    niche, (level,) = await make_niche(db, levels=[(100, 1)])
    buyer = await make_provider(db, balance_cents=10_000)
    await subscribe(db, buyer, level)
    created = await make_endpoint(db, buyer, "http://127.0.0.1:9/hook")
    endpoint_id = created.endpoint.id
    lead = await make_lead(db, niche)
    locked, release = asyncio.Event(), asyncio.Event()
    lock_endpoint = endpoints._lock_endpoint  # noqa: SLF001

    async def held(*args: Any) -> Any:  # the deletion, paused with the buyer's lock held
        found = await lock_endpoint(*args)
        locked.set()
        await release.wait()
        return found

    monkeypatch.setattr(endpoints, "_lock_endpoint", held)
    deleting = asyncio.create_task(endpoints.delete_endpoint(db, actor=SYSTEM, endpoint_id=endpoint_id))
    await asyncio.wait_for(locked.wait(), 10)
    engine = asyncio.create_task(distribute_lead(db, lead_id=lead.id))
    await asyncio.sleep(0.5)  # the engine has planned, and its write waits for the buyer's lock
    assert not engine.done()
    release.set()
    await asyncio.wait_for(deleting, 10)
    result = await asyncio.wait_for(engine, 10)
    assert [a.provider_id for a in result.assigned] == [buyer.id]
    assert result.webhooks_due == 0
    assert await count(db, "webhook_deliveries") == 0
