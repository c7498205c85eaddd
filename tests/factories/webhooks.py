"""Webhook endpoints, through the real service (URL checks included)."""

from __future__ import annotations

from collections.abc import Sequence

from app.db import Database
from app.models.billing import Provider
from app.models.webhooks import WebhookEvent
from app.services.audit import SYSTEM
from app.services.webhooks import endpoints
from app.services.webhooks.endpoints import CreatedEndpoint
from app.settings import Environment, Settings

# what tests send with: local receivers allowed, retries at once, no jitter
SETTINGS = Settings(
    _env_file=None,  # type: ignore[call-arg]
    environment=Environment.TEST,
    webhook_allow_private_networks=True,
    webhook_retry_delays_seconds=[0.0] * 7,
    webhook_retry_jitter=0,
    webhook_timeout_seconds=2,
)
# what the HTTP client's own tests send with: local receivers allowed, a 1 s timeout
LOCAL_CLIENT = Settings(_env_file=None, webhook_allow_private_networks=True, webhook_timeout_seconds=1)  # type: ignore[call-arg]


async def make_endpoint(
    db: Database,
    provider: Provider,
    url: str,
    *,
    events: Sequence[str] = (WebhookEvent.LEAD_ASSIGNED,),
    enabled: bool = True,
    settings: Settings = SETTINGS,
) -> CreatedEndpoint:
    return await endpoints.create_endpoint(
        db, actor=SYSTEM, provider_id=provider.id, url=url, events=events, enabled=enabled, settings=settings
    )
