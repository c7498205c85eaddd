"""Reads of the engine's transaction. Each runs as its own statement after the niche lock: a new
statement takes a new snapshot, so it sees what the lock's previous holder committed."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import asyncpg

from app.engine.eligibility import parse_stored
from app.engine.plan import Candidate, Level, NicheState
from app.models.niches import LevelStrategy

# Lock order everywhere: lead -> niche -> providers by ascending id. The niche is locked FOR NO KEY
# UPDATE: inserting a lead takes KEY SHARE on its niche (the foreign key), and FOR UPDATE would
# deadlock against it. The run row, when given, is locked with its lead (range-table order l, n, r).
LOCK_LEAD = """
SELECT l.niche_id, l.status, l.attributes, n.name AS niche_name,
       n.next_start_level_order_position AS next_pos, n.level_strategy
FROM leads l JOIN niches n ON n.id = l.niche_id
WHERE l.id = $1
FOR UPDATE OF l FOR NO KEY UPDATE OF n
"""

LOCK_LEAD_AND_RUN = """
SELECT l.niche_id, l.status, l.attributes, n.name AS niche_name,
       n.next_start_level_order_position AS next_pos, n.level_strategy,
       r.status AS run_status, r.seq AS run_seq, r.requested_by
FROM leads l
JOIN niches n ON n.id = l.niche_id
JOIN distribution_runs r ON r.id = $2 AND r.lead_id = l.id
WHERE l.id = $1
FOR UPDATE OF l, r FOR NO KEY UPDATE OF n
"""

# Every subscription of every active level, least recently served first (provider id breaks ties),
# with what the walk needs to decide; plus the providers that already hold this lead.
READ_CANDIDATES = """
SELECT lv.id AS level_id, lv.name AS level_name, lv.order_position, lv.price_cents, lv.max_recipients,
       s.id AS subscription_id, s.provider_id, s.status AS subscription_status,
       p.status AS provider_status, p.balance_cents, s.filters,
       ARRAY(SELECT a.provider_id FROM assignments a WHERE a.lead_id = $2) AS holders
FROM competition_levels lv
LEFT JOIN subscriptions s ON s.competition_level_id = lv.id
LEFT JOIN providers p ON p.id = s.provider_id
WHERE lv.niche_id = $1 AND lv.active AND lv.deleted_at IS NULL
ORDER BY lv.order_position, s.last_received_at ASC NULLS FIRST, s.provider_id
"""

LOCK_PROVIDERS = """
SELECT id, status, balance_cents FROM providers
WHERE id = ANY($1::uuid[]) ORDER BY id FOR NO KEY UPDATE
"""


@dataclass(frozen=True)
class LockedLead:
    niche_id: uuid.UUID
    status: str
    attributes: dict[str, Any]
    niche_name: str
    next_start_position: int
    strategy: LevelStrategy
    run_status: str | None = None
    run_seq: int = 0


async def lock_lead(
    conn: asyncpg.Connection, lead_id: uuid.UUID, run_id: uuid.UUID | None
) -> LockedLead | None:
    if run_id is None:
        row = await conn.fetchrow(LOCK_LEAD, lead_id)
    else:
        row = await conn.fetchrow(LOCK_LEAD_AND_RUN, lead_id, run_id)
    if row is None:
        return None
    return LockedLead(
        niche_id=row["niche_id"],
        status=row["status"],
        attributes=row["attributes"],
        niche_name=row["niche_name"],
        next_start_position=row["next_pos"],
        strategy=LevelStrategy(row["level_strategy"]),
        run_status=row["run_status"] if run_id is not None else None,
        run_seq=row["run_seq"] if run_id is not None else 0,
    )


async def read_niche_state(
    conn: asyncpg.Connection | asyncpg.pool.PoolConnectionProxy,
    *,
    lead: LockedLead,
    lead_id: uuid.UUID,
    niche_id: uuid.UUID,
) -> NicheState:
    rows = await conn.fetch(READ_CANDIDATES, niche_id, lead_id)
    return niche_state_from_rows(rows, lead=lead, niche_id=niche_id)


def niche_state_from_rows(
    rows: Sequence[asyncpg.Record], *, lead: LockedLead, niche_id: uuid.UUID
) -> NicheState:
    levels: list[Level] = []
    candidates: dict[uuid.UUID, list[Candidate]] = {}
    filters_cache: dict[str, Any] = {}
    holders: frozenset[uuid.UUID] = frozenset()
    for row in rows:
        level_id = row["level_id"]
        if not levels or levels[-1].id != level_id:
            levels.append(
                Level(
                    id=level_id,
                    name=row["level_name"],
                    order_position=row["order_position"],
                    price_cents=row["price_cents"],
                    max_recipients=row["max_recipients"],
                )
            )
            candidates[level_id] = []
            holders = frozenset(row["holders"])
        if row["subscription_id"] is None:
            continue
        raw_filters = row["filters"]
        if raw_filters:
            key = repr(raw_filters)
            if key not in filters_cache:
                filters_cache[key] = parse_stored(raw_filters)
            conditions = filters_cache[key]
        else:
            conditions = ()
        candidates[level_id].append(
            Candidate(
                subscription_id=row["subscription_id"],
                provider_id=row["provider_id"],
                subscription_status=row["subscription_status"],
                provider_status=row["provider_status"],
                balance_cents=row["balance_cents"],
                filters=conditions,
            )
        )
    return NicheState(
        niche_id=niche_id,
        niche_name=lead.niche_name,
        strategy=lead.strategy,
        next_start_position=lead.next_start_position,
        levels=levels,
        candidates=candidates,
        assigned_providers=holders,
    )


@dataclass(frozen=True, slots=True)
class LockedProvider:
    status: str
    balance_cents: int


async def lock_providers(
    conn: asyncpg.Connection, provider_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, LockedProvider]:
    rows = await conn.fetch(LOCK_PROVIDERS, list(provider_ids))
    return {r["id"]: LockedProvider(r["status"], r["balance_cents"]) for r in rows}
