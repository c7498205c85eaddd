"""What bench/e2e.py needs for its webhook runs: a local https receiver process (bench/webhook_receiver.py)
under a throwaway certificate authority, an endpoint for every buyer, dead endpoints, and the
latency from the engine's write (a delivery's created_at, in the distribution's statement) to the
receiver having the request."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import trustme
from harness import free_port

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
        await pg.execute("UPDATE webhook_endpoints SET deleted_at = now() WHERE deleted_at IS NULL")
        return
    await pg.execute(
        """UPDATE webhook_endpoints SET deleted_at = NULL, url = $1, enabled = true, disabled_reason = NULL,
                  disabled_at = NULL, consecutive_failures = 0""",
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
