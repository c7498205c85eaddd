"""The measuring parts of bench/e2e.py (and bench/soak.py): the seed, the service's processes' CPU,
WebSocket feeds, a burst and its floor (the engine alone), and the fan-out floor's run."""

from __future__ import annotations

import asyncio
import contextlib
import json
import statistics
import subprocess
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any

import httpx
import psutil
from harness import libpq

from app.db import create_database
from app.engine.distribute import distribute_lead
from app.services import auth
from app.services.audit import SYSTEM
from app.wsclient import subscription

FEED = "subscription($n: UUID!) { nicheActivity(nicheId: $n) { runId type at } }"
DISTRIBUTE = "mutation($id: UUID!) { distributeLead(leadId: $id) { id } }"


# the benchmark's own PostgreSQL postmaster and redis-server (kind -> pid): on a machine shared with
# other servers of the same names, only these and their children are counted
OWN_SERVERS: dict[str, int] = {}
# the application_name of the benchmark's own PostgreSQL connections: their CPU is not the service's
BENCH_APPLICATION = "leadwheel-bench"


async def find_own_servers(database_url: str, redis_url: str) -> None:
    import asyncpg
    from redis.asyncio import Redis

    pg = await asyncpg.connect(libpq(database_url))
    try:
        OWN_SERVERS["postgres"] = psutil.Process(await pg.fetchval("SELECT pg_backend_pid()")).ppid()
    finally:
        await pg.close()
    redis = Redis.from_url(redis_url)
    try:
        OWN_SERVERS["redis"] = int((await redis.info("server"))["process_id"])
    finally:
        await redis.aclose()


def process_cpu(pid: int) -> float:
    """CPU seconds one process has used so far (user and system)."""
    t = psutil.Process(pid).cpu_times()
    return t.user + t.system


def slot_leads(pools: list[list[str]], per_niche: int, slot: int) -> list[str]:
    """The slot-th group of `per_niche` leads from the back of each niche's pool, interleaved
    (as traffic from many niches arrives): the bursts of (b) and (d) each take their own slot."""
    return [pool[-slot * per_niche + i] for i in range(per_niche) for pool in pools]


def cpu_seconds(procs: list[subprocess.Popen[bytes]]) -> dict[str, float]:
    """CPU seconds used so far by the API, the workers (with their children), PostgreSQL, Redis
    and this client: where a distribution's cost goes."""
    out = {"api": 0.0, "workers": 0.0, "postgres": 0.0, "redis": 0.0, "client": 0.0}
    for kind, pid in OWN_SERVERS.items():
        try:
            server = psutil.Process(pid)
            for p in [server, *server.children()]:
                t = p.cpu_times()
                out[kind] += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    for name, proc in zip(("api", "workers"), procs, strict=False):
        try:
            root = psutil.Process(proc.pid)
            for p in [root, *root.children(recursive=True)]:
                t = p.cpu_times()
                out[name] += t.user + t.system
        except psutil.NoSuchProcess:
            pass
    for p in [] if OWN_SERVERS else psutil.process_iter(["name", "cpu_times"]):
        kind = {"postgres": "postgres", "redis-server": "redis"}.get(p.info["name"] or "")
        if kind and p.info["cpu_times"] is not None:
            out[kind] += p.info["cpu_times"].user + p.info["cpu_times"].system
    me = psutil.Process().cpu_times()
    out["client"] = me.user + me.system
    return out


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[max(0, int(len(ordered) * q) - 1)]


HISTORY = 2000  # leads distributed before timing: see seed()
NEW_LEADS = """INSERT INTO leads (niche_id, status, attributes)
   SELECT md5('e2e-niche-' || (1 + i % $1))::uuid, 'APPROVED', '{"state": "TX"}'::jsonb
   FROM generate_series(0, $2 - 1) i RETURNING id, niche_id"""


async def seed(url: str, niches: int, leads_per_niche: int) -> tuple[str, list[str], dict[str, list[str]]]:
    """Niches, providers, subscriptions, the leads to distribute, and a history of HISTORY leads
    distributed (one transaction each, as production does) before VACUUM ANALYZE: statistics of
    empty tables let prepared statements cache sequential scans that slow down as the tables grow
    (../shared/pglimit/README.md), which measures the first minute of a new install, not a service."""
    import asyncpg

    conn = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute(
            """INSERT INTO niches (id, name, level_strategy)
               SELECT md5('e2e-niche-' || n)::uuid, 'E2E ' || n, 'FIRST_MATCH' FROM generate_series(1, $1) n""",
            niches,
        )
        await conn.execute(
            """INSERT INTO competition_levels (niche_id, name, order_position, price_cents, max_recipients)
               SELECT md5('e2e-niche-' || n)::uuid, lv.name, lv.pos, lv.price, 3
               FROM generate_series(1, $1) n,
                    (VALUES (1, 'Gold', 4500), (2, 'Silver', 3000), (3, 'Bronze', 1500)) lv (pos, name, price)""",
            niches,
        )
        await conn.execute(
            """INSERT INTO providers (id, name, email, balance_cents)
               SELECT md5('e2e-p-' || n || '-' || k)::uuid, 'P' || n || '.' || k, 'p' || n || '.' || k || '@e2e.test',
                      100000000000
               FROM generate_series(1, $1) n, generate_series(1, 10) k""",
            niches,
        )
        await conn.execute(
            """INSERT INTO ledger_entries (provider_id, amount_cents, balance_after_cents, kind, reference)
               SELECT id, balance_cents, balance_cents, 'TOP_UP', 'seed' FROM providers"""
        )
        await conn.execute(
            """INSERT INTO subscriptions (provider_id, competition_level_id)
               SELECT p.id, l.id FROM providers p JOIN competition_levels l
                 ON l.niche_id = md5('e2e-niche-' || split_part(substr(p.name, 2), '.', 1))::uuid"""
        )
        history = await conn.fetch(NEW_LEADS, niches, HISTORY)
        rows = await conn.fetch(NEW_LEADS, niches, niches * leads_per_niche)
        db = create_database(url, pool_size=4)
        try:
            for lead in history:
                await distribute_lead(db, lead_id=lead["id"])
        finally:
            await db.dispose()
        await conn.execute("UPDATE notifications SET status = 'SENT', attempts = 1, sent_at = now()")
        await conn.execute("VACUUM ANALYZE")
    finally:
        await conn.close()
    by_niche: dict[str, list[str]] = {}
    for r in rows:
        by_niche.setdefault(str(r["niche_id"]), []).append(str(r["id"]))
    db = create_database(url)
    key = await auth.create_api_key(
        db, actor=SYSTEM, name="e2e-bench", scopes=["admin", "read", "distribution:write"]
    )
    await db.dispose()
    return key.secret, list(by_niche), by_niche


class Feed:
    """One WebSocket subscription to a niche feed, recording (run id, type, event time, receive time).
    With `log`, also each event's (run id, type, event time), in order of arrival."""

    def __init__(self, ws_url: str, token: str, niche_id: str, *, log: bool = False) -> None:
        self.ws_url, self.token, self.niche_id = ws_url, token, niche_id
        self.completed: dict[str, float] = {}
        self.latencies: list[float] = []
        self.received = 0
        self.bytes = 0
        self.log: list[tuple[str, str, float]] | None = [] if log else None
        self.ready = asyncio.Event()

    async def run(self) -> None:
        async with subscription(self.ws_url, self.token, FEED, {"n": self.niche_id}, max_queue=None) as ws:
            self.ready.set()
            async for raw in ws:
                now = time.time()
                message = json.loads(raw)
                if message.get("type") != "next":
                    continue
                event = message["payload"]["data"]["nicheActivity"]
                self.received += 1
                self.bytes += len(raw)
                sent = datetime.fromisoformat(event["at"]).timestamp()
                self.latencies.append((now - sent) * 1000)
                if self.log is not None:
                    self.log.append((event["runId"], event["type"], sent))
                if event["type"] == "COMPLETED":
                    self.completed[event["runId"]] = now


async def start_feeds(feeds: list[Feed], batch: int = 50) -> list[asyncio.Task[None]]:
    """Starts the feeds a batch at a time and waits until each has subscribed; a feed that fails
    (refused, closed) fails the benchmark with its error instead of leaving it waiting forever."""
    tasks: list[asyncio.Task[None]] = []
    for i in range(0, len(feeds), batch):
        group = feeds[i : i + batch]
        started = [asyncio.create_task(f.run()) for f in group]
        tasks += started
        for feed, task in zip(group, started, strict=True):
            ready = asyncio.create_task(feed.ready.wait())
            await asyncio.wait({ready, task}, timeout=30, return_when=asyncio.FIRST_COMPLETED)
            ready.cancel()
            if task.done():
                task.result()  # raises the feed's error
                raise RuntimeError("a subscriber's stream ended before it subscribed")
            if not feed.ready.is_set():
                raise RuntimeError("a subscriber was not subscribed within 30 s")
    return tasks


async def run_burst(
    database_url: str,
    procs: list[subprocess.Popen[bytes]],
    distribute: Callable[[str], Awaitable[str]],
    burst: list[str],
) -> dict[str, Any]:
    """Sends `burst` (32 requests at a time) and waits for every run. Completion is read from
    PostgreSQL, so measuring does not load the API with 20 feeds: polled every 0.2 s (a poll looks
    up every run: polling faster took a tenth of PostgreSQL's CPU from the service); the end is the
    last run's finished_at (committed with it; its COMPLETED event follows within a millisecond).
    CPU is counted until the burst's notifications are sent too (the sender job batches them,
    partly after the last run). `pg_cpu_s`: what its polls cost PostgreSQL (its connection ends
    here: a caller reading the servers' CPU after it finds it among the processes that exited)."""
    import asyncpg

    pg = await asyncpg.connect(
        database_url.replace("postgresql+asyncpg://", "postgresql://"),
        server_settings={"application_name": BENCH_APPLICATION},
    )
    backend = psutil.Process(await pg.fetchval("SELECT pg_backend_pid()"))
    sem = asyncio.Semaphore(32)

    waits: list[float] = []

    async def limited(lead_id: str) -> str:
        async with sem:
            start = time.perf_counter()
            run_id = await distribute(lead_id)
            waits.append((time.perf_counter() - start) * 1000)
            return run_id

    try:
        cpu_before = cpu_seconds(procs)
        started = time.time()
        run_ids = await asyncio.gather(*(limited(lid) for lid in burst))
        sent = time.time()
        wanted = [uuid.UUID(r) for r in run_ids]
        while True:
            done = await pg.fetchval(
                "SELECT count(*) FROM distribution_runs WHERE id = ANY($1) AND status IN "
                "('SUCCESS', 'PARTIAL', 'NO_ELIGIBLE', 'FAILED')",
                wanted,
            )
            if done == len(wanted) or time.time() - started > 300:
                break
            await asyncio.sleep(0.2)
        last = await pg.fetchval("SELECT max(finished_at) FROM distribution_runs WHERE id = ANY($1)", wanted)
        finished = last.timestamp() if done == len(wanted) else time.time()
        while await pg.fetchval("SELECT count(*) FROM notifications WHERE status = 'PENDING'"):
            await asyncio.sleep(0.05)
        mailed = time.time() - started
        cpu = {k: v - cpu_before.get(k, 0.0) for k, v in cpu_seconds(procs).items()}
        pg_cpu = sum(backend.cpu_times()[:2])
    finally:
        await pg.close()
    # gone and reaped before the caller reads the servers' CPU: counted among the exited by then
    with contextlib.suppress(psutil.TimeoutExpired):
        await asyncio.to_thread(backend.wait, 5)
    return {
        "completed": done,
        "pg_cpu_s": pg_cpu,
        "dist_per_s": round(done / (finished - started), 1),
        "requests_per_s": round(len(burst) / (sent - started), 1),
        "mailed_s": mailed,
        "request_p50_ms": statistics.median(waits),
        "request_p99_ms": pct(waits, 0.99),
        "cpu_ms": {k: v * 1000 / max(done, 1) for k, v in cpu.items()},
    }


async def engine_alone(
    database_url: str, procs: list[subprocess.Popen[bytes]], *, niches: int, count: int, concurrency: int
) -> dict[str, Any]:
    """The floor of (b): the engine by itself on the same servers and database. `count` new leads
    of the same niches (interleaved, as the burst), distribute_lead() from this process,
    `concurrency` at a time; first a warm-up of the pool and its prepared statements. The
    notification rows it writes are marked sent: nobody wakes the sender for them, and the bursts
    wait until nothing is pending."""
    import asyncpg

    pg = await asyncpg.connect(libpq(database_url))
    db = create_database(database_url, pool_size=concurrency + 2)
    try:
        rows = await pg.fetch(NEW_LEADS, niches, count + 3 * concurrency)
        lead_ids = [r["id"] for r in rows]
        for i in range(3):  # at the run's concurrency: every connection it will use is open and warm
            warm = lead_ids[i * concurrency : (i + 1) * concurrency]
            await asyncio.gather(*(distribute_lead(db, lead_id=lead_id) for lead_id in warm))
        queue = iter(lead_ids[3 * concurrency :])

        async def distributor() -> None:
            for lead_id in queue:
                await distribute_lead(db, lead_id=lead_id)

        cpu_before = cpu_seconds(procs)
        started = time.perf_counter()
        await asyncio.gather(*(distributor() for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
        cpu = {k: v - cpu_before.get(k, 0.0) for k, v in cpu_seconds(procs).items()}
        await pg.execute(
            """UPDATE notifications n SET status = 'SENT', attempts = 1, sent_at = now()
               FROM assignments a WHERE a.id = n.assignment_id AND a.lead_id = ANY($1)
                 AND n.status = 'PENDING'""",
            lead_ids,
        )
    finally:
        await db.dispose()
        await pg.close()
    return {"dist_per_s": count / elapsed, "cpu_ms": {k: v * 1000 / count for k, v in cpu.items()}}


async def warm_pipeline(
    database_url: str,
    procs: list[subprocess.Popen[bytes]],
    distribute: Callable[[str], Awaitable[str]],
    niches: int,
    count: int = 192,
) -> None:
    """Before the bursts: `count` new leads through the service, as a burst sends them (32 at a
    time), so the API's and the workers' connections are open and their statements prepared, as
    engine_alone's warm-up does for its own (a new PostgreSQL backend costs tens of ms of CPU)."""
    import asyncpg

    pg = await asyncpg.connect(libpq(database_url))
    try:
        rows = await pg.fetch(NEW_LEADS, niches, count)
    finally:
        await pg.close()
    await run_burst(database_url, procs, distribute, [str(r["id"]) for r in rows])


def feed_groups(log: list[tuple[str, str, float]]) -> tuple[list[dict[str, Any]], float]:
    """What a subscriber of (c) received, as the groups the API got them in (a run's QUEUED, then
    the rest of its events: one Redis message each) and the mean time between groups (ms), for
    bench/wsfloor.py to send the same."""
    groups: list[dict[str, Any]] = []
    runs: dict[str, int] = {}
    times: list[float] = []
    for run_id, kind, at in log:
        run = runs.setdefault(run_id, len(runs))
        if not groups or groups[-1]["run"] != run or groups[-1]["types"] == ["QUEUED"]:
            groups.append({"run": run, "types": []})
            times.append(at)
        groups[-1]["types"].append(kind)
    gap_ms = (times[-1] - times[0]) * 1000 / (len(times) - 1) if len(times) > 1 else 0.0
    return groups, gap_ms


async def fanout_floor(
    floor: subprocess.Popen[bytes],
    port: int,
    token: str,
    subscribers: int,
    groups: list[dict[str, Any]],
    gap_ms: float,
) -> dict[str, Any]:
    """(c) against bench/wsfloor.py: the same clients, the same frames per subscriber."""
    feeds = [Feed(f"ws://127.0.0.1:{port}/graphql", token, "floor") for _ in range(subscribers)]
    tasks = await start_feeds(feeds, batch=100)
    await asyncio.sleep(1)
    proc = psutil.Process(floor.pid)
    before = proc.cpu_times()
    t0 = time.time()
    async with httpx.AsyncClient(timeout=120) as http:
        answer = (
            await http.post(f"http://127.0.0.1:{port}/fanout", json={"groups": groups, "gap_ms": gap_ms})
        ).json()
    runs = set(answer["runs"])
    deadline = time.time() + 120
    while time.time() < deadline and not all(runs <= set(f.completed) for f in feeds):
        await asyncio.sleep(0.1)
    t1 = max(max(f.completed.values(), default=t0) for f in feeds)
    after = proc.cpu_times()
    for t in tasks:
        t.cancel()
    delivered = sum(f.received for f in feeds)
    lat = [x for f in feeds for x in f.latencies]
    cpu = after.user + after.system - before.user - before.system
    return {
        "delivered": delivered,
        "complete": all(runs <= set(f.completed) for f in feeds),
        "cpu_s": cpu,
        "cpu_us_per_frame": cpu * 1e6 / max(delivered, 1),
        "frame_bytes": sum(f.bytes for f in feeds) / max(delivered, 1),
        "p50_ms": statistics.median(lat),
        "p99_ms": pct(lat, 0.99),
        "frames_per_s": delivered / max(t1 - t0, 1e-9),
    }


def print_ms(label: str, figures: dict[str, float]) -> None:
    print(f"    {label}: " + ", ".join(f"{k} {v:.2f}" for k, v in figures.items()), flush=True)
