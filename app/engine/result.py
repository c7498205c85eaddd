"""What the engine returns: the outcome, who got the lead, who was skipped and why, and the
progress events in commit order for the job layer to publish after the commit."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from app.models.distribution import RunStatus, SkipReason
from app.progress.events import ProgressEvent


@dataclass(frozen=True, slots=True)
class AssignedProvider:
    assignment_id: uuid.UUID
    provider_id: uuid.UUID
    subscription_id: uuid.UUID
    level_id: uuid.UUID
    level_name: str
    price_cents: int
    balance_after_cents: int


@dataclass(frozen=True, slots=True)
class SkippedProvider:
    provider_id: uuid.UUID
    subscription_id: uuid.UUID
    level_id: uuid.UUID
    level_name: str
    reason: SkipReason
    detail: str


@dataclass(frozen=True, slots=True)
class LeasedWebhook:
    """A webhook delivery the distribution wrote leased to its caller, to send at once: the
    endpoint's URL and signing secrets (two during a rotation's overlap) and the body, as
    written."""

    delivery_id: uuid.UUID
    endpoint_id: uuid.UUID
    url: str
    secrets: tuple[str, ...] = field(repr=False)
    body: str = field(repr=False)


@dataclass(frozen=True)
class DistributionResult:
    run_id: uuid.UUID
    lead_id: uuid.UUID
    niche_id: uuid.UUID
    status: RunStatus
    assigned: list[AssignedProvider] = field(default_factory=list)
    skipped: list[SkippedProvider] = field(default_factory=list)
    events: list[ProgressEvent] = field(default_factory=list)
    # True when nothing was done: the run had already finished, or the lead was already
    # distributed by another run (whose id is `deciding_run_id`).
    replayed: bool = False
    deciding_run_id: uuid.UUID | None = None
    statements: int = 0
    # webhook deliveries written with the assignments: for any sender to claim (it is woken), and
    # leased to the caller to send (webhook_lease_seconds)
    webhooks_due: int = 0
    webhooks_leased: tuple[LeasedWebhook, ...] = ()
