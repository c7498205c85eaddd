"""Leads: submitted for review, approved or rejected. Status changes lock the lead row, the same
lock the engine takes first, so a review never races a distribution."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from app.db import Database
from app.errors import Conflict, InvalidInput, NotFound
from app.models.audit import AuditAction
from app.models.leads import Assignment, Lead, LeadStatus
from app.models.niches import Niche
from app.services import _guards
from app.services.audit import Actor, record
from app.services.pages import Page, PageKey, keyset_page
from app.services.principals import own_provider_id, require_operator, visible_to_provider

MAX_ATTRIBUTES = 100
MAX_ATTRIBUTES_BYTES = 16_384


def validate_attributes(attributes: Any) -> dict[str, Any]:
    if not isinstance(attributes, dict):
        raise InvalidInput("attributes must be a JSON object", field="attributes")
    if len(attributes) > MAX_ATTRIBUTES:
        raise InvalidInput(f"attributes may have at most {MAX_ATTRIBUTES} keys", field="attributes")
    for key in attributes:
        if not isinstance(key, str) or not key.strip() or len(key) > 100:
            raise InvalidInput(f"attribute name {key!r} is empty or too long", field="attributes")
    _guards.no_nul(attributes, field="attributes")
    try:
        size = len(json.dumps(attributes))
    except (TypeError, ValueError):
        raise InvalidInput("attributes must be plain JSON", field="attributes") from None
    if size > MAX_ATTRIBUTES_BYTES:
        raise InvalidInput(f"attributes exceed {MAX_ATTRIBUTES_BYTES} bytes", field="attributes")
    return attributes


async def submit_lead(db: Database, *, actor: Actor, niche_id: uuid.UUID, attributes: Any) -> Lead:
    require_operator(actor, "submitting leads")
    clean = validate_attributes(attributes)
    async with db.begin() as session:
        if await session.get(Niche, niche_id) is None:
            raise NotFound("niche", niche_id)
        lead = Lead(niche_id=niche_id, attributes=clean)
        session.add(lead)
        await session.flush()
        record(session, actor, AuditAction.LEAD_SUBMITTED, entity_type="lead", entity_id=lead.id)
    return lead


async def lock_lead(session: AsyncSession, lead_id: uuid.UUID) -> Lead:
    lead = (
        await session.execute(
            select(Lead)
            .where(Lead.id == lead_id)
            .with_for_update(key_share=True)  # FOR NO KEY UPDATE, as the engine locks it
            .execution_options(populate_existing=True)
        )
    ).scalar_one_or_none()
    if lead is None:
        raise NotFound("lead", lead_id)
    return lead


async def approve_lead(db: Database, *, actor: Actor, lead_id: uuid.UUID) -> tuple[Lead, bool]:
    """Returns the lead and whether its niche distributes approved leads automatically."""
    require_operator(actor, "approving leads")
    async with db.begin() as session:
        lead = await lock_lead(session, lead_id)
        if lead.status != LeadStatus.PENDING_REVIEW:
            raise Conflict(f"lead {lead_id} is {lead.status}: only PENDING_REVIEW leads can be approved")
        lead.status = LeadStatus.APPROVED
        niche = await session.get(Niche, lead.niche_id)
        assert niche is not None
        record(session, actor, AuditAction.LEAD_APPROVED, entity_type="lead", entity_id=lead.id)
    return lead, niche.auto_distribute


REJECTABLE = frozenset({LeadStatus.PENDING_REVIEW, LeadStatus.APPROVED, LeadStatus.NO_ELIGIBLE})


async def reject_lead(db: Database, *, actor: Actor, lead_id: uuid.UUID, reason: str) -> Lead:
    require_operator(actor, "rejecting leads")
    clean_reason = _guards.text(reason, field="reason", max_length=1000)
    async with db.begin() as session:
        lead = await lock_lead(session, lead_id)
        if lead.status not in REJECTABLE:
            raise Conflict(f"lead {lead_id} is {lead.status}: only leads not yet distributed can be rejected")
        lead.status = LeadStatus.REJECTED
        lead.rejection_reason = clean_reason
        record(
            session,
            actor,
            AuditAction.LEAD_REJECTED,
            entity_type="lead",
            entity_id=lead.id,
            reason=clean_reason,
        )
    return lead


async def get_lead(db: Database, lead_id: uuid.UUID, *, actor: Actor) -> Lead:
    """A provider principal reads only leads assigned to it; another answers as a missing one."""
    stmt = select(Lead).where(Lead.id == lead_id)
    if actor.provider_id is not None:
        stmt = stmt.where(visible_to_provider(Lead.__table__, actor.provider_id))  # type: ignore[attr-defined]
    async with db.read() as session:
        lead = (await session.execute(stmt)).scalar_one_or_none()
    if lead is None:
        raise NotFound("lead", lead_id)
    return lead


async def list_leads(
    db: Database,
    *,
    actor: Actor,
    niche_id: uuid.UUID | None,
    status: LeadStatus | None,
    first: int,
    after: PageKey | None,
) -> Page[Lead]:
    require_operator(actor, "listing leads (a provider reads its leads through its assignments)")
    stmt = sa.select(Lead.__table__)  # type: ignore[attr-defined]  # rows: the page is only read
    if niche_id is not None:
        stmt = stmt.where(col(Lead.niche_id) == niche_id)
    if status is not None:
        stmt = stmt.where(col(Lead.status) == status)
    async with db.read() as session:
        return await keyset_page(session, stmt, Lead, first=first, after=after)


async def list_assignments(
    db: Database,
    *,
    actor: Actor,
    lead_id: uuid.UUID | None,
    provider_id: uuid.UUID | None,
    first: int,
    after: PageKey | None,
) -> Page[Assignment]:
    """A provider principal lists its own assignments only: a lead it did not get is NOT_FOUND,
    exactly as a lead that does not exist, and so is another provider's id. For an operator a lead
    lists its assignments, none for a lead without any (or without a row)."""
    provider_id = own_provider_id(actor, provider_id)
    stmt = select(Assignment)
    if lead_id is not None:
        stmt = stmt.where(Assignment.lead_id == lead_id)
    if provider_id is not None:
        stmt = stmt.where(Assignment.provider_id == provider_id)
    async with db.read() as session:
        page = await keyset_page(session, stmt, Assignment, first=first, after=after)
        if actor.provider_id is not None and lead_id is not None and not page.items:
            # an empty first page says it all; past a cursor, ask whether any row is its own
            if after is None or not await session.scalar(sa.select(stmt.exists())):
                raise NotFound("lead", lead_id)
    return page


async def recent_assignments(
    db: Database, *, actor: Actor, provider_id: uuid.UUID, limit: int
) -> list[Assignment]:
    """A provider's newest assignments, newest first: the first message of its live feed."""
    own = own_provider_id(actor, provider_id)
    async with db.read() as session:
        rows = await session.execute(
            select(Assignment)
            .where(Assignment.provider_id == own)
            .order_by(col(Assignment.created_at).desc(), col(Assignment.id).desc())
            .limit(limit)
        )
        return list(rows.scalars().all())


async def assignments_of_leads(
    db: Database, *, actor: Actor, provider_id: uuid.UUID, lead_ids: list[uuid.UUID]
) -> list[Assignment]:
    """The provider's assignments of these leads (at most one each), oldest first: what committed
    steps announced (a provider's assignment is unique per lead)."""
    own = own_provider_id(actor, provider_id)
    async with db.read() as session:
        rows = await session.execute(
            select(Assignment)
            .where(Assignment.provider_id == own, col(Assignment.lead_id).in_(lead_ids))
            .order_by(col(Assignment.created_at), col(Assignment.id))
        )
        return list(rows.scalars().all())


async def assignments_since(
    db: Database, *, actor: Actor, provider_id: uuid.UUID, since: datetime, limit: int = 100
) -> list[Assignment]:
    """The provider's assignments created at or after `since`, oldest first: a feed's catch-up after
    it may have missed announcements."""
    own = own_provider_id(actor, provider_id)
    async with db.read() as session:
        rows = await session.execute(
            select(Assignment)
            .where(Assignment.provider_id == own, col(Assignment.created_at) >= since)
            .order_by(col(Assignment.created_at), col(Assignment.id))
            .limit(limit)
        )
        return list(rows.scalars().all())
