"""GraphQL object types. No SQL and no rules here: a nested field is one line through a loader."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa
import strawberry

from app.models import audit as audit_models
from app.models import billing as billing_models
from app.models import distribution as run_models
from app.models import leads as lead_models
from app.models import niches as niche_models
from app.models.audit import ActorType
from app.models.billing import LedgerKind, ProviderStatus, SubscriptionStatus
from app.models.distribution import PreviewDecision, RunStatus, SkipReason
from app.models.leads import LeadStatus
from app.models.niches import LevelStrategy
from app.resolvers.context import Info
from app.resolvers.direct import direct_field
from app.resolvers.loaders import load_now
from app.resolvers.permissions import sees_contact_details
from app.resolvers.reads import ledger_page, open_now, schedule_changes_at
from app.resolvers.sharing import viewer_dependent
from app.schema.controls import Cap, DeliverySchedule
from app.schema.pagination import Connection
from app.schema.scalars import JSON, Cents
from app.schema.webhooks import WebhookEndpoint

T = TypeVar("T")


def from_row(cls: type[T], row: object, **given: object) -> T:
    """A GraphQL object from a model row: every constructor field of the same name is copied;
    `given` supplies the rest (renamed or computed fields)."""
    if isinstance(row, sa.Row):  # a loader's row: its mapping reads twice as fast as getattr()
        mapping = row._mapping
        values = {name: mapping[name] for name in _init_fields(cls) if name not in given}
    else:
        values = {name: getattr(row, name) for name in _init_fields(cls) if name not in given}
    return cls(**values, **given)


_INIT_FIELDS: dict[type, tuple[str, ...]] = {}


def _init_fields(cls: type) -> tuple[str, ...]:
    names = _INIT_FIELDS.get(cls)
    if names is None:  # dataclasses.fields() per call was a tenth of a nested page's CPU
        names = _INIT_FIELDS[cls] = tuple(f.name for f in dataclasses.fields(cls) if f.init)
    return names


# attributes that identify or reach a person: only admins and the lead's buyers see them (SPEC §6)
CONTACT_KEYS = frozenset(
    {
        "name",
        "first_name",
        "last_name",
        "full_name",
        "email",
        "phone",
        "phone_number",
        "address",
        "street",
        "street_address",
        "contact",
        "mobile",
    }
)


@strawberry.type
class CompetitionLevel:
    id: uuid.UUID
    niche_id: uuid.UUID
    name: str
    order_position: int
    price_cents: Cents
    max_recipients: int
    active: bool
    deleted_at: datetime | None
    created_at: datetime

    @classmethod
    def of(cls, m: niche_models.CompetitionLevel) -> CompetitionLevel:
        return from_row(cls, m)

    @classmethod
    def maybe(cls, m: niche_models.CompetitionLevel | None) -> CompetitionLevel | None:
        return cls.of(m) if m else None

    @direct_field
    def niche(self, info: Info) -> Niche | None:
        return load_now(info.context.loaders.niche, self.niche_id, Niche.maybe)


@strawberry.type
class Niche:
    id: uuid.UUID
    name: str
    level_strategy: LevelStrategy
    auto_distribute: bool
    next_start_level_order_position: int
    return_window_hours: int = strawberry.field(
        description="How long after an assignment its provider may ask to return it; 0: no returns."
    )
    created_at: datetime

    @classmethod
    def of(cls, m: niche_models.Niche) -> Niche:
        return from_row(cls, m)

    @classmethod
    def maybe(cls, m: niche_models.Niche | None) -> Niche | None:
        return cls.of(m) if m else None

    @strawberry.field(description="Levels not deleted, by order position (inactive ones included).")
    async def levels(self, info: Info) -> list[CompetitionLevel]:
        rows = await info.context.loaders.levels_by_niche.load(self.id)
        return [CompetitionLevel.of(r) for r in rows if r.deleted_at is None]

    @strawberry.field(description="The active level the next lead starts at (rotation).")
    async def next_start_level(self, info: Info) -> CompetitionLevel | None:
        rows = await info.context.loaders.levels_by_niche.load(self.id)
        active = [r for r in rows if r.active and r.deleted_at is None]
        later = [r for r in active if r.order_position >= self.next_start_level_order_position]
        chosen = (later or active)[:1]
        return CompetitionLevel.of(chosen[0]) if chosen else None


@strawberry.type
class LedgerEntry:
    id: uuid.UUID
    provider_id: uuid.UUID
    amount_cents: Cents
    balance_after_cents: Cents
    kind: LedgerKind
    reference: str | None
    note: str | None
    assignment_id: uuid.UUID | None
    created_at: datetime

    @classmethod
    def of(cls, m: billing_models.LedgerEntry) -> LedgerEntry:
        return from_row(cls, m)

    @classmethod
    def maybe(cls, m: billing_models.LedgerEntry | None) -> LedgerEntry | None:
        return cls.of(m) if m else None


@strawberry.type(name="ProviderSubscription", description="A provider's subscription to a competition level.")
class Subscription:
    id: uuid.UUID
    provider_id: uuid.UUID
    competition_level_id: uuid.UUID
    status: SubscriptionStatus
    last_received_at: datetime | None
    filters: JSON
    paused_by_operator: bool = strawberry.field(
        description="Paused by an operator: only an operator can resume it."
    )
    created_at: datetime
    stored_schedule: strawberry.Private[dict[str, Any] | None]

    @classmethod
    def of(cls, m: billing_models.Subscription) -> Subscription:
        return from_row(cls, m, stored_schedule=m.schedule)

    @strawberry.field(description="This subscription's own caps (the provider's are on Provider.caps).")
    async def caps(self, info: Info) -> list[Cap]:
        found = await info.context.loaders.caps_by_provider.load(self.provider_id)
        return [Cap.of(c) for c in found if c.subscription_id == self.id]

    @strawberry.field(description="Delivery windows and blackout dates; null: always open.")
    def schedule(self) -> DeliverySchedule | None:
        return DeliverySchedule.of(self.stored_schedule)

    @strawberry.field(description="Whether the schedule lets leads in now (the provider's local time).")
    async def open_now(self, info: Info) -> bool:
        return await open_now(info, self.provider_id, self.stored_schedule)

    @strawberry.field(
        description="When the schedule next opens or closes (within a week); null: it does not."
    )
    async def schedule_changes_at(self, info: Info) -> datetime | None:
        return await schedule_changes_at(info, self.provider_id, self.stored_schedule)

    @direct_field
    def provider(self, info: Info) -> Provider | None:
        return load_now(info.context.loaders.provider, self.provider_id, Provider.maybe)

    @direct_field
    def competition_level(self, info: Info) -> CompetitionLevel | None:
        return load_now(info.context.loaders.level, self.competition_level_id, CompetitionLevel.maybe)


@strawberry.type
class Provider:
    id: uuid.UUID
    name: str
    email: str
    status: ProviderStatus
    balance_cents: Cents
    timezone: str = strawberry.field(
        description="IANA time zone: the provider's days, weeks, months and windows"
    )
    created_at: datetime

    @classmethod
    def of(cls, m: billing_models.Provider) -> Provider:
        return from_row(cls, m)

    @classmethod
    def maybe(cls, m: billing_models.Provider | None) -> Provider | None:
        return cls.of(m) if m else None

    @strawberry.field(
        description="Caps across all the provider's subscriptions (each subscription has its own too)."
    )
    async def caps(self, info: Info) -> list[Cap]:
        found = await info.context.loaders.caps_by_provider.load(self.id)
        return [Cap.of(c) for c in found if c.subscription_id is None]

    @strawberry.field
    async def subscriptions(self, info: Info) -> list[Subscription]:
        return [
            Subscription.of(s) for s in await info.context.loaders.subscriptions_by_provider.load(self.id)
        ]

    @strawberry.field(description="Its live webhook endpoints, oldest first (never their secrets).")
    async def webhook_endpoints(self, info: Info) -> list[WebhookEndpoint]:
        rows = await info.context.loaders.webhook_endpoints_by_provider.load(self.id)
        return [WebhookEndpoint.of(r) for r in rows if r.deleted_at is None]

    @strawberry.field(description="The provider's ledger, newest first; its amounts sum to the balance.")
    async def ledger(self, info: Info, first: int = 20, after: str | None = None) -> Connection[LedgerEntry]:
        return await ledger_page(info, provider_id=self.id, first=first, after=after, convert=LedgerEntry.of)


@strawberry.type
class Assignment:
    id: uuid.UUID
    lead_id: uuid.UUID
    provider_id: uuid.UUID
    subscription_id: uuid.UUID
    competition_level_id: uuid.UUID
    price_charged_cents: Cents
    created_at: datetime

    @classmethod
    def of(cls, m: lead_models.Assignment) -> Assignment:
        return from_row(cls, m)

    @classmethod
    def maybe(cls, m: lead_models.Assignment | None) -> Assignment | None:
        return cls.of(m) if m else None

    @classmethod
    def of_many(cls, rows: list[lead_models.Assignment]) -> list[Assignment]:
        return [cls.of(r) for r in rows]

    @direct_field
    def provider(self, info: Info) -> Provider | None:
        return load_now(info.context.loaders.provider, self.provider_id, Provider.maybe)

    @direct_field
    def competition_level(self, info: Info) -> CompetitionLevel | None:
        return load_now(info.context.loaders.level, self.competition_level_id, CompetitionLevel.maybe)

    @direct_field
    def lead(self, info: Info) -> Lead | None:
        return load_now(info.context.loaders.lead, self.lead_id, Lead.maybe)


@strawberry.type(
    description="myAssignments: the first message is the newest assignments read from PostgreSQL "
    "(snapshot: true, newest first); then each message holds assignments as they commit."
)
class AssignmentFeed:
    snapshot: bool
    assignments: list[Assignment]


@strawberry.type
class SkippedProvider:
    provider_id: uuid.UUID
    level_id: uuid.UUID
    reason: SkipReason
    detail: str


@strawberry.type
class DistributionRun:
    id: uuid.UUID
    lead_id: uuid.UUID
    status: RunStatus
    idempotency_key: str | None
    requested_by: str
    attempts: int
    seq: int
    started_at: datetime | None
    finished_at: datetime | None
    duration_ms: float | None
    outcome: JSON | None
    error: str | None
    created_at: datetime

    @classmethod
    def of_many(cls, rows: list[run_models.DistributionRun]) -> list[DistributionRun]:
        return [cls.of(r) for r in rows]

    @classmethod
    def of(cls, m: run_models.DistributionRun | run_models.QueuedRun) -> DistributionRun:
        return from_row(cls, m)

    @strawberry.field(description="Providers the run passed over, with the reason.")
    def skipped(self) -> list[SkippedProvider]:
        items: list[dict[str, Any]] = (self.outcome or {}).get("skipped", [])
        return [
            SkippedProvider(
                provider_id=uuid.UUID(s["provider_id"]),
                level_id=uuid.UUID(s["level_id"]),
                reason=SkipReason(s["reason"]),
                detail=s.get("detail", ""),
            )
            for s in items
        ]

    @direct_field
    def lead(self, info: Info) -> Lead | None:
        return load_now(info.context.loaders.lead, self.lead_id, Lead.maybe)


@strawberry.type
class Lead:
    id: uuid.UUID
    niche_id: uuid.UUID
    status: LeadStatus
    rejection_reason: str | None
    distributed_at: datetime | None
    distribution_attempts: int
    created_at: datetime
    raw_attributes: strawberry.Private[dict[str, Any]]

    @classmethod
    def maybe(cls, m: lead_models.Lead | None) -> Lead | None:
        return cls.of(m) if m else None

    @classmethod
    def of(cls, m: lead_models.Lead) -> Lead:
        return from_row(cls, m, raw_attributes=m.attributes)

    @strawberry.field(
        description="The lead's fields. Contact details (name, email, phone, address…) are "
        "personal data: admins and the providers the lead was assigned to see them; others get "
        "them removed."
    )
    @viewer_dependent
    async def attributes(self, info: Info) -> JSON:
        actor = await info.context.actor()
        if sees_contact_details(actor):
            return self.raw_attributes
        if actor.provider_id is not None:
            # the provider's own assignments of this lead (its loaders see no others): it bought them
            own = await info.context.loaders.assignments_by_lead.load(self.id)
            if any(a.provider_id == actor.provider_id for a in own):
                return self.raw_attributes
        return {k: v for k, v in self.raw_attributes.items() if k.lower() not in CONTACT_KEYS}

    @direct_field
    def niche(self, info: Info) -> Niche | None:
        return load_now(info.context.loaders.niche, self.niche_id, Niche.maybe)

    @direct_field
    def assignments(self, info: Info) -> list[Assignment]:
        return load_now(info.context.loaders.assignments_by_lead, self.id, Assignment.of_many)

    @direct_field
    def runs(self, info: Info) -> list[DistributionRun]:
        return load_now(info.context.loaders.runs_by_lead, self.id, DistributionRun.of_many)


@strawberry.type
class AuditEntry:
    id: uuid.UUID
    action: str
    actor_type: ActorType
    actor_id: uuid.UUID | None
    entity_type: str
    entity_id: uuid.UUID | None
    details: JSON
    created_at: datetime

    @classmethod
    def of(cls, m: audit_models.AuditEntry) -> AuditEntry:
        return from_row(cls, m)


@strawberry.type
class DistributionStatus:
    lead: Lead
    status: LeadStatus
    distribution_attempts: int
    assignment_count: int
    runs: list[DistributionRun]
    audit_entries: list[AuditEntry]


@strawberry.type
class PreviewCandidate:
    provider_id: uuid.UUID
    subscription_id: uuid.UUID
    decision: PreviewDecision
    reason: SkipReason | None
    detail: str | None
    caps: list[Cap] = strawberry.field(description="The caps that apply, with their current usage.")

    @direct_field
    def provider(self, info: Info) -> Provider | None:
        return load_now(info.context.loaders.provider, self.provider_id, Provider.maybe)


@strawberry.type
class PreviewLevel:
    level_id: uuid.UUID
    name: str
    order_position: int
    price_cents: Cents
    max_recipients: int
    visited: bool
    candidates: list[PreviewCandidate]

    @direct_field
    def level(self, info: Info) -> CompetitionLevel | None:
        return load_now(info.context.loaders.level, self.level_id, CompetitionLevel.maybe)


@strawberry.type
class DistributionPreview:
    lead_id: uuid.UUID
    lead_status: LeadStatus
    distributable: bool
    start_level_id: uuid.UUID | None
    levels: list[PreviewLevel]
    outcome: RunStatus


@strawberry.type
class OutcomeCount:
    status: RunStatus
    count: int


@strawberry.type
class HourlyOutcomeCount:
    hour: datetime = strawberry.field(description="The start of the UTC hour.")
    status: RunStatus
    count: int


@strawberry.type
class ProviderReceived:
    provider_id: uuid.UUID
    received: int


@strawberry.type
class LevelFairness:
    level_id: uuid.UUID
    level_name: str
    spread: int = strawberry.field(description="max - min leads received among the level's subscribers")
    providers: list[ProviderReceived]


@strawberry.type
class NicheStats:
    niche_id: uuid.UUID
    niche_name: str
    runs_by_outcome: list[OutcomeCount]
    runs_by_hour: list[HourlyOutcomeCount] = strawberry.field(
        description="Runs created in each UTC hour of [from, to), by status, oldest first; hours "
        "without runs are left out. Needs `from`, and at most 31 days up to `to` (default: now)."
    )
    success_rate: float | None = strawberry.field(description="(SUCCESS + PARTIAL) / finished runs")
    revenue_cents: Cents = strawberry.field(description="What the range's assignments were charged.")
    assignments: int
    levels: list[LevelFairness]
    returns_requested: int = strawberry.field(
        description="Returns of the range's assignments, whatever their status."
    )
    returns_approved: int
    return_rate: float | None = strawberry.field(
        description="Approved returns of the range's assignments / the range's assignments "
        "(null without assignments)."
    )
    refunded_cents: Cents = strawberry.field(
        description="Refunded for the range's assignments (approved returns)."
    )
