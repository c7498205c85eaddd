"""Distribution runs: the request (a QUEUED run with its idempotency key, in one transaction, the
job sent after the commit), the execution by the engine (worker or inline, the same function),
failed attempts with backoff, the dead-letter list, retries, batches and the sweep that keeps
everything moving when a worker or Redis dies (PostgreSQL is the source of truth)."""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import sqlalchemy as sa
import structlog
from sqlalchemy.exc import IntegrityError
from sqlmodel import col, select

from app import metrics
from app.db import Database, retry_on_disconnect
from app.engine.distribute import distribute_lead
from app.engine.result import DistributionResult
from app.errors import Conflict, DomainError, InvalidInput, LeadNotDistributable, NotFound
from app.models.audit import AuditAction
from app.models.base import utcnow
from app.models.distribution import DistributionBatch, DistributionRun, RunStatus
from app.models.leads import DISTRIBUTABLE, Assignment, Lead, LeadStatus
from app.progress.events import EventType, ProgressEvent
from app.progress.publish import Publisher
from app.services import _guards
from app.services.audit import SYSTEM, Actor, record
from app.services.dispatch import Dispatcher, RunJob
from app.services.leads import lock_lead
from app.settings import Settings

log = logging.getLogger("leadwheel.distribution")


def _event(
    run: DistributionRun, niche_id: uuid.UUID, kind: EventType, detail: str | None = None
) -> ProgressEvent:
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
) -> DistributionRun:
    """The same key for the same lead returns the same run (and sends nothing); the same key for
    another lead is a CONFLICT."""
    key = _guards.text(idempotency_key, field="idempotencyKey", max_length=200) if idempotency_key else None
    try:
        run, niche_id, created = await _insert_run(db, actor=actor, lead_id=lead_id, key=key)
    except IntegrityError:
        # a concurrent request with the same key won the insert: answer as it would be answered now
        run, niche_id, created = await _insert_run(db, actor=actor, lead_id=lead_id, key=key)
    if created:
        await dispatcher.distribute(
            [RunJob(run.id, lead_id)], announce=[_event(run, niche_id, EventType.QUEUED)]
        )
        if dispatcher.inline:
            return await get_run(db, run.id)  # finished by now
    return run


# One statement, in autocommit: a replayed key's run, else the lead's state, else a new QUEUED run
# and its audit entry. A concurrent insert with the same key fails the unique index; the caller
# runs it again and finds that run.
REQUEST_RUN = sa.text("""
WITH existing AS (
    SELECT id, lead_id FROM distribution_runs WHERE idempotency_key = CAST(:key AS text)
),
lead AS (
    SELECT id, niche_id, status FROM leads WHERE id = CAST(:lead_id AS uuid)
),
run AS (
    INSERT INTO distribution_runs (lead_id, idempotency_key, requested_by, status, seq, enqueued_at,
                                   created_at, updated_at)
    SELECT id, CAST(:key AS text), CAST(:requested_by AS text), 'QUEUED', 1, now(), now(), now()
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
) -> tuple[DistributionRun, uuid.UUID, bool]:
    async with db.connect() as conn:
        row = (
            await conn.execute(
                REQUEST_RUN,
                {
                    "key": key,
                    "lead_id": lead_id,
                    "requested_by": str(actor),
                    "distributable": sorted(DISTRIBUTABLE),
                    "action": AuditAction.DISTRIBUTION_REQUESTED.value,
                    "actor_type": actor.type.value,
                    "actor_id": actor.id,
                },
            )
        ).one()
    if row.existing_id is not None:
        if row.existing_lead_id != lead_id:
            raise Conflict(
                f"idempotency key {key!r} was already used for lead {row.existing_lead_id}",
                field="idempotencyKey",
            )
        return await get_run(db, row.existing_id), uuid.UUID(int=0), False
    if row.lead_status is None:
        raise NotFound("lead", lead_id)
    if row.run_id is None:
        raise LeadNotDistributable(
            f"lead {lead_id} is {row.lead_status}: only APPROVED or NO_ELIGIBLE leads can be distributed"
        )
    run = DistributionRun(
        id=row.run_id,
        lead_id=lead_id,
        idempotency_key=key,
        requested_by=str(actor),
        status=RunStatus.QUEUED,
        seq=1,
        enqueued_at=row.at,
        created_at=row.at,
        updated_at=row.at,
    )
    return run, row.niche_id, True


@dataclass
class Execution:
    """What running a run produced, for the caller to publish and follow up."""

    result: DistributionResult | None = None
    events: list[ProgressEvent] = field(default_factory=list)
    batch_id: uuid.UUID | None = None


async def run_distribution(
    db: Database,
    *,
    run_id: uuid.UUID,
    settings: Settings,
    publisher: Publisher,
    lead_id: uuid.UUID | None = None,
    batch_id: uuid.UUID | None = None,
) -> Execution:
    """Executes a run: what the worker task and the inline dispatcher both call. Safe to call twice:
    the engine replays a finished run, and leaves a run whose retry is not due yet (a redelivered
    message) to the sweep. A crash is recorded on the run as a failed attempt (retried later by the
    sweep, with backoff, or dead-lettered); progress is published after each commit. Jobs carry the
    run's lead and batch; one without them (sent by an older version) reads them first."""
    if lead_id is None:
        found = await _run_summary(db, run_id)
        if found is None:
            log.warning("distribution.unknown_run run_id=%s", run_id)
            return Execution()
        lead_id, batch_id = found
    structlog.contextvars.bind_contextvars(run_id=str(run_id), lead_id=str(lead_id))
    execution = Execution(batch_id=batch_id)
    try:
        with metrics.ENGINE_SECONDS.time():
            result = await distribute_lead(
                db, lead_id=lead_id, run_id=run_id, dashboard_url=settings.dashboard_url
            )
        execution.result, execution.events = result, result.events
        if not result.replayed:
            metrics.DISTRIBUTIONS.labels(result.status.value).inc()
    except DomainError as exc:  # the lead changed meanwhile (rejected…): final, no retry
        execution.events = await record_failed_attempt(
            db, run_id=run_id, error=str(exc), settings=settings, final=True
        )
    except Exception as exc:  # noqa: BLE001  (recorded on the run; the sweep retries it)
        log.exception("distribution.attempt_failed run_id=%s", run_id)
        execution.events = await record_failed_attempt(
            db, run_id=run_id, error=f"{type(exc).__name__}: {exc}", settings=settings, final=False
        )
    await publisher.publish(execution.events, batch_id=batch_id)
    return execution


async def _run_summary(db: Database, run_id: uuid.UUID) -> tuple[uuid.UUID, uuid.UUID | None] | None:
    async with db.connect() as conn:
        row = (
            await conn.execute(
                sa.select(col(DistributionRun.lead_id), col(DistributionRun.batch_id)).where(
                    col(DistributionRun.id) == run_id
                )
            )
        ).one_or_none()
    return None if row is None else (row[0], row[1])


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
        if run is None or run.status not in (RunStatus.QUEUED, RunStatus.RUNNING):
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
            return [_event(run, lead.niche_id, EventType.FAILED, detail=run.error)]
        metrics.RETRIES.inc()
        delay = backoff_seconds(run.attempts, settings)
        run.status = RunStatus.QUEUED
        run.next_attempt_at = now + timedelta(seconds=delay)
        detail = f"attempt {run.attempts} of {attempts_allowed} failed; next in {delay:.1f} s: {run.error}"
        return [_event(run, lead.niche_id, EventType.QUEUED, detail=detail)]


async def retry_distribution(
    db: Database, *, actor: Actor, run_id: uuid.UUID, dispatcher: Dispatcher
) -> DistributionRun:
    """Queues a dead-lettered (FAILED) run again, with a fresh set of attempts."""
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
        announce=[_event(run, niche_id, EventType.QUEUED, detail="retry requested")],
    )
    return await get_run(db, run.id) if dispatcher.inline else run


async def request_batch(
    db: Database,
    *,
    actor: Actor,
    niche_id: uuid.UUID | None,
    status: LeadStatus | None,
    limit: int,
    dispatcher: Dispatcher,
) -> tuple[DistributionBatch, list[uuid.UUID]]:
    """A QUEUED run for every distributable lead matching the filter (and without an open run)."""
    _guards.bounded_int(limit, field="limit", minimum=1, maximum=100_000)
    if status is not None and status not in DISTRIBUTABLE:
        raise InvalidInput(
            f"only APPROVED or NO_ELIGIBLE leads can be distributed, not {status}", field="status"
        )
    statuses = [status] if status else sorted(DISTRIBUTABLE)
    async with db.begin() as session:
        open_runs = sa.select(col(DistributionRun.lead_id)).where(
            col(DistributionRun.status).in_([RunStatus.QUEUED, RunStatus.RUNNING])
        )
        stmt = (
            select(col(Lead.id))
            .where(col(Lead.status).in_(statuses), col(Lead.id).not_in(open_runs))
            .order_by(col(Lead.created_at))
            .limit(limit)
            .with_for_update(skip_locked=True)
        )
        if niche_id is not None:
            stmt = stmt.where(Lead.niche_id == niche_id)
        lead_ids = list((await session.execute(stmt)).scalars().all())
        now = utcnow()
        batch = DistributionBatch(
            filters={"niche_id": str(niche_id) if niche_id else None, "status": status, "limit": limit},
            total=len(lead_ids),
            requested_by=str(actor),
        )
        session.add(batch)
        await session.flush()
        run_ids = [uuid.uuid4() for _ in lead_ids]
        if lead_ids:
            await session.execute(
                sa.insert(DistributionRun),
                [
                    {
                        "id": rid,
                        "lead_id": lid,
                        "status": RunStatus.QUEUED,
                        "seq": 1,
                        "batch_id": batch.id,
                        "requested_by": str(actor),
                        "enqueued_at": now,
                        "updated_at": now,
                        "created_at": now,
                    }
                    for rid, lid in zip(run_ids, lead_ids, strict=True)
                ],
            )
        record(
            session,
            actor,
            AuditAction.DISTRIBUTION_REQUESTED,
            entity_type="batch",
            entity_id=batch.id,
            total=len(lead_ids),
            niche_id=niche_id,
            status=status,
        )
    await dispatcher.distribute(
        [RunJob(r, lead, batch.id) for r, lead in zip(run_ids, lead_ids, strict=True)]
    )
    return batch, run_ids


@dataclass(frozen=True)
class BatchState:
    batch_id: uuid.UUID
    total: int
    processed: int
    assigned: int
    no_eligible: int
    failed: int
    created_at: datetime
    last_finished_at: datetime | None
    revenue_cents: int = 0

    @property
    def done(self) -> bool:
        return self.processed >= self.total

    @property
    def rate_per_second(self) -> float:
        if not self.processed or self.last_finished_at is None:
            return 0.0
        elapsed = (self.last_finished_at - self.created_at).total_seconds()
        return self.processed / elapsed if elapsed > 0 else float(self.processed)

    @property
    def eta_seconds(self) -> float | None:
        rate = self.rate_per_second
        return None if rate == 0 else (self.total - self.processed) / rate


@retry_on_disconnect
async def batch_state(db: Database, batch_id: uuid.UUID) -> BatchState:
    async with db.read() as session:
        batch = await session.get(DistributionBatch, batch_id)
        if batch is None:
            raise NotFound("batch", batch_id)
        row = (
            await session.execute(
                sa.text(
                    """SELECT count(*) FILTER (WHERE status IN ('SUCCESS', 'PARTIAL', 'NO_ELIGIBLE',
                                                            'FAILED')),
                              count(*) FILTER (WHERE status IN ('SUCCESS', 'PARTIAL')),
                              count(*) FILTER (WHERE status = 'NO_ELIGIBLE'),
                              count(*) FILTER (WHERE status = 'FAILED'),
                              max(finished_at),
                              (SELECT coalesce(sum(a.price_charged_cents), 0) FROM assignments a
                               JOIN distribution_runs b ON b.lead_id = a.lead_id
                               WHERE b.batch_id = :id AND b.status IN ('SUCCESS', 'PARTIAL'))
                       FROM distribution_runs WHERE batch_id = :id"""
                ),
                {"id": batch_id},
            )
        ).one()
    return BatchState(
        batch_id, batch.total, row[0], row[1], row[2], row[3], batch.created_at, row[4], int(row[5])
    )


async def sweep(db: Database, *, settings: Settings, dispatcher: Dispatcher, limit: int = 1000) -> int:
    """Sends again what no worker is going to run: QUEUED runs whose backoff is over, and QUEUED
    or RUNNING runs whose job was sent longer ago than `stale_after` (a dead worker, a Redis that
    restarted empty). Claims them with SKIP LOCKED, so two sweeps never send one run twice."""
    now = utcnow()
    stale = now - timedelta(seconds=settings.stale_after_seconds)
    async with db.begin() as session:
        due = [
            RunJob(*row)
            for row in await session.execute(
                select(col(DistributionRun.id), col(DistributionRun.lead_id), col(DistributionRun.batch_id))
                .where(
                    col(DistributionRun.status).in_([RunStatus.QUEUED, RunStatus.RUNNING]),
                    sa.or_(
                        col(DistributionRun.next_attempt_at).is_(None),
                        col(DistributionRun.next_attempt_at) <= now,
                    ),
                    sa.or_(
                        col(DistributionRun.enqueued_at).is_(None),
                        col(DistributionRun.enqueued_at) < stale,
                        col(DistributionRun.enqueued_at) < col(DistributionRun.next_attempt_at),
                    ),
                )
                .order_by(col(DistributionRun.updated_at))
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        ]
        if due:
            await session.execute(
                sa.update(DistributionRun)
                .where(col(DistributionRun.id).in_([job.run_id for job in due]))
                .values(enqueued_at=now)
            )
    if due:
        await dispatcher.distribute(due)
    return len(due)


async def get_run(db: Database, run_id: uuid.UUID) -> DistributionRun:
    async with db.read() as session:
        run = await session.get(DistributionRun, run_id)
    if run is None:
        raise NotFound("distribution run", run_id)
    return run


@retry_on_disconnect
async def latest_run_id(db: Database, lead_id: uuid.UUID) -> uuid.UUID:
    async with db.read() as session:
        found = await session.scalar(
            sa.select(col(DistributionRun.id))
            .where(col(DistributionRun.lead_id) == lead_id)
            .order_by(col(DistributionRun.created_at).desc())
            .limit(1)
        )
    if found is None:
        raise NotFound("distribution run for lead", lead_id)
    return found


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
    async with db.read() as session:
        return int(
            await session.scalar(sa.select(sa.func.count()).where(col(Assignment.lead_id) == lead_id)) or 0
        )


@retry_on_disconnect
async def run_snapshot(db: Database, run_id: uuid.UUID) -> tuple[DistributionRun, uuid.UUID]:
    """The run as committed now, with its lead's niche: a subscriber's first (and resync) state."""
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
