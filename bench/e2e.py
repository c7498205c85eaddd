"""End-to-end benchmark against real processes: one uvicorn API process, two taskiq worker
processes, on one PostgreSQL and one Redis (embedded unless URLs are given), all on this machine
together with the load generator.

(a) distributeLead -> its COMPLETED event on a nicheActivity feed, one at a time: p50/p99
(b) bursts of 2,000 distributeLead over 20 niches: distributions/s, first request to last COMPLETED;
    twice with the niches' requests interleaved (as traffic arrives), then 2,000 grouped niche by niche
(c) 1,000 WebSocket subscribers on one niche feed: delivery latency p50/p99 and events/s delivered
(d) webhooks: the interleaved burst with every buyer having an endpoint on a local https receiver
    (bench/webhook_receiver.py), and with one of them per niche dead (connection refused), each
    twice (live, dead, dead, live: with one of each, the second was the slower in seven runs of
    nine, whichever kind it was), each between two bursts without endpoints; autovacuum off on
    the tables meanwhile and the database vacuumed and analyzed between bursts (in thirteen runs
    of fifteen it had landed in one of the bursts, a floor or one with endpoints); webhook_p50_ms /
    webhook_p99_ms: engine write (a delivery's created_at, in the distribution's statement) -> the
    receiver has the request

Absolute figures differ 2-3x between machines, so two floors are measured in the same run on the
same servers, and the figures with targets are ratios to them:

- pipeline_ratio = (b) interleaved rate / the engine alone: just before and just after that
  burst, the same number of new leads of the same 20 niches (interleaved) in the burst's own
  database, distribute_lead() called from this process with the workers' concurrency (2 processes
  x WORKER_CONCURRENCY), no API, queue, events or notification sending; the mean of the two. What
  the pipeline adds to the engine's transaction. Two interleaved bursts, each between two floors
  (floor, burst, floor, burst, floor): the ratio is the mean of their two ratios. Each is warmed
  first at its own concurrency (the pipeline with 192 leads, 32 requests at a time), so neither pays
  for opening its connections.
- burst_with_webhooks_ratio, burst_dead_endpoint_ratio = (d)'s rates / the mean of the bursts
  without endpoints just before and just after each, the mean over the two bursts of each kind;
  webhook_p99_over_complete_p50 = (d)'s webhook_p99_ms / (a)'s complete_p50_ms.
- fanout_floor_ratio = (c) the API's CPU per event delivered / the CPU per frame delivered of a
  bare Starlette WebSocket endpoint (bench/wsfloor.py, its own uvicorn process with the API's
  flags) sending frames of the same shape (the same event types per run, the same pacing) to the
  same 1,000 clients, measured the same way right after (c).

    python bench/e2e.py [--database-url URL --redis-url URL] [--burst 2000] [--subscribers 1000]
                        [--webhooks-only]      # (a) and (d) alone
    python bench/e2e.py --pipeline-only    # (b) and its floor alone, after (a)'s warm-up
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
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from e2e_parts import (  # noqa: E402
    DISTRIBUTE,
    Feed,
    cpu_seconds,
    engine_alone,
    fanout_floor,
    feed_groups,
    find_own_servers,
    pct,
    print_ms,
    run_burst,
    seed,
    slot_leads,
    start_feeds,
    warm_pipeline,
)
from harness import GraphQLClient, floor_drift, free_port, report, run_with_servers, wait_ready  # noqa: E402
from webhooks import SLOTS, Receiver, report_webhooks, webhook_bursts  # noqa: E402

from app.main import api_argv  # noqa: E402
from app.settings import Settings  # noqa: E402
from app.tasks.broker import worker_argv  # noqa: E402

# the bursts' leads, in groups of burst/20 per niche from the back of each niche's: (b) takes groups 1
# and 2 and the last, (d) the ten between (bench/webhooks.py SLOTS)
LAST_SLOT = 3 + SLOTS


async def pipeline_bursts(
    args: argparse.Namespace,
    database_url: str,
    procs: list[subprocess.Popen[bytes]],
    distribute: Callable[[str], Awaitable[str]],
    leads: dict[str, list[str]],
    result: dict[str, Any],
) -> float:
    """(b), into `result`; returns pipeline_ratio: the mean, over two interleaved bursts, of each
    one's rate over the mean of its floor just before and just after it."""
    niche_ids = list(leads)
    pools = [leads[n] for n in niche_ids]
    # (b) bursts over 20 niches: as traffic from many niches arrives (interleaved), and each
    # niche's leads in a row (grouped: the workers' runs mostly wait on one niche's lock).
    # Each interleaved one between two runs of its floor, the engine alone on the same
    # servers and database with the workers' concurrency (2 processes x WORKER_CONCURRENCY):
    # its ratio is to their mean, so load from elsewhere that drifts during the run hits
    # both alike; two of them, as one varied by ±0.06 on one machine.
    concurrency = 2 * Settings().worker_concurrency
    per_niche = args.burst // len(niche_ids)

    grouped = [lid for n in niche_ids for lid in leads[n][-2 * per_niche : -per_niche]]
    await warm_pipeline(database_url, procs, distribute, len(niche_ids))
    floors: list[float] = []
    rates: list[float] = []
    steps: list[tuple[str, list[str]]] = [
        ("alone", []),
        ("interleaved", slot_leads(pools, per_niche, 1)),
        ("alone", []),
        ("interleaved", slot_leads(pools, per_niche, LAST_SLOT)),  # (d) takes the slots between
        ("alone", []),
        ("grouped by niche", grouped),
    ]
    for name, burst in steps:
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
        if name == "interleaved":
            rates.append(figures["dist_per_s"])
            result["burst_dist_per_s"] = rates[:]
        else:
            result["burst_grouped_dist_per_s"] = figures["dist_per_s"]
            result["burst_grouped_requests_per_s"] = figures["requests_per_s"]
        print(
            f"(b) burst of {len(burst)} over {len(niche_ids)} niches, {name}, 2 workers: "
            f"{figures['completed']} completed, {figures['dist_per_s']} distributions/s end to end "
            f"(requests accepted at {figures['requests_per_s']}/s, 32 at a time: p50 "
            f"{figures['request_p50_ms']:.1f} ms, p99 {figures['request_p99_ms']:.1f} ms; last notification "
            f"sent after {figures['mailed_s']:.1f} s)",
            flush=True,
        )
        print_ms("CPU ms per distribution (with its notifications)", figures["cpu_ms"])
    ratios = [
        rate / floor_drift(result, f"engine_alone_dist_per_s_{i + 1}", floors[i], floors[i + 1])
        for i, rate in enumerate(rates)
    ]
    result["pipeline_ratios"] = [round(r, 3) for r in ratios]
    print(f"(b) each interleaved burst over its floors: {', '.join(f'{r:.3f}' for r in ratios)}", flush=True)
    return statistics.mean(ratios)


async def main_async(args: argparse.Namespace, database_url: str, redis_url: str) -> dict[str, Any]:
    # per niche: warm-up + (a) + (c) from the front, the bursts from the back: never the same lead twice
    token, niche_ids, leads = await seed(
        database_url, 20, 10 + args.single + args.fanout_leads + LAST_SLOT * (args.burst // 20)
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
                for lead_id in pool[10 : 10 + args.single] if not args.pipeline_only else []:
                    start = time.time()
                    run_id = await distribute(lead_id)
                    while run_id not in feed.completed:
                        await asyncio.sleep(0.0005)
                    latencies.append((feed.completed[run_id] - start) * 1000)
                feed_task.cancel()
                if latencies:
                    result["complete_p50_ms"] = round(statistics.median(latencies), 2)
                    result["complete_p99_ms"] = round(pct(latencies, 0.99), 2)
                    print(
                        f"(a) distributeLead -> COMPLETED, one at a time, n={len(latencies)}: "
                        f"p50 {result['complete_p50_ms']} ms, p99 {result['complete_p99_ms']} ms",
                        flush=True,
                    )

                pipeline = (
                    await pipeline_bursts(args, database_url, procs, distribute, leads, result)
                    if not args.webhooks_only
                    else 0.0
                )
                if args.pipeline_only:
                    print("ratios to the floors measured above:", flush=True)
                    report(result, "pipeline_ratio", pipeline, ">= 0.5")
                    return result

                # (d) webhooks, on the leads before (b)'s
                webhooks = await webhook_bursts(
                    database_url,
                    procs,
                    distribute,
                    [leads[n] for n in niche_ids],
                    args.burst // len(niche_ids),
                    receiver,
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
                report(result, "pipeline_ratio", pipeline, ">= 0.5")
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
        "--pipeline-only", action="store_true", help="(b) and its floor only, after (a)'s warm-up"
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
