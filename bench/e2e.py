"""End-to-end benchmark against real processes: one uvicorn API process, two taskiq worker
processes, on one PostgreSQL and one Redis (embedded unless URLs are given), all on this machine
together with the load generator.

(a) distributeLead -> its COMPLETED event on a nicheActivity feed, one at a time: p50/p99
(b) a burst of 2,000 distributeLead over 20 niches: distributions/s, first request to last COMPLETED;
    the niches' requests interleaved (as traffic arrives), then another 2,000 grouped niche by niche
(c) 1,000 WebSocket subscribers on one niche feed: delivery latency p50/p99 and events/s delivered
(d) webhooks: the interleaved burst with every buyer having an endpoint on a local https receiver
    (bench/webhook_receiver.py), and with one of them per niche dead (connection refused), each
    between two bursts without endpoints; webhook_p50_ms / webhook_p99_ms: engine write (a
    delivery's created_at, in the distribution's statement) -> the receiver has the request

Absolute figures differ 2-3x between machines, so two floors are measured in the same run on the
same servers, and the figures with targets are ratios to them:

- pipeline_ratio = (b) interleaved rate / the engine alone: just before and just after that
  burst, the same number of new leads of the same 20 niches (interleaved) in the burst's own
  database, distribute_lead() called from this process with the workers' concurrency (2 processes
  x WORKER_CONCURRENCY), no API, queue, events or notification sending; the mean of the two. What
  the pipeline adds to the engine's transaction.
- burst_with_webhooks_ratio, burst_dead_endpoint_ratio = (d)'s rates / the mean of the bursts
  without endpoints just before and just after each; webhook_p99_over_complete_p50 = (d)'s
  webhook_p99_ms / (a)'s complete_p50_ms.
- fanout_floor_ratio = (c) the API's CPU per event delivered / the CPU per frame delivered of a
  bare Starlette WebSocket endpoint (bench/wsfloor.py, its own uvicorn process with the API's
  flags) sending frames of the same shape (the same event types per run, the same pacing) to the
  same 1,000 clients, measured the same way right after (c).

    python bench/e2e.py [--database-url URL --redis-url URL] [--burst 2000] [--subscribers 1000]
                        [--webhooks-only]      # (a) and (d) alone
    python bench/e2e.py --only-fanout      # (c) and its floor alone

Last line: one JSON object."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from harness import (  # noqa: E402
    GraphQLClient,
    floor_drift,
    free_port,
    libpq,
    report,
    run_with_servers,
    wait_ready,
)
from webhooks import Receiver, add_endpoints, endpoints, latencies_ms, latency_split_ms, wait_delivered  # noqa: E402

from app.db import create_database  # noqa: E402
from app.engine.distribute import distribute_lead  # noqa: E402
from app.main import api_argv  # noqa: E402
from app.services import auth  # noqa: E402
from app.services.audit import SYSTEM  # noqa: E402
from app.settings import Settings  # noqa: E402
from app.tasks.broker import worker_argv  # noqa: E402
from app.wsclient import subscription  # noqa: E402

FEED = "subscription($n: UUID!) { nicheActivity(nicheId: $n) { runId type at } }"
DISTRIBUTE = "mutation($id: UUID!) { distributeLead(leadId: $id) { id } }"


# the benchmark's own PostgreSQL postmaster and redis-server (kind -> pid): on a machine shared with
# other servers of the same names, only these and their children are counted
OWN_SERVERS: dict[str, int] = {}


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
    partly after the last run)."""
    import asyncpg

    pg = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    sem = asyncio.Semaphore(32)

    async def limited(lead_id: str) -> str:
        async with sem:
            return await distribute(lead_id)

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
    finally:
        await pg.close()
    return {
        "completed": done,
        "dist_per_s": round(done / (finished - started), 1),
        "requests_per_s": round(len(burst) / (sent - started), 1),
        "mailed_s": mailed,
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
        for lead_id in lead_ids[: 3 * concurrency]:
            await distribute_lead(db, lead_id=lead_id)
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


async def main_async(args: argparse.Namespace, database_url: str, redis_url: str) -> dict[str, Any]:
    # per niche: warm-up + (a) + (c) from the front, the bursts from the back: never the same lead twice
    token, niche_ids, leads = await seed(
        database_url, 20, 10 + args.single + args.fanout_leads + 7 * (args.burst // 20)
    )
    await find_own_servers(database_url, redis_url)
    receiver = Receiver(Path(tempfile.mkdtemp(prefix="lw-e2e-hooks-")))
    env = os.environ | {"DATABASE_URL": database_url, "REDIS_URL": redis_url, "ENVIRONMENT": "production"}
    env |= receiver.env  # https to a local receiver under this run's certificate authority
    port = free_port()
    # the services' logs (the workers log every notification: no SMTP server here) go to a file
    logs = tempfile.NamedTemporaryFile(prefix="lw-e2e-", suffix=".log", delete=False)  # noqa: SIM115
    print(f"service logs: {logs.name}", flush=True)
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", *api_argv(port=port, quiet=True)],
            cwd=ROOT,
            env=env,
            start_new_session=True,
            stdout=logs,
            stderr=logs,
        ),
        subprocess.Popen(
            [sys.executable, "-m", "taskiq", *worker_argv(Settings(), processes=2), "--log-level", "WARNING"],
            cwd=ROOT,
            env=env,
            start_new_session=True,
            stdout=logs,
            stderr=logs,
        ),
    ]
    # the fan-out floor, idle until (c) is done: the API's uvicorn flags, another application
    floor_port = free_port()
    floor_argv = [
        "bench.wsfloor:create_app" if a == "app.main:create_app" else a
        for a in api_argv(port=floor_port, quiet=True)
    ]
    floor = subprocess.Popen(
        [sys.executable, "-m", *floor_argv], cwd=ROOT, start_new_session=True, stdout=logs, stderr=logs
    )
    base, ws_url = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/graphql"
    result: dict[str, Any] = {"bench": "e2e"}
    try:
        async with httpx.AsyncClient(timeout=60) as http:
            await wait_ready(http, base)
            await wait_ready(http, f"http://127.0.0.1:{floor_port}")
        client = GraphQLClient("127.0.0.1", port, token, connections=32)
        try:

            async def distribute(lead_id: str) -> str:
                data = await client.execute(DISTRIBUTE, {"id": lead_id})
                return str(data["distributeLead"]["id"])

            if not args.only_fanout:  # (a), (b) and (d)
                # (a) one at a time
                feed = Feed(ws_url, token, niche_ids[0])
                (feed_task,) = await start_feeds([feed])
                await asyncio.sleep(0.3)
                pool = leads[niche_ids[0]]
                for lead_id in pool[:10]:  # warm-up
                    await distribute(lead_id)
                await asyncio.sleep(1)
                latencies = []
                for lead_id in pool[10 : 10 + args.single]:
                    start = time.time()
                    run_id = await distribute(lead_id)
                    while run_id not in feed.completed:
                        await asyncio.sleep(0.0005)
                    latencies.append((feed.completed[run_id] - start) * 1000)
                feed_task.cancel()
                result["complete_p50_ms"] = round(statistics.median(latencies), 2)
                result["complete_p99_ms"] = round(pct(latencies, 0.99), 2)
                print(
                    f"(a) distributeLead -> COMPLETED, one at a time, n={len(latencies)}: "
                    f"p50 {result['complete_p50_ms']} ms, p99 {result['complete_p99_ms']} ms",
                    flush=True,
                )

                # (b) bursts over 20 niches: as traffic from many niches arrives (interleaved), and each
                # niche's leads in a row (grouped: the workers' runs mostly wait on one niche's lock).
                # The interleaved one between two runs of its floor, the engine alone on the same
                # servers and database with the workers' concurrency (2 processes x WORKER_CONCURRENCY):
                # the ratio is to their mean, so load from elsewhere that drifts during the run hits
                # both alike.
                concurrency = 2 * Settings().worker_concurrency
                per_niche = args.burst // len(niche_ids)
                interleaved = [leads[n][-per_niche + i] for i in range(per_niche) for n in niche_ids]
                grouped = [lid for n in niche_ids for lid in leads[n][-2 * per_niche : -per_niche]]
                floors: list[float] = []
                steps: list[tuple[str, list[str]]] = [
                    ("alone", []),
                    ("interleaved", interleaved),
                    ("alone", []),
                    ("grouped by niche", grouped),
                ]
                for name, burst in steps if not args.webhooks_only else []:
                    if name == "alone":
                        alone = await engine_alone(
                            database_url,
                            procs,
                            niches=len(niche_ids),
                            count=args.burst,
                            concurrency=concurrency,
                        )
                        floors.append(alone["dist_per_s"])
                        print(
                            f"(b) floor: the engine alone, {args.burst} leads over {len(niche_ids)} niches "
                            f"interleaved, distribute_lead() {concurrency} at a time from one process: "
                            f"{alone['dist_per_s']:.1f} distributions/s",
                            flush=True,
                        )
                        print_ms("CPU ms per distribution", alone["cpu_ms"])
                        continue
                    figures = await run_burst(database_url, procs, distribute, burst)
                    key = "burst" if name == "interleaved" else "burst_grouped"
                    result[f"{key}_dist_per_s"] = figures["dist_per_s"]
                    result[f"{key}_requests_per_s"] = figures["requests_per_s"]
                    print(
                        f"(b) burst of {len(burst)} over {len(niche_ids)} niches, {name}, 2 workers: "
                        f"{figures['completed']} completed, {figures['dist_per_s']} distributions/s end to end "
                        f"(requests accepted at {figures['requests_per_s']}/s; last notification sent after "
                        f"{figures['mailed_s']:.1f} s)",
                        flush=True,
                    )
                    print_ms("CPU ms per distribution (with its notifications)", figures["cpu_ms"])
                engine_floor = floor_drift(result, "engine_alone_dist_per_s", *floors) if floors else 0.0
                result["engine_alone_dist_per_s"] = round(engine_floor, 1)

                # (d) webhooks, on the leads before (b)'s
                webhooks = await webhook_bursts(
                    database_url, procs, distribute, [leads[n] for n in niche_ids], per_niche, receiver
                )
                for key, value in webhooks.pop("summary").items():
                    result[key] = result.get(key, []) + value if key == "unsteady" else value
                if args.webhooks_only:
                    print("ratios to the floors measured above:", flush=True)
                    report_webhooks(result, webhooks)
                    return result

            else:  # the warm-up of (a)
                for lead_id in leads[niche_ids[0]][:10]:
                    await distribute(lead_id)
                await asyncio.sleep(1)

            # (c) fan-out
            target = niche_ids[1]
            subscribers = [Feed(ws_url, token, target, log=i == 0) for i in range(args.subscribers)]
            sub_tasks = await start_feeds(subscribers, batch=100)
            await asyncio.sleep(1)
            fan_leads = leads[target][: args.fanout_leads]
            cpu_before = cpu_seconds(procs)
            t0 = time.time()
            fan_runs = [await distribute(lid) for lid in fan_leads]
            deadline = time.time() + 120
            while time.time() < deadline and not all(set(fan_runs) <= set(s.completed) for s in subscribers):
                await asyncio.sleep(0.1)
            t1 = max(max(s.completed.values(), default=t0) for s in subscribers)
            delivered = sum(s.received for s in subscribers)
            cpu = {k: v - cpu_before.get(k, 0.0) for k, v in cpu_seconds(procs).items()}
            lat = [x for s in subscribers for x in s.latencies]
            for t in sub_tasks:
                t.cancel()
            result["fanout_subscribers"] = len(subscribers)
            result["fanout_p50_ms"] = round(statistics.median(lat), 2)
            result["fanout_p99_ms"] = round(pct(lat, 0.99), 2)
            result["fanout_events_per_s"] = round(delivered / max(t1 - t0, 1e-9), 1)
            result["fanout_complete"] = all(set(fan_runs) <= set(s.completed) for s in subscribers)
            print(
                f"(c) {len(subscribers)} subscribers on one niche, {len(fan_leads)} leads: {delivered} events "
                f"delivered, p50 {result['fanout_p50_ms']} ms, p99 {result['fanout_p99_ms']} ms, "
                f"{result['fanout_events_per_s']} events/s, all complete: {result['fanout_complete']}",
                flush=True,
            )
            print(
                "    CPU µs per event delivered: "
                + ", ".join(f"{k} {v * 1e6 / max(delivered, 1):.1f}" for k, v in cpu.items()),
                flush=True,
            )
            api_us = cpu["api"] * 1e6 / max(delivered, 1)
            result["fanout_api_cpu_us_per_event"] = round(api_us, 2)

            # the floor of (c): the same frames to the same number of clients from a bare endpoint
            assert subscribers[0].log is not None
            groups, gap_ms = feed_groups(subscribers[0].log)
            bare = await fanout_floor(floor, floor_port, token, args.subscribers, groups, gap_ms)
            result["fanout_floor_cpu_us_per_frame"] = round(bare["cpu_us_per_frame"], 2)
            print(
                f"(c) floor: bare Starlette endpoint (bench/wsfloor.py), {args.subscribers} subscribers, "
                f"{len(groups)} groups {gap_ms:.1f} ms apart: {bare['delivered']} frames delivered "
                f"({bare['frame_bytes']:.0f} bytes each; the API's {subscribers[0].bytes / max(subscribers[0].received, 1):.0f}), "
                f"p50 {bare['p50_ms']:.2f} ms, p99 {bare['p99_ms']:.2f} ms, {bare['frames_per_s']:.0f} frames/s, "
                f"all complete: {bare['complete']}; its CPU µs per frame delivered: {bare['cpu_us_per_frame']:.2f}",
                flush=True,
            )

            print("ratios to the floors measured above:", flush=True)
            if not args.only_fanout:
                report(result, "pipeline_ratio", result["burst_dist_per_s"] / engine_floor, ">= 0.5")
                report_webhooks(result, webhooks)
            if min(cpu["api"], bare["cpu_s"]) >= 0.2:  # CPU time is counted in 10 ms ticks
                report(result, "fanout_floor_ratio", api_us / bare["cpu_us_per_frame"], "<= 1.5")
            else:
                print("fanout_floor_ratio: not measured (too little CPU time to count: more subscribers)")
        finally:
            await client.close()
    finally:
        receiver.stop()
        for p in [*procs, floor]:
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in [*procs, floor]:
            try:
                p.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
    return result


def print_ms(label: str, figures: dict[str, float]) -> None:
    print(f"    {label}: " + ", ".join(f"{k} {v:.2f}" for k, v in figures.items()), flush=True)


def report_webhooks(result: dict[str, Any], webhooks: dict[str, Any]) -> None:
    result["webhook_p50_ms"], result["webhook_p99_ms"] = webhooks["p50_ms"], webhooks["p99_ms"]
    report(result, "burst_with_webhooks_ratio", webhooks["with_ratio"], ">= 0.85")
    report(result, "burst_dead_endpoint_ratio", webhooks["dead_ratio"], ">= 0.85")
    report(result, "webhook_p99_over_complete_p50", webhooks["p99_ms"] / result["complete_p50_ms"], "<= 5")


async def postgres_cpu(pg: Any) -> dict[int, tuple[str, float]]:
    """CPU seconds of each PostgreSQL process so far (pid -> its kind, seconds): the webhook
    senders' connections apart from the rest, to tell a turn's cost from the engine's writes."""
    rows = await pg.fetch("SELECT pid, application_name FROM pg_stat_activity")
    out = {}
    for row in rows:
        kind = "webhook senders" if row["application_name"] == "leadwheel-webhook-sender" else "the rest"
        try:
            t = psutil.Process(row["pid"]).cpu_times()
        except psutil.NoSuchProcess:
            continue
        out[row["pid"]] = (kind, t.user + t.system)
    return out


async def webhook_bursts(
    database_url: str,
    procs: list[subprocess.Popen[bytes]],
    distribute: Callable[[str], Awaitable[str]],
    pools: list[list[str]],
    per_niche: int,
    receiver: Receiver,
) -> dict[str, Any]:
    """(d): the interleaved burst with an endpoint for every buyer, and with one dead endpoint per
    niche, each between two bursts without endpoints (the floor: load from elsewhere that drifts
    during the run hits both alike). The webhooks' figures count until the last live delivery has
    arrived."""
    import asyncpg

    pg = await asyncpg.connect(libpq(database_url))
    out: dict[str, Any] = {}
    try:
        await add_endpoints(pg, receiver.url)
        rates: list[float] = []
        for k, phase in enumerate(("none", "live", "none", "dead", "none")):
            await endpoints(pg, receiver, phase)
            burst = [pool[-(3 + k) * per_niche + i] for i in range(per_niche) for pool in pools]
            since = await pg.fetchval("SELECT now()")
            await receiver.arrivals()  # forget earlier ones
            receiver_cpu = sum(psutil.Process(receiver.proc.pid).cpu_times()[:2])
            pg_before = await postgres_cpu(pg)
            cpu_before = cpu_seconds(procs)
            started = time.time()
            run = await run_burst(database_url, procs, distribute, burst)
            rates.append(run["dist_per_s"])
            label = {
                "none": "no endpoints",
                "live": "an endpoint per buyer",
                "dead": "a dead endpoint per niche",
            }
            line = f"(d) burst of {len(burst)}, {label[phase]}: {run['dist_per_s']} distributions/s"
            cpu = run["cpu_ms"]
            if phase != "none":
                done = await wait_delivered(pg, since, receiver.url)
                arrivals = await receiver.arrivals()
                lat = await latencies_ms(pg, since, arrivals)
                split = await latency_split_ms(pg, since, arrivals)
                cpu = {
                    k2: (v - cpu_before.get(k2, 0.0)) * 1000 / run["completed"]
                    for k2, v in cpu_seconds(procs).items()
                }
                cpu["receiver"] = (
                    (sum(psutil.Process(receiver.proc.pid).cpu_times()[:2]) - receiver_cpu)
                    * 1000
                    / run["completed"]
                )
                line += (
                    f"; {len(lat)} webhooks received, engine write -> receiver p50 {statistics.median(lat):.2f} ms, "
                    f"p99 {pct(lat, 0.99):.2f} ms, the last {done - started:.1f} s after the first request"
                )
                if phase == "live":
                    out["p50_ms"], out["p99_ms"] = round(statistics.median(lat), 2), round(pct(lat, 0.99), 2)
                else:
                    out["dead_p50_ms"], out["dead_p99_ms"] = (
                        round(statistics.median(lat), 2),
                        round(pct(lat, 0.99), 2),
                    )
            print(line, flush=True)
            postgres: dict[str, float] = {"webhook senders": 0.0, "the rest": 0.0}
            for pid, (kind, seconds) in (await postgres_cpu(pg)).items():
                postgres[kind] += (seconds - pg_before.get(pid, (kind, 0.0))[1]) * 1000 / run["completed"]
            print_ms(
                "PostgreSQL CPU ms per distribution by connection (processes alive at the end)", postgres
            )
            if phase != "none":
                print(
                    "    of which: "
                    + ", ".join(
                        f"{part} p50 {statistics.median(v):.2f} ms p99 {pct(v, 0.99):.2f} ms"
                        for part, v in (
                            ("write -> first attempt", split["claimed"]),
                            ("attempt -> receiver", split["sent"]),
                        )
                        if v
                    ),
                    flush=True,
                )
            print(
                f"    CPU ms per distribution{' (with its webhooks)' if phase != 'none' else ''}: "
                + ", ".join(f"{k2} {v:.2f}" for k2, v in cpu.items()),
                flush=True,
            )
        summary: dict[str, Any] = {}
        out["with_ratio"] = rates[1] / floor_drift(
            summary, "burst_without_webhooks_dist_per_s", rates[0], rates[2]
        )
        out["dead_ratio"] = rates[3] / floor_drift(
            summary, "burst_without_webhooks_later_dist_per_s", rates[2], rates[4]
        )
        out["rates"] = rates
        out["summary"] = summary  # the floors before and after, and any unsteady warning
    finally:
        await pg.close()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database-url")
    parser.add_argument("--redis-url")
    parser.add_argument("--single", type=int, default=200)
    parser.add_argument("--burst", type=int, default=2000)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--fanout-leads", type=int, default=10)
    parser.add_argument(
        "--webhooks-only", action="store_true", help="(a) and (d) only: skips (b), (c) and their floors"
    )
    parser.add_argument(
        "--only-fanout",
        action="store_true",
        help="(c) and its floor alone, after (a)'s warm-up: no (a), (b), (d)",
    )
    args = parser.parse_args()
    summary = run_with_servers(
        "lw-e2e-", args.database_url, args.redis_url, lambda db, r: main_async(args, db, r)
    )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
