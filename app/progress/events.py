"""ProgressEvent: what workers publish after a commit and subscribers receive, in `seq` order."""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any


class EventType(StrEnum):
    QUEUED = "QUEUED"
    STARTED = "STARTED"
    LEVEL_STARTED = "LEVEL_STARTED"
    ASSIGNED = "ASSIGNED"
    SKIPPED = "SKIPPED"
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"


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

    def to_json(self) -> str:
        return json.dumps({k: _plain(v) for k, v in asdict(self).items()})

    @classmethod
    def from_json(cls, raw: str | bytes) -> ProgressEvent:
        data = json.loads(raw)
        for key in ("run_id", "lead_id", "niche_id", "level_id", "provider_id"):
            if data.get(key) is not None:
                data[key] = uuid.UUID(data[key])
        data["type"] = EventType(data["type"])
        data["at"] = datetime.fromisoformat(data["at"])
        return cls(**data)


def _plain(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return value
