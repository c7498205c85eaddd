"""Webhooks over GraphQL: the secret shown once, bad URLs refused with nothing written, the
delivery log with its attempts, re-sending, and who may do what. Sends run inline (the API's
inline dispatcher) to a real local receiver."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from redis.asyncio import Redis

from app.db import Database
from app.engine.distribute import distribute_lead
from app.main import create_app
from app.progress.publish import RedisPublisher
from app.services import auth
from app.services.audit import SYSTEM
from app.services.webhooks.sender import send_due
from app.tasks.dispatch import InlineDispatcher
from tests.api.conftest import Api, api_settings, error_code
from tests.factories import make_lead, make_niche, make_provider, subscribe
from tests.receiver import Receiver, statuses

CREATE = """mutation($input: CreateWebhookEndpointInput!) {
  createWebhookEndpoint(input: $input) {
    secret endpoint { id providerId url events enabled description flagged consecutiveFailures }
  }
}"""
DELIVERIES = """query($p: UUID, $e: UUID, $s: WebhookDeliveryStatus) {
  webhookDeliveries(providerId: $p, endpointId: $e, status: $s, first: 10) {
    edges { node { id webhookId eventType status attemptCount payload
                   attempts { outcome statusCode latencyMs error responseBody } } }
    pageInfo { hasNextPage }
  }
}"""


@pytest.fixture
async def hooks_api(db: Database, redis: Redis) -> AsyncIterator[Api]:
    """An admin key on an API whose inline sender may reach local receivers."""
    settings = api_settings(webhook_allow_private_networks=True, webhook_retry_delays_seconds=[3600.0])
    app = create_app(
        settings, db=db, redis=redis, dispatcher=InlineDispatcher(db, settings, RedisPublisher(redis))
    )
    key = await auth.create_api_key(db, actor=SYSTEM, name="ops", scopes=["admin", "read"])
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            yield Api(client, token=key.secret)


async def count(db: Database, table: str) -> int:
    async with db.engine.connect() as conn:
        return int((await conn.execute(sa.text(f"SELECT count(*) FROM {table}"))).scalar_one())


async def create(api: Api, provider_id: Any, url: str, events: list[str] | None = None) -> dict[str, Any]:
    data = await api.ok(
        CREATE, {"input": {"providerId": str(provider_id), "url": url, "events": events or ["LEAD_ASSIGNED"]}}
    )
    return dict(data["createWebhookEndpoint"])


async def test_the_secret_is_shown_once_and_a_lead_arrives_signed(
    hooks_api: Api, db: Database, receiver: Receiver
) -> None:
    niche, (level,) = await make_niche(db, levels=[(1500, 1)])
    provider = await make_provider(db, balance_cents=5_000)
    await subscribe(db, provider, level)
    created = await create(hooks_api, provider.id, receiver.url)
    assert created["secret"].startswith("whsec_")
    assert created["endpoint"] | {"id": None} == {
        "id": None,
        "providerId": str(provider.id),
        "url": receiver.url,
        "events": ["LEAD_ASSIGNED"],
        "enabled": True,
        "description": "",
        "flagged": False,
        "consecutiveFailures": 0,
    }
    receiver.secrets.append(created["secret"])
    # no read of an endpoint can carry its secret: the type has no such field
    body = await hooks_api.gql("{ webhookEndpoints { id secret } }")
    assert error_code(body) == "INVALID_INPUT"
    listed = await hooks_api.ok(
        "query($id: UUID!) { provider(id: $id) { webhookEndpoints { id url } } }", {"id": str(provider.id)}
    )
    assert listed["provider"]["webhookEndpoints"] == [{"id": created["endpoint"]["id"], "url": receiver.url}]

    lead = await make_lead(db, niche, {"email": "pat@example.test", "state": "TX"})
    assert (await distribute_lead(db, lead_id=lead.id)).webhooks_due == 1
    assert await send_due(db, api_settings(webhook_allow_private_networks=True)) == 1  # what a worker does
    (got,) = receiver.received
    assert got.verified_by and got.payload["data"]["lead"]["attributes"]["email"] == "pat@example.test"

    log = (await hooks_api.ok(DELIVERIES, {"p": str(provider.id)}))["webhookDeliveries"]["edges"]
    (node,) = [e["node"] for e in log]
    assert node["webhookId"] == got.webhook_id and node["eventType"] == "lead.assigned"
    assert node["status"] == "DELIVERED" and node["attemptCount"] == 1
    assert node["payload"] == got.payload
    assert [a["outcome"] for a in node["attempts"]] == ["success"]


async def test_refused_urls_write_nothing(api: Api, db: Database) -> None:
    """The API's default settings: private networks are not allowed."""
    key = await auth.create_api_key(db, actor=SYSTEM, name="ops", scopes=["admin"])
    api.token = key.secret
    provider = await make_provider(db)
    for url in (
        "http://127.0.0.1/hook",
        "http://10.0.0.7/hook",
        "http://169.254.169.254/latest",
        "http://localhost:8080/hook",
        "http://[::1]/hook",
    ):
        body = await api.gql(
            CREATE, {"input": {"providerId": str(provider.id), "url": url, "events": ["LEAD_ASSIGNED"]}}
        )
        assert error_code(body) == "INVALID_INPUT", url
        assert "public internet" in body["errors"][0]["message"]
    assert await count(db, "webhook_endpoints") == 0
    assert await count(db, "audit_log WHERE action LIKE 'WEBHOOK%'") == 0


async def test_test_message_failure_log_and_redelivery(
    hooks_api: Api, db: Database, receiver: Receiver
) -> None:
    receiver.respond = statuses(500, 200)
    provider = await make_provider(db)
    created = await create(hooks_api, provider.id, receiver.url, ["RETURN_DECIDED"])
    receiver.secrets.append(created["secret"])
    endpoint_id = created["endpoint"]["id"]
    sent = await hooks_api.ok(
        "mutation($e: UUID!) { sendTestWebhook(endpointId: $e) { id webhookId status } }", {"e": endpoint_id}
    )
    delivery = sent["sendTestWebhook"]
    failed = (await hooks_api.ok(DELIVERIES, {"e": endpoint_id, "s": "FAILED"}))["webhookDeliveries"]["edges"]
    assert [e["node"]["id"] for e in failed] == [delivery["id"]]
    (attempt,) = failed[0]["node"]["attempts"]
    assert (attempt["outcome"], attempt["statusCode"], attempt["error"], attempt["responseBody"]) == (
        "http_error",
        500,
        "HTTP 500",
        "answer",
    )
    again = await hooks_api.ok(
        "mutation($d: UUID!) { redeliverWebhook(deliveryId: $d) { status attemptCount } }",
        {"d": delivery["id"]},
    )
    assert again["redeliverWebhook"] == {"status": "PENDING", "attemptCount": 0}
    done = await hooks_api.ok(
        "query($id: UUID!) { webhookDelivery(id: $id) { status attempts { outcome } } }",
        {"id": delivery["id"]},
    )
    assert done["webhookDelivery"] == {
        "status": "DELIVERED",
        "attempts": [{"outcome": "http_error"}, {"outcome": "success"}],
    }
    assert receiver.ids() == [delivery["webhookId"]] * 2


async def test_update_rotate_delete(hooks_api: Api, db: Database, receiver: Receiver) -> None:
    provider = await make_provider(db)
    created = await create(hooks_api, provider.id, receiver.url)
    endpoint_id = created["endpoint"]["id"]
    updated = await hooks_api.ok(
        """mutation($id: UUID!) { updateWebhookEndpoint(id: $id, input: {
             description: "CRM", events: [LEAD_ASSIGNED, RETURN_DECIDED], enabled: false}) {
             description events enabled disabledReason } }""",
        {"id": endpoint_id},
    )
    assert updated["updateWebhookEndpoint"] == {
        "description": "CRM",
        "events": ["LEAD_ASSIGNED", "RETURN_DECIDED"],
        "enabled": False,
        "disabledReason": "MANUAL",
    }
    rotated = await hooks_api.ok(
        "mutation($id: UUID!) { rotateWebhookSecret(id: $id) { secret endpoint { previousSecretExpiresAt } } }",
        {"id": endpoint_id},
    )
    assert rotated["rotateWebhookSecret"]["secret"] not in (created["secret"], None)
    assert rotated["rotateWebhookSecret"]["endpoint"]["previousSecretExpiresAt"] is not None
    bad = await hooks_api.gql(
        "mutation($id: UUID!) { rotateWebhookSecret(id: $id, overlapHours: -1) { secret } }",
        {"id": endpoint_id},
    )
    assert error_code(bad) == "INVALID_INPUT"
    await hooks_api.ok("mutation($id: UUID!) { deleteWebhookEndpoint(id: $id) { id } }", {"id": endpoint_id})
    gone = await hooks_api.gql("query($id: UUID!) { webhookEndpoint(id: $id) { id } }", {"id": endpoint_id})
    assert error_code(gone) == "NOT_FOUND"


async def test_read_credentials_see_endpoints_not_the_delivery_log(hooks_api: Api, db: Database) -> None:
    """Bodies carry the leads' contact details: admins (and a buyer, its own) read the log."""
    reader = (await auth.create_api_key(db, actor=SYSTEM, name="r", scopes=["read"])).secret
    provider = await make_provider(db)
    created = await create(hooks_api, provider.id, "http://crm:s3cr3t@127.0.0.1:9/hook")
    assert created["endpoint"]["url"] == "http://crm:***@127.0.0.1:9/hook"  # a password is a secret
    seen = await hooks_api.ok("{ webhookEndpoints { id url } }", token=reader)
    assert seen["webhookEndpoints"] == [
        {"id": created["endpoint"]["id"], "url": "http://crm:***@127.0.0.1:9/hook"}
    ]
    for query in (
        "{ webhookDeliveries { edges { node { id payload } } } }",
        "{ webhookOverview { pendingDeliveries } }",
        'mutation { sendTestWebhook(endpointId: "00000000-0000-0000-0000-000000000001") { id } }',
        'mutation { redeliverWebhook(deliveryId: "00000000-0000-0000-0000-000000000001") { id } }',
        'mutation { deleteWebhookEndpoint(id: "00000000-0000-0000-0000-000000000001") { id } }',
    ):
        assert error_code(await hooks_api.gql(query, token=reader)) == "FORBIDDEN", query
    body = await hooks_api.gql(
        CREATE,
        {
            "input": {
                "providerId": str(provider.id),
                "url": "http://127.0.0.1:9/",
                "events": ["LEAD_ASSIGNED"],
            }
        },
        token=reader,
    )
    assert error_code(body) == "FORBIDDEN"
    assert await count(db, "webhook_endpoints") == 1


async def test_overview_refuses_a_failure_count_out_of_range(hooks_api: Api) -> None:
    """An out-of-range `failures` is INVALID_INPUT naming the argument, not silently clamped."""
    for failures in (0, 101):
        body = await hooks_api.gql(f"{{ webhookOverview(failures: {failures}) {{ pendingDeliveries }} }}")
        assert error_code(body) == "INVALID_INPUT", failures
        assert "failures" in body["errors"][0]["message"]
    ok = await hooks_api.ok("{ webhookOverview(failures: 100) { pendingDeliveries recentFailures { id } } }")
    assert ok["webhookOverview"]["recentFailures"] == []
