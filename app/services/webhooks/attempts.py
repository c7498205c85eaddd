"""One attempt to send a delivery: its endpoint made ready (URL parsed and checked, secrets
decoded), the Standard Webhooks headers signed, the POST made and counted in the metrics; and a
claim's deliveries sent in a row."""

from __future__ import annotations

import asyncio
import functools
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx
from standardwebhooks import Webhook

from app import metrics
from app.models.base import utcnow
from app.models.webhooks import AttemptOutcome, webhook_id
from app.services.webhooks import outbound
from app.services.webhooks.claims import Claimed, EndpointRun, Sent
from app.services.webhooks.connection import request_head
from app.settings import Environment, Settings


def signature(secrets: Sequence[str | Webhook], msg_id: str, at: datetime, body: str) -> str:
    """`webhook-signature`: one `v1,<base64>` per secret that signs now (two during a rotation's
    overlap), space-separated, as Standard Webhooks verifies them. A signer made beforehand
    (`Webhook(secret)`, which decodes the secret: `prepared_for`) may be passed instead of its secret."""
    return " ".join(
        (secret if isinstance(secret, Webhook) else Webhook(secret)).sign(msg_id, at, body)
        for secret in secrets
    )


@dataclass(frozen=True, slots=True)
class Prepared:
    """What an endpoint's requests share: its URL parsed and checked, its secrets decoded, and the
    head's fixed lines formatted and checked (request_head): a webhook's head is those, then its
    own lines (length, id, time, signature), which are made of digits, hex, base64 and fixed
    text, so never need the check."""

    url: httpx.URL
    refused: str | None
    signers: list[Webhook]
    head: bytes  # ends with a line's CRLF: the webhook's own lines follow


@functools.lru_cache(maxsize=1024)
def _prepare(url: str, secrets: tuple[str, ...], environment: Environment) -> Prepared:
    """Once per endpoint (and its secrets) in a process, not at every send: in a burst a send
    mostly carries one delivery, so parsing, decoding and checking were paid per webhook
    (docs/benchmarks.md). Emptied by the first send KEEP_PREPARED_SECONDS after the last emptying
    (`prepared_for`): secrets rotated out, and deleted endpoints', are not kept past a worker's
    next send a minute on."""
    parsed = httpx.URL(url)
    refused = outbound.check_scheme(parsed, environment)
    head = b""
    if refused is None:
        fixed = [
            (b"host", parsed.netloc),
            (b"user-agent", outbound.USER_AGENT_RAW),
            (b"content-type", b"application/json"),
        ]
        try:
            head = request_head(b"POST", parsed.raw_path, fixed)[:-2]
        except httpx.LocalProtocolError as exc:  # httpx's URLs never get here: a failed attempt if one did
            refused = str(exc)
    return Prepared(parsed, refused, [Webhook(secret) for secret in secrets], head)


KEEP_PREPARED_SECONDS = 60.0
_emptied = time.monotonic()


def prepared_for(url: str, secrets: tuple[str, ...], environment: Environment) -> Prepared:
    """`_prepare`, its cache emptied first when older than KEEP_PREPARED_SECONDS."""
    global _emptied
    now = time.monotonic()
    if now - _emptied > KEEP_PREPARED_SECONDS:
        _prepare.cache_clear()
        _emptied = now
    return _prepare(url, secrets, environment)


# a webhook's own lines: each value digits, hex, base64 or fixed text (never a line break)
OWN_LINES = b"content-length: %d\r\nwebhook-id: %s\r\nwebhook-timestamp: %d\r\nwebhook-signature: %s\r\n\r\n"

# the attempts counter's child per outcome, bound at first use (labels() looks it up under a lock)
_attempts: dict[AttemptOutcome, Any] = {}


def _count(answer: outbound.Answer) -> None:
    counter = _attempts.get(answer.outcome)
    if counter is None:
        counter = _attempts[answer.outcome] = metrics.WEBHOOK_ATTEMPTS.labels(answer.outcome.value)
    counter.inc()
    metrics.WEBHOOK_LATENCY.observe(answer.latency_ms / 1000)


class Endpoint:
    """Where an endpoint's deliveries go (`prepared_for`: made once per process)."""

    def __init__(self, settings: Settings, url: str, secrets: Sequence[str]) -> None:
        self.timeout = settings.webhook_timeout_seconds
        self.source = (url, tuple(secrets))
        self.prepared = prepared_for(url, self.source[1], settings.environment)

    async def send(self, client: outbound.WebhookClient, delivery_id: uuid.UUID, body: str) -> Sent:
        """One attempt, counted in the metrics."""
        at = utcnow()
        prepared = self.prepared
        if prepared.refused is not None:
            answer = outbound.Answer(AttemptOutcome.REFUSED, 0.0, error=f"refused: {prepared.refused}")
        else:
            msg_id = webhook_id(delivery_id)
            data = body.encode()
            own = OWN_LINES % (
                len(data),
                msg_id.encode(),
                int(at.timestamp()),
                signature(prepared.signers, msg_id, at, body).encode(),
            )
            message = prepared.head + own + data
            answer = await outbound.send(client, prepared.url, message, within=self.timeout)
        _count(answer)
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
