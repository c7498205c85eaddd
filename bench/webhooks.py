"""bench/e2e.py's webhook runs, (d): a local https receiver process (bench/webhook_receiver.py)
under a throwaway certificate authority, an endpoint for every buyer, dead endpoints, and the
latency from the engine's write (a delivery's created_at, in the distribution's statement) to the
receiver having the request."""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx
import psutil
import trustme
from e2e_parts import (
    BENCH_APPLICATION,
    cpu_seconds,
    pct,
    print_ms,
    process_cpu,
    run_burst,
    slot_leads,
    warm_pipeline,
)
from harness import floor_drift, free_port, libpq, report

from app.services.webhooks.sender import APPLICATION_NAME as SENDER_APPLICATION

ROOT = Path(__file__).resolve().parent.parent


class Receiver:
    """The receiver process; `env` is what the service's processes need to reach it (https under
    this run's certificate authority, on a local address)."""

    def __init__(self, directory: Path) -> None:
        authority = trustme.CA()
        leaf = authority.issue_cert("localhost")
        self.ca_file = directory / "webhook-ca.pem"
        authority.cert_pem.write_to_path(str(self.ca_file))
        cert, key = directory / "webhook-cert.pem", directory / "webhook-key.pem"
        leaf.cert_chain_pems[0].write_to_path(str(cert))
        leaf.private_key_pem.write_to_path(str(key))
        self.port = free_port()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "bench" / "webhook_receiver.py"),
                str(self.port),
                str(cert),
                str(key),
            ],
            stdout=subprocess.PIPE,
            start_new_session=True,
        )
        assert self.proc.stdout is not None and self.proc.stdout.readline().strip() == b"ready"
        self.url = f"https://localhost:{self.port}/hook"
        self.env = {"WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true", "WEBHOOK_CA_FILE": str(self.ca_file)}

    def dead_url(self) -> str:
        return f"https://localhost:{free_port()}/hook"  # nothing listens there

    async def arrivals(self) -> dict[str, float]:
        async with httpx.AsyncClient(verify=str(self.ca_file)) as http:
            return dict((await http.get(f"https://localhost:{self.port}/arrivals")).json())

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


async def add_endpoints(pg: Any, url: str) -> int:
    """An endpoint on `url` for every provider (as createWebhookEndpoint writes it), deleted until
    a phase wants them (`endpoints`)."""
    return int(
        (
            await pg.execute(
                """INSERT INTO webhook_endpoints (provider_id, url, events, secret, deleted_at)
                   SELECT id, $1, ARRAY['lead.assigned'],
                          'whsec_' || encode(decode(md5(random()::text) || md5(random()::text), 'hex'), 'base64'),
                          now()
                   FROM providers""",
                url,
            )
        ).split()[-1]
    )


async def endpoints(pg: Any, receiver: Receiver, phase: str) -> None:
    """`none`: no buyer has an endpoint (deleted: the engine's probe finds none, as before webhooks);
    `live`: every buyer has one on the receiver; `dead`: the same, but one buyer per niche's is
    dead (connection refused, each on its own port)."""
    if phase == "none":
        # as deleteWebhookEndpoint does: what still waits (a dead endpoint's backlog) is FAILED
        await pg.execute(
            """WITH gone AS (UPDATE webhook_endpoints SET deleted_at = now() WHERE deleted_at IS NULL RETURNING id)
               UPDATE webhook_deliveries SET status = 'FAILED', next_attempt_at = NULL, last_error = 'endpoint deleted'
               WHERE endpoint_id IN (SELECT id FROM gone) AND status = 'PENDING'"""
        )
        return
    await pg.execute(
        """UPDATE webhook_endpoints SET deleted_at = NULL, url = $1, enabled = true, disabled_reason = NULL,
                  disabled_at = NULL, consecutive_failures = 0, retry_at = NULL""",
        receiver.url,
    )
    if phase == "dead":
        rows = await pg.fetch(
            """SELECT DISTINCT ON (l.niche_id) e.id FROM webhook_endpoints e
               JOIN subscriptions s ON s.provider_id = e.provider_id
               JOIN competition_levels l ON l.id = s.competition_level_id
               ORDER BY l.niche_id, e.provider_id"""
        )
        for row in rows:
            await pg.execute(
                "UPDATE webhook_endpoints SET url = $1 WHERE id = $2", receiver.dead_url(), row["id"]
            )


async def wait_delivered(pg: Any, since: Any, live_url: str, within: float = 120) -> float:
    """Until every delivery written since `since` to a live endpoint is DELIVERED; returns when."""
    deadline = time.time() + within
    while time.time() < deadline:
        waiting = await pg.fetchval(
            """SELECT count(*) FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id
               WHERE d.created_at >= $1 AND d.status <> 'DELIVERED' AND e.url = $2""",
            since,
            live_url,
        )
        if not waiting:
            return time.time()
        await asyncio.sleep(0.05)
    raise RuntimeError("webhook deliveries still waiting")


async def latency_split_ms(pg: Any, since: Any, arrivals: dict[str, float]) -> dict[str, list[float]]:
    """Where the engine write -> receiver time goes, per delivery received: `claimed`, engine write
    -> the sender starts its first attempt (the commit, the wake, the sender's turn and claim);
    `sent`, that -> the receiver has it (the request)."""
    rows = await pg.fetch(
        """SELECT id, extract(epoch FROM created_at) AS at,
                  extract(epoch FROM (attempt_log -> 0 ->> 'at')::timestamptz) AS attempted
           FROM webhook_deliveries WHERE created_at >= $1 AND attempts > 0""",
        since,
    )
    out: dict[str, list[float]] = {"claimed": [], "sent": []}
    for row in rows:
        arrived = arrivals.get(f"msg_{uuid.UUID(str(row['id'])).hex}")
        if arrived is not None:
            out["claimed"].append((float(row["attempted"]) - float(row["at"])) * 1000)
            out["sent"].append((arrived - float(row["attempted"])) * 1000)
    return out


async def latencies_ms(pg: Any, since: Any, arrivals: dict[str, float]) -> list[float]:
    """Engine write -> the receiver has it, for every delivery written since `since` it received."""
    rows = await pg.fetch(
        "SELECT id, extract(epoch FROM created_at) AS at FROM webhook_deliveries WHERE created_at >= $1",
        since,
    )
    found = []
    for row in rows:
        arrived = arrivals.get(f"msg_{uuid.UUID(str(row['id'])).hex}")
        if arrived is not None:
            found.append((arrived - float(row["at"])) * 1000)
    return found


def report_webhooks(result: dict[str, Any], webhooks: dict[str, Any]) -> None:
    result["webhook_p50_ms"], result["webhook_p99_ms"] = webhooks["p50_ms"], webhooks["p99_ms"]
    result["burst_with_webhooks_ratios"] = [round(r, 3) for r in webhooks["with_ratios"]]
    result["burst_dead_endpoint_ratios"] = [round(r, 3) for r in webhooks["dead_ratios"]]
    report(result, "burst_with_webhooks_ratio", webhooks["with_ratio"], ">= 0.85")
    report(result, "burst_dead_endpoint_ratio", webhooks["dead_ratio"], ">= 0.85")
    report(result, "webhook_p99_over_complete_p50", webhooks["p99_ms"] / result["complete_p50_ms"], "<= 5")


async def postgres_cpu(pg: Any) -> dict[int, tuple[str, float]]:
    """CPU seconds of each PostgreSQL process so far (pid -> its kind, seconds): the webhook
    senders' connections; this benchmark's own (BENCH_APPLICATION); the other connections (the
    engine's writes, the API's reads, the scheduler's sweeps); autovacuum; and the server's own
    processes (WAL writer, checkpointer, I/O workers, ...). Under pid 0, as "exited", the CPU of
    every child the postmaster has reaped, over its whole life (an autovacuum worker is gone by the
    end of a burst): `cpu_by_kind` takes off what such a process had before. The postmaster's own
    CPU is not counted."""
    rows = await pg.fetch("SELECT pid, application_name, backend_type FROM pg_stat_activity")
    out = {}
    postmaster = None
    for row in rows:
        if row["application_name"] == SENDER_APPLICATION:
            kind = "webhook senders"
        elif row["application_name"] == BENCH_APPLICATION:
            kind = "benchmark"
        elif row["backend_type"] == "client backend":
            kind = "other connections"
        elif row["backend_type"] == "autovacuum worker":
            kind = "autovacuum"
        else:
            kind = "server"
        try:
            process = psutil.Process(row["pid"])
            t = process.cpu_times()
            postmaster = postmaster or process.parent()
        except psutil.NoSuchProcess:
            continue
        out[row["pid"]] = (kind, t.user + t.system)
    if postmaster is not None:
        t = postmaster.cpu_times()
        out[0] = ("exited", t.children_user + t.children_system)
    return out


def cpu_by_kind(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]], pg_cpu_s: float
) -> dict[str, float]:
    """PostgreSQL's CPU seconds between two `postgres_cpu` readings, by kind. A process that ended
    in between is counted under "exited" for its part after `before` only; `pg_cpu_s`, what the
    burst's own polling connection took (it ends within the burst: among the exited), goes to
    "benchmark"."""
    out = dict.fromkeys(POSTGRES_KINDS, 0.0)
    for pid, (kind, seconds) in after.items():
        out[kind] += seconds - before.get(pid, (kind, 0.0))[1]
    for pid, (_, seconds) in before.items():
        if pid and pid not in after:
            out["exited"] -= seconds
    out["exited"] -= pg_cpu_s
    out["benchmark"] += pg_cpu_s
    return out


# (d)'s bursts: each kind with endpoints twice, in the order live, dead, dead, live, every one between
# two bursts without endpoints, and each kind's ratio the mean of its two. With one of each, the
# second was the slower in seven runs of nine, whichever kind it was (with the dead burst first:
# live 0.762, dead 0.824), so each kind now comes once early and once late.
PHASES = ("none", "live", "none", "dead", "none", "dead", "none", "live", "none")
# and one more group of leads for a whole burst with every endpoint live before them, unmeasured
SLOTS = len(PHASES) + 1
POSTGRES_KINDS = ("webhook senders", "other connections", "autovacuum", "server", "exited", "benchmark")
WAL_BYTES = "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint"


def machine_seconds() -> tuple[float, float]:
    """The whole machine's busy CPU seconds so far (every process, the kernel's threads and
    interrupts), and its steal (time the hypervisor gave to others)."""
    t = psutil.cpu_times()
    return t.user + t.nice + t.system + t.irq + t.softirq, t.steal


MAINTENANCE = """SELECT relid::regclass::text AS name, autovacuum_count AS vacuums,
                         autoanalyze_count AS analyzes
                  FROM pg_stat_all_tables"""


async def maintenance(pg: Any) -> dict[str, tuple[int, int]]:
    """Autovacuum's runs so far, by table, the system catalogs' too: (vacuums, analyzes)."""
    return {r["name"]: (r["vacuums"], r["analyzes"]) for r in await pg.fetch(MAINTENANCE)}


def maintained(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> str:
    """What autovacuum ran on meanwhile: "leads (analyze), audit_log (vacuum)", or "none"."""
    ran = []
    for table, (vacuums, analyzes) in sorted(after.items()):
        was = before.get(table, (0, 0))
        kinds = [k for k, n in (("vacuum", vacuums - was[0]), ("analyze", analyzes - was[1])) if n > 0]
        if kinds:
            ran.append(f"{table} ({', '.join(kinds)})")
    return ", ".join(ran) or "none"


# Autovacuum's launcher visits a database once a minute, then works on every table past its
# threshold: in thirteen runs of fifteen, one burst of (d) had 0.4-0.9 ms of PostgreSQL's CPU per
# distribution from autovacuum or a process that exited in it (a floor in six runs, a burst with
# endpoints in seven: the second dead burst in all four runs of one series; the one run that
# named the tables: nine tables in a floor, then the deliveries in the next burst). So during
# (d) autovacuum is off on this run's tables (its own database, dropped after; set back on after
# (d): (c) follows in a full run), and the database is vacuumed and analyzed between bursts
# instead, every burst starting alike. The system catalogs keep theirs (ANALYZE rewrites
# pg_statistic): each burst prints what autovacuum ran on.
AUTOVACUUM = """DO $$ DECLARE t record; BEGIN
    FOR t IN SELECT relid::regclass AS rel FROM pg_stat_user_tables LOOP
        EXECUTE format('ALTER TABLE %s {}', t.rel);
    END LOOP;
END $$"""
AUTOVACUUM_OFF = AUTOVACUUM.format("SET (autovacuum_enabled = false, toast.autovacuum_enabled = false)")
AUTOVACUUM_ON = AUTOVACUUM.format("RESET (autovacuum_enabled, toast.autovacuum_enabled)")


async def housekeeping(pg: Any) -> float:
    """VACUUM (ANALYZE) of the database between bursts: what a burst left, done outside every
    burst. Returns the CPU seconds its backend took (PARALLEL 0: no worker of its own; the pages it
    dirtied are written out later, by others), printed for the burst before it: that cost is in
    no burst's rate."""
    before = process_cpu(pg.get_server_pid())
    await pg.execute("VACUUM (ANALYZE, PARALLEL 0)")
    return process_cpu(pg.get_server_pid()) - before


async def webhook_bursts(
    database_url: str,
    procs: list[subprocess.Popen[bytes]],
    distribute: Callable[[str], Awaitable[str]],
    pools: list[list[str]],
    per_niche: int,
    receiver: Receiver,
) -> dict[str, Any]:
    """(d): the interleaved burst with an endpoint for every buyer, and with one dead endpoint per
    niche, each twice (PHASES), each between two bursts without endpoints (the floor: load from
    elsewhere that drifts during the run hits both alike), after a warm-up of the webhook path
    (warm_pipeline's leads, then a whole burst, every endpoint live). Autovacuum is off on its
    tables meanwhile, the database vacuumed and analyzed between bursts instead (AUTOVACUUM).
    Each burst's CPU is read from its start until its last notification is sent and, with
    endpoints, its last live webhook has arrived; `elsewhere` is what the machine was busy with
    besides the processes listed: other processes, the kernel's threads and interrupts (loopback
    networking, WAL flushes), and any listed process that exited meanwhile, for its whole life
    (the burst's own polling connection). The webhooks' latencies are those of both bursts of a
    kind."""
    import asyncpg

    pg = await asyncpg.connect(libpq(database_url), server_settings={"application_name": BENCH_APPLICATION})
    out: dict[str, Any] = {}
    try:
        await add_endpoints(pg, receiver.url)
        # warmed as (b) is: new leads with every buyer's endpoint live, until the receiver has
        # their webhooks, so each worker's sender has its connection open and statements prepared,
        # and its TLS connections to the receiver, before the first measured burst (without, that
        # burst's p99 was 100-440 ms and the dead-endpoint one's, warm, 55-73 ms)
        await endpoints(pg, receiver, "live")
        since = await pg.fetchval("SELECT now()")
        await warm_pipeline(database_url, procs, distribute, len(pools))
        await wait_delivered(pg, since, receiver.url)
        # then a whole burst of them, unmeasured: after the short warm-up alone, over twenty runs
        # (medians of each burst's rate over its run's mean floor) the first floor ran at 0.971
        # and the first burst with endpoints at 0.819, the later ones at 0.996-1.0 and 0.850-0.871:
        # the first of each was not yet at the pace of the rest
        warm = slot_leads(pools, per_niche, 3 + len(PHASES))
        since = await pg.fetchval("SELECT now()")
        await run_burst(database_url, procs, distribute, warm)
        await wait_delivered(pg, since, receiver.url)
        await pg.execute(AUTOVACUUM_OFF)
        await housekeeping(pg)
        rates: list[float] = []
        latencies: dict[str, list[float]] = {"live": [], "dead": []}
        for k, phase in enumerate(PHASES):
            await endpoints(pg, receiver, phase)
            burst = slot_leads(pools, per_niche, 3 + k)
            since = await pg.fetchval("SELECT now()")
            await receiver.arrivals()  # forget earlier ones
            receiver_cpu = process_cpu(receiver.proc.pid)
            pg_before = await postgres_cpu(pg)
            autovacuum_before = await maintenance(pg)
            wal_before = await pg.fetchval(WAL_BYTES)
            machine_before = machine_seconds()
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
            if phase != "none":
                done = await wait_delivered(pg, since, receiver.url)
            # the CPU read here, before this benchmark's own queries of the delivery log below
            # (each reads every delivery of the burst: its connection's CPU is apart anyway)
            pg_after = await postgres_cpu(pg)
            wal_after = await pg.fetchval(WAL_BYTES)
            cpu = {k2: v - cpu_before.get(k2, 0.0) for k2, v in cpu_seconds(procs).items()}
            if phase != "none":
                cpu["receiver"] = process_cpu(receiver.proc.pid) - receiver_cpu
            busy, steal = (now - was for now, was in zip(machine_seconds(), machine_before, strict=True))
            cpu |= {"elsewhere": busy - sum(cpu.values()), "steal": steal}
            cpu = {k2: v * 1000 / run["completed"] for k2, v in cpu.items()}
            if phase != "none":
                arrivals = await receiver.arrivals()
                lat = await latencies_ms(pg, since, arrivals)
                split = await latency_split_ms(pg, since, arrivals)
                line += (
                    f"; {len(lat)} webhooks received, engine write -> receiver p50 {statistics.median(lat):.2f} ms, "
                    f"p99 {pct(lat, 0.99):.2f} ms, the last {done - started:.1f} s after the first request"
                )
                latencies[phase] += lat
            print(line, flush=True)
            postgres = {
                kind: seconds * 1000 / run["completed"]
                for kind, seconds in cpu_by_kind(pg_before, pg_after, run["pg_cpu_s"]).items()
            }
            print_ms("PostgreSQL CPU ms per distribution by process", postgres)
            print(
                f"    autovacuum ran on: {maintained(autovacuum_before, await maintenance(pg))}", flush=True
            )
            wal_kib = (wal_after - wal_before) / run["completed"] / 1024
            print(f"    WAL per distribution: {wal_kib:.1f} KiB", flush=True)
            if phase != "none":
                # attempts that failed since the burst began, counted once the live deliveries are
                # all in (in the dead phase the dead endpoints', one per wait of each); read
                # after PostgreSQL's CPU, which its scan of the attempt logs would add to
                failed = await pg.fetchval(
                    """SELECT count(*) FROM webhook_deliveries d, jsonb_array_elements(d.attempt_log) a
                       WHERE d.created_at >= $1 AND a ->> 'outcome' <> 'success'""",
                    since,
                )
                print(f"    {failed} failed attempts", flush=True)
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
            if k < len(PHASES) - 1:
                vacuum_ms = await housekeeping(pg) * 1000 / run["completed"]
                print(
                    f"    then VACUUM (ANALYZE), outside the bursts: {vacuum_ms:.2f} ms CPU per distribution",
                    flush=True,
                )
        await pg.execute(AUTOVACUUM_ON)
        summary: dict[str, Any] = {}
        ratios: dict[str, list[float]] = {"live": [], "dead": []}
        each = []
        for k in range(1, len(PHASES), 2):  # each burst with endpoints over the floors around it
            name = f"burst_without_webhooks_dist_per_s_{k // 2 + 1}"
            ratio = rates[k] / floor_drift(summary, name, rates[k - 1], rates[k + 1])
            ratios[PHASES[k]].append(ratio)
            each.append(f"{PHASES[k]} {ratio:.3f}")
        print(f"(d) each burst with endpoints over its floors: {', '.join(each)}", flush=True)
        out["with_ratios"], out["dead_ratios"] = ratios["live"], ratios["dead"]
        out["with_ratio"], out["dead_ratio"] = (
            statistics.mean(ratios["live"]),
            statistics.mean(ratios["dead"]),
        )
        for phase, prefix in (("live", ""), ("dead", "dead_")):
            lat = latencies[phase]
            out[f"{prefix}p50_ms"], out[f"{prefix}p99_ms"] = (
                round(statistics.median(lat), 2),
                round(pct(lat, 0.99), 2),
            )
        out["rates"] = rates
        out["summary"] = summary  # the floors before and after, and any unsteady warning
    finally:
        await pg.close()
    return out
