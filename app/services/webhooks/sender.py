"""The webhook sender: one per worker process, woken by the `send_webhooks` job (queued after
commits that wrote deliveries, and by the sweep).

It is a loop of its own beside the worker's job slots, not a job holding one: a slow endpoint
waits up to WEBHOOK_TIMEOUT_SECONDS, and WORKER_CONCURRENCY slots spent waiting on buyers would
be distributions not run. Each turn of the loop records what finished (one statement), then
claims endpoints for its free places (one statement) and starts a task per endpoint, which sends
that endpoint's deliveries one after another and stops at its first failure (the rest wait for
the next lease; the failed one for its retry). No transaction is open while a request is in
flight; a worker killed mid-send leaves a lease that expires, and the sweep wakes a sender to
send again (at least once, with the same webhook-id)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Sequence
from datetime import datetime

import asyncpg
import httpx
from standardwebhooks import Webhook

from app import metrics
from app.db import Database
from app.models.base import utcnow
from app.models.webhooks import AttemptOutcome, webhook_id
from app.services.webhooks import claims, outbound
from app.services.webhooks.claims import Claimed, EndpointRun, Sent
from app.settings import Settings

log = logging.getLogger("leadwheel.webhooks")


def signature(secrets: Sequence[str], msg_id: str, at: datetime, body: str) -> str:
    """`webhook-signature`: one `v1,<base64>` per secret that signs now (two during a rotation's
    overlap), space-separated, as Standard Webhooks verifies them."""
    return " ".join(Webhook(secret).sign(msg_id, at, body) for secret in secrets)


async def send_claimed(
    client: httpx.AsyncClient, settings: Settings, claimed: Claimed, *, stop: asyncio.Event | None = None
) -> EndpointRun:
    """Sends an endpoint's claimed deliveries in order, stopping at the first failure, when the
    lease could run out before another attempt ends, or when the sender stops."""
    run = EndpointRun(claimed.endpoint_id)
    started = time.monotonic()
    budget = settings.webhook_lease_seconds - settings.webhook_timeout_seconds - 1
    refused = outbound.check_scheme(httpx.URL(claimed.url), settings.environment)
    for delivery_id, body in claimed.deliveries:
        if (stop is not None and stop.is_set()) or (run.sent and time.monotonic() - started > budget):
            break
        at = utcnow()
        if refused is not None:
            answer = outbound.Answer(AttemptOutcome.REFUSED, 0.0, error=f"refused: {refused}")
        else:
            msg_id = webhook_id(delivery_id)
            headers = {
                "content-type": "application/json",
                "webhook-id": msg_id,
                "webhook-timestamp": str(int(at.timestamp())),
                "webhook-signature": signature(claimed.secrets, msg_id, at, body),
            }
            answer = await outbound.post(
                client,
                claimed.url,
                headers=headers,
                body=body.encode(),
                within=settings.webhook_timeout_seconds,
            )
        metrics.WEBHOOK_ATTEMPTS.labels(answer.outcome.value).inc()
        metrics.WEBHOOK_LATENCY.observe(answer.latency_ms / 1000)
        run.sent.append(Sent(delivery_id, at, answer))
        if not answer.ok:
            break
    return run


class WebhookSender:
    """The per-process loop. `wake()` is all a job does; `close()` on worker shutdown."""

    def __init__(self, db: Database, settings: Settings, client: httpx.AsyncClient) -> None:
        self.db, self.settings, self.client = db, settings, client
        self.token = uuid.uuid4()  # this sender's leases
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._finished: list[EndpointRun] = []
        self._busy: dict[uuid.UUID, asyncio.Task[None]] = {}
        self._loop: asyncio.Task[None] | None = None

    def wake(self) -> None:
        if self._loop is None or self._loop.done():
            self._loop = asyncio.create_task(self._run(), name="webhook-sender")
        self._wake.set()

    @property
    def sending(self) -> int:
        return len(self._busy)

    async def _run(self) -> None:
        while not self._stop.is_set():
            await self._wake.wait()
            self._wake.clear()
            try:
                await self._turn()
            except Exception:  # noqa: BLE001  (PostgreSQL away: try again shortly; leases expire meanwhile)
                log.warning("webhooks.sender_turn_failed", exc_info=True)
                await asyncio.sleep(1)
                self._wake.set()
        await self._turn(claiming=False)

    async def _turn(self, *, claiming: bool = True) -> None:
        finished, self._finished = self._finished, []
        async with self.db.engine.connect() as sa_conn:
            conn: asyncpg.Connection = (await sa_conn.get_raw_connection()).driver_connection
            if finished:
                try:
                    await record_runs(conn, self.settings, token=self.token, runs=finished)
                except BaseException:
                    self._finished[:0] = finished  # recorded next turn
                    raise
            slots = self.settings.webhook_max_concurrency - len(self._busy)
            if not claiming or self._stop.is_set() or slots <= 0:
                return
            claimed = await claims.claim(
                conn,
                token=self.token,
                slots=slots,
                per_endpoint=self.settings.webhook_batch_size,
                lease_seconds=self.settings.webhook_lease_seconds,
            )
        for one in claimed:
            self._busy[one.endpoint_id] = asyncio.create_task(self._send(one))

    async def _send(self, claimed: Claimed) -> None:
        try:
            run = await send_claimed(self.client, self.settings, claimed, stop=self._stop)
        except Exception:  # noqa: BLE001  (a bug, not a buyer's answer: the lease is given back)
            log.exception("webhooks.send_failed endpoint_id=%s", claimed.endpoint_id)
            run = EndpointRun(claimed.endpoint_id)
        finally:
            self._busy.pop(claimed.endpoint_id, None)
        self._finished.append(run)
        self._wake.set()

    async def close(self, grace_seconds: float) -> None:
        """Stops claiming, lets the requests in flight end (each stops its endpoint's run after it),
        records them and gives the leases back; what is cut off here is sent again after its lease."""
        self._stop.set()
        if self._busy:
            await asyncio.wait(list(self._busy.values()), timeout=grace_seconds)
        self._wake.set()
        if self._loop is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._loop, timeout=5)
        await self.client.aclose()


async def record_runs(
    conn: asyncpg.Connection, settings: Settings, *, token: uuid.UUID, runs: list[EndpointRun]
) -> None:
    """Records finished runs; endpoints they disabled are held, audited, counted and logged."""
    flagged = await claims.record(
        conn,
        token=token,
        runs=runs,
        delays=settings.webhook_retry_delays_seconds,
        jitter=settings.webhook_retry_jitter,
        disable_after=settings.webhook_disable_after_failures,
    )
    if flagged:
        await claims.flag(conn, flagged)
        for f in flagged:
            metrics.WEBHOOK_ENDPOINTS_DISABLED.inc()
            log.error(
                "webhooks.endpoint_disabled endpoint_id=%s provider_id=%s consecutive_failures=%s",
                f.endpoint_id,
                f.provider_id,
                f.failures,
            )


async def send_due(db: Database, settings: Settings, client: httpx.AsyncClient | None = None) -> int:
    """Sends what is due now, in this process, until nothing is left to claim (endpoints in
    parallel): the inline dispatcher's sender (scripts, the demo, service tests). Returns the
    number of attempts made."""
    own = client is None
    active = client or outbound.make_client(settings)
    token = uuid.uuid4()
    attempts = 0
    try:
        while True:
            async with db.engine.connect() as sa_conn:
                conn: asyncpg.Connection = (await sa_conn.get_raw_connection()).driver_connection
                claimed = await claims.claim(
                    conn,
                    token=token,
                    slots=settings.webhook_max_concurrency,
                    per_endpoint=settings.webhook_batch_size,
                    lease_seconds=settings.webhook_lease_seconds,
                )
            if not claimed:
                return attempts
            runs = await asyncio.gather(*(send_claimed(active, settings, c) for c in claimed))
            attempts += sum(len(r.sent) for r in runs)
            async with db.engine.connect() as sa_conn:
                conn = (await sa_conn.get_raw_connection()).driver_connection
                await record_runs(conn, settings, token=token, runs=list(runs))
    finally:
        if own:
            await active.aclose()
