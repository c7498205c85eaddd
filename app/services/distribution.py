"""Distribution runs: the request (a QUEUED run and its idempotency key, in one transaction), its
execution by the engine, failures, the dead-letter list and retries.

`request_distribution` executes the run inline for now; the job layer will enqueue it instead,
behind this same function, so callers (resolvers) do not change."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from app.db import Database
from app.engine.distribute import distribute_lead
from app.errors import Conflict, DomainError, LeadNotDistributable, NotFound
from app.models.audit import AuditAction
from app.models.base import utcnow
from app.models.distribution import DistributionRun, RunStatus
from app.models.leads import DISTRIBUTABLE, Lead, LeadStatus
from app.services import _guards
from app.services.audit import SYSTEM, Actor, record
from app.services.leads import lock_lead
from app.settings import Settings


async def request_distribution(
    db: Database, *, actor: Actor, lead_id: uuid.UUID, idempotency_key: str | None, settings: Settings
) -> DistributionRun:
    """The same key for the same lead returns the same run (and runs nothing); the same key for
    another lead is a CONFLICT."""
    key = _guards.text(idempotency_key, field="idempotencyKey", max_length=200) if idempotency_key else None
    try:
        run, created = await _insert_run(db, actor=actor, lead_id=lead_id, key=key)
    except IntegrityError:
        # a concurrent request with the same key won the insert: answer as it would be answered now
        run, created = await _insert_run(db, actor=actor, lead_id=lead_id, key=key)
    if created:
        await execute_run(db, run_id=run.id, lead_id=lead_id, settings=settings)
    return await get_run(db, run.id)


async def _insert_run(
    db: Database, *, actor: Actor, lead_id: uuid.UUID, key: str | None
) -> tuple[DistributionRun, bool]:
    async with db.begin() as session:
        if key is not None:
            existing = (
                await session.execute(select(DistributionRun).where(DistributionRun.idempotency_key == key))
            ).scalar_one_or_none()
            if existing is not None:
                if existing.lead_id != lead_id:
                    raise Conflict(
                        f"idempotency key {key!r} was already used for lead {existing.lead_id}",
                        field="idempotencyKey",
                    )
                return existing, False
        lead = await session.get(Lead, lead_id)
        if lead is None:
            raise NotFound("lead", lead_id)
        if lead.status not in DISTRIBUTABLE:
            raise LeadNotDistributable(
                f"lead {lead_id} is {lead.status}: only APPROVED or NO_ELIGIBLE leads can be distributed"
            )
        run = DistributionRun(
            lead_id=lead_id, idempotency_key=key, requested_by=str(actor), status=RunStatus.QUEUED, seq=1
        )
        session.add(run)
        await session.flush()
        record(
            session,
            actor,
            AuditAction.DISTRIBUTION_REQUESTED,
            entity_type="lead",
            entity_id=lead_id,
            run_id=run.id,
            idempotency_key=key,
        )
    return run, True


async def execute_run(db: Database, *, run_id: uuid.UUID, lead_id: uuid.UUID, settings: Settings) -> None:
    """Runs the engine for a run. A domain refusal (the lead was rejected meanwhile) or a crash
    marks the run FAILED and audits it; the engine's own transaction left nothing behind."""
    try:
        await distribute_lead(db, lead_id=lead_id, run_id=run_id, dashboard_url=settings.dashboard_url)
    except DomainError as exc:
        await mark_failed(db, run_id=run_id, error=str(exc), fail_lead=False)
    except Exception as exc:  # noqa: BLE001  (recorded on the run, then re-raised for logs)
        await mark_failed(db, run_id=run_id, error=f"{type(exc).__name__}: {exc}", fail_lead=True)
        raise


async def mark_failed(db: Database, *, run_id: uuid.UUID, error: str, fail_lead: bool) -> None:
    """Dead-letters a run: FAILED, with the lead FAILED too when the engine itself failed."""
    async with db.begin() as session:
        run = await session.get(DistributionRun, run_id, with_for_update=True)
        if run is None or run.status not in (RunStatus.QUEUED, RunStatus.RUNNING):
            return
        if fail_lead:
            lead = await lock_lead(session, run.lead_id)
            if lead.status in DISTRIBUTABLE:
                lead.status = LeadStatus.FAILED
            lead.distribution_attempts += 1
        run.status = RunStatus.FAILED
        run.error = error[:2000]
        run.attempts += 1
        run.seq += 1
        run.finished_at = run.updated_at = utcnow()
        record(
            session,
            SYSTEM,
            AuditAction.DISTRIBUTION_FAILED,
            entity_type="lead",
            entity_id=run.lead_id,
            run_id=run.id,
            error=run.error,
        )


async def retry_distribution(
    db: Database, *, actor: Actor, run_id: uuid.UUID, settings: Settings
) -> DistributionRun:
    """Queues a dead-lettered (FAILED) run again; its lead, if FAILED, is distributable again."""
    async with db.begin() as session:
        run = await session.get(DistributionRun, run_id, with_for_update=True)
        if run is None:
            raise NotFound("distribution run", run_id)
        if run.status != RunStatus.FAILED:
            raise Conflict(f"run {run_id} is {run.status}: only FAILED runs can be retried")
        lead = await lock_lead(session, run.lead_id)
        if lead.status == LeadStatus.FAILED:
            lead.status = LeadStatus.APPROVED
        elif lead.status not in DISTRIBUTABLE:
            raise LeadNotDistributable(f"lead {lead.id} is {lead.status}: it cannot be distributed again")
        run.status = RunStatus.QUEUED
        run.error = None
        run.seq += 1
        run.updated_at = utcnow()
        record(
            session,
            actor,
            AuditAction.DISTRIBUTION_REQUESTED,
            entity_type="lead",
            entity_id=lead.id,
            run_id=run.id,
            retry=True,
        )
    await execute_run(db, run_id=run_id, lead_id=run.lead_id, settings=settings)
    return await get_run(db, run_id)


async def get_run(db: Database, run_id: uuid.UUID) -> DistributionRun:
    async with db.read() as session:
        run = await session.get(DistributionRun, run_id)
    if run is None:
        raise NotFound("distribution run", run_id)
    return run


async def dead_letters(db: Database, *, limit: int = 100) -> Sequence[DistributionRun]:
    async with db.read() as session:
        result = await session.execute(
            select(DistributionRun)
            .where(DistributionRun.status == RunStatus.FAILED)
            .order_by(col(DistributionRun.updated_at).desc())
            .limit(limit)
        )
        return result.scalars().all()


async def assignment_count(db: Database, lead_id: uuid.UUID) -> int:
    from app.models.leads import Assignment

    async with db.read() as session:
        return int(
            await session.scalar(sa.select(sa.func.count()).where(col(Assignment.lead_id) == lead_id)) or 0
        )
