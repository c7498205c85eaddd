"""One attempt to send a delivery: its endpoint made ready (URL parsed and checked, secrets
decoded), the Standard Webhooks headers signed, the POST made and counted in the metrics; and a
claim's deliveries sent in a row."""

from __future__ import annotations

import asyncio
import functools
import uuid
from collections.abc import Sequence
from datetime import datetime

import httpx
from standardwebhooks import Webhook

from app import metrics
from app.models.base import utcnow
from app.models.webhooks import AttemptOutcome, webhook_id
from app.services.webhooks import outbound
from app.services.webhooks.claims import Claimed, EndpointRun, Sent
from app.settings import Settings


def signature(secrets: Sequence[str | Webhook], msg_id: str, at: datetime, body: str) -> str:
    """`webhook-signature`: one `v1,<base64>` per secret that signs now (two during a rotation's
    overlap), space-separated, as Standard Webhooks verifies them. A signer made once per claim
    (`Webhook(secret)`, which decodes the secret) may be passed instead of its secret."""
    return " ".join(
        (secret if isinstance(secret, Webhook) else Webhook(secret)).sign(msg_id, at, body)
        for secret in secrets
    )


@functools.lru_cache(maxsize=4096)
def parsed_url(url: str) -> httpx.URL:
    """An endpoint's URL parsed once per process, not at every claim: in a burst a claim mostly
    carries one delivery, and httpx's parsing cost more than the signing."""
    return httpx.URL(url)


class Endpoint:
    """Where an endpoint's deliveries go, made ready once per claim (or lease): the URL parsed
    and checked, the secrets decoded."""

    def __init__(self, settings: Settings, url: str, secrets: Sequence[str]) -> None:
        self.settings = settings
        self.source = (url, tuple(secrets))
        self.url = parsed_url(url)
        self.refused = outbound.check_scheme(self.url, settings.environment)
        self.signers = [Webhook(secret) for secret in secrets]

    async def send(self, client: outbound.WebhookClient, delivery_id: uuid.UUID, body: str) -> Sent:
        """One attempt, counted in the metrics."""
        at = utcnow()
        if self.refused is not None:
            answer = outbound.Answer(AttemptOutcome.REFUSED, 0.0, error=f"refused: {self.refused}")
        else:
            msg_id = webhook_id(delivery_id)
            headers = {
                "content-type": "application/json",
                "webhook-id": msg_id,
                "webhook-timestamp": str(int(at.timestamp())),
                "webhook-signature": signature(self.signers, msg_id, at, body),
            }
            answer = await outbound.post(
                client,
                self.url,
                headers=headers,
                body=body.encode(),
                within=self.settings.webhook_timeout_seconds,
            )
        metrics.WEBHOOK_ATTEMPTS.labels(answer.outcome.value).inc()
        metrics.WEBHOOK_LATENCY.observe(answer.latency_ms / 1000)
        return Sent(delivery_id, at, answer)


async def send_claimed(
    client: outbound.WebhookClient, settings: Settings, claimed: Claimed, *, stop: asyncio.Event | None = None
) -> EndpointRun:
    """Sends an endpoint's claimed deliveries in order, stopping at the first failure or when the
    sender stops."""
    run = EndpointRun(claimed.endpoint_id)
    endpoint = Endpoint(settings, claimed.url, claimed.secrets)
    for delivery_id, body in claimed.deliveries:
        if stop is not None and stop.is_set():
            break
        sent = await endpoint.send(client, delivery_id, body)
        run.sent.append(sent)
        if not sent.answer.ok:
            break
    return run
