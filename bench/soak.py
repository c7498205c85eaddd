"""Soak: minutes of mixed load against real processes (one API, a worker process with two
children, the scheduler) on one PostgreSQL and one Redis: distributeLead at a steady rate, reads
(`lead(id)`, `leads(first: 20)`), and 500 WebSocket subscribers on the niches' feeds. Reports
throughput, p99 latencies, every process's RSS after warm-up and at the end, and the largest
PostgreSQL and Redis connection counts seen.

    python bench/soak.py [--minutes 10] [--rate 40] [--subscribers 500] [--database-url … --redis-url …]

Last line: one JSON object."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from e2e_parts import DISTRIBUTE, Feed, pct, seed, start_feeds  # noqa: E402
from harness import free_port, run_with_servers, wait_ready  # noqa: E402

from app.main import api_argv  # noqa: E402
from app.settings import Settings  # noqa: E402
from app.tasks.broker import worker_argv  # noqa: E402

LEAD = "query($id: UUID!) { lead(id: $id) { id status assignments { provider { name } } } }"
LEADS = "{ leads(first: 20) { edges { node { id status } } } }"


def tree_rss(pid: int) -> dict[str, float]:
    """RSS in MiB of a process and each of its children, by a stable name."""
    out: dict[str, float] = {}
    try:
        root = psutil.Process(pid)
        for i, proc in enumerate([root, *root.children(recursive=True)]):
            out[f"{pid}.{i}:{proc.name()}"] = proc.memory_info().rss / 2**20
    except psutil.NoSuchProcess:
        pass
    return out


async def main_async(args: argparse.Namespace, database_url: str, redis_url: str) -> dict[str, Any]:
    import asyncpg
    from redis.asyncio import Redis

    leads_needed = int(args.rate * args.minutes * 60 * 1.2) + 2000
    token, niche_ids, leads = await seed(database_url, 20, leads_needed // 20)
    pool = [lid for n in niche_ids for lid in leads[n]]
    random.shuffle(pool)
    env = os.environ | {
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "ENVIRONMENT": "production",
        "PROMETHEUS_MULTIPROC_DIR": tempfile.mkdtemp(prefix="lw-soak-metrics-"),
    }
    port = free_port()
    named = {
        "api": [sys.executable, "-m", *api_argv(port=port, quiet=True)],
        "worker": [
            sys.executable,
            "-m",
            "taskiq",
            *worker_argv(Settings(), processes=2),
            "--log-level",
            "WARNING",
        ],
        "scheduler": [
            sys.executable,
            "-m",
            "taskiq",
            "scheduler",
            "app.tasks.scheduler:scheduler",
            "--log-level",
            "WARNING",
        ],
    }
    procs = {
        name: subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name, argv in named.items()
    }
    base, ws_url = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/graphql"
    pg = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    redis = Redis.from_url(redis_url)
    dist_lat: list[float] = []
    read_lat: list[float] = []
    errors = 0
    pg_max = redis_max = 0
    try:
        async with httpx.AsyncClient(timeout=60, limits=httpx.Limits(max_connections=40)) as http:
            await wait_ready(http, base)
            headers = {"Authorization": f"Bearer {token}"}
            feeds = [Feed(ws_url, token, niche_ids[i % len(niche_ids)]) for i in range(args.subscribers)]
            feed_tasks = await start_feeds(feeds)
            done_ids: list[str] = []
            stop_at = time.monotonic() + args.minutes * 60
            warm_until = time.monotonic() + min(30.0, args.minutes * 60 / 4)

            async def post(query: str, variables: dict[str, Any], sink: list[float]) -> Any:
                nonlocal errors
                start = time.perf_counter()
                response = await http.post(
                    f"{base}/graphql", json={"query": query, "variables": variables}, headers=headers
                )
                sink.append((time.perf_counter() - start) * 1000)
                body = response.json()
                if body.get("errors"):
                    errors += 1
                return body.get("data")

            async def distributor() -> None:
                interval = 1 / args.rate
                next_at = time.monotonic()
                while time.monotonic() < stop_at and pool:
                    lead_id = pool.pop()
                    asyncio.create_task(post(DISTRIBUTE, {"id": lead_id, "k": None}, dist_lat))
                    done_ids.append(lead_id)
                    next_at += interval
                    await asyncio.sleep(max(0.0, next_at - time.monotonic()))

            async def reader() -> None:
                while time.monotonic() < stop_at:
                    if done_ids:
                        await post(LEAD, {"id": random.choice(done_ids)}, read_lat)
                    await post(LEADS, {}, read_lat)
                    await asyncio.sleep(0.02)

            async def sampler() -> dict[str, dict[str, float]]:
                nonlocal pg_max, redis_max
                rss: dict[str, dict[str, float]] = {}
                while time.monotonic() < stop_at:
                    pg_max = max(
                        pg_max,
                        await pg.fetchval(
                            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                        ),
                    )
                    redis_max = max(redis_max, int((await redis.info("clients"))["connected_clients"]))
                    if "start" not in rss and time.monotonic() > warm_until:
                        rss["start"] = {
                            f"{n}/{k}": v for n, p in procs.items() for k, v in tree_rss(p.pid).items()
                        }
                    await asyncio.sleep(1)
                rss["end"] = {f"{n}/{k}": v for n, p in procs.items() for k, v in tree_rss(p.pid).items()}
                return rss

            terminal = (
                "SELECT count(*) FROM distribution_runs WHERE status IN "
                "('SUCCESS', 'PARTIAL', 'NO_ELIGIBLE', 'FAILED')"
            )
            before = await pg.fetchval(terminal)  # the seed's history
            started = time.monotonic()
            results = await asyncio.gather(distributor(), reader(), reader(), sampler())
            elapsed = time.monotonic() - started
            rss = results[3]
            await asyncio.sleep(3)  # let the last distributions finish
            finished = await pg.fetchval(terminal) - before
            delivered = sum(f.received for f in feeds)
            for task in feed_tasks:
                task.cancel()
    finally:
        await pg.close()
        await redis.aclose()
        for p in procs.values():
            try:
                os.killpg(p.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for p in procs.values():
            try:
                p.wait(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
    growth = {k: (rss["end"].get(k, 0) - v) / v * 100 for k, v in rss.get("start", {}).items() if v}
    print(f"{'process':<48} {'RSS start MiB':>14} {'end MiB':>9} {'growth %':>9}")
    for key, start_mib in rss.get("start", {}).items():
        print(f"{key:<48} {start_mib:>14.1f} {rss['end'].get(key, 0):>9.1f} {growth[key]:>9.1f}")
    summary = {
        "bench": "soak",
        "minutes": round(elapsed / 60, 2),
        "dist_per_s": round(finished / elapsed, 1),
        "distribute_p99_ms": round(pct(dist_lat, 0.99), 1) if dist_lat else None,
        "read_p50_ms": round(statistics.median(read_lat), 1) if read_lat else None,
        "read_p99_ms": round(pct(read_lat, 0.99), 1) if read_lat else None,
        "requests_with_errors": errors,
        "events_delivered": delivered,
        "subscribers": args.subscribers,
        "rss_growth_pct_max": round(max(growth.values()), 1) if growth else None,
        "pg_connections_max": pg_max,
        "redis_connections_max": redis_max,
    }
    print(
        f"{finished} distributions in {elapsed:.0f} s; {delivered} events delivered to {args.subscribers} "
        f"subscribers; {errors} requests with errors"
    )
    return summary


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--minutes", type=float, default=10)
    parser.add_argument("--rate", type=float, default=40, help="distributeLead per second")
    parser.add_argument("--subscribers", type=int, default=500)
    parser.add_argument("--database-url")
    parser.add_argument("--redis-url")
    args = parser.parse_args()
    summary = run_with_servers(
        "lw-soak-", args.database_url, args.redis_url, lambda db, r: main_async(args, db, r)
    )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
