"""Who did what. Every service that changes state writes its audit row in the same transaction."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from app.models.audit import ActorType, AuditAction, AuditEntry


@dataclass(frozen=True)
class Actor:
    type: ActorType
    id: uuid.UUID | None = None
    label: str = "system"
    scopes: frozenset[str] = field(default_factory=frozenset)

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
