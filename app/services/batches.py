"""Batches: distributeLeads queues one run per matching lead; progress is counted from the runs."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlmodel import col, select

from app.db import Database, retry_on_disconnect
from app.errors import InvalidInput, NotFound
from app.models.audit import AuditAction
from app.models.base import utcnow
from app.models.distribution import (
    ASSIGNING_RUN_STATUSES,
    OPEN_RUN_STATUSES,
    TERMINAL_RUN_STATUSES,
    DistributionBatch,
    DistributionRun,
    RunStatus,
)
from app.models.leads import DISTRIBUTABLE, Lead, LeadStatus
from app.services import _guards
from app.services.audit import Actor, record
from app.services.dispatch import Dispatcher, RunJob
from app.services.principals import require_operator


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
    require_operator(actor, "distributing leads")
    _guards.bounded_int(limit, field="limit", minimum=1, maximum=100_000)
    if status is not None and status not in DISTRIBUTABLE:
        raise InvalidInput(
            f"only APPROVED or NO_ELIGIBLE leads can be distributed, not {status}", field="status"
        )
    statuses = [status] if status else sorted(DISTRIBUTABLE)
    async with db.begin() as session:
        open_runs = sa.select(col(DistributionRun.lead_id)).where(
            col(DistributionRun.status).in_(OPEN_RUN_STATUSES)
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


BATCH_COUNTS = sa.text("""
SELECT count(*) FILTER (WHERE status = ANY(CAST(:finished AS text[]))),
       count(*) FILTER (WHERE status = ANY(CAST(:assigned AS text[]))),
       count(*) FILTER (WHERE status = :no_eligible),
       count(*) FILTER (WHERE status = :failed),
       max(finished_at),
       (SELECT coalesce(sum(a.price_charged_cents), 0) FROM assignments a
        JOIN distribution_runs b ON b.lead_id = a.lead_id
        WHERE b.batch_id = :id AND b.status = ANY(CAST(:assigned AS text[])))
FROM distribution_runs WHERE batch_id = :id
""")


@retry_on_disconnect
async def batch_state(db: Database, batch_id: uuid.UUID, *, actor: Actor) -> BatchState:
    require_operator(actor, "watching batches")
    async with db.read() as session:
        batch = await session.get(DistributionBatch, batch_id)
        if batch is None:
            raise NotFound("batch", batch_id)
        row = (
            await session.execute(
                BATCH_COUNTS,
                {
                    "id": batch_id,
                    "finished": sorted(TERMINAL_RUN_STATUSES),
                    "assigned": sorted(ASSIGNING_RUN_STATUSES),
                    "no_eligible": RunStatus.NO_ELIGIBLE.value,
                    "failed": RunStatus.FAILED.value,
                },
            )
        ).one()
    return BatchState(
        batch_id, batch.total, row[0], row[1], row[2], row[3], batch.created_at, row[4], int(row[5])
    )
