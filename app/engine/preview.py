"""previewDistribution: who would receive the lead now, and why the others would not. The same
reads and the same pure plan as the engine, in one read-only snapshot, with no lock and no write."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import asyncpg

from app.db import Database
from app.engine.plan import NicheState, Plan, plan_distribution
from app.engine.snapshot import LOCK_LEAD, lock_lead_row, read_full_levels, read_niche_state
from app.errors import NotFound
from app.models.leads import DISTRIBUTABLE

READ_LEAD = LOCK_LEAD.replace("FOR NO KEY UPDATE OF l, n", "")


@dataclass(frozen=True)
class Preview:
    lead_id: uuid.UUID
    lead_status: str
    distributable: bool
    state: NicheState
    plan: Plan


async def preview_distribution(db: Database, *, lead_id: uuid.UUID) -> Preview:
    async with db.engine.connect() as sa_conn:
        conn: asyncpg.Connection = (await sa_conn.get_raw_connection()).driver_connection
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
    return Preview(
        lead_id=lead_id,
        lead_status=lead.status,
        distributable=lead.status in DISTRIBUTABLE,
        state=state,
        plan=plan,
    )
