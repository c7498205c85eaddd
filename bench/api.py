"""API benchmark against uvicorn over real HTTP (one API process): p50/p99 and requests/s of
`lead(id)` with its assignments and of the nested `leads(first: 100)` query, at concurrency 1 and
16. The load generator (bench/harness.py GraphQLClient: keep-alive HTTP/1.1, one request at a
time per connection) runs on the same 2 cores as uvicorn and PostgreSQL.

Absolute latencies differ 2-3x between machines, so the figures with targets are ratios to a floor
measured in the same run against the same process: `{ __typename }` (HTTP, authentication from the
process's cache, GraphQL parse, validate and execute; no SQL). lead_over_floor = `lead(id)` p50 /
floor p50, leads100_over_floor = `leads(first: 100)` p50 / floor p50, all at concurrency 1. The
concurrency-1 queries are measured in interleaved rounds (floor, me, lead, leads100, five times),
so a burst of load from elsewhere on the machine hits the floor as much as the figures; each ratio
is also printed round by round, and flagged `unsteady` when those differ by more than 25%. On a
machine loaded by others the latency ratios still grow with the load: `lead(id)` crosses process
boundaries (four SQL round trips) ten times to the floor's two, and each crossing waits for a CPU.
The table also gives the API process's CPU per request, which waits for nothing.

    python bench/api.py [--database-url URL --redis-url URL] [--seconds 5] [--rounds 5]

Without URLs it starts embedded PostgreSQL and Redis. Last line: one JSON object."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from harness import GraphQLClient, free_port, report, run_with_servers, wait_ready  # noqa: E402

from app.db import create_database  # noqa: E402
from app.engine.distribute import distribute_lead  # noqa: E402
from app.main import api_argv  # noqa: E402
from app.services import auth, billing, leads, niches  # noqa: E402
from app.services.audit import SYSTEM  # noqa: E402

LEAD = """query($id: UUID!) { lead(id: $id) { id status attributes
  assignments { priceChargedCents provider { name } competitionLevel { name } } } }"""
LEADS100 = """{ leads(first: 100) { edges { node { assignments { provider { name } competitionLevel { name } } } } } }"""


async def seed(database_url: str, leads_count: int) -> tuple[str, list[str]]:
    db = create_database(database_url)
    try:
        niche = await niches.create_niche(db, actor=SYSTEM, name=f"Bench {random.random()}")
        levels = [
            await niches.create_level(
                db, actor=SYSTEM, niche_id=niche.id, name=n, price_cents=p, max_recipients=3
            )
            for n, p in (("Gold", 4500), ("Silver", 3000), ("Bronze", 1500))
        ]
        for i in range(12):
            p = await billing.create_provider(
                db, actor=SYSTEM, name=f"P{i}", email=f"p{i}.{random.random()}@b.test"
            )
            await billing.top_up(db, actor=SYSTEM, provider_id=p.id, amount_cents=10**10, reference="seed")
            for level in levels:
                await billing.subscribe(db, actor=SYSTEM, provider_id=p.id, competition_level_id=level.id)
        lead_ids = []
        for _ in range(leads_count):
            lead = await leads.submit_lead(
                db, actor=SYSTEM, niche_id=niche.id, attributes={"state": "TX", "name": "A"}
            )
            await leads.approve_lead(db, actor=SYSTEM, lead_id=lead.id)
            await distribute_lead(db, lead_id=lead.id)
            lead_ids.append(str(lead.id))
        key = await auth.create_api_key(db, actor=SYSTEM, name="bench", scopes=["admin", "read"])
        return key.secret, lead_ids
    finally:
        await db.dispose()


async def measure(
    port: int,
    token: str,
    query: str,
    variables: list[dict[str, str]],
    *,
    clients: int,
    seconds: float | None,
    count: int | None,
) -> tuple[list[float], float]:
    """Latencies (ms) and the elapsed seconds of `count` requests or `seconds` of them."""
    latencies: list[float] = []
    deadline = time.perf_counter() + (seconds or 1e9)
    remaining = [count or 10**9]
    graphql = GraphQLClient("127.0.0.1", port, token, connections=clients)

    async def client() -> None:
        while time.perf_counter() < deadline and remaining[0] > 0:
            remaining[0] -= 1
            chosen = random.choice(variables)
            start = time.perf_counter()
            await graphql.execute(query, chosen)  # raises on an error
            latencies.append((time.perf_counter() - start) * 1000)

    try:
        for _ in range(5):  # warm-up
            await graphql.execute(query, variables[0])
        started = time.perf_counter()
        await asyncio.gather(*(client() for _ in range(clients)))
        elapsed = time.perf_counter() - started
    finally:
        await graphql.close()
    return latencies, elapsed


def figures_of(latencies: list[float], elapsed: float) -> dict[str, float]:
    ordered = sorted(latencies)
    return {
        "p50_ms": statistics.median(ordered),
        "p99_ms": ordered[max(0, int(len(ordered) * 0.99) - 1)],
        "rps": len(ordered) / elapsed,
        "n": len(ordered),
    }


# the concurrency-1 queries, measured in interleaved rounds: name, query, requests per round
ROUND = (
    ("typename_c1", "{ __typename }", 100),  # the floor: HTTP + GraphQL, no SQL
    ("me_c1", "{ me { label } }", 100),  # the credential as the resolver sees it, still no SQL
    ("lead_c1", LEAD, 200),
    ("leads100_c1", LEADS100, 20),
)


async def run(database_url: str, redis_url: str, seconds: float, rounds: int) -> dict[str, Any]:
    token, lead_ids = await seed(database_url, 200)
    port = free_port()
    env = os.environ | {"DATABASE_URL": database_url, "REDIS_URL": redis_url, "ENVIRONMENT": "production"}
    server = subprocess.Popen(
        [sys.executable, "-m", *api_argv(port=port, quiet=True)],
        cwd=ROOT,
        env=env,
    )
    try:
        async with httpx.AsyncClient() as http:
            await wait_ready(http, f"http://127.0.0.1:{port}", "/healthz")
        ids = [{"id": i} for i in lead_ids]
        api = psutil.Process(server.pid)
        samples: dict[str, tuple[list[float], float]] = {name: ([], 0.0) for name, _, _ in ROUND}
        round_p50: dict[str, list[float]] = {name: [] for name, _, _ in ROUND}
        api_cpu: dict[str, float] = dict.fromkeys(round_p50, 0.0)
        for _ in range(rounds):
            for name, query, count in ROUND:
                variables = ids if query is LEAD else [{}]
                cpu = sum(api.cpu_times()[:2])
                got, elapsed = await measure(
                    port, token, query, variables, clients=1, seconds=None, count=count
                )
                api_cpu[name] += sum(api.cpu_times()[:2]) - cpu
                samples[name] = (samples[name][0] + got, samples[name][1] + elapsed)
                round_p50[name].append(statistics.median(got))
        figures = {name: figures_of(*sample) for name, sample in samples.items()}
        for name, (got, _) in samples.items():  # the API process's CPU per request (warm-ups included)
            figures[name]["api_cpu_ms"] = api_cpu[name] * 1000 / (len(got) + 5 * rounds)
        latencies, elapsed = await measure(port, token, LEAD, ids, clients=16, seconds=seconds, count=None)
        figures["lead_c16"] = figures_of(latencies, elapsed)
        latencies, elapsed = await measure(
            port, token, LEADS100, [{}], clients=16, seconds=seconds, count=None
        )
        figures["leads100_c16"] = figures_of(latencies, elapsed)
    finally:
        server.terminate()
        server.wait(timeout=10)
    print(f"{'query':<14} {'p50 ms':>8} {'p99 ms':>8} {'req/s':>8} {'n':>6} {'API CPU ms/req':>15}")
    for name, f in figures.items():
        cpu = f"{f['api_cpu_ms']:>15.3f}" if "api_cpu_ms" in f else ""
        print(f"{name:<14} {f['p50_ms']:>8.2f} {f['p99_ms']:>8.2f} {f['rps']:>8.0f} {f['n']:>6.0f} {cpu}")
    floor = figures["typename_c1"]["p50_ms"]
    summary: dict[str, Any] = {"bench": "api"}
    for name, query in (("lead_over_floor", "lead_c1"), ("leads100_over_floor", "leads100_c1")):
        # the same ratio round by round: far apart, the load from elsewhere changed during the run
        per_round = [a / b for a, b in zip(round_p50[query], round_p50["typename_c1"], strict=True)]
        print(f"{name} round by round: " + ", ".join(f"{r:.2f}" for r in per_round))
        if max(per_round) > 1.25 * min(per_round):
            summary.setdefault("unsteady", []).append(name)
    report(summary, "lead_over_floor", figures["lead_c1"]["p50_ms"] / floor, "<= 5")
    report(summary, "leads100_over_floor", figures["leads100_c1"]["p50_ms"] / floor, "<= 45")
    return summary | {
        "typename_p50_ms_c1": round(figures["typename_c1"]["p50_ms"], 3),
        "api_cpu_ms_per_request_c1": {k: round(figures[k]["api_cpu_ms"], 3) for k in api_cpu},
        "me_p50_ms_c1": round(figures["me_c1"]["p50_ms"], 3),
        "lead_p50_ms_c1": round(figures["lead_c1"]["p50_ms"], 3),
        "lead_p99_ms_c1": round(figures["lead_c1"]["p99_ms"], 3),
        "leads100_p50_ms_c1": round(figures["leads100_c1"]["p50_ms"], 3),
        "leads100_p99_ms_c1": round(figures["leads100_c1"]["p99_ms"], 3),
        "lead_rps_c16": round(figures["lead_c16"]["rps"], 1),
        "lead_p50_ms_c16": round(figures["lead_c16"]["p50_ms"], 3),
        "lead_p99_ms_c16": round(figures["lead_c16"]["p99_ms"], 3),
        "leads100_rps_c16": round(figures["leads100_c16"]["rps"], 1),
        "leads100_p99_ms_c16": round(figures["leads100_c16"]["p99_ms"], 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database-url")
    parser.add_argument("--redis-url")
    parser.add_argument("--seconds", type=float, default=5)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    summary = run_with_servers(
        "lw-api-", args.database_url, args.redis_url, lambda db, r: run(db, r, args.seconds, args.rounds)
    )
    print(json.dumps(summary))


if __name__ == "__main__":
    main()
