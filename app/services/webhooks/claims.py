"""The sender's statements on the outbox, each one short autocommit statement (no transaction is
held while a request is in flight): claim endpoints with due deliveries (a lease), record what
was sent (attempts, new states, failure counts, the lease given back), and the sweep's check.

One sender holds an endpoint at a time (its lease), and sends its due deliveries oldest first,
one request at a time: an endpoint sees its messages in creation order, and a slow or dead one
holds only its own. Raw asyncpg with named parameters (app/engine/sql.py): these run for every
batch of sends, where SQLAlchemy's per-statement work would be most of their cost."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

import asyncpg

from app.db import Database
from app.engine.sql import compile_named
from app.models.audit import ActorType, AuditAction
from app.models.webhooks import TEST_EVENT, AttemptOutcome, DeliveryStatus, DisabledReason
from app.services.webhooks.outbound import Answer

PENDING = DeliveryStatus.PENDING.value

# Endpoints with due deliveries and no live lease, longest-waiting first, leased to this sender;
# for each, its first due deliveries in creation order. A disabled endpoint is claimed only for a
# test message (its other deliveries are held: next_attempt_at NULL). An endpoint whose deliveries
# went meanwhile comes back with none (d.id NULL), so its lease is given back at once.
CLAIM = compile_named(f"""
WITH due AS (
    SELECT endpoint_id, min(next_attempt_at) AS oldest
    FROM webhook_deliveries
    WHERE status = '{PENDING}' AND next_attempt_at <= now()
    GROUP BY endpoint_id
),
picked AS (
    SELECT e.id
    FROM webhook_endpoints e JOIN due ON due.endpoint_id = e.id
    WHERE e.deleted_at IS NULL AND (e.leased_until IS NULL OR e.leased_until < now())
    ORDER BY due.oldest
    LIMIT :slots
    FOR NO KEY UPDATE OF e SKIP LOCKED
),
leased AS (
    UPDATE webhook_endpoints e
    SET leased_until = now() + :lease_seconds::float8 * interval '1 second', lease_token = :token
    FROM picked WHERE e.id = picked.id
    RETURNING e.id, e.url, e.enabled, e.secret, e.previous_secret, e.previous_secret_expires_at
)
SELECT l.id AS endpoint_id, l.url, l.secret,
       CASE WHEN l.previous_secret_expires_at > now() THEN l.previous_secret END AS previous_secret,
       d.id AS delivery_id, d.payload::text AS body
FROM leased l
LEFT JOIN LATERAL (
    SELECT d.id, d.payload, d.created_at
    FROM webhook_deliveries d
    WHERE d.endpoint_id = l.id AND d.status = '{PENDING}' AND d.next_attempt_at <= now()
      AND (l.enabled OR d.event_type = '{TEST_EVENT}')
    ORDER BY d.created_at, d.id
    LIMIT :per_endpoint
) d ON true
ORDER BY l.id, d.created_at, d.id
""")

# What a batch of sends did, in one statement: the attempts logged; each delivery DELIVERED, or
# retried after its delay (± jitter; held if its endpoint was disabled meanwhile), or FAILED after
# its last attempt (a test message gets one); each endpoint's consecutive failures counted,
# disabled and flagged at the threshold, and its lease given back if it is still ours. Returns the
# endpoints it disabled.
RECORD = compile_named(f"""
WITH r AS (
    SELECT * FROM unnest(:delivery_ids::uuid[], :attempted_at::timestamptz[], :outcomes::text[],
                         :status_codes::int[], :latencies::float8[], :errors::text[], :bodies::text[])
        AS r (delivery_id, at, outcome, status_code, latency_ms, error, body)
),
logged AS (
    INSERT INTO webhook_attempts (delivery_id, attempted_at, outcome, status_code, latency_ms, error,
                                  response_body)
    SELECT delivery_id, at, outcome, status_code, latency_ms, error, body FROM r
),
deliveries AS (
    UPDATE webhook_deliveries d
    SET attempts = d.attempts + 1,
        last_attempt_at = r.at,
        last_status_code = r.status_code,
        last_error = r.error,
        status = CASE WHEN r.outcome = '{AttemptOutcome.SUCCESS}' THEN '{DeliveryStatus.DELIVERED}'
                      WHEN d.event_type = '{TEST_EVENT}'
                           OR d.attempts + 1 > cardinality(:delays::float8[]) THEN '{DeliveryStatus.FAILED}'
                      ELSE '{PENDING}' END,
        delivered_at = CASE WHEN r.outcome = '{AttemptOutcome.SUCCESS}' THEN r.at ELSE d.delivered_at END,
        next_attempt_at = CASE
            WHEN r.outcome = '{AttemptOutcome.SUCCESS}' OR d.event_type = '{TEST_EVENT}'
                 OR d.attempts + 1 > cardinality(:delays::float8[]) OR NOT e.enabled THEN NULL
            ELSE now() + (:delays::float8[])[d.attempts + 1]
                         * (1 + :jitter::float8 * (2 * random() - 1)) * interval '1 second' END
    FROM r, webhook_endpoints e
    WHERE d.id = r.delivery_id AND e.id = d.endpoint_id AND d.status = '{PENDING}'
),
counted AS (
    SELECT e.id,
           CASE WHEN u.reset THEN 0 ELSE e.consecutive_failures END + u.failures AS failures,
           e.enabled AND CASE WHEN u.reset THEN 0 ELSE e.consecutive_failures END + u.failures
                         >= :disable_after::int AS disable
    FROM unnest(:endpoint_ids::uuid[], :resets::bool[], :failures::int[]) AS u (id, reset, failures)
    JOIN webhook_endpoints e ON e.id = u.id
),
endpoints AS (
    UPDATE webhook_endpoints e
    SET consecutive_failures = c.failures,
        enabled = e.enabled AND NOT c.disable,
        disabled_reason = CASE WHEN c.disable THEN '{DisabledReason.FAILING}' ELSE e.disabled_reason END,
        disabled_at = CASE WHEN c.disable THEN now() ELSE e.disabled_at END,
        updated_at = CASE WHEN c.disable THEN now() ELSE e.updated_at END,
        leased_until = CASE WHEN e.lease_token = :token THEN NULL ELSE e.leased_until END,
        lease_token = CASE WHEN e.lease_token = :token THEN NULL ELSE e.lease_token END
    FROM counted c
    WHERE e.id = c.id
    RETURNING e.id, e.provider_id, c.disable, c.failures
)
SELECT id, provider_id, failures FROM endpoints WHERE disable
""")

# After the sender disabled endpoints: their waiting deliveries held, and the audit rows.
FLAG = compile_named(f"""
WITH held AS (
    UPDATE webhook_deliveries SET next_attempt_at = NULL
    WHERE endpoint_id = ANY(:endpoint_ids::uuid[]) AND status = '{PENDING}'
)
INSERT INTO audit_log (action, actor_type, entity_type, entity_id, details)
SELECT '{AuditAction.WEBHOOK_ENDPOINT_DISABLED}', '{ActorType.SYSTEM}', 'webhook_endpoint', u.id,
       jsonb_build_object('reason', '{DisabledReason.FAILING}', 'consecutive_failures', u.failures,
                          'provider_id', u.provider_id)
FROM unnest(:endpoint_ids::uuid[], :provider_ids::uuid[], :failure_counts::int[])
    AS u (id, provider_id, failures)
""")

# The sweep: is there due work no sender holds? Retries once due; first sends (and redeliveries)
# only once older than stale_after, since their wake may just be on its way.
NEEDED = compile_named(f"""
SELECT EXISTS (
    SELECT 1
    FROM webhook_deliveries d JOIN webhook_endpoints e ON e.id = d.endpoint_id
    WHERE d.status = '{PENDING}' AND d.next_attempt_at <= now()
      AND (d.attempts > 0 OR d.next_attempt_at <= now() - :stale_after::float8 * interval '1 second')
      AND (e.leased_until IS NULL OR e.leased_until < now())
      AND (e.enabled OR d.event_type = '{TEST_EVENT}')
)
""")


@dataclass
class Claimed:
    """An endpoint leased to this sender, and its deliveries to send now, oldest first."""

    endpoint_id: uuid.UUID
    url: str
    secrets: list[str]
    deliveries: list[tuple[uuid.UUID, str]] = field(default_factory=list)  # (id, body)


@dataclass(frozen=True)
class Sent:
    delivery_id: uuid.UUID
    at: datetime
    answer: Answer


@dataclass
class EndpointRun:
    """What one lease of an endpoint sent, in order (possibly nothing)."""

    endpoint_id: uuid.UUID
    sent: list[Sent] = field(default_factory=list)


@dataclass(frozen=True)
class Flagged:
    endpoint_id: uuid.UUID
    provider_id: uuid.UUID
    failures: int


async def claim(
    conn: asyncpg.Connection, *, token: uuid.UUID, slots: int, per_endpoint: int, lease_seconds: float
) -> list[Claimed]:
    rows = await conn.fetch(
        CLAIM.text,
        *CLAIM.args(
            {"slots": slots, "per_endpoint": per_endpoint, "lease_seconds": lease_seconds, "token": token}
        ),
    )
    found: dict[uuid.UUID, Claimed] = {}
    for row in rows:
        claimed = found.get(row["endpoint_id"])
        if claimed is None:
            keys = [row["secret"]] + ([row["previous_secret"]] if row["previous_secret"] else [])
            claimed = found[row["endpoint_id"]] = Claimed(row["endpoint_id"], row["url"], keys)
        if row["delivery_id"] is not None:
            claimed.deliveries.append((row["delivery_id"], row["body"]))
    return list(found.values())


async def record(
    conn: asyncpg.Connection,
    *,
    token: uuid.UUID,
    runs: Sequence[EndpointRun],
    delays: Sequence[float],
    jitter: float,
    disable_after: int,
) -> list[Flagged]:
    """Records the runs and gives their leases back. The failure count of an endpoint restarts at
    its last success; the endpoints it disables are returned (held and audited by `flag`)."""
    sent = [s for run in runs for s in run.sent]
    resets, failures = [], []
    for run in runs:
        after_success = 0
        succeeded = False
        for s in run.sent:
            if s.answer.ok:
                succeeded, after_success = True, 0
            else:
                after_success += 1
        resets.append(succeeded)
        failures.append(after_success)
    rows = await conn.fetch(
        RECORD.text,
        *RECORD.args(
            {
                "delivery_ids": [s.delivery_id for s in sent],
                "attempted_at": [s.at for s in sent],
                "outcomes": [s.answer.outcome.value for s in sent],
                "status_codes": [s.answer.status_code for s in sent],
                "latencies": [s.answer.latency_ms for s in sent],
                "errors": [s.answer.error for s in sent],
                "bodies": [s.answer.body for s in sent],
                "delays": list(delays),
                "jitter": jitter,
                "endpoint_ids": [run.endpoint_id for run in runs],
                "resets": resets,
                "failures": failures,
                "disable_after": disable_after,
                "token": token,
            }
        ),
    )
    return [Flagged(r["id"], r["provider_id"], r["failures"]) for r in rows]


async def flag(conn: asyncpg.Connection, flagged: Sequence[Flagged]) -> None:
    await conn.execute(
        FLAG.text,
        *FLAG.args(
            {
                "endpoint_ids": [f.endpoint_id for f in flagged],
                "provider_ids": [f.provider_id for f in flagged],
                "failure_counts": [f.failures for f in flagged],
            }
        ),
    )


async def sender_needed(db: Database, *, stale_after: float) -> bool:
    async with db.engine.connect() as sa_conn:
        conn: asyncpg.Connection = (await sa_conn.get_raw_connection()).driver_connection
        return bool(await conn.fetchval(NEEDED.text, *NEEDED.args({"stale_after": stale_after})))
