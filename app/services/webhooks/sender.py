"""The webhook sender: one per worker process, woken directly by its own process's distributions
that wrote deliveries, and by the `send_webhooks` job (queued after such commits in the API, and by
the sweep).

It is a loop of its own beside the worker's job slots, not a job holding one: a slow endpoint
waits up to WEBHOOK_TIMEOUT_SECONDS, and WORKER_CONCURRENCY slots spent waiting on buyers would
be distributions not run. Each turn of the loop records what finished (one statement), then
claims endpoints for its free places (the same statement) and starts a task per endpoint, which
sends that endpoint's deliveries one after another and stops at its first failure (the rest wait
for its next claim; the failed one for its retry, or for the endpoint's wait if that ends later:
claims.py). No transaction is open while a request is in
flight. An endpoint is held by a lock of the sender's own connection: a worker killed mid-send
lets go of its endpoints as its connection closes, and the sweep wakes a sender to send again
(at least once, with the same webhook-id).

A distribution's deliveries to healthy endpoints skip the claim: the engine writes them leased to
its worker for WEBHOOK_LEASE_SECONDS (not due for anyone else), and returns them to be sent at once
by that worker's sender, one at a time per endpoint, without a lock (several workers may send to one
endpoint at once). A failure gives the endpoint's other leased deliveries back to the claims (due
now, or when a failing endpoint's wait ends), and so does stopping; a worker that dies leaves them
to the others when the lease ends. Only their record waits for a turn. In a burst this is most
deliveries: a claim and its turn cost more than the request (docs/benchmarks.md)."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

import asyncpg

from app import metrics
from app.db import Database
from app.engine.result import LeasedWebhook
from app.services.webhooks import claims, outbound
from app.services.webhooks.attempts import Endpoint, send_claimed
from app.services.webhooks.claims import Claimed, EndpointRun, Flagged
from app.settings import Settings

log = logging.getLogger("leadwheel.webhooks")


# what a sender's PostgreSQL connection is named (pg_stat_activity): the benchmarks read its CPU
APPLICATION_NAME = "leadwheel-webhook-sender"


@dataclass
class _Leased:
    """Deliveries leased to this sender for one endpoint, sent one at a time in the order written,
    each with its start-by time (monotonic)."""

    run: EndpointRun
    waiting: collections.deque[tuple[LeasedWebhook, float]]


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
            # hold for every statement of this connection (turns, holds, send_due):
            # each reads a few rows by key
            "enable_seqscan": "off",
            "application_name": APPLICATION_NAME,
        },
    )


# Turns at most this often: a turn costs PostgreSQL about 0.13 ms of CPU whatever it carries (and
# about 0.1 ms per delivery: bench/webhook_sender.py, docs/benchmarks.md), and in a burst each
# finished request would otherwise have one of its own. The deliveries of a distribution go out
# without a turn (leased): what waits on a turn is their record, and what the claims send (retries,
# backlogs, failing endpoints, events written in the API), for which 50 ms is nothing.
TURN_SPACING_SECONDS = 0.05
# While claimed requests are in flight, a turn at least this often: deliveries committed meanwhile
# do not wake the sender (the wake's mark is still set), and they should not wait for a slow endpoint.
POLL_SECONDS = TURN_SPACING_SECONDS


class WebhookSender:
    """The per-process loop. A wake starts it; it keeps turning while it has requests in flight or
    claims something. When it finds nothing after a wake by the `send_webhooks` job, it calls
    `on_idle` (which clears that job's mark, so the next commit queues a job again) and looks once
    more, so a commit between its last look and the clearing is not left to the sweep. Woken only
    by its own process's distributions (which set no mark), it skips the clearing (in a burst, a
    Redis round trip each time it ran out of work).

    The deliveries its own process's distributions lease to it (`send_leased`) it sends at once,
    without a claim; its turns record them. `close()` on worker shutdown."""

    def __init__(
        self,
        db: Database,
        settings: Settings,
        client: outbound.WebhookClient,
        on_idle: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self.db, self.settings, self.client = db, settings, client
        self.on_idle = on_idle
        # of what a distribution of this process leases to it (WEBHOOK_LEASE_SECONDS), a delivery
        # starts only while an attempt's time to answer and another to be recorded remain
        self._start_within = settings.webhook_lease_seconds - 2 * settings.webhook_timeout_seconds
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._finished: list[EndpointRun] = []
        self._busy: dict[uuid.UUID, asyncio.Task[None]] = {}  # claimed endpoints being sent to
        self._leased: dict[uuid.UUID, _Leased] = {}  # endpoints with leased deliveries to send
        self._tasks: set[asyncio.Task[None]] = set()  # the sends of leased deliveries
        self._loop: asyncio.Task[None] | None = None
        self._conn: asyncpg.Connection | None = None
        self._last_turn = 0.0
        self._woken_by_job = False  # since the mark was last cleared
        self._to_hold: list[uuid.UUID] = []  # endpoints a turn disabled (and audited): their backlog to hold
        self._closed = False

    async def _connection(self) -> asyncpg.Connection:
        if self._conn is None or self._conn.is_closed():
            self._conn = await sender_connection(self.db)
        return self._conn

    def wake(self, *, by_job: bool = False) -> None:
        """Claims what is due. `by_job`: from the `send_webhooks` job, whose wake mark this sender
        clears when idle."""
        if by_job:
            self._woken_by_job = True
        self._turn_soon()

    def _turn_soon(self) -> None:
        if self._closed:
            return
        if self._loop is None or self._loop.done():
            self._loop = asyncio.create_task(self._run(), name="webhook-sender")
        self._wake.set()

    def send_leased(self, leased: Sequence[LeasedWebhook]) -> None:
        """Sends deliveries leased to this process (written by its distributions) as soon as their
        endpoint is free here, one at a time per endpoint. Given back to the claims instead when its
        places are full, or when this sender is sending a claim of the endpoint (that goes first)."""
        start_before = time.monotonic() + self._start_within
        loop = asyncio.get_running_loop()  # once: in Python 3.11 each call is a getpid() system call
        given_back: list[EndpointRun] = []
        for one in leased:
            queued = self._leased.get(one.endpoint_id)
            if queued is not None:
                queued.waiting.append((one, start_before))
            elif one.endpoint_id in self._busy or self.sending >= self.settings.webhook_max_concurrency:
                given_back.append(EndpointRun(one.endpoint_id, held=False, returned=[one.delivery_id]))
            else:
                queued = self._leased[one.endpoint_id] = _Leased(
                    EndpointRun(one.endpoint_id, held=False), collections.deque([(one, start_before)])
                )
                task = loop.create_task(self._send_leased(queued))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
        if given_back:
            self._finished += given_back
            self._turn_soon()

    @property
    def sending(self) -> int:
        """Endpoints this sender is sending to."""
        return len(self._busy) + len(self._leased)

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
                claimed, freed = await self._turn()
                idle = not claimed and not self._busy and not self._finished
                # once more: what the turn freed could not be claimed in it (released endpoints'
                # other deliveries, those given back), and a job's mark is cleared before the look
                if idle and (freed or self._woken_by_job):
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
        endpoints it claimed and how many runs it recorded that left something to claim (released
        endpoints, leased deliveries given back)."""
        finished, self._finished = self._finished, []
        slots = self.settings.webhook_max_concurrency - self.sending
        if not claiming or self._stop.is_set():
            slots = 0
        if not finished and slots <= 0:
            await self._hold()
            return 0, 0
        try:
            conn = await self._connection()
            claimed, flagged = await claims.turn(
                conn,
                runs=finished,
                slots=max(slots, 0),
                settings=self.settings,
                sending=[*self._busy, *self._leased],
            )
        except BaseException:
            self._finished[:0] = finished  # recorded next turn
            self._drop_connection()  # a new one next turn: this one may be broken
            raise
        for one in claimed:
            self._busy[one.endpoint_id] = asyncio.create_task(self._send(one))
        disabled(flagged)
        self._to_hold += [f.endpoint_id for f in flagged]
        await self._hold()  # the turn is committed: only this is tried again if it fails
        return len(claimed), sum(run.held or bool(run.returned) for run in finished)

    async def _hold(self) -> None:
        """What endpoints the turns disabled had waiting, held; tried again at the next turn until
        done (a turn soon after a hold that could not finish). The sweep does it should this
        process die first."""
        if not self._to_hold:
            return
        try:
            if await claims.hold(await self._connection(), self._to_hold):
                self._to_hold = []
            else:
                self._wake.set()
        except BaseException:
            self._drop_connection()
            raise

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

    async def _send_leased(self, leased: _Leased) -> None:
        """Until its endpoint's waiting deliveries are sent. After a failure (the endpoint's retry
        schedule decides what comes next), once stopping, or past a delivery's time to start (its
        lease would end before its answer), the rest are given back to the claims (due now, or at
        the endpoint's wait's end)."""
        run, waiting = leased.run, leased.waiting
        endpoint: Endpoint | None = None
        one: LeasedWebhook | None = None
        try:
            while waiting:
                one, start_before = waiting.popleft()
                if self._stop.is_set() or time.monotonic() > start_before:
                    run.returned.append(one.delivery_id)
                    continue
                # each as written: an endpoint's URL or secrets can change between two
                if endpoint is None or endpoint.source != (one.url, one.secrets):
                    endpoint = Endpoint(self.settings, one.url, one.secrets)
                sent = await endpoint.send(self.client, one.delivery_id, one.body)
                run.sent.append(sent)
                if not sent.answer.ok:
                    run.returned += [w.delivery_id for w, _ in waiting]
                    waiting.clear()
        except Exception:  # noqa: BLE001  (a bug, not a buyer's answer: sent by the claims later)
            log.exception("webhooks.send_failed endpoint_id=%s", run.endpoint_id)
            if one is not None and not (run.sent and run.sent[-1].delivery_id == one.delivery_id):
                run.returned.append(one.delivery_id)
            run.returned += [w.delivery_id for w, _ in waiting]
        finally:
            del self._leased[run.endpoint_id]
        self._finished.append(run)
        self._turn_soon()

    async def close(self, grace_seconds: float) -> None:
        """Stops claiming, lets the requests in flight end (each stops its endpoint's run after it,
        leased deliveries not sent yet are given back), records them and releases the endpoints;
        what is cut off here is sent again (its endpoint's lock goes with the connection, a lease
        ends)."""
        self._stop.set()
        in_flight = [*self._busy.values(), *self._tasks]
        if in_flight:
            await asyncio.wait(in_flight, timeout=grace_seconds)
        self._wake.set()
        if self._loop is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._loop, timeout=5)
        self._closed = True
        for task in [*self._busy.values(), *self._tasks]:  # past the grace: left to a lease or lock
            task.cancel()
        self._drop_connection()
        await self.client.aclose()

    def _drop_connection(self) -> None:
        if self._conn is not None:
            self._conn.terminate()
            self._conn = None


def disabled(flagged: list[Flagged]) -> None:
    """Endpoints a turn disabled (and audited, in the same statement): counted and logged."""
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
            disabled(flagged)
            if flagged:  # once: if it could not, a scheduler's sweep does it
                await claims.hold(conn, [f.endpoint_id for f in flagged])
            if not claimed and not runs:
                return attempts
            runs = list(await asyncio.gather(*(send_claimed(active, settings, c) for c in claimed)))
            attempts += sum(len(r.sent) for r in runs)
    finally:
        await conn.close()  # releases whatever it still holds
        if own:
            await active.aclose()
