"""The webhook sender alone: what one webhook costs the process that sends it and its PostgreSQL
connection, next to what it costs the receiver to take it. By default the webhooks go through a
claim (retries, backlogs, events written in the API); with `--leased` they take the path of a
distribution's deliveries to healthy endpoints: written leased to the sender's process (before
the CPU is read), then handed to its sender three at a time (`send_leased`), which sends them
without a claim and records them in its turns.

Deliveries are written at a steady rate, three at a time (a lead sold to three buyers), for 60
endpoints on the https receiver of bench/e2e.py (d) (bench/webhook_receiver.py). One
WebhookSender runs in a process of its own, woken on a timer at the rate of the writes (a worker's
sender is woken by each of its distributions). CPU is read from each process, so what the writes
cost stays apart:

- `sender_us`: the sender's process per webhook (signing, HTTP, TLS, its turns' round trips, and
  the timer's wakes);
- `sender_pg_us`: its PostgreSQL connection per webhook (the turns: claims and what was sent);
- `receiver_us`: the receiver per webhook (TLS and HTTP on the other side, no signature check);
- `sender_over_receiver`: the first over the last (the same requests, from both ends).

The figures are diagnostic (no target): bench/e2e.py (d) measures what webhooks cost a burst.

    python bench/webhook_sender.py [--database-url URL] [--webhooks 6000] [--rate 600] [--leased]

Without a URL it starts an embedded PostgreSQL; a URL must name a server on this machine (its
backend's CPU is read). Last line: one JSON object."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import asyncpg
import psutil
import uvloop
from e2e_parts import process_cpu
from harness import libpq, report, run_with_servers
from webhooks import Receiver, add_endpoints, endpoints

from app.db import create_database
from app.engine.result import LeasedWebhook
from app.runtime import tune_gc
from app.services import billing
from app.services.audit import SYSTEM
from app.services.webhooks.outbound import make_client
from app.services.webhooks.sender import APPLICATION_NAME, WebhookSender
from app.settings import Environment, Settings

ENDPOINTS = 60
ROOT = Path(__file__).resolve().parent.parent
PAYLOAD = json.dumps(  # as big as the engine's (bench/e2e.py's leads)
    {
        "type": "lead.assigned",
        "timestamp": "2026-12-03T00:00:00.000000Z",
        "data": {
            "assignment_id": "0b6f5a8e-8a51-4d3c-9d0e-2b1f7c7e4a10",
            "provider_id": "5d2c1a9b-3e4f-4a6b-8c7d-9e0f1a2b3c4d",
            "lead": {
                "id": "7a8b9c0d-1e2f-4a3b-8c4d-5e6f7a8b9c0d",
                "attributes": {"name": "Jane Doe", "email": "jane@example.com", "phone": "+15555550100"},
                "submitted_at": "2026-12-03T00:00:00.000000Z",
            },
            "niche": {"id": "1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d", "name": "Roofing"},
            "level": {"id": "2b3c4d5e-6f7a-4b8c-9d0e-1f2a3b4c5d6e", "name": "Shared"},
            "price_cents": 2500,
            "price": "$25.00",
        },
    }
)
WRITE = """
INSERT INTO webhook_deliveries (endpoint_id, provider_id, event_type, subject_id, payload, status,
                                next_attempt_at, created_at)
SELECT e.id, e.provider_id, 'lead.assigned', gen_random_uuid(), $2::jsonb, 'PENDING', now(), now()
FROM webhook_endpoints e WHERE e.id = ANY($1::uuid[])
"""


def settings_for(ca_file: str | Path) -> Settings:
    """As the service runs in production, trusting the receiver's certificate authority."""
    return Settings(
        _env_file=None,  # type: ignore[call-arg]
        environment=Environment.PRODUCTION,
        webhook_allow_private_networks=True,
        webhook_ca_file=Path(ca_file),
    )


LEASE = """
WITH ins AS (
    INSERT INTO webhook_deliveries (endpoint_id, provider_id, event_type, subject_id, payload, status,
                                    next_attempt_at, created_at)
    SELECT e.id, e.provider_id, 'lead.assigned', gen_random_uuid(), $2::jsonb, 'PENDING',
           now() + interval '1 hour', now()
    FROM webhook_endpoints e WHERE e.id = ANY($1::uuid[])
    RETURNING id, endpoint_id, payload
)
SELECT ins.id, ins.endpoint_id, e.url, e.secret, ins.payload::text AS body
FROM ins JOIN webhook_endpoints e ON e.id = ins.endpoint_id
"""


async def run_leased(database_url: str, ca_file: str, rate: float) -> None:
    """The child in --leased mode: for each `feed K` line on stdin, writes K deliveries leased to
    it (as a distribution does, before the CPU is read: `written` on stdout), then hands them to
    its sender three at a time at the rate (`send_leased`, as a worker does after each
    distribution), until stdin closes."""
    settings = settings_for(ca_file)
    db = create_database(database_url, settings)
    sender = WebhookSender(db, settings, make_client(settings))
    pg = await asyncpg.connect(libpq(database_url))
    ids = [row["id"] for row in await pg.fetch("SELECT id FROM webhook_endpoints ORDER BY id")]
    stdin = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    n = 0
    while line := await stdin.readline():
        count = int(line.split()[1]) // 3
        batches = []
        for _ in range(count):
            rows = await pg.fetch(LEASE, [ids[(n + j) % len(ids)] for j in range(3)], PAYLOAD)
            n += 3
            batches.append(
                [LeasedWebhook(r["id"], r["endpoint_id"], r["url"], (r["secret"],), r["body"]) for r in rows]
            )
        print("written", flush=True)
        await stdin.readline()  # go
        started = time.monotonic()
        for k, batch in enumerate(batches):
            await asyncio.sleep(max(0.0, started + k * 3 / rate - time.monotonic()))
            sender.send_leased(batch)
    await pg.close()
    await sender.close(5)
    await db.dispose()


async def run_sender(database_url: str, ca_file: str, rate: float) -> None:
    """The child: one sender, woken at the write rate until stdin closes."""
    settings = settings_for(ca_file)
    db = create_database(database_url, settings)
    sender = WebhookSender(db, settings, make_client(settings))
    stdin = asyncio.StreamReader()
    await asyncio.get_running_loop().connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
    done = asyncio.ensure_future(stdin.read())
    while not done.done():
        sender.wake()
        await asyncio.sleep(3 / rate)
    await sender.close(5)
    await db.dispose()


async def measure(database_url: str, webhooks: int, rate: float, *, leased: bool = False) -> dict[str, Any]:
    receiver = db = pg = child = None
    try:
        receiver = Receiver(Path(tempfile.mkdtemp(prefix="lw-sender-")))
        db = create_database(database_url, settings_for(receiver.ca_file))
        pg = await asyncpg.connect(libpq(database_url))
        for n in range(ENDPOINTS):
            await billing.create_provider(db, actor=SYSTEM, name=f"Buyer {n}", email=f"b{n}@example.test")
        await add_endpoints(pg, receiver.url)
        await endpoints(pg, receiver, "live")
        ids = [row["id"] for row in await pg.fetch("SELECT id FROM webhook_endpoints ORDER BY id")]
        mode = "--leased-sender" if leased else "--sender"
        child = subprocess.Popen(
            [sys.executable, __file__, mode, database_url, str(receiver.ca_file), str(rate)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=os.environ | {"PYTHONPATH": str(ROOT)},
        )

        async def write_all(count: int, within: float = 120) -> int:
            """Writes `count` deliveries (rounded down to threes) and waits until all are delivered."""
            if leased:  # the child writes them, then sends them once told to
                assert child.stdin is not None and child.stdout is not None
                child.stdin.write(b"feed %d\n" % count)
                child.stdin.flush()
                told = child.stdout.readline().strip()
                if told != b"written":
                    raise RuntimeError(f"the sender's process said {told!r}, not b'written'")
                await mark()
                child.stdin.write(b"go\n")
                child.stdin.flush()
            else:
                await mark()
                started = time.monotonic()
                for k in range(count // 3):
                    await asyncio.sleep(max(0.0, started + k * 3 / rate - time.monotonic()))
                    await pg.execute(WRITE, [ids[(3 * k + j) % len(ids)] for j in range(3)], PAYLOAD)
            deadline = time.monotonic() + within
            while await pg.fetchval("SELECT count(*) FROM webhook_deliveries WHERE status <> 'DELIVERED'"):
                if child.poll() is not None:
                    raise RuntimeError(f"the sender's process exited ({child.returncode})")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"deliveries still waiting {within:g} s after the last write")
                await asyncio.sleep(0.02)
            return count // 3 * 3

        marks: list[tuple[float, float, float, float]] = []
        backend: list[int] = []  # the sender's PostgreSQL process, found once it has connected

        async def mark() -> None:
            """The CPU so far of the three processes measured, and the time, as the writes start."""
            if not backend:
                pid = await pg.fetchval(
                    "SELECT pid FROM pg_stat_activity WHERE application_name = $1", APPLICATION_NAME
                )
                if pid is not None:  # none yet before the warm-up
                    if not psutil.pid_exists(pid):
                        raise RuntimeError("the sender's PostgreSQL backend is not a process of this machine")
                    backend.append(pid)
            pg_cpu = process_cpu(backend[0]) if backend else 0.0
            marks.append((process_cpu(child.pid), pg_cpu, process_cpu(receiver.proc.pid), time.monotonic()))

        await write_all(300)  # warm: the sender's connection, statements and TLS connections
        written = await write_all(webhooks)
        *before, started = marks[-1]
        elapsed = time.monotonic() - started
        await mark()
        after = marks[-1][:3]
        sender_us, sender_pg_us, receiver_us = (
            (a - b) * 1e6 / written for a, b in zip(after, before, strict=True)
        )
        print(
            f"{written} webhooks at {rate:g}/s, all delivered {elapsed:.1f} s after the first write",
            flush=True,
        )
        summary: dict[str, Any] = {
            "bench": "webhook_sender",
            "webhooks": written,
            "rate": rate,
            "path": "leased" if leased else "claimed",
        }
        report(summary, "sender_us", sender_us)
        report(summary, "sender_pg_us", sender_pg_us)
        report(summary, "receiver_us", receiver_us)
        report(summary, "sender_over_receiver", sender_us / receiver_us)
        return summary
    finally:
        if child is not None:
            assert child.stdin is not None
            child.stdin.close()  # the sender stops
            try:
                child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        if pg is not None:
            await pg.close()
        if db is not None:
            await db.dispose()
        if receiver is not None:
            receiver.stop()


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] in ("--sender", "--leased-sender"):
        child = run_sender if sys.argv[1] == "--sender" else run_leased
        tune_gc()  # as a worker process does once started
        uvloop.run(child(sys.argv[2], sys.argv[3], float(sys.argv[4])))
        return
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"))
    parser.add_argument("--webhooks", type=int, default=6000)
    parser.add_argument("--rate", type=float, default=600, help="webhooks written per second")
    parser.add_argument(
        "--leased",
        action="store_true",
        help="the deliveries leased to the sender and handed to it, as a distribution's are, not claimed",
    )
    args = parser.parse_args()

    async def work(database_url: str, _redis_url: str) -> dict[str, Any]:
        return await measure(database_url, args.webhooks, args.rate, leased=args.leased)

    summary = run_with_servers("lw-sender-", args.database_url, "redis://unused", work)
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
