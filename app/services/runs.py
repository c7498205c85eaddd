"""Distribution runs: the request (a QUEUED run with its idempotency key, in one statement, the job
sent after the commit) and the reads of runs. Executing a run is app/services/execution.py; failed
attempts, retries and dead letters app/services/retries.py; batches and the sweep their own modules."""

from __future__ import annotations

import uuid
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError
from sqlmodel import col, select

from app.db import Database, driver_connection, retry_on_disconnect, sqlstate_of
from app.engine.sql import compile_named
from app.errors import Conflict, LeadNotDistributable, NotFound
from app.models.audit import AuditAction
from app.models.distribution import DistributionRun, QueuedRun, RunStatus
from app.models.leads import DISTRIBUTABLE, Assignment, Lead
from app.progress.events import EventType, ProgressEvent
from app.services import _guards
from app.services.audit import Actor
from app.services.dispatch import Dispatcher, RunJob
from app.services.principals import require_operator

UNIQUE_VIOLATION = "23505"


def run_event(
    run: DistributionRun | QueuedRun, niche_id: uuid.UUID, kind: EventType, detail: str | None = None
) -> ProgressEvent:
    """A run's change of state (queued, retried, failed) as the progress event its subscribers get."""
    return ProgressEvent(
        run_id=run.id,
        lead_id=run.lead_id,
        niche_id=niche_id,
        seq=run.seq,
        type=kind,
        at=run.updated_at,
        detail=detail,
    )


async def request_distribution(
    db: Database,
    *,
    actor: Actor,
    lead_id: uuid.UUID,
    idempotency_key: str | None,
    dispatcher: Dispatcher,
) -> DistributionRun | QueuedRun:
    """The same key for the same lead returns the same run (and sends nothing); the same key for
    another lead is a CONFLICT."""
    require_operator(actor, "distributing leads")
    key = _guards.text(idempotency_key, field="idempotencyKey", max_length=200) if idempotency_key else None
    try:
        run, niche_id, created = await _insert_run(db, actor=actor, lead_id=lead_id, key=key)
    except DBAPIError as exc:
        if sqlstate_of(exc) != UNIQUE_VIOLATION:
            raise
        # a concurrent request with the same key won the insert: answer as it would be answered now
        run, niche_id, created = await _insert_run(db, actor=actor, lead_id=lead_id, key=key)
    if created:
        await dispatcher.distribute(
            [RunJob(run.id, lead_id)], announce=[run_event(run, niche_id, EventType.QUEUED)]
        )
        if dispatcher.inline:
            return await get_run(db, run.id, actor=actor)  # finished by now
    return run


# One statement, in autocommit: a replayed key's run, else the lead's state, else a new QUEUED run
# and its audit entry. A concurrent insert with the same key fails the unique index; the caller
# runs it again and finds that run. Sent through asyncpg itself, as the engine's statements are:
# SQLAlchemy's execution and result machinery were a seventh of the API's CPU per distributeLead.
REQUEST_RUN = compile_named("""
WITH existing AS (
    SELECT id, lead_id FROM distribution_runs WHERE idempotency_key = CAST(:key AS text)
),
lead AS (
    SELECT id, niche_id, status FROM leads WHERE id = CAST(:lead_id AS uuid)
),
run AS (
    INSERT INTO distribution_runs (lead_id, idempotency_key, requested_by, status, seq, enqueued_at,
                                   created_at, updated_at)
    SELECT id, CAST(:key AS text), CAST(:requested_by AS text), CAST(:queued AS text), 1, now(), now(),
           now()
    FROM lead
    WHERE status = ANY(CAST(:distributable AS text[])) AND NOT EXISTS (SELECT 1 FROM existing)
    RETURNING id, created_at
),
audit AS (
    INSERT INTO audit_log (action, actor_type, actor_id, entity_type, entity_id, details, created_at)
    SELECT CAST(:action AS text), CAST(:actor_type AS text), CAST(:actor_id AS uuid), 'lead',
           CAST(:lead_id AS uuid),
           jsonb_build_object('run_id', run.id::text, 'idempotency_key', CAST(:key AS text)),
           run.created_at
    FROM run
)
SELECT (SELECT id FROM existing) AS existing_id, (SELECT lead_id FROM existing) AS existing_lead_id,
       (SELECT status FROM lead) AS lead_status, (SELECT niche_id FROM lead) AS niche_id,
       (SELECT id FROM run) AS run_id, (SELECT created_at FROM run) AS at
""")


async def _insert_run(
    db: Database, *, actor: Actor, lead_id: uuid.UUID, key: str | None
) -> tuple[DistributionRun | QueuedRun, uuid.UUID, bool]:
    args = REQUEST_RUN.args(
        {
            "key": key,
            "lead_id": lead_id,
            "requested_by": str(actor),
            "distributable": sorted(DISTRIBUTABLE),
            "queued": RunStatus.QUEUED.value,
            "action": AuditAction.DISTRIBUTION_REQUESTED.value,
            "actor_type": actor.type.value,
            "actor_id": actor.id,
        }
    )
    async with driver_connection(db.autocommit) as conn:
        row = await conn.fetchrow(REQUEST_RUN.text, *args)
    assert row is not None  # one row always: the statement's SELECT has no FROM
    if row["existing_id"] is not None:
        if row["existing_lead_id"] != lead_id:
            raise Conflict(
                f"idempotency key {key!r} was already used for lead {row['existing_lead_id']}",
                field="idempotencyKey",
            )
        return await get_run(db, row["existing_id"], actor=actor), uuid.UUID(int=0), False
    if row["lead_status"] is None:
        raise NotFound("lead", lead_id)
    if row["run_id"] is None:
        raise LeadNotDistributable(
            f"lead {lead_id} is {row['lead_status']}: only APPROVED or NO_ELIGIBLE leads can be distributed"
        )
    run = QueuedRun(
        id=row["run_id"], lead_id=lead_id, idempotency_key=key, requested_by=str(actor), created_at=row["at"]
    )
    return run, row["niche_id"], True


async def get_run(db: Database, run_id: uuid.UUID, *, actor: Actor) -> DistributionRun:
    require_operator(actor, "reading distribution runs")
    async with db.read() as session:
        run = await session.get(DistributionRun, run_id)
    if run is None:
        raise NotFound("distribution run", run_id)
    return run


@retry_on_disconnect
async def lead_niche_id(db: Database, lead_id: uuid.UUID, *, actor: Actor) -> uuid.UUID:
    """The niche of an existing lead (its runs' events are published on the niche's channel too);
    NOT_FOUND for a lead that does not exist. Operators only: runs name every candidate."""
    require_operator(actor, "watching distribution runs")
    async with db.read() as session:
        found = await session.scalar(sa.select(col(Lead.niche_id)).where(col(Lead.id) == lead_id))
    if found is None:
        raise NotFound("lead", lead_id)
    return found


@retry_on_disconnect
async def latest_run_id(db: Database, lead_id: uuid.UUID, *, actor: Actor) -> uuid.UUID | None:
    """The lead's latest run; None while it has none."""
    require_operator(actor, "watching distribution runs")
    async with db.read() as session:
        return await session.scalar(
            sa.select(col(DistributionRun.id))
            .where(col(DistributionRun.lead_id) == lead_id)
            .order_by(col(DistributionRun.created_at).desc())
            .limit(1)
        )


async def assignment_count(db: Database, lead_id: uuid.UUID, *, actor: Actor) -> int:
    require_operator(actor, "reading a lead's distribution status")
    async with db.read() as session:
        return int(
            await session.scalar(sa.select(sa.func.count()).where(col(Assignment.lead_id) == lead_id)) or 0
        )


@retry_on_disconnect
async def run_snapshot(db: Database, run_id: uuid.UUID, *, actor: Actor) -> tuple[DistributionRun, uuid.UUID]:
    """The run as committed now, with its lead's niche: a subscriber's first (and resync) state.
    Operators only: a run names every candidate and why it was passed over."""
    require_operator(actor, "watching distribution runs")
    async with db.read() as session:
        row = (
            await session.execute(
                select(DistributionRun, col(Lead.niche_id))
                .join(Lead, col(Lead.id) == col(DistributionRun.lead_id))
                .where(DistributionRun.id == run_id)
            )
        ).one_or_none()
    if row is None:
        raise NotFound("distribution run", run_id)
    return row[0], row[1]


@retry_on_disconnect
async def niche_runs_since(
    db: Database, niche_id: uuid.UUID, since: datetime, *, actor: Actor, limit: int = 500
) -> list[DistributionRun]:
    """The runs of a niche's leads that changed at or after `since`, as committed now, oldest change
    first (the newest `limit` of them): what a niche's feed missed while its subscriber fell behind
    or the API lost Redis. Operators only, as the feed."""
    require_operator(actor, "watching distribution runs")
    async with db.read() as session:
        rows = await session.execute(
            select(DistributionRun)
            .join(Lead, col(Lead.id) == col(DistributionRun.lead_id))
            .where(col(Lead.niche_id) == niche_id, col(DistributionRun.updated_at) >= since)
            .order_by(col(DistributionRun.updated_at).desc())
            .limit(limit)
        )
        return list(reversed(rows.scalars().all()))
