"""Returns (SPEC §8): within its niche's return window an assignment's provider (or an operator)
asks to return it; an operator approves, which refunds the price charged once, or rejects it.

- The window is checked with the database clock (`now()`, the transaction's start) in the
  transaction that inserts the request, against the assignment's `created_at`: no client or API
  clock decides it. The niche's current `return_window_hours` applies; 0 turns returns off.
- One return per assignment (UNIQUE), and at most one REFUND ledger entry per assignment (a
  partial UNIQUE index): a second request, a second approval or any race of them is a CONFLICT,
  never a second refund.
- An approval locks the provider row first, as every balance change and the engine do (lead ->
  niche -> providers by id), then the return row; so it serialises with top-ups and charges of the
  same provider, and the ledger sum stays equal to the balance.
- The assignment stays: a return does not reopen a cap, and revenue stays what was charged (the
  refund is its own ledger entry, reported as refunded in the stats)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from app.db import Database
from app.errors import Conflict, InvalidInput, NotFound
from app.models.audit import AuditAction
from app.models.base import utcnow
from app.models.billing import LedgerKind
from app.models.leads import Assignment
from app.models.niches import CompetitionLevel, Niche
from app.models.returns import Return, ReturnReason, ReturnStatus
from app.models.webhooks import WebhookEvent
from app.services import _guards, billing
from app.services.audit import Actor, record
from app.services.dispatch import Dispatcher
from app.services.pages import Page, PageKey, keyset_page
from app.services.principals import own_provider_id, require_operator, scope_to_own
from app.services.webhooks.deliveries import enqueue_event

MAX_NOTE_LENGTH = 2000
ONE_HOUR: sa.ColumnElement[Any] = sa.literal_column("interval '1 hour'")


def _note(value: str | None, *, field: str, required: bool) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise InvalidInput(f"{field} must not be empty", field=field)
        return None
    return _guards.text(value, field=field, max_length=MAX_NOTE_LENGTH)


def _violates(exc: IntegrityError, constraint: str) -> bool:
    return constraint in str(exc.orig)


def _target(actor: Actor, assignment_id: uuid.UUID) -> sa.Select[*tuple[Any, ...]]:
    """The assignment as its principal may see it, with its niche's window judged by the database
    clock. A provider principal finds only its own assignments (filtered in the SQL)."""
    assignment, niche = Assignment.__table__.c, Niche.__table__.c  # type: ignore[attr-defined]
    level = CompetitionLevel.__table__.c  # type: ignore[attr-defined]
    closes_at = assignment.created_at + ONE_HOUR * niche.return_window_hours
    stmt = (
        sa.select(
            assignment.id,
            assignment.lead_id,
            assignment.provider_id,
            niche.name.label("niche_name"),
            niche.return_window_hours,
            closes_at.label("closes_at"),
            (sa.func.now() < closes_at).label("window_open"),
            sa.exists()
            .where(col(Return.assignment_id) == assignment.id)
            .correlate(Assignment.__table__)  # type: ignore[attr-defined]
            .label("returned"),
        )
        .select_from(Assignment.__table__)  # type: ignore[attr-defined]
        .join(CompetitionLevel.__table__, level.id == assignment.competition_level_id)  # type: ignore[attr-defined]
        .join(Niche.__table__, niche.id == level.niche_id)  # type: ignore[attr-defined]
        .where(assignment.id == assignment_id)
    )
    return scope_to_own(stmt, assignment.provider_id, actor)


async def request_return(
    db: Database,
    *,
    actor: Actor,
    assignment_id: uuid.UUID,
    reason: ReturnReason,
    note: str | None = None,
) -> Return:
    """By the assignment's provider or an operator. An unknown assignment, or another provider's
    for a provider principal, is NOT_FOUND; a second request or one outside the window CONFLICT."""
    try:
        reason = ReturnReason(reason)
    except ValueError:
        raise InvalidInput(
            f"reason must be one of {[r.value for r in ReturnReason]}", field="reason"
        ) from None
    # OTHER says nothing by itself: the note is the reason then
    clean_note = _note(note, field="note", required=reason is ReturnReason.OTHER)
    try:
        async with db.begin() as session:
            target = (await session.execute(_target(actor, assignment_id))).one_or_none()
            if target is None:
                raise NotFound("assignment", assignment_id)
            if target.returned:
                raise Conflict(f"assignment {assignment_id} already has a return", field="assignmentId")
            if target.return_window_hours == 0:
                raise Conflict(f"returns are off in niche {target.niche_name!r}", field="assignmentId")
            if not target.window_open:
                raise Conflict(
                    f"the return window of assignment {assignment_id} "
                    f"({target.return_window_hours} h) closed at {target.closes_at.isoformat()}",
                    field="assignmentId",
                )
            returned = Return(
                assignment_id=assignment_id,
                lead_id=target.lead_id,
                provider_id=target.provider_id,
                reason=reason,
                note=clean_note,
                requested_by=str(actor),
            )
            session.add(returned)
            await session.flush()
            record(
                session,
                actor,
                AuditAction.RETURN_REQUESTED,
                entity_type="return",
                entity_id=returned.id,
                assignment_id=assignment_id,
                lead_id=target.lead_id,
                provider_id=target.provider_id,
                reason=reason.value,
                note=clean_note,
            )
    except IntegrityError as exc:
        if _violates(exc, "uq_returns_assignment_id"):  # a concurrent first request won
            raise Conflict(f"assignment {assignment_id} already has a return", field="assignmentId") from exc
        raise
    return returned


async def approve_return(
    db: Database,
    *,
    actor: Actor,
    return_id: uuid.UUID,
    note: str | None = None,
    dispatcher: Dispatcher | None = None,
) -> Return:
    """Refunds the price charged for the assignment: one REFUND entry linked to it, never two."""
    checked = _note(note, field="note", required=False)
    return await _decide(
        db, actor=actor, return_id=return_id, approve=True, note=checked, dispatcher=dispatcher
    )


async def reject_return(
    db: Database, *, actor: Actor, return_id: uuid.UUID, note: str, dispatcher: Dispatcher | None = None
) -> Return:
    """The note tells the provider why."""
    checked = _note(note, field="note", required=True)
    return await _decide(
        db, actor=actor, return_id=return_id, approve=False, note=checked, dispatcher=dispatcher
    )


async def _decide(
    db: Database,
    *,
    actor: Actor,
    return_id: uuid.UUID,
    approve: bool,
    note: str | None,
    dispatcher: Dispatcher | None,
) -> Return:
    """`dispatcher` wakes the webhook sender after the commit (the buyer's endpoints get
    `return.decided`); without one the sweep sends the deliveries once they are stale."""
    require_operator(actor, "deciding a return")
    try:
        async with db.begin() as session:
            decided = await apply_decision(
                session, actor=actor, return_id=return_id, approve=approve, note=note
            )
    except IntegrityError as exc:
        # the partial unique index: the assignment was refunded by another path meanwhile
        if _violates(exc, "uq_ledger_entries_refund_assignment"):
            raise Conflict(f"the assignment of return {return_id} is already refunded") from exc
        raise
    if dispatcher is not None and decided.webhooks:
        await dispatcher.wake_webhooks()
    return decided.returned


@dataclass(frozen=True)
class Decided:
    returned: Return
    webhooks: int  # `return.decided` deliveries written with the decision


async def apply_decision(
    session: AsyncSession, *, actor: Actor, return_id: uuid.UUID, approve: bool, note: str | None
) -> Decided:
    """The decision inside the caller's open transaction: whatever else must commit with it (the
    `return.decided` event) is written here, after the audit row."""
    provider_id = await session.scalar(sa.select(col(Return.provider_id)).where(col(Return.id) == return_id))
    if provider_id is None:
        raise NotFound("return", return_id)
    # the provider's row before the return's, so approvals queue behind top-ups and charges of the
    # same provider in the engine's lock order, and ten approvals at once refund once
    provider = await billing.lock_provider(session, provider_id) if approve else None
    returned = (
        await session.execute(
            select(Return)
            .where(Return.id == return_id)
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).scalar_one()
    if returned.status != ReturnStatus.REQUESTED:
        decided_at = returned.decided_at.isoformat() if returned.decided_at else "?"
        raise Conflict(f"return {return_id} was already {returned.status.lower()} at {decided_at}")
    details: dict[str, object] = {}
    if provider is not None:
        price_cents = await session.scalar(
            sa.select(col(Assignment.price_charged_cents)).where(col(Assignment.id) == returned.assignment_id)
        )
        assert price_cents is not None  # the foreign key
        entry = await billing.post_entry(
            session,
            provider=provider,
            amount_cents=price_cents,
            kind=LedgerKind.REFUND,
            reference=f"return:{returned.id}",
            note=note,
            assignment_id=returned.assignment_id,
        )
        returned.refund_entry_id = entry.id
        details = {
            "refund_entry_id": entry.id,
            "amount_cents": price_cents,
            "balance_after_cents": entry.balance_after_cents,
        }
    returned.status = ReturnStatus.APPROVED if approve else ReturnStatus.REJECTED
    returned.decided_by = str(actor)
    returned.decided_at = utcnow()
    returned.decision_note = note
    await session.flush()
    record(
        session,
        actor,
        AuditAction.RETURN_APPROVED if approve else AuditAction.RETURN_REJECTED,
        entity_type="return",
        entity_id=returned.id,
        assignment_id=returned.assignment_id,
        provider_id=returned.provider_id,
        note=note,
        **details,
    )
    webhooks = await enqueue_event(
        session,
        provider_id=returned.provider_id,
        event_type=WebhookEvent.RETURN_DECIDED,
        subject_id=returned.id,
        occurred_at=returned.decided_at,
        data={
            "return_id": str(returned.id),
            "assignment_id": str(returned.assignment_id),
            "lead_id": str(returned.lead_id),
            "provider_id": str(returned.provider_id),
            "reason": str(returned.reason),
            "decision": str(returned.status),
            "decision_note": note,
            "refund_cents": details.get("amount_cents", 0),
        },
    )
    return Decided(returned, webhooks)


async def get_return(db: Database, *, actor: Actor, return_id: uuid.UUID) -> Return:
    stmt = scope_to_own(select(Return).where(Return.id == return_id), Return.provider_id, actor)
    async with db.read() as session:
        found = (await session.execute(stmt)).scalar_one_or_none()
    if found is None:
        raise NotFound("return", return_id)
    return found


async def list_returns(
    db: Database,
    *,
    actor: Actor,
    status: ReturnStatus | None = None,
    provider_id: uuid.UUID | None = None,
    first: int,
    after: PageKey | None,
) -> Page[Return]:
    """Newest first. A provider principal lists its own (another provider's id is NOT_FOUND)."""
    own = own_provider_id(actor, provider_id)
    stmt = select(Return)
    if own is not None:
        stmt = stmt.where(Return.provider_id == own)
    if status is not None:
        stmt = stmt.where(Return.status == ReturnStatus(status))
    async with db.read() as session:
        return await keyset_page(session, stmt, Return, first=first, after=after)
