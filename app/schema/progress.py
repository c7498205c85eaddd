"""Live progress types: one RunProgress per committed step, and batch counters."""

from __future__ import annotations

import uuid
from datetime import datetime

import strawberry

from app.models import distribution as run_models
from app.models.distribution import TERMINAL_RUN_STATUSES, RunStatus
from app.progress.events import EventType, ProgressEvent
from app.schema.scalars import Cents

strawberry.enum(
    EventType,
    description="What a RunProgress message reports. WAITING is only ever the first message of "
    "distributionProgress(leadId) for a lead that has no run yet (runId null, seq 0).",
)

_STATUS_EVENT = {
    RunStatus.QUEUED: EventType.QUEUED,
    RunStatus.RUNNING: EventType.STARTED,
    RunStatus.FAILED: EventType.FAILED,
}


@strawberry.type(
    description="A committed step of a run. The first one a subscriber gets is the run's "
    "state read from PostgreSQL (snapshot: true); then live steps in seq order. A subscriber by "
    "leadId to a lead with no run yet first gets one WAITING message (runId null, seq 0)."
)
class RunProgress:
    run_id: uuid.UUID | None = strawberry.field(
        description="The run; null only in a WAITING message (the lead has no run yet)."
    )
    lead_id: uuid.UUID
    niche_id: uuid.UUID
    seq: int
    type: EventType
    run_status: RunStatus | None
    at: datetime
    level_id: uuid.UUID | None = None
    level_name: str | None = None
    provider_id: uuid.UUID | None = None
    price_cents: Cents | None = None
    reason: str | None = None
    outcome: str | None = None
    detail: str | None = None
    snapshot: bool = False

    @property
    def terminal(self) -> bool:
        return self.type in (EventType.COMPLETED, EventType.FAILED)

    @classmethod
    def of_event(cls, e: ProgressEvent) -> RunProgress:
        """Converted once per event however many subscribers relay it (see _shared_progress)."""
        return _shared_progress(e)

    @classmethod
    def _convert(cls, e: ProgressEvent) -> RunProgress:
        status = {EventType.COMPLETED: e.outcome, EventType.FAILED: RunStatus.FAILED}.get(e.type)
        return cls(
            run_id=e.run_id,
            lead_id=e.lead_id,
            niche_id=e.niche_id,
            seq=e.seq,
            type=e.type,
            run_status=RunStatus(status) if status else None,
            at=e.at,
            level_id=e.level_id,
            level_name=e.level_name,
            provider_id=e.provider_id,
            price_cents=e.price_cents,
            reason=e.reason,
            outcome=e.outcome,
            detail=e.detail,
        )

    @classmethod
    def waiting(cls, *, lead_id: uuid.UUID, niche_id: uuid.UUID, at: datetime) -> RunProgress:
        """A lead with no run yet: the message a subscriber by lead gets before its first run's."""
        return cls(
            run_id=None,
            lead_id=lead_id,
            niche_id=niche_id,
            seq=0,
            type=EventType.WAITING,
            run_status=None,
            at=at,
            snapshot=True,
        )

    @classmethod
    def of_run(cls, run: run_models.DistributionRun, niche_id: uuid.UUID) -> RunProgress:
        status = RunStatus(run.status)
        kind = EventType.COMPLETED if status in TERMINAL_RUN_STATUSES else _STATUS_EVENT[status]
        if status is RunStatus.FAILED:
            kind = EventType.FAILED
        return cls(
            run_id=run.id,
            lead_id=run.lead_id,
            niche_id=niche_id,
            seq=run.seq,
            type=kind,
            run_status=status,
            at=run.updated_at,
            outcome=status.value if status in TERMINAL_RUN_STATUSES else None,
            detail=run.error,
            snapshot=True,
        )


@strawberry.type
class BatchProgress:
    batch_id: uuid.UUID
    total: int
    processed: int
    assigned: int
    no_eligible: int
    failed: int
    rate_per_second: float
    eta_seconds: float | None
    done: bool
    revenue_cents: Cents


@strawberry.type
class DistributionBatch:
    id: uuid.UUID
    total: int
    run_ids: list[uuid.UUID]
    created_at: datetime


SHARED_PROGRESS_MAX = 2048
# id(event) -> (event, its RunProgress): the entry holds the event, so its id cannot be reused
_converted: dict[int, tuple[ProgressEvent, RunProgress]] = {}


def _shared_progress(event: ProgressEvent) -> RunProgress:
    """One RunProgress per event for all of a process's subscribers (the hub hands each the same
    event object, and subscribers only read it): the fan-out converts once, not once per
    subscriber. Found by identity: hashing the event (its four UUIDs) for every subscriber was
    more than the lookup is worth."""
    found = _converted.get(id(event))
    if found is not None and found[0] is event:
        return found[1]
    progress = RunProgress._convert(event)
    if len(_converted) >= SHARED_PROGRESS_MAX:
        del _converted[next(iter(_converted))]
    _converted[id(event)] = (event, progress)
    return progress
