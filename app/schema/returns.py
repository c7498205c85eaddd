"""The Return type (SPEC §8): a request to give an assignment back, and its decision."""

from __future__ import annotations

import uuid
from datetime import datetime

import strawberry

from app.models import returns as return_models
from app.models.returns import ReturnReason, ReturnStatus
from app.resolvers.context import Info
from app.resolvers.direct import direct_field
from app.resolvers.loaders import load_now
from app.schema.types import Assignment, Lead, LedgerEntry, Provider, from_row


@strawberry.type(description="A request to return an assignment, and the operator's decision.")
class Return:
    id: uuid.UUID
    assignment_id: uuid.UUID
    lead_id: uuid.UUID
    provider_id: uuid.UUID
    reason: ReturnReason
    note: str | None
    status: ReturnStatus
    requested_by: str = strawberry.field(description="Who asked: user:<id>, api_key:<id> or system.")
    decided_by: str | None
    decided_at: datetime | None
    decision_note: str | None
    refund_entry_id: uuid.UUID | None = strawberry.field(
        description="The REFUND ledger entry of an approved return (the price charged)."
    )
    created_at: datetime

    @classmethod
    def of(cls, m: return_models.Return) -> Return:
        return from_row(cls, m)

    @direct_field
    def assignment(self, info: Info) -> Assignment | None:
        return load_now(info.context.loaders.assignment, self.assignment_id, Assignment.maybe)

    @direct_field
    def lead(self, info: Info) -> Lead | None:
        return load_now(info.context.loaders.lead, self.lead_id, Lead.maybe)

    @direct_field
    def provider(self, info: Info) -> Provider | None:
        return load_now(info.context.loaders.provider, self.provider_id, Provider.maybe)

    @direct_field
    def refund_entry(self, info: Info) -> LedgerEntry | None:
        if self.refund_entry_id is None:
            return None
        return load_now(info.context.loaders.ledger_entry, self.refund_entry_id, LedgerEntry.maybe)
