from __future__ import annotations

import uuid

import strawberry
from strawberry.permission import BasePermission

from app.models.leads import LeadStatus
from app.resolvers.context import Info
from app.resolvers.permissions import CanDistribute
from app.schema.progress import DistributionBatch
from app.schema.types import DistributionRun
from app.services import batches, retries, runs

DISTRIBUTE: list[type[BasePermission]] = [CanDistribute]


@strawberry.type
class DistributionMutations:
    @strawberry.mutation(
        permission_classes=DISTRIBUTE,
        description="Returns the run. The same idempotencyKey for the same lead returns the same run; "
        "for another lead it is a CONFLICT.",
    )
    async def distribute_lead(
        self, info: Info, lead_id: uuid.UUID, idempotency_key: str | None = None
    ) -> DistributionRun:
        c = info.context
        run = await runs.request_distribution(
            c.db,
            actor=await c.actor(),
            lead_id=lead_id,
            idempotency_key=idempotency_key,
            dispatcher=c.dispatcher,
        )
        return DistributionRun.of(run)

    @strawberry.mutation(
        permission_classes=DISTRIBUTE, description="Queues a FAILED (dead-lettered) run again."
    )
    async def retry_distribution(self, info: Info, run_id: uuid.UUID) -> DistributionRun:
        c = info.context
        run = await retries.retry_distribution(
            c.db, actor=await c.actor(), run_id=run_id, dispatcher=c.dispatcher
        )
        return DistributionRun.of(run)


@strawberry.type
class BatchMutations:
    @strawberry.mutation(
        permission_classes=DISTRIBUTE,
        description="Queues a run for every distributable lead matching the filter (oldest first, at "
        "most `limit`); follow it with batchProgress(batchId).",
    )
    async def distribute_leads(
        self,
        info: Info,
        niche_id: uuid.UUID | None = None,
        status: LeadStatus | None = None,
        limit: int = 1000,
    ) -> DistributionBatch:
        c = info.context
        batch, run_ids = await batches.request_batch(
            c.db,
            actor=await c.actor(),
            niche_id=niche_id,
            status=status,
            limit=limit,
            dispatcher=c.dispatcher,
        )
        return DistributionBatch(id=batch.id, total=batch.total, run_ids=run_ids, created_at=batch.created_at)
