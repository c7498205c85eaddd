"""Who did what. Every service that changes state writes its audit row in the same transaction."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from app.db import Database
from app.models.audit import ActorType, AuditAction, AuditEntry
from app.services.pages import Page, PageKey, keyset_page
from app.services.principals import require_operator


@dataclass(frozen=True)
class Actor:
    """Who asks: the principal every service takes. `provider_id` is set for a provider principal
    (a buyer's user or a provider-bound API key): it reaches only that provider's data
    (app/services/principals.py)."""

    type: ActorType
    id: uuid.UUID | None = None
    label: str = "system"
    scopes: frozenset[str] = field(default_factory=frozenset)
    provider_id: uuid.UUID | None = None

    def __str__(self) -> str:
        return self.label if self.id is None else f"{self.type.value.lower()}:{self.id}"


SYSTEM = Actor(ActorType.SYSTEM)


def record(
    session: AsyncSession,
    actor: Actor,
    action: AuditAction,
    *,
    entity_type: str,
    entity_id: uuid.UUID | None,
    **details: Any,
) -> None:
    session.add(
        AuditEntry(
            action=action.value,
            actor_type=actor.type,
            actor_id=actor.id,
            entity_type=entity_type,
            entity_id=entity_id,
            details={k: _json(v) for k, v in details.items()},
        )
    )


def _json(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, list | tuple):
        return [_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items()}
    return value


@dataclass(frozen=True)
class AuditFilter:
    entity_type: str | None = None
    entity_id: uuid.UUID | None = None
    action: str | None = None
    actor_id: uuid.UUID | None = None
    since: datetime | None = None
    until: datetime | None = None


async def list_audit(
    db: Database, *, actor: Actor, where: AuditFilter, first: int, after: PageKey | None
) -> Page[AuditEntry]:
    require_operator(actor, "reading the audit log")
    stmt = select(AuditEntry)
    if where.entity_type is not None:
        stmt = stmt.where(AuditEntry.entity_type == where.entity_type)
    if where.entity_id is not None:
        stmt = stmt.where(AuditEntry.entity_id == where.entity_id)
    if where.action is not None:
        stmt = stmt.where(AuditEntry.action == where.action)
    if where.actor_id is not None:
        stmt = stmt.where(AuditEntry.actor_id == where.actor_id)
    if where.since is not None:
        stmt = stmt.where(col(AuditEntry.created_at) >= where.since)
    if where.until is not None:
        stmt = stmt.where(col(AuditEntry.created_at) < where.until)
    async with db.read() as session:
        return await keyset_page(session, stmt, AuditEntry, first=first, after=after)


async def entries_for(
    db: Database, *, actor: Actor, entity_type: str, entity_id: uuid.UUID, limit: int = 200
) -> list[AuditEntry]:
    require_operator(actor, "reading the audit log")
    async with db.read() as session:
        rows = await session.execute(
            select(AuditEntry)
            .where(AuditEntry.entity_type == entity_type, AuditEntry.entity_id == entity_id)
            .order_by(col(AuditEntry.created_at), col(AuditEntry.id))
            .limit(limit)
        )
        return list(rows.scalars().all())
