"""Two buyers, A and B, side by side, and the principals that look at them: an admin, A's user,
A's API key, B's user, a read-only admin key. Each side owns a niche of its own with a lead
assigned to it alone; a third lead is assigned to both. `Side.secrets` is what the other side
must never read."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis
from starlette.requests import Request

from app.db import Database
from app.engine.distribute import distribute_lead
from app.models.returns import ReturnReason
from app.progress.hub import ProgressHub
from app.progress.publish import RedisPublisher
from app.resolvers.context import Context
from app.services import api_keys, auth, batches, returns
from app.services.audit import SYSTEM
from app.services.webhooks import deliveries
from app.tasks.dispatch import InlineDispatcher
from tests.api.conftest import PASSWORD, api_settings
from tests.factories import make_lead, make_niche, make_provider, subscribe
from tests.factories.accounts import access_token, make_provider_user
from tests.factories.webhooks import make_endpoint

PROVIDER_KEY_SCOPES = ["provider:read", "provider:write"]


@dataclass
class Side:
    name: str
    provider: uuid.UUID
    provider_email: str
    niche: uuid.UUID
    level: uuid.UUID
    subscription: uuid.UUID
    shared_subscription: uuid.UUID
    lead: uuid.UUID  # assigned to this side alone
    contact: dict[str, str]
    assignment: uuid.UUID
    shared_assignment: uuid.UUID  # of the lead assigned to both
    run: uuid.UUID
    batch: uuid.UUID
    user: uuid.UUID
    user_token: str
    key: uuid.UUID
    key_secret: str
    victim_key: uuid.UUID  # a key of this side that no test signs in with
    victim_user: uuid.UUID  # a user of this side that no test signs in as
    victim_user_email: str
    return_: uuid.UUID = uuid.UUID(int=0)  # a requested return of its shared assignment
    webhook_endpoint: uuid.UUID = uuid.UUID(int=0)  # subscribed to lead.assigned (a closed local port)
    webhook_delivery: uuid.UUID = uuid.UUID(int=0)  # of its assignment, to that endpoint
    victim_endpoints: list[uuid.UUID] = field(default_factory=list)  # one per deleteWebhookEndpoint call
    secrets: list[str] = field(default_factory=list)


@dataclass
class World:
    a: Side
    b: Side
    admin_id: uuid.UUID
    admin_token: str
    read_key: str
    shared_lead: uuid.UUID
    shared_contact: dict[str, str]

    def other(self, side: Side) -> Side:
        return self.b if side is self.a else self.a


async def build_world(db: Database, redis: Redis) -> World:
    admin = await auth.create_admin(db, email="ops@example.test", password=PASSWORD, settings=api_settings())
    admin_token = await access_token(db, admin_id=admin.admin.id)
    read_key = (await auth.create_api_key(db, actor=SYSTEM, name="reader", scopes=["read"])).secret
    shared_niche, (shared_level,) = await make_niche(db, levels=[(500, 2)])
    sides: list[Side] = []
    dispatcher = InlineDispatcher(db, api_settings(), RedisPublisher(redis))
    for name in ("a", "b"):
        niche, (level,) = await make_niche(db, levels=[(1000, 1)])
        provider = await make_provider(
            db, balance_cents=100_000, name=f"Buyer {name.upper()} {uuid.uuid4().hex[:6]}"
        )
        subscription = await subscribe(db, provider, level)
        shared_subscription = await subscribe(db, provider, shared_level)
        # webhooks to a closed local port: refused at once by the API's address guard if ever sent
        endpoint = await make_endpoint(db, provider, "http://127.0.0.1:9/hook")
        victims = [
            (await make_endpoint(db, provider, "http://127.0.0.1:9/victim", enabled=False)).endpoint.id
            for _ in range(8)
        ]
        contact = {"name": f"Pat {name}-{uuid.uuid4().hex[:6]}", "email": f"pat-{name}@lead-{name}.test"}
        lead = await make_lead(db, niche, {**contact, "state": "TX"})
        result = await distribute_lead(db, lead_id=lead.id)
        (assigned,) = result.assigned
        (delivery,) = (
            await deliveries.list_deliveries(
                db,
                actor=SYSTEM,
                where=deliveries.DeliveryFilter(provider_id=provider.id),
                first=1,
                after=None,
            )
        ).items
        user = await make_provider_user(db, provider.id)
        key = await api_keys.create_api_key(
            db, actor=SYSTEM, name=f"{name}-feed", scopes=PROVIDER_KEY_SCOPES, provider_id=provider.id
        )
        victim_key = await api_keys.create_api_key(
            db, actor=SYSTEM, name=f"{name}-other", scopes=["provider:read"], provider_id=provider.id
        )
        victim_user = await make_provider_user(db, provider.id)
        batch, _ = await batches.request_batch(
            db, actor=SYSTEM, niche_id=niche.id, status=None, limit=10, dispatcher=dispatcher
        )
        sides.append(
            Side(
                name=name,
                provider=provider.id,
                provider_email=provider.email,
                niche=niche.id,
                level=level.id,
                subscription=subscription.id,
                shared_subscription=shared_subscription.id,
                lead=lead.id,
                contact=contact,
                assignment=assigned.assignment_id,
                shared_assignment=uuid.UUID(int=0),
                run=result.run_id,
                batch=batch.id,
                user=user.id,
                user_token=await access_token(db, provider_user_id=user.id),
                key=key.key.id,
                key_secret=key.secret,
                victim_key=victim_key.key.id,
                victim_user=victim_user.id,
                victim_user_email=victim_user.email,
                webhook_endpoint=endpoint.endpoint.id,
                webhook_delivery=delivery.id,
                victim_endpoints=victims,
            )
        )
    shared_contact = {"name": "Sam Both", "phone": "+1 555 0100"}
    shared_lead = await make_lead(db, shared_niche, {**shared_contact, "state": "OK"})
    shared = await distribute_lead(db, lead_id=shared_lead.id)
    by_provider = {a.provider_id: a.assignment_id for a in shared.assigned}
    for side in sides:
        side.shared_assignment = by_provider[side.provider]
        requested = await returns.request_return(
            db, actor=SYSTEM, assignment_id=side.shared_assignment, reason=ReturnReason.DUPLICATE
        )
        side.return_ = requested.id
        side.secrets = [
            str(v)
            for v in (
                side.provider,
                side.provider_email,
                side.niche,
                side.level,
                side.subscription,
                side.shared_subscription,
                side.lead,
                side.assignment,
                side.shared_assignment,
                side.run,
                side.batch,
                side.user,
                side.key,
                side.victim_key,
                side.victim_user,
                side.victim_user_email,
                side.return_,
                side.webhook_endpoint,
                side.webhook_delivery,
                f"msg_{side.webhook_delivery.hex}",
                *side.victim_endpoints,
                *side.contact.values(),
            )
        ]
    return World(
        a=sides[0],
        b=sides[1],
        admin_id=admin.admin.id,
        admin_token=admin_token,
        read_key=read_key,
        shared_lead=shared_lead.id,
        shared_contact=shared_contact,
    )


def leaked(data: Any, secrets: list[str]) -> list[str]:
    """Which of `secrets` appear anywhere in a response's data."""
    import orjson

    text = orjson.dumps(data).decode()
    return [s for s in secrets if s in text]


class InProcess:
    """Subscriptions through the schema's own subscribe path, with an API process's context and
    hub (over real Redis pub/sub), for tests that need no WebSocket."""

    def __init__(self, db: Database, redis: Redis) -> None:
        from app.resolvers.schema import build_schema

        self.settings = api_settings()
        self.schema = build_schema(self.settings)
        self.db, self.redis = db, redis
        self.hub = ProgressHub(redis)
        self.publisher = RedisPublisher(redis)

    async def __aenter__(self) -> InProcess:
        await self.hub.start()
        await self.hub.ready.wait()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.hub.stop()

    def context(self, credential: str | None) -> Context:
        return Context(
            request=Request({"type": "http", "headers": [], "client": ("127.0.0.1", 1)}),
            response=None,
            db=self.db,
            redis=self.redis,
            settings=self.settings,
            dispatcher=InlineDispatcher(self.db, self.settings, self.publisher),
            publisher=self.publisher,
            hub=self.hub,
            credential=credential,
        )

    async def subscribe(
        self, query: str, variables: dict[str, Any], credential: str | None
    ) -> AsyncIterator[Any]:
        stream = await self.schema.subscribe(
            query, variable_values=variables, context_value=self.context(credential)
        )
        if not hasattr(stream, "__anext__"):

            async def once() -> AsyncIterator[Any]:
                yield stream

            return once()
        return stream  # type: ignore[return-value]
