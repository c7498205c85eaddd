from __future__ import annotations

import uuid

import strawberry
from strawberry.permission import BasePermission

from app.errors import Forbidden
from app.resolvers.context import Info
from app.resolvers.permissions import CanWriteLeads
from app.schema.scalars import JSON
from app.schema.types import Lead
from app.services import leads, runs

WRITE: list[type[BasePermission]] = [CanWriteLeads]


@strawberry.type
class LeadMutations:
    @strawberry.mutation(
        permission_classes=WRITE, description="attributes: a JSON object (≤ 100 keys, 16 KB)."
    )
    async def submit_lead(self, info: Info, niche_id: uuid.UUID, attributes: JSON) -> Lead:
        lead = await leads.submit_lead(
            info.context.db, actor=await info.context.actor(), niche_id=niche_id, attributes=attributes
        )
        return Lead.of(lead)

    @strawberry.mutation(
        permission_classes=WRITE,
        description="distribute: also queue a distribution (the niche's autoDistribute does so too; "
        "needs the distribution:write scope).",
    )
    async def approve_lead(self, info: Info, id: uuid.UUID, distribute: bool = False) -> Lead:
        c = info.context
        actor = await c.actor()
        if distribute and "distribution:write" not in actor.scopes:
            raise Forbidden("approveLead(distribute: true) also needs the 'distribution:write' scope")
        lead, auto = await leads.approve_lead(c.db, actor=actor, lead_id=id)
        if distribute or auto:
            await runs.request_distribution(
                c.db,
                actor=actor,
                lead_id=id,
                idempotency_key=f"approve:{id}",
                dispatcher=c.dispatcher,
            )
            lead = await leads.get_lead(c.db, id, actor=actor)
        return Lead.of(lead)

    @strawberry.mutation(permission_classes=WRITE)
    async def reject_lead(self, info: Info, id: uuid.UUID, reason: str) -> Lead:
        lead = await leads.reject_lead(
            info.context.db, actor=await info.context.actor(), lead_id=id, reason=reason
        )
        return Lead.of(lead)
