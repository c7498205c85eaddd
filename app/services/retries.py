"""Failed attempts (backoff with jitter, then FAILED and dead-lettered), the dead-letter list, and
retrying a dead-lettered run by hand. Retries live on the run row; the sweep sends what is due."""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from datetime import timedelta

from sqlmodel import col, select

from app import metrics
from app.db import Database
from app.errors import Conflict, LeadNotDistributable, NotFound
from app.models.audit import AuditAction
from app.models.base import utcnow
from app.models.distribution import OPEN_RUN_STATUSES, DistributionRun, RunStatus
from app.models.leads import DISTRIBUTABLE, LeadStatus
from app.progress.events import EventType, ProgressEvent
from app.services.audit import SYSTEM, Actor, record
from app.services.dispatch import Dispatcher, RunJob
from app.services.leads import lock_lead
from app.services.principals import require_operator
from app.services.runs import get_run, run_event
from app.settings import Settings


def backoff_seconds(attempt: int, settings: Settings) -> float:
    """Delay before attempt `attempt + 1`: the configured schedule, ± jitter."""
    delays = settings.retry_delays_seconds
    base = delays[min(attempt - 1, len(delays) - 1)]
    return max(0.0, base * (1 + random.uniform(-settings.retry_jitter, settings.retry_jitter)))


async def record_failed_attempt(
    db: Database, *, run_id: uuid.UUID, error: str, settings: Settings, final: bool
) -> list[ProgressEvent]:
    """One more attempt used. Before the last: QUEUED again after a backoff. After it (or for a
    final refusal): FAILED, dead-lettered, the lead FAILED when the engine failed, audited."""
    async with db.begin() as session:
        run = await session.get(DistributionRun, run_id, with_for_update=True)
        if run is None or run.status not in OPEN_RUN_STATUSES:
            return []
        lead = await lock_lead(session, run.lead_id)
        now = utcnow()
        run.attempts += 1
        run.seq += 1
        run.error = error[:2000]
        run.updated_at = now
        lead.distribution_attempts += 1
        attempts_allowed = len(settings.retry_delays_seconds) + 1
        if final or run.attempts >= attempts_allowed:
            run.status = RunStatus.FAILED
            run.finished_at = now
            run.next_attempt_at = None
            if not final and lead.status in DISTRIBUTABLE:
                lead.status = LeadStatus.FAILED
            metrics.DEAD_LETTERED.inc()
            metrics.DISTRIBUTIONS.labels("FAILED").inc()
            record(
                session,
                SYSTEM,
                AuditAction.DISTRIBUTION_FAILED,
                entity_type="lead",
                entity_id=lead.id,
                run_id=run.id,
                attempts=run.attempts,
                error=run.error,
            )
            return [run_event(run, lead.niche_id, EventType.FAILED, detail=run.error)]
        metrics.RETRIES.inc()
        delay = backoff_seconds(run.attempts, settings)
        run.status = RunStatus.QUEUED
        run.next_attempt_at = now + timedelta(seconds=delay)
        detail = f"attempt {run.attempts} of {attempts_allowed} failed; next in {delay:.1f} s: {run.error}"
        return [run_event(run, lead.niche_id, EventType.QUEUED, detail=detail)]


async def retry_distribution(
    db: Database, *, actor: Actor, run_id: uuid.UUID, dispatcher: Dispatcher
) -> DistributionRun:
    """Queues a dead-lettered (FAILED) run again, with a fresh set of attempts."""
    require_operator(actor, "retrying distributions")
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
        now = utcnow()
        run.status = RunStatus.QUEUED
        run.attempts = 0
        run.error = None
        run.finished_at = None
        run.next_attempt_at = None
        run.enqueued_at = run.updated_at = now
        run.seq += 1
        record(
            session,
            actor,
            AuditAction.DISTRIBUTION_REQUESTED,
            entity_type="lead",
            entity_id=lead.id,
            run_id=run.id,
            retry=True,
        )
        niche_id = lead.niche_id
    await dispatcher.distribute(
        [RunJob(run.id, run.lead_id, run.batch_id)],
        announce=[run_event(run, niche_id, EventType.QUEUED, detail="retry requested")],
    )
    return await get_run(db, run.id, actor=actor) if dispatcher.inline else run


async def dead_letters(db: Database, *, actor: Actor, limit: int = 100) -> Sequence[DistributionRun]:
    require_operator(actor, "reading the dead letters")
    async with db.read() as session:
        result = await session.execute(
            select(DistributionRun)
            .where(DistributionRun.status == RunStatus.FAILED)
            .order_by(col(DistributionRun.updated_at).desc())
            .limit(limit)
        )
        return result.scalars().all()
