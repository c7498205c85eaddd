"""GraphQL object types. No SQL and no rules here: a nested field is one line through a loader."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa
import strawberry

from app.models import audit as audit_models
from app.models import auth as auth_models
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
from app.resolvers.permissions import IsAdmin, sees_contact_details
from app.resolvers.reads import ledger_page
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


# attributes that identify or reach a person: only admins see them (SPEC §6)
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


@strawberry.type(name="ProviderSubscription", description="A provider's subscription to a competition level.")
class Subscription:
    id: uuid.UUID
    provider_id: uuid.UUID
    competition_level_id: uuid.UUID
    status: SubscriptionStatus
    last_received_at: datetime | None
    filters: JSON
    created_at: datetime

    @classmethod
    def of(cls, m: billing_models.Subscription) -> Subscription:
        return from_row(cls, m)

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
    created_at: datetime

    @classmethod
    def of(cls, m: billing_models.Provider) -> Provider:
        return from_row(cls, m)

    @classmethod
    def maybe(cls, m: billing_models.Provider | None) -> Provider | None:
        return cls.of(m) if m else None

    @strawberry.field
    async def subscriptions(self, info: Info) -> list[Subscription]:
        return [
            Subscription.of(s) for s in await info.context.loaders.subscriptions_by_provider.load(self.id)
        ]

    @strawberry.field(
        permission_classes=[IsAdmin],
        description="Its live webhook endpoints, oldest first (never their secrets).",
    )
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
    def of(cls, m: run_models.DistributionRun) -> DistributionRun:
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
        "personal data: only admins see them; others get them removed."
    )
    async def attributes(self, info: Info) -> JSON:
        if sees_contact_details(await info.context.actor()):
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
class MfaChallenge:
    challenge: str
    expires_at: datetime


@strawberry.type
class AccessToken:
    token: str
    expires_at: datetime


@strawberry.type
class ApiKey:
    id: uuid.UUID
    name: str
    prefix: str
    scopes: list[str]
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None

    @classmethod
    def of(cls, m: auth_models.ApiKey) -> ApiKey:
        return from_row(cls, m, scopes=list(m.scopes))


@strawberry.type
class CreatedApiKey:
    api_key: ApiKey
    secret: str = strawberry.field(description="Shown once: store it now; only its hash is kept.")


@strawberry.type
class Me:
    actor_type: ActorType
    id: uuid.UUID | None
    label: str
    scopes: list[str]


@strawberry.type
class OutcomeCount:
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
    success_rate: float | None = strawberry.field(description="(SUCCESS + PARTIAL) / finished runs")
    revenue_cents: Cents
    assignments: int
    levels: list[LevelFairness]
