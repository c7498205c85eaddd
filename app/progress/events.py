"""ProgressEvent: what workers publish after a commit and subscribers receive, in `seq` order."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, fields
from datetime import datetime
from enum import StrEnum
from typing import Any

import orjson


class EventType(StrEnum):
    QUEUED = "QUEUED"
    STARTED = "STARTED"
    LEVEL_STARTED = "LEVEL_STARTED"
    ASSIGNED = "ASSIGNED"
    SKIPPED = "SKIPPED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    # never published: the first message of a subscription by lead to a lead with no run yet
    WAITING = "WAITING"


TERMINAL_EVENTS = frozenset({EventType.COMPLETED, EventType.FAILED})


@dataclass(frozen=True, slots=True)
class ProgressEvent:
    """A frozen dataclass rather than a pydantic model: the engine makes ~20 per distribution."""

    run_id: uuid.UUID
    lead_id: uuid.UUID
    niche_id: uuid.UUID
    seq: int
    type: EventType
    at: datetime
    level_id: uuid.UUID | None = None
    level_name: str | None = None
    provider_id: uuid.UUID | None = None
    price_cents: int | None = None
    reason: str | None = None
    outcome: str | None = None
    detail: str | None = None

    @property
    def is_terminal(self) -> bool:
        return self.type in TERMINAL_EVENTS

    def to_json(self) -> bytes:
        return orjson.dumps({name: getattr(self, name) for name in _FIELDS}, default=_uuid_text)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProgressEvent:
        for key in ("run_id", "lead_id", "niche_id", "level_id", "provider_id"):
            if data.get(key) is not None:
                data[key] = uuid.UUID(data[key])
        data["type"] = EventType(data["type"])
        data["at"] = datetime.fromisoformat(data["at"])
        return cls(**data)


_FIELDS = tuple(f.name for f in fields(ProgressEvent))


def _uuid_text(value: Any) -> str:
    """asyncpg's UUID subclass, which orjson does not know."""
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def encode_events(encoded: Sequence[bytes]) -> bytes:
    """One pub/sub message: a JSON array of events (each from to_json), in seq order. A run's
    events travel together: one message per channel, not one per event."""
    return b"[" + b",".join(encoded) + b"]"


def decode_events(raw: str | bytes) -> list[ProgressEvent]:
    """A message's events; a single object (as published before events travelled in arrays) too."""
    data = orjson.loads(raw)
    return [ProgressEvent.from_dict(item) for item in (data if isinstance(data, list) else [data])]
