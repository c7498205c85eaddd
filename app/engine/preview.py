"""previewDistribution: who would receive the lead now, and why the others would not. The same
reads and the same pure plan as the engine, in one read-only snapshot, with no lock and no write."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

from app.db import Database, driver_connection
from app.engine.plan import Candidate, NicheState, Plan, plan_distribution
from app.engine.snapshot import LOCK_LEAD, lock_lead_row, read_full_levels, read_niche_state
from app.engine.usage import LOCAL_PERIODS
from app.errors import NotFound
from app.models.leads import DISTRIBUTABLE

READ_LEAD = LOCK_LEAD.replace("FOR NO KEY UPDATE OF l, n", "")
# when each time zone's current periods began, as of the same transaction as the read
PERIOD_STARTS = f"""
SELECT tz, {", ".join(f"lw_period_start('{p.value}', now(), tz) AS {p.value.lower()}" for p in LOCAL_PERIODS)}
FROM unnest($1::text[]) AS tz
"""


@dataclass(frozen=True)
class Preview:
    lead_id: uuid.UUID
    lead_status: str
    distributable: bool
    state: NicheState
    plan: Plan
    # per time zone of a candidate with caps: when its current DAY, WEEK and MONTH began
    period_starts: dict[str, dict[str, datetime]]


async def preview_distribution(db: Database, *, lead_id: uuid.UUID) -> Preview:
    async with driver_connection(db.engine) as conn:
        async with conn.transaction(isolation="repeatable_read", readonly=True):
            row = await conn.fetchrow(READ_LEAD, lead_id)
            if row is None:
                raise NotFound("lead", lead_id)
            lead = lock_lead_row(row, with_run=False)
            state = await read_niche_state(conn, lead=lead, niche_id=lead.niche_id, at=datetime.now(UTC))
            plan = plan_distribution(state, lead.attributes)
            while plan.needs_full_levels:
                state = await read_full_levels(conn, state, sorted(plan.needs_full_levels))
                plan = plan_distribution(state, lead.attributes)
            zones = sorted(
                {zone_name(c) for cs in state.candidates.values() for c in cs if c.usage is not None}
            )
            starts = {
                row["tz"]: {p.value: row[p.value.lower()] for p in LOCAL_PERIODS}
                for row in (await conn.fetch(PERIOD_STARTS, zones) if zones else [])
            }
    return Preview(
        lead_id=lead_id,
        lead_status=lead.status,
        distributable=lead.status in DISTRIBUTABLE,
        state=state,
        plan=plan,
        period_starts=starts,
    )


def zone_name(candidate: Candidate) -> str:
    return "UTC" if candidate.zone is None else candidate.zone.key
