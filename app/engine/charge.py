"""The write of the engine's transaction, as one statement. It first locks the picked providers in
id order and writes only if each one's revision is still the one the plan was made on; otherwise
it writes nothing and returns the revisions it found (the caller reads those providers again and
plans again: their rows are final now, the locks are held). Assignments are inserted first and
only the rows the INSERT returns are debited: a conflicting (lead, provider) is never charged.
CHECK (balance_cents >= 0) is the backstop."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from app.engine.plan import Plan
from app.engine.result import LeasedWebhook
from app.engine.sql import compile_named
from app.engine.usage import count_assignment
from app.models.audit import ActorType, AuditAction
from app.models.billing import LedgerKind, SubscriptionStatus
from app.models.distribution import Template
from app.models.leads import LeadStatus
from app.models.webhooks import DeliveryStatus, DisabledReason, WebhookEvent

WRITE_DISTRIBUTION = compile_named(f"""
WITH
-- Lock order everywhere: lead -> niche -> providers by ascending id (the lead and niche are locked
-- by the transaction's first statement). A row locked here is its latest version whatever this
-- statement's snapshot, so its revision says whether the plan's read of it still holds: when every
-- one does, nothing changed since, and the snapshot sees the rows as they are. That holds because
-- every change this statement reads of a provider (balance, status, subscriptions, caps, schedule,
-- webhook endpoints) bumps its revision under this lock (services/billing.lock_provider).
locked AS MATERIALIZED (
    SELECT id, revision FROM providers WHERE id = ANY(:pick_provider_ids::uuid[])
    ORDER BY id FOR NO KEY UPDATE
),
fresh AS MATERIALIZED (
    SELECT coalesce(bool_and(l.revision = e.revision), true) AS ok
    FROM locked l JOIN unnest(:pick_provider_ids::uuid[], :pick_revisions::bigint[]) AS e (id, revision)
        ON e.id = l.id
),
-- clock_timestamp(), not now(), and read from `fresh`, so taken once the providers are locked (the
-- transaction's start can predate their previous holder's write); after the niche's last_served_at
-- (read under the niche lock) whatever the clock does.
ts AS MATERIALIZED (
    SELECT greatest(clock_timestamp(), :last_served_at::timestamptz + interval '1 microsecond') AS at
    FROM fresh
),
picked AS (
    SELECT * FROM unnest(:pick_subscription_ids::uuid[], :pick_provider_ids::uuid[], :pick_level_ids::uuid[],
                         :pick_prices::bigint[], :pick_level_names::text[], :pick_price_texts::text[])
        WITH ORDINALITY AS t (subscription_id, provider_id, competition_level_id, price_cents,
                              level_name, price_text, pick_no)
    WHERE (SELECT ok FROM fresh)
),
ins AS (
    INSERT INTO assignments (lead_id, provider_id, subscription_id, competition_level_id,
                             price_charged_cents, created_at)
    SELECT :lead_id, provider_id, subscription_id, competition_level_id, price_cents, (SELECT at FROM ts)
    FROM picked
    ON CONFLICT (lead_id, provider_id) DO NOTHING
    RETURNING id, provider_id, subscription_id, competition_level_id, price_charged_cents
),
-- the provider is debited and counts the assignment in its usage (caps across its subscriptions),
-- in the period of the assignment's own time: the invariants recount it from the assignments
debit AS (
    UPDATE providers p
    SET balance_cents = p.balance_cents - ins.price_charged_cents, revision = p.revision + 1,
    {count_assignment("p", at="(SELECT at FROM ts)", timezone="p.timezone", price="ins.price_charged_cents")}
    -- the ids again, as an index condition: joined to `ins` alone, a generic plan on a table of
    -- hundreds of rows hashed a scan of all of them (and of every subscription, below)
    FROM ins WHERE p.id = ins.provider_id AND p.id = ANY(:pick_provider_ids::uuid[])
    RETURNING p.id, p.balance_cents, p.name, p.email, p.timezone
),
ledger AS (
    INSERT INTO ledger_entries (provider_id, amount_cents, balance_after_cents, kind, reference,
                                assignment_id, created_at)
    SELECT ins.provider_id, -ins.price_charged_cents, debit.balance_cents, '{LedgerKind.CHARGE}',
           'lead:' || :lead_id::text,
           ins.id, (SELECT at FROM ts)
    FROM ins JOIN debit ON debit.id = ins.provider_id
),
-- One UPDATE per row: a served subscription goes to the back of its queue, in pick order (one
-- microsecond apart, so the queue stays FIFO and equal times never favour low provider ids) and
-- counts the assignment in its usage (its own caps), and every ACTIVE subscription the new balance
-- no longer covers becomes INSUFFICIENT_FUNDS (any niche).
subs AS (
    UPDATE subscriptions s
    SET last_received_at = CASE WHEN x.pick_no IS NULL THEN s.last_received_at
                                ELSE (SELECT at FROM ts) + x.pick_no * interval '1 microsecond' END,
        status = CASE WHEN x.broke THEN '{SubscriptionStatus.INSUFFICIENT_FUNDS}' ELSE s.status END,
    {
    count_assignment(
        "s", at="(SELECT at FROM ts)", timezone="x.timezone", price="x.price", only_if="x.pick_no IS NOT NULL"
    )
}
    FROM (SELECT s2.id, pk.pick_no, pk.price_cents AS price, debit.timezone,
                 s2.status = '{SubscriptionStatus.ACTIVE}' AND lv.price_cents > debit.balance_cents AS broke
          FROM debit
          JOIN subscriptions s2
            ON s2.provider_id = debit.id AND s2.provider_id = ANY(:pick_provider_ids::uuid[])
          JOIN competition_levels lv ON lv.id = s2.competition_level_id
          LEFT JOIN picked pk ON pk.subscription_id = s2.id) x
    WHERE s.id = x.id AND (x.pick_no IS NOT NULL OR x.broke)
    RETURNING s.id, x.broke
),
notify AS (
    INSERT INTO notifications (assignment_id, template, recipient, variables, created_at)
    SELECT ins.id, '{Template.LEAD_ASSIGNED}', debit.email,
           jsonb_build_object('provider_name', debit.name, 'niche_name', :niche_name::text,
                              'level_name', picked.level_name, 'price_charged', picked.price_text,
                              'price_charged_cents', ins.price_charged_cents,
                              'dashboard_url', :dashboard_url::text, 'lead_id', :lead_id::text),
           (SELECT at FROM ts)
    FROM ins
    JOIN debit ON debit.id = ins.provider_id
    JOIN picked ON picked.provider_id = ins.provider_id
),
-- The webhook outbox (SPEC §9): a delivery per assignment and live endpoint of its provider that
-- subscribes to lead.assigned, enabled or disabled by the sender for failing (those queue until
-- re-enabled: next_attempt_at NULL). With no endpoint it costs one index probe per assignment; the
-- lead's attributes are read here, only for the rows that exist. A healthy endpoint's delivery
-- (no failure since its last success) is leased to the caller for :webhook_lease seconds, when
-- that is not 0: returned below with its endpoint's URL and secrets, for the caller's process to
-- send at once; due for any sender only once the lease ends (app/services/webhooks/sender.py).
-- A failing endpoint's are due when it is tried next (retry_at).
outbox AS MATERIALIZED (
    SELECT gen_random_uuid() AS id, e.id AS endpoint_id, ins.provider_id, ins.id AS subject_id,
           jsonb_build_object(
               'type', '{WebhookEvent.LEAD_ASSIGNED}',
               'timestamp', to_char((SELECT at FROM ts) AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"'),
               'data', jsonb_build_object(
                   'assignment_id', ins.id,
                   'provider_id', ins.provider_id,
                   'lead', (SELECT jsonb_build_object('id', l.id, 'attributes', l.attributes,
                                                      'submitted_at', l.created_at)
                            FROM leads l WHERE l.id = :lead_id),
                   'niche', jsonb_build_object('id', :niche_id::uuid, 'name', :niche_name::text),
                   'level', jsonb_build_object('id', ins.competition_level_id, 'name', picked.level_name),
                   'price_cents', ins.price_charged_cents,
                   'price', picked.price_text)) AS payload,
           e.enabled AND e.consecutive_failures = 0 AND :webhook_lease::float8 > 0 AS leased,
           e.enabled, greatest((SELECT at FROM ts), e.retry_at) AS due_at, e.url, e.secret,
           CASE WHEN e.previous_secret_expires_at > (SELECT at FROM ts) THEN e.previous_secret END
               AS previous_secret
    FROM ins
    JOIN webhook_endpoints e ON e.provider_id = ins.provider_id
    JOIN picked ON picked.provider_id = ins.provider_id
    WHERE e.deleted_at IS NULL AND '{WebhookEvent.LEAD_ASSIGNED}' = ANY(e.events)
      AND (e.enabled OR e.disabled_reason = '{DisabledReason.FAILING}')
),
webhooks AS (
    INSERT INTO webhook_deliveries (id, endpoint_id, provider_id, event_type, subject_id, payload, status,
                                    next_attempt_at, created_at)
    SELECT id, endpoint_id, provider_id, '{WebhookEvent.LEAD_ASSIGNED}', subject_id, payload,
           '{DeliveryStatus.PENDING}',
           CASE WHEN leased THEN (SELECT at FROM ts) + :webhook_lease::float8 * interval '1 second'
                WHEN enabled THEN due_at END,
           (SELECT at FROM ts)
    FROM outbox
),
audit AS (
    INSERT INTO audit_log (action, actor_type, entity_type, entity_id, details, created_at)
    SELECT '{AuditAction.DISTRIBUTION_STARTED}', '{ActorType.SYSTEM}', 'lead', :lead_id,
           :started_details::jsonb, (SELECT at FROM ts)
    WHERE (SELECT ok FROM fresh)
    UNION ALL
    SELECT '{AuditAction.ASSIGNMENT_CREATED}', '{ActorType.SYSTEM}', 'lead', :lead_id,
           jsonb_build_object('run_id', :run_id::uuid, 'assignment_id', ins.id,
                              'provider_id', ins.provider_id,
                              'competition_level_id', ins.competition_level_id,
                              'price_cents', ins.price_charged_cents),
           (SELECT at FROM ts)
    FROM ins
    UNION ALL
    SELECT '{AuditAction.DISTRIBUTION_SKIPPED_PROVIDER}', '{ActorType.SYSTEM}', 'lead', :lead_id, d,
           (SELECT at FROM ts)
    FROM unnest(:skip_details::jsonb[]) AS d
    WHERE (SELECT ok FROM fresh)
    UNION ALL
    SELECT '{AuditAction.DISTRIBUTION_COMPLETED}', '{ActorType.SYSTEM}', 'lead', :lead_id,
           :completed_details::jsonb,
           (SELECT at FROM ts)
    WHERE (SELECT ok FROM fresh)
),
lead AS (
    UPDATE leads
    SET status = CASE WHEN EXISTS (SELECT 1 FROM ins) THEN '{LeadStatus.DISTRIBUTED}'
                  ELSE '{LeadStatus.NO_ELIGIBLE}' END,
        distributed_at = CASE WHEN EXISTS (SELECT 1 FROM ins) THEN (SELECT at FROM ts)
                              ELSE distributed_at END,
        distribution_attempts = distribution_attempts + 1
    WHERE id = :lead_id AND (SELECT ok FROM fresh)
),
rotate AS (
    UPDATE niches
    SET next_start_level_order_position = :next_start_position,
        last_served_at = CASE WHEN cardinality(:pick_subscription_ids::uuid[]) = 0 THEN last_served_at
                              ELSE (SELECT at FROM ts) + cardinality(:pick_subscription_ids::uuid[])
                                                         * interval '1 microsecond' END
    WHERE id = :niche_id AND :next_start_position::int IS NOT NULL AND (SELECT ok FROM fresh)
),
run AS (
    INSERT INTO distribution_runs (id, lead_id, status, requested_by, attempts, seq, started_at,
                                   finished_at, duration_ms, outcome, created_at, updated_at)
    SELECT :run_id, :lead_id, :status, :requested_by, 1, :seq_after, :started_at, (SELECT at FROM ts),
           :duration_ms, :outcome::jsonb, :started_at, (SELECT at FROM ts)
    WHERE (SELECT ok FROM fresh)
    ON CONFLICT (id) DO UPDATE
    SET status = EXCLUDED.status, attempts = distribution_runs.attempts + 1, seq = EXCLUDED.seq,
        started_at = coalesce(distribution_runs.started_at, EXCLUDED.started_at),
        finished_at = EXCLUDED.finished_at, duration_ms = EXCLUDED.duration_ms,
        outcome = EXCLUDED.outcome, error = NULL, updated_at = EXCLUDED.updated_at
)
SELECT ins.id AS assignment_id, ins.provider_id, debit.balance_cents, (SELECT at FROM ts) AS at,
       (SELECT count(*) FROM outbox WHERE enabled AND NOT leased AND due_at = (SELECT at FROM ts))
           AS webhooks_due, NULL::bigint AS revision,
       NULL::uuid AS delivery_id, NULL::uuid AS endpoint_id, NULL AS url, NULL AS secret,
       NULL AS previous_secret, NULL AS body
FROM ins JOIN debit ON debit.id = ins.provider_id
UNION ALL
SELECT NULL, id, NULL, NULL, NULL, revision, NULL, NULL, NULL, NULL, NULL, NULL
FROM locked WHERE NOT (SELECT ok FROM fresh)
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL, NULL, id, endpoint_id, url, secret, previous_secret, payload::text
FROM outbox WHERE leased
""")


@dataclass(frozen=True, slots=True)
class Written:
    assignment_ids: dict[uuid.UUID, uuid.UUID]  # provider -> assignment
    balances_after: dict[uuid.UUID, int]
    at: datetime | None
    webhooks_due: int = 0  # webhook deliveries written for any sender to claim now
    webhooks_leased: tuple[LeasedWebhook, ...] = ()  # and those for the caller to send
    # nothing was written: a picked provider's revision moved; each locked provider's revision
    moved: dict[uuid.UUID, int] | None = None


def format_money(cents: int) -> str:
    return f"${cents // 100:,}.{cents % 100:02d}"


async def write_distribution(
    conn: asyncpg.Connection,
    *,
    lead_id: uuid.UUID,
    run_id: uuid.UUID,
    niche_id: uuid.UUID,
    niche_name: str,
    plan: Plan,
    requested_by: str,
    started_at: datetime,
    duration_ms: float,
    outcome: dict[str, Any],
    seq_after: int,
    dashboard_url: str,
    last_served_at: datetime | None,
    webhook_lease_seconds: float = 0,
) -> Written:
    picks = plan.picks
    skips = plan.skips
    started = {"run_id": str(run_id), "requested_by": requested_by}
    completed = {
        "run_id": str(run_id),
        "outcome": plan.outcome.value,
        "assigned": len(picks),
        "skipped": len(skips),
        "start_level_id": str(plan.start_level.id) if plan.start_level else None,
    }
    skip_details = [
        json.dumps(
            {
                "run_id": str(run_id),
                "provider_id": str(s.candidate.provider_id),
                "subscription_id": str(s.candidate.subscription_id),
                "competition_level_id": str(s.level.id),
                "reason": s.reason.value,
                "detail": s.detail,
            }
        )
        for s in skips
    ]
    rows = await conn.fetch(
        WRITE_DISTRIBUTION.text,
        *WRITE_DISTRIBUTION.args(
            {
                "lead_id": lead_id,
                "run_id": run_id,
                "niche_id": niche_id,
                "next_start_position": plan.next_start_position,
                "status": plan.outcome.value,
                "requested_by": requested_by,
                "started_at": started_at,
                "duration_ms": duration_ms,
                "outcome": json.dumps(outcome),
                "seq_after": seq_after,
                "niche_name": niche_name,
                "dashboard_url": dashboard_url,
                "pick_subscription_ids": [p.candidate.subscription_id for p in picks],
                "pick_provider_ids": [p.candidate.provider_id for p in picks],
                "pick_revisions": [p.candidate.revision for p in picks],
                "pick_level_ids": [p.level.id for p in picks],
                "pick_prices": [p.level.price_cents for p in picks],
                "pick_level_names": [p.level.name for p in picks],
                "pick_price_texts": [format_money(p.level.price_cents) for p in picks],
                "skip_details": skip_details,
                "started_details": json.dumps(started),
                "completed_details": json.dumps(completed),
                "last_served_at": last_served_at,
                "webhook_lease": webhook_lease_seconds,
            }
        ),
    )
    if any(r["revision"] is not None for r in rows):
        return Written({}, {}, None, moved={r["provider_id"]: r["revision"] for r in rows})
    assigned = [r for r in rows if r["assignment_id"] is not None]
    return Written(
        assignment_ids={r["provider_id"]: r["assignment_id"] for r in assigned},
        balances_after={r["provider_id"]: r["balance_cents"] for r in assigned},
        at=assigned[0]["at"] if assigned else None,
        webhooks_due=assigned[0]["webhooks_due"] if assigned else 0,
        webhooks_leased=tuple(
            LeasedWebhook(
                r["delivery_id"],
                r["endpoint_id"],
                r["url"],
                (r["secret"], r["previous_secret"]) if r["previous_secret"] else (r["secret"],),
                r["body"],
            )
            for r in rows
            if r["delivery_id"] is not None
        ),
    )
