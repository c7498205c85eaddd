"""Queries: each one permission, one service call, one conversion. Every service call carries the
principal; those open to providers (`CanReadOwn`) answer them only their own data."""

from __future__ import annotations

import asyncio
import uuid
from datetime import datetime
from functools import partial
from typing import Annotated

import strawberry
from strawberry.permission import BasePermission

from app.errors import NotFound
from app.models.distribution import RunStatus
from app.models.leads import LeadStatus
from app.models.returns import ReturnStatus
from app.resolvers.context import Info
from app.resolvers.permissions import CanRead, CanReadOwn, IsAuthenticated
from app.resolvers.prefetch import prefetch_assignments, prefetch_for_leads, selected
from app.resolvers.preview import to_preview
from app.resolvers.reads import page_of
from app.resolvers.webhook_queries import WebhookQueries
from app.schema.accounts import Me, ProviderUser
from app.schema.pagination import Connection
from app.schema.returns import Return
from app.schema.types import (
    Assignment,
    AuditEntry,
    DistributionPreview,
    DistributionRun,
    DistributionStatus,
    HourlyOutcomeCount,
    Lead,
    LevelFairness,
    Niche,
    NicheStats,
    OutcomeCount,
    Provider,
    ProviderReceived,
)
from app.services import audit, billing, leads, niches, preview, provider_users, retries, returns, runs, stats

READ: list[type[BasePermission]] = [CanRead]
READ_OWN: list[type[BasePermission]] = [CanReadOwn]


@strawberry.type
class Query(WebhookQueries):
    @strawberry.field(
        permission_classes=READ_OWN,
        description="A provider principal reads the leads assigned to it (others: NOT_FOUND).",
    )
    async def lead(self, info: Info, id: uuid.UUID) -> Lead:
        # through the loader, which a provider principal's context scopes to its leads in SQL
        wanted = selected(info)
        loaders = info.context.loaders
        if wanted is not None and "assignments" in {getattr(f, "name", None) for f in wanted}:
            # keyed by the same id: fetch the assignments alongside the lead, not after it
            lead, _ = await asyncio.gather(loaders.lead.load(id), loaders.assignments_by_lead.load(id))
        else:
            lead = await loaders.lead.load(id)
        if lead is None:
            raise NotFound("lead", id)
        await prefetch_for_leads(info, [lead])
        return Lead.of(lead)

    @strawberry.field(permission_classes=READ, description="Newest first. first: 1..100.")
    async def leads(
        self,
        info: Info,
        niche_id: uuid.UUID | None = None,
        status: LeadStatus | None = None,
        first: int = 20,
        after: str | None = None,
    ) -> Connection[Lead]:
        return await page_of(
            info,
            partial(leads.list_leads, niche_id=niche_id, status=status, first=first),
            Lead.of,
            after=after,
            prepare=lambda items: prefetch_for_leads(info, items, "edges", "node"),
        )

    @strawberry.field(
        permission_classes=READ_OWN,
        description="Newest first. first: 1..100. A provider principal lists its own only.",
    )
    async def assignments(
        self,
        info: Info,
        lead_id: uuid.UUID | None = None,
        provider_id: uuid.UUID | None = None,
        first: int = 20,
        after: str | None = None,
    ) -> Connection[Assignment]:
        node = selected(info, "edges", "node")
        return await page_of(
            info,
            partial(leads.list_assignments, lead_id=lead_id, provider_id=provider_id, first=first),
            Assignment.of,
            after=after,
            prepare=None if node is None else lambda items: prefetch_assignments(info, items, node),
        )

    @strawberry.field(permission_classes=READ)
    async def distribution_status(self, info: Info, lead_id: uuid.UUID) -> DistributionStatus:
        db, actor = info.context.db, await info.context.actor()
        lead = await leads.get_lead(db, lead_id, actor=actor)
        count = await runs.assignment_count(db, lead_id, actor=actor)
        lead_runs = await info.context.loaders.runs_by_lead.load(lead_id)
        entries = await audit.entries_for(db, actor=actor, entity_type="lead", entity_id=lead_id)
        return DistributionStatus(
            lead=Lead.of(lead),
            status=lead.status,
            distribution_attempts=lead.distribution_attempts,
            assignment_count=count,
            runs=[DistributionRun.of(r) for r in lead_runs],
            audit_entries=[AuditEntry.of(e) for e in entries],
        )

    @strawberry.field(permission_classes=READ)
    async def distribution_run(self, info: Info, id: uuid.UUID) -> DistributionRun:
        return DistributionRun.of(await runs.get_run(info.context.db, id, actor=await info.context.actor()))

    @strawberry.field(permission_classes=READ, description="Runs that failed every attempt, newest first.")
    async def dead_letters(self, info: Info, first: int = 50) -> list[DistributionRun]:
        found = await retries.dead_letters(info.context.db, actor=await info.context.actor(), limit=first)
        return [DistributionRun.of(r) for r in found]

    @strawberry.field(permission_classes=READ)
    async def niches(self, info: Info) -> list[Niche]:
        return [
            Niche.of(n) for n in await niches.list_niches(info.context.db, actor=await info.context.actor())
        ]

    @strawberry.field(permission_classes=READ)
    async def niche(self, info: Info, id: uuid.UUID) -> Niche:
        return Niche.of(await niches.get_niche(info.context.db, id, actor=await info.context.actor()))

    @strawberry.field(
        permission_classes=READ_OWN,
        description="Newest first. first: 1..100. A provider principal's list holds its own provider.",
    )
    async def providers(self, info: Info, first: int = 20, after: str | None = None) -> Connection[Provider]:
        return await page_of(info, partial(billing.list_providers, first=first), Provider.of, after=after)

    @strawberry.field(
        permission_classes=READ_OWN, description="A provider principal reads its own (others: NOT_FOUND)."
    )
    async def provider(self, info: Info, id: uuid.UUID) -> Provider:
        return Provider.of(await billing.get_provider(info.context.db, id, actor=await info.context.actor()))

    @strawberry.field(permission_classes=READ, description="Newest first. first: 1..100.")
    async def provider_users(
        self, info: Info, provider_id: uuid.UUID | None = None, first: int = 20, after: str | None = None
    ) -> Connection[ProviderUser]:
        return await page_of(
            info,
            partial(provider_users.list_provider_users, provider_id=provider_id, first=first),
            ProviderUser.of,
            after=after,
        )

    @strawberry.field(
        permission_classes=READ_OWN,
        description="Newest first. first: 1..100. A provider's credentials list only its own.",
    )
    async def returns(
        self,
        info: Info,
        status: ReturnStatus | None = None,
        provider_id: uuid.UUID | None = None,
        first: int = 20,
        after: str | None = None,
    ) -> Connection[Return]:
        return await page_of(
            info,
            partial(returns.list_returns, status=status, provider_id=provider_id, first=first),
            Return.of,
            after=after,
        )

    @strawberry.field(permission_classes=READ, description="Newest first; every filter optional.")
    async def audit_log(
        self,
        info: Info,
        entity_type: str | None = None,
        entity_id: uuid.UUID | None = None,
        action: str | None = None,
        actor_id: uuid.UUID | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        first: int = 50,
        after: str | None = None,
    ) -> Connection[AuditEntry]:
        where = audit.AuditFilter(entity_type, entity_id, action, actor_id, since, until)
        return await page_of(
            info, partial(audit.list_audit, where=where, first=first), AuditEntry.of, after=after
        )

    @strawberry.field(
        permission_classes=READ,
        description="Who would receive the lead now and why the others would not. Charges nobody.",
    )
    async def preview_distribution(self, info: Info, lead_id: uuid.UUID) -> DistributionPreview:
        found = await preview.preview_distribution(
            info.context.db, actor=await info.context.actor(), lead_id=lead_id
        )
        return to_preview(found)

    @strawberry.field(
        permission_classes=READ,
        description="Per niche: runs by outcome, success rate, revenue, returns (of the range's "
        "assignments) and fairness per level (leads received per subscribed provider, max - min "
        "spread); from inclusive, to exclusive.",
    )
    async def distribution_stats(
        self,
        info: Info,
        niche_id: uuid.UUID | None = None,
        from_: Annotated[datetime | None, strawberry.argument(name="from")] = None,
        to: datetime | None = None,
    ) -> list[NicheStats]:
        found = await stats.distribution_stats(
            info.context.db,
            actor=await info.context.actor(),
            niche_id=niche_id,
            since=from_,
            until=to,
            hourly=selected(info, "runsByHour") is not None,  # bounded range; only when asked for
        )
        return [
            NicheStats(
                niche_id=s.niche_id,
                niche_name=s.niche_name,
                runs_by_outcome=[
                    OutcomeCount(status=RunStatus(k), count=v) for k, v in sorted(s.runs_by_outcome.items())
                ],
                runs_by_hour=[
                    HourlyOutcomeCount(hour=h.hour, status=RunStatus(h.status), count=h.count)
                    for h in s.runs_by_hour
                ],
                success_rate=s.success_rate,
                revenue_cents=s.revenue_cents,
                assignments=s.assignments,
                levels=[
                    LevelFairness(
                        level_id=lv.level_id,
                        level_name=lv.level_name,
                        spread=lv.spread,
                        providers=[
                            ProviderReceived(provider_id=p, received=n) for p, n in lv.received.items()
                        ],
                    )
                    for lv in s.levels
                ],
                returns_requested=s.returns_requested,
                returns_approved=s.returns_approved,
                return_rate=s.return_rate,
                refunded_cents=s.refunded_cents,
            )
            for s in found
        ]

    @strawberry.field(permission_classes=[IsAuthenticated])
    async def me(self, info: Info) -> Me:
        actor = await info.context.actor()
        if actor.id is None:
            raise NotFound("actor", "system")
        return Me(
            actor_type=actor.type,
            id=actor.id,
            label=actor.label,
            scopes=sorted(actor.scopes),
            provider_id=actor.provider_id,
        )
