"""Returns (SPEC §8). The principal rules (a provider returns only its own assignments; decisions
are for operators) live in app/services/returns.py, so they hold whatever the permission here."""

from __future__ import annotations

import uuid

import strawberry
from strawberry.permission import BasePermission

from app.models.returns import ReturnReason
from app.resolvers.context import Info
from app.resolvers.permissions import CanWriteOwn, IsAdmin
from app.schema.returns import Return
from app.services import returns

# operators, and buyers for their own assignments
REQUEST: list[type[BasePermission]] = [CanWriteOwn]
DECIDE: list[type[BasePermission]] = [IsAdmin]


@strawberry.type
class ReturnMutations:
    @strawberry.mutation(
        permission_classes=REQUEST,
        description="Within the niche's returnWindowHours after the assignment (database clock); one "
        "return per assignment. note: up to 2,000 characters, required when reason is OTHER.",
    )
    async def request_return(
        self, info: Info, assignment_id: uuid.UUID, reason: ReturnReason, note: str | None = None
    ) -> Return:
        requested = await returns.request_return(
            info.context.db,
            actor=await info.context.actor(),
            assignment_id=assignment_id,
            reason=reason,
            note=note,
        )
        return Return.of(requested)

    @strawberry.mutation(
        permission_classes=DECIDE,
        description="Refunds the price charged: one REFUND ledger entry linked to the assignment, "
        "never two. A return already decided: CONFLICT.",
    )
    async def approve_return(self, info: Info, id: uuid.UUID, note: str | None = None) -> Return:
        c = info.context
        approved = await returns.approve_return(
            c.db, actor=await c.actor(), return_id=id, note=note, dispatcher=c.dispatcher
        )
        return Return.of(approved)

    @strawberry.mutation(
        permission_classes=DECIDE,
        description="The note tells the provider why. A return already decided: CONFLICT.",
    )
    async def reject_return(self, info: Info, id: uuid.UUID, note: str) -> Return:
        c = info.context
        rejected = await returns.reject_return(
            c.db, actor=await c.actor(), return_id=id, note=note, dispatcher=c.dispatcher
        )
        return Return.of(rejected)
