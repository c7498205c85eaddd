"""What a sender's turn leaves to do once it has committed (claims.turn returns it; the sender runs
it with `settle`, and only it is tried again if it fails): its endpoints' deliveries moved to
follow what the turn decided about the endpoint. One statement:

- disabled for failing (flagged): their waiting deliveries held (next_attempt_at NULL), and the
  audit rows;
- paused: their deliveries due before the pause ends wait for it. Else a dead endpoint's waiting
  deliveries would stay due, and the turns' scan of the oldest due deliveries (claims.DUE_SCAN)
  could fill with them and claim nothing else for days. (Not in the turn's own statement: a
  delivery it records may be among them, and a row updated twice in one statement is not
  reliable.) Test messages stay due: they are sent whatever the pause;
- resumed (it answered again after failing): what waited for its pauses, and its deliveries'
  later retries, are due now. Leased deliveries still being sent are left to their senders (not
  sent twice): written never tried, due exactly a lease after their creation."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

import asyncpg

from app.engine.sql import compile_named
from app.models.audit import ActorType, AuditAction
from app.models.webhooks import TEST_EVENT, DeliveryStatus, DisabledReason
from app.settings import Settings

PENDING = DeliveryStatus.PENDING.value


@dataclass(frozen=True)
class Flagged:
    endpoint_id: uuid.UUID
    provider_id: uuid.UUID
    failures: int


@dataclass
class Settle:
    """Endpoints a turn disabled (flagged), paused, and resumed."""

    flagged: list[Flagged] = field(default_factory=list)
    paused: list[uuid.UUID] = field(default_factory=list)
    resumed: list[uuid.UUID] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.flagged or self.paused or self.resumed)

    def add(self, other: Settle) -> None:
        self.flagged += other.flagged
        self.paused += other.paused
        self.resumed += other.resumed


# An endpoint is in one of the three at most (a disabled one is not paused; a resumed one has no
# failure), so no row is updated twice.
SETTLE = compile_named(f"""
WITH held AS (
    UPDATE webhook_deliveries SET next_attempt_at = NULL
    WHERE endpoint_id = ANY(:flagged_ids::uuid[]) AND status = '{PENDING}'
),
waiting AS (
    UPDATE webhook_deliveries d SET next_attempt_at = e.paused_until
    FROM webhook_endpoints e
    WHERE e.id = ANY(:paused_ids::uuid[]) AND e.paused_until > now() AND d.endpoint_id = e.id
      AND d.status = '{PENDING}' AND d.next_attempt_at < e.paused_until AND d.event_type <> '{TEST_EVENT}'
),
resumed AS (
    UPDATE webhook_deliveries d SET next_attempt_at = now()
    FROM webhook_endpoints e
    WHERE e.id = ANY(:resumed_ids::uuid[]) AND e.enabled AND e.consecutive_failures = 0
      AND d.endpoint_id = e.id AND d.status = '{PENDING}' AND d.next_attempt_at > now()
      AND NOT (d.attempts = 0 AND d.next_attempt_at = d.created_at + :lease::float8 * interval '1 second')
)
INSERT INTO audit_log (action, actor_type, entity_type, entity_id, details)
SELECT '{AuditAction.WEBHOOK_ENDPOINT_DISABLED}', '{ActorType.SYSTEM}', 'webhook_endpoint', u.id,
       jsonb_build_object('reason', '{DisabledReason.FAILING}', 'consecutive_failures', u.failures,
                          'provider_id', u.provider_id)
FROM unnest(:flagged_ids::uuid[], :provider_ids::uuid[], :failure_counts::int[])
    AS u (id, provider_id, failures)
""")


async def settle(conn: asyncpg.Connection, todo: Settle, settings: Settings) -> None:
    await conn.execute(
        SETTLE.text,
        *SETTLE.args(
            {
                "flagged_ids": [f.endpoint_id for f in todo.flagged],
                "provider_ids": [f.provider_id for f in todo.flagged],
                "failure_counts": [f.failures for f in todo.flagged],
                "paused_ids": todo.paused,
                "resumed_ids": todo.resumed,
                "lease": settings.webhook_lease_seconds,
            }
        ),
    )
