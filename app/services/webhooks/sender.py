"""The webhook sender: one per worker process, woken directly by its own process's distributions
that wrote deliveries, and by the `send_webhooks` job (queued after such commits in the API, and by
the sweep).

It is a loop of its own beside the worker's job slots, not a job holding one: a slow endpoint
waits up to WEBHOOK_TIMEOUT_SECONDS, and WORKER_CONCURRENCY slots spent waiting on buyers would
be distributions not run. Each turn of the loop records what finished (one statement), then
claims endpoints for its free places (the same statement) and starts a task per endpoint, which
sends that endpoint's deliveries one after another and stops at its first failure (the rest wait
for its next claim; the failed one for its retry). No transaction is open while a request is in
flight. An endpoint is held by a lock of the sender's own connection: a worker killed mid-send
lets go of its endpoints as its connection closes, and the sweep wakes a sender to send again
(at least once, with the same webhook-id)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime

import asyncpg
import httpx
from standardwebhooks import Webhook

from app import metrics
from app.db import Database
from app.models.base import utcnow
from app.models.webhooks import AttemptOutcome, webhook_id
from app.services.webhooks import claims, outbound
from app.services.webhooks.claims import Claimed, EndpointRun, Flagged, Sent
from app.settings import Settings

log = logging.getLogger("leadwheel.webhooks")


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


async def send_claimed(
    client: outbound.WebhookClient, settings: Settings, claimed: Claimed, *, stop: asyncio.Event | None = None
) -> EndpointRun:
    """Sends an endpoint's claimed deliveries in order, stopping at the first failure or when the
    sender stops."""
    run = EndpointRun(claimed.endpoint_id)
    url = parsed_url(claimed.url)
    refused = outbound.check_scheme(url, settings.environment)
    signers = [Webhook(secret) for secret in claimed.secrets]  # the secrets decoded once per claim
    for delivery_id, body in claimed.deliveries:
        if stop is not None and stop.is_set():
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
                "webhook-signature": signature(signers, msg_id, at, body),
            }
            answer = await outbound.post(
                client,
                url,
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


async def sender_connection(db: Database) -> asyncpg.Connection:
    """A sender's own connection, not one of the pool's: its session holds the locks of the
    endpoints it is sending to. Its commits do not wait for the WAL flush: a turn committed just
    before a crash of PostgreSQL can be lost, which costs a send again with the same webhook-id (at
    least once holds), and a turn commits hundreds of times a second in a burst, where each flush
    was most of a turn's time. Its statements keep one generic plan (a turn's plan does not depend
    on its arrays' contents), with index scans."""
    url = db.engine.url.set(drivername="postgresql").render_as_string(hide_password=False)
    return await asyncpg.connect(
        url,
        server_settings={
            "synchronous_commit": "off",
            "plan_cache_mode": "force_generic_plan",
            # index scans, which mark the entries of sent deliveries dead as they pass them
            # (bitmap scans do not): otherwise each turn re-reads all that was sent since the last
            # vacuum (measured: 20,000 such entries, 0.48 ms a scan; index scans 0.06 ms)
            "enable_bitmapscan": "off",
            # and never a sequential scan: a turn touches a few rows of tables that grow, and a
            # plan made on a young table's statistics scanned every endpoint for each due one. Both
            # hold for every statement of this connection (turns, flags, their audit, send_due):
            # each reads a few rows by key
            "enable_seqscan": "off",
            "application_name": "leadwheel-webhook-sender",
        },
    )


# While requests are in flight, a turn at least this often: deliveries committed meanwhile do not
# wake the sender (the wake's mark is still set), and they should not wait for a slow endpoint.
POLL_SECONDS = 0.02
# Turns at most this often: a turn costs PostgreSQL about 0.13 ms of CPU whatever it carries (and
# about 0.1 ms per delivery: bench/webhook_sender.py, docs/benchmarks.md), and in a burst each
# finished request would otherwise have one of its own (measured at 480 deliveries/s: one turn per
# 2.4 deliveries, 240 µs of PostgreSQL per delivery; 10 ms apart, 5.3 per turn and 180 µs).
TURN_SPACING_SECONDS = 0.01


class WebhookSender:
    """The per-process loop. A wake starts it; it keeps turning while it has requests in flight or
    claims something. When it finds nothing after a wake by the `send_webhooks` job, it calls
    `on_idle` (which clears that job's mark, so the next commit queues a job again) and looks once
    more, so a commit between its last look and the clearing is not left to the sweep. Woken only
    by its own process's distributions (which set no mark), it skips the clearing (in a burst, a
    Redis round trip each time it ran out of work). `close()` on worker shutdown."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        client: outbound.WebhookClient,
        on_idle: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self.db, self.settings, self.client = db, settings, client
        self.on_idle = on_idle
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._finished: list[EndpointRun] = []
        self._busy: dict[uuid.UUID, asyncio.Task[None]] = {}
        self._loop: asyncio.Task[None] | None = None
        self._conn: asyncpg.Connection | None = None
        self._last_turn = 0.0
        self._woken_by_job = False  # since the mark was last cleared

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await sender_connection(self.db)
        return self._conn

    def wake(self, *, by_job: bool = False) -> None:
        """`by_job`: from the `send_webhooks` job, whose wake mark this sender clears when idle."""
        if by_job:
            self._woken_by_job = True
        if self._loop is None or self._loop.done():
            self._loop = asyncio.create_task(self._run(), name="webhook-sender")
        self._wake.set()

    @property
    def sending(self) -> int:
        return len(self._busy)

    async def _run(self) -> None:
        while not self._stop.is_set():
            if self._busy:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), POLL_SECONDS)
            else:
                await self._wake.wait()
            await asyncio.sleep(max(0.0, self._last_turn + TURN_SPACING_SECONDS - time.monotonic()))
            self._wake.clear()
            self._last_turn = time.monotonic()
            try:
                claimed, recorded = await self._turn()
                idle = not claimed and not self._busy and not self._finished
                # once more: endpoints the turn released could not be claimed in it (their other
                # deliveries come back next turn), and a job's mark is cleared before the look
                if idle and (recorded or self._woken_by_job):
                    if self._woken_by_job:
                        if self.on_idle is not None:
                            await self.on_idle()
                        self._woken_by_job = False  # after: a failed clear is tried again next turn
                    await self._turn()
            except Exception:  # noqa: BLE001  (PostgreSQL away: try again shortly)
                log.warning("webhooks.sender_turn_failed", exc_info=True)
                await asyncio.sleep(1)
                self._wake.set()
        await self._turn(claiming=False)

    async def _turn(self, *, claiming: bool = True) -> tuple[int, int]:
        """Records what finished and claims for the free places: one statement. Returns how many
        endpoints it claimed and how many it recorded (and released)."""
        finished, self._finished = self._finished, []
        slots = self.settings.webhook_max_concurrency - len(self._busy)
        if not claiming or self._stop.is_set():
            slots = 0
        if not finished and slots <= 0:
            return 0, 0
        try:
            conn = await self._connection()
            claimed, flagged = await claims.turn(
                conn, runs=finished, slots=max(slots, 0), settings=self.settings, sending=list(self._busy)
            )
            if flagged:
                await flag(conn, flagged)
        except BaseException:
            self._finished[:0] = finished  # recorded next turn
            if self._conn is not None:
                self._conn.terminate()  # a new one next turn: this one may be broken
                self._conn = None
            raise
        for one in claimed:
            self._busy[one.endpoint_id] = asyncio.create_task(self._send(one))
        return len(claimed), len(finished)

    async def _send(self, claimed: Claimed) -> None:
        try:
            run = await send_claimed(self.client, self.settings, claimed, stop=self._stop)
        except Exception:  # noqa: BLE001  (a bug, not a buyer's answer: the endpoint is released)
            log.exception("webhooks.send_failed endpoint_id=%s", claimed.endpoint_id)
            run = EndpointRun(claimed.endpoint_id)
        finally:
            self._busy.pop(claimed.endpoint_id, None)
        self._finished.append(run)
        self._wake.set()

    async def close(self, grace_seconds: float) -> None:
        """Stops claiming, lets the requests in flight end (each stops its endpoint's run after it),
        records them and releases the endpoints; what is cut off here is sent again (its
        endpoint's lock goes with the connection)."""
        self._stop.set()
        if self._busy:
            await asyncio.wait(list(self._busy.values()), timeout=grace_seconds)
        self._wake.set()
        if self._loop is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._loop, timeout=5)
        if self._conn is not None:
            self._conn.terminate()
        await self.client.aclose()


async def flag(conn: asyncpg.Connection, flagged: list[Flagged]) -> None:
    """Endpoints a turn disabled: their waiting deliveries held, audited, counted and logged."""
    await claims.flag(conn, flagged)
    for f in flagged:
        metrics.WEBHOOK_ENDPOINTS_DISABLED.inc()
        log.error(
            "webhooks.endpoint_disabled endpoint_id=%s provider_id=%s consecutive_failures=%s",
            f.endpoint_id,
            f.provider_id,
            f.failures,
        )


async def send_due(db: Database, settings: Settings, client: outbound.WebhookClient | None = None) -> int:
    """Sends what is due now, in this process, until nothing is left to claim (endpoints in
    parallel): the inline dispatcher's sender (scripts, the demo, service tests). Returns the
    number of attempts made."""
    own = client is None
    active = client or outbound.make_client(settings)
    conn = await sender_connection(db)
    attempts = 0
    runs: list[EndpointRun] = []
    try:
        while True:
            claimed, flagged = await claims.turn(
                conn, runs=runs, slots=settings.webhook_max_concurrency, settings=settings
            )
            if flagged:
                await flag(conn, flagged)
            if not claimed and not runs:
                return attempts
            runs = list(await asyncio.gather(*(send_claimed(active, settings, c) for c in claimed)))
            attempts += sum(len(r.sent) for r in runs)
    finally:
        await conn.close()  # releases whatever it still holds
        if own:
            await active.aclose()
