"""Reads of the engine's transaction. Each runs as its own statement after the niche lock: a new
statement takes a new snapshot, so it sees what the lock's previous holder committed."""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

import asyncpg

from app.engine.eligibility import Condition, parse_stored
from app.engine.plan import Candidate, Level, NicheState
from app.engine.schedule import parse_stored as parse_stored_schedule
from app.engine.schedule import zone
from app.engine.usage import counter_columns, period_starts, usage_text
from app.models.niches import LevelStrategy

# Lock order everywhere: lead -> niche -> providers by ascending id. Lead and niche are locked FOR
# NO KEY UPDATE: rows that reference them (a new lead, a new run) take KEY SHARE through their
# foreign key, which FOR UPDATE would block or deadlock against; two distributions of one lead
# still exclude each other. The run row, when given, is locked with its lead (range-table order).
# `holders`: providers that already hold this lead (cross-level dedupe across runs). Read in the
# locking statement: a concurrent run that committed assignments also committed DISTRIBUTED, which
# the lock's recheck returns, and then nothing is planned.
LOCK_LEAD = """
SELECT l.niche_id, l.status, l.attributes, n.name AS niche_name,
       n.next_start_level_order_position AS next_pos, n.level_strategy, n.last_served_at,
       ARRAY(SELECT a.provider_id FROM assignments a WHERE a.lead_id = l.id) AS holders
FROM leads l JOIN niches n ON n.id = l.niche_id
WHERE l.id = $1
FOR NO KEY UPDATE OF l, n
"""

LOCK_LEAD_AND_RUN = """
SELECT l.niche_id, l.status, l.attributes, n.name AS niche_name,
       n.next_start_level_order_position AS next_pos, n.level_strategy, n.last_served_at,
       ARRAY(SELECT a.provider_id FROM assignments a WHERE a.lead_id = l.id) AS holders,
       r.status AS run_status, r.seq AS run_seq, r.requested_by,
       coalesce(r.next_attempt_at > now(), false) AS run_not_due
FROM leads l
JOIN niches n ON n.id = l.niche_id
JOIN distribution_runs r ON r.id = $2 AND r.lead_id = l.id
WHERE l.id = $1
FOR NO KEY UPDATE OF l, n FOR UPDATE OF r
"""


# The active levels in traversal order from the niche's rotation position, and for the first
# $3 of them (or only those in $4, when given) a window of subscriptions, least recently served
# first (provider id breaks ties): what a walk needs in the common case. A level read only in part
# (a full window, or not read at all) is read in full if a walk runs off it. Filters travel as
# text and are parsed only when non-empty. The window is cut from the subscriptions alone and only
# its providers are read, one index probe each: joined before the cut, the planner hashed a scan of
# every provider (wide rows, with the usage counters) on every distribution. LIMIT 1 keeps that
# lookup a parameterised probe (a provider's id is its key; a plain join would be planned freely).
READ_CANDIDATES = f"""
WITH lv AS (
    SELECT id, name, order_position, price_cents, max_recipients,
           row_number() OVER (ORDER BY order_position < $2, order_position) AS turn
    FROM competition_levels
    WHERE niche_id = $1 AND active AND deleted_at IS NULL
)
SELECT lv.id AS level_id, lv.name AS level_name, lv.order_position, lv.price_cents, lv.max_recipients,
       lv.turn <= $3 OR lv.id = ANY($4::uuid[]) AS read,
       c.subscription_id, c.provider_id, c.subscription_status, pr.provider_status, pr.balance_cents,
       c.filters, pr.revision, pr.timezone, c.schedule, c.caps::text AS caps,
       pr.provider_caps::text AS provider_caps,
       CASE WHEN c.caps IS NOT NULL OR pr.provider_caps IS NOT NULL
            THEN {usage_text("c.s_", "pr.p_", "cur")} END AS usage
FROM lv
LEFT JOIN LATERAL (
    SELECT s.id AS subscription_id, s.provider_id, s.status AS subscription_status,
           s.filters::text AS filters, s.last_received_at, s.schedule::text AS schedule, s.caps,
           {counter_columns("s", "s_")}
    FROM subscriptions s
    WHERE s.competition_level_id = lv.id AND (lv.turn <= $3 OR lv.id = ANY($4::uuid[]))
    ORDER BY s.last_received_at ASC NULLS FIRST, s.provider_id
    LIMIT CASE WHEN cardinality($4::uuid[]) > 0 THEN NULL ELSE lv.max_recipients * 2 + 8 END
) c ON true
LEFT JOIN LATERAL (
    SELECT p.status AS provider_status, p.balance_cents, p.revision, p.timezone, p.caps AS provider_caps,
           {counter_columns("p", "p_")}
    FROM providers p
    WHERE p.id = c.provider_id
    LIMIT 1
) pr ON true
LEFT JOIN {period_starts("pr.timezone", "c.caps IS NOT NULL OR pr.provider_caps IS NOT NULL")} ON true
-- the full key again: an outer sort does not keep the lateral's order (sorts are not stable)
ORDER BY lv.order_position, c.last_received_at ASC NULLS FIRST, c.provider_id
"""

# What a candidate is made of, for the subscriptions of providers whose revision moved between the
# unlocked read and their lock: read again after the lock (a new statement, a new snapshot).
READ_PROVIDERS = f"""
SELECT s.id AS subscription_id, s.provider_id, s.status AS subscription_status,
       p.status AS provider_status, p.balance_cents, s.filters::text AS filters, p.revision, p.timezone,
       s.schedule::text AS schedule, s.caps::text AS caps, p.caps::text AS provider_caps,
       CASE WHEN s.caps IS NOT NULL OR p.caps IS NOT NULL THEN {usage_text("s.", "p.", "cur")} END AS usage
FROM subscriptions s JOIN providers p ON p.id = s.provider_id
LEFT JOIN {period_starts("p.timezone", "s.caps IS NOT NULL OR p.caps IS NOT NULL")} ON true
WHERE s.provider_id = ANY($1::uuid[]) AND s.competition_level_id = ANY($2::uuid[])
"""


@dataclass(frozen=True)
class LockedLead:
    niche_id: uuid.UUID
    status: str
    attributes: dict[str, Any]
    niche_name: str
    next_start_position: int
    strategy: LevelStrategy
    holders: frozenset[uuid.UUID] = frozenset()
    last_served_at: datetime | None = None
    run_status: str | None = None
    run_seq: int = 0
    requested_by: str | None = None
    run_not_due: bool = False  # a retry waiting out its backoff: a message that came early


async def lock_lead(
    conn: asyncpg.Connection, lead_id: uuid.UUID, run_id: uuid.UUID | None
) -> LockedLead | None:
    if run_id is None:
        row = await conn.fetchrow(LOCK_LEAD, lead_id)
    else:
        row = await conn.fetchrow(LOCK_LEAD_AND_RUN, lead_id, run_id)
    if row is None:
        return None
    return lock_lead_row(row, with_run=run_id is not None)


def lock_lead_row(row: asyncpg.Record, *, with_run: bool) -> LockedLead:
    return LockedLead(
        niche_id=row["niche_id"],
        status=row["status"],
        attributes=row["attributes"],
        niche_name=row["niche_name"],
        next_start_position=row["next_pos"],
        strategy=LevelStrategy(row["level_strategy"]),
        holders=frozenset(row["holders"]),
        last_served_at=row["last_served_at"],
        run_status=row["run_status"] if with_run else None,
        run_seq=row["run_seq"] if with_run else 0,
        requested_by=row["requested_by"] if with_run else None,
        run_not_due=row["run_not_due"] if with_run else False,
    )


async def read_niche_state(
    conn: asyncpg.Connection, *, lead: LockedLead, niche_id: uuid.UUID, at: datetime
) -> NicheState:
    """`at`: the instant the plan is for (delivery windows are evaluated at it)."""
    # FIRST_MATCH usually stops at the starting level: read that one first
    eager = 1 if lead.strategy is LevelStrategy.FIRST_MATCH else 1_000_000
    rows = await conn.fetch(READ_CANDIDATES, niche_id, lead.next_start_position, eager, [])
    return niche_state_from_rows(rows, lead=lead, niche_id=niche_id, at=at)


async def read_full_levels(
    conn: asyncpg.Connection, state: NicheState, level_ids: Sequence[uuid.UUID]
) -> NicheState:
    """The whole candidate list of levels a walk reached but had read only in part."""
    rows = await conn.fetch(READ_CANDIDATES, state.niche_id, state.next_start_position, 0, list(level_ids))
    wanted = set(level_ids)
    full = _candidates_by_level([r for r in rows if r["level_id"] in wanted], _Parsed())
    return replace(
        state,
        candidates={**state.candidates, **full},
        partial_levels=state.partial_levels - wanted,
    )


class _Parsed:
    """Subscriptions mostly share a few filter sets: parse each distinct text once per read
    (schedules are parsed once per process)."""

    def __init__(self) -> None:
        self.filters: dict[str, Sequence[Condition]] = {}

    def candidate(self, row: asyncpg.Record) -> Candidate:
        text, schedule = row["filters"], row["schedule"]
        return Candidate(
            subscription_id=row["subscription_id"],
            provider_id=row["provider_id"],
            subscription_status=row["subscription_status"],
            provider_status=row["provider_status"],
            balance_cents=row["balance_cents"],
            filters=() if text == "[]" else self._filters(text),
            schedule=None if schedule is None else parse_stored_schedule(schedule),
            zone=None if row["timezone"] == "UTC" else zone(row["timezone"]),
            caps_json=row["caps"],
            provider_caps_json=row["provider_caps"],
            usage=row["usage"],
            revision=row["revision"],
        )

    def _filters(self, text: str) -> Sequence[Condition]:
        found = self.filters.get(text)
        if found is None:
            found = self.filters[text] = parse_stored(json.loads(text))
        return found


def _candidates_by_level(rows: Sequence[asyncpg.Record], parsed: _Parsed) -> dict[uuid.UUID, list[Candidate]]:
    by_level: dict[uuid.UUID, list[Candidate]] = {}
    for row in rows:
        candidates = by_level.setdefault(row["level_id"], [])
        if row["subscription_id"] is not None:
            candidates.append(parsed.candidate(row))
    return by_level


def niche_state_from_rows(
    rows: Sequence[asyncpg.Record], *, lead: LockedLead, niche_id: uuid.UUID, at: datetime
) -> NicheState:
    levels: list[Level] = []
    for row in rows:
        if not levels or levels[-1].id != row["level_id"]:
            levels.append(
                Level(
                    id=row["level_id"],
                    name=row["level_name"],
                    order_position=row["order_position"],
                    price_cents=row["price_cents"],
                    max_recipients=row["max_recipients"],
                )
            )
    candidates = _candidates_by_level(rows, _Parsed())
    # read in part: not read at all (lazy levels), or a window that filled up
    unread = {row["level_id"] for row in rows if not row["read"]}
    partial = unread | {
        level.id for level in levels if len(candidates[level.id]) == level.max_recipients * 2 + 8
    }
    return NicheState(
        niche_id=niche_id,
        niche_name=lead.niche_name,
        strategy=lead.strategy,
        next_start_position=lead.next_start_position,
        levels=levels,
        candidates=candidates,
        assigned_providers=lead.holders,
        partial_levels=frozenset(partial),
        at=at,
    )


async def read_providers(
    conn: asyncpg.Connection, provider_ids: Sequence[uuid.UUID], level_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, Candidate]:
    """The providers' subscriptions to these levels as candidates, by subscription id: read after
    the providers' locks, so final for this transaction."""
    rows = await conn.fetch(READ_PROVIDERS, list(provider_ids), list(level_ids))
    parsed = _Parsed()
    return {row["subscription_id"]: parsed.candidate(row) for row in rows}
