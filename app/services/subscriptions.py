"""A subscription's own settings, which its buyer may change (SPEC §10): eligibility filters and
the delivery schedule. Written under the provider's row lock (the engine's lock, which also bumps
the provider's revision), validated first: bad input writes nothing."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from app.db import Database
from app.engine.eligibility import validate_filters
from app.engine.schedule import Schedule, ScheduleError, as_json, next_change, parse_schedule, zone
from app.errors import InvalidInput
from app.models.audit import AuditAction
from app.models.billing import Subscription
from app.services.audit import Actor, record
from app.services.billing import lock_own_subscription


def validate_schedule(raw: Any) -> Schedule:
    try:
        return parse_schedule(raw)
    except ScheduleError as exc:
        raise InvalidInput(str(exc), field="schedule") from None


async def _change(
    db: Database, *, actor: Actor, subscription_id: uuid.UUID, field: str, value: Any, action: AuditAction
) -> Subscription:
    async with db.begin() as session:
        _, found = await lock_own_subscription(session, actor=actor, subscription_id=subscription_id)
        previous = getattr(found, field)
        setattr(found, field, value)
        record(
            session,
            actor,
            action,
            entity_type="subscription",
            entity_id=subscription_id,
            previous=previous,
            **{field: value},
        )
    return found


async def set_schedule(
    db: Database, *, actor: Actor, subscription_id: uuid.UUID, schedule: Any
) -> Subscription:
    """`schedule` None: always open."""
    stored = None if schedule is None else as_json(validate_schedule(schedule))
    return await _change(
        db,
        actor=actor,
        subscription_id=subscription_id,
        field="schedule",
        value=stored,
        action=AuditAction.SUBSCRIPTION_SCHEDULE_CHANGED,
    )


async def set_filters(
    db: Database, *, actor: Actor, subscription_id: uuid.UUID, filters: Any
) -> Subscription:
    conditions = validate_filters([] if filters is None else filters)
    return await _change(
        db,
        actor=actor,
        subscription_id=subscription_id,
        field="filters",
        value=[c.as_json() for c in conditions],
        action=AuditAction.SUBSCRIPTION_FILTERS_CHANGED,
    )


def open_now(schedule: dict[str, Any] | None, timezone: str, at: datetime) -> bool:
    """Whether a subscription's schedule lets leads in at `at` (no schedule: always)."""
    return schedule is None or parse_schedule(schedule).is_open(zone(timezone), at)


def next_schedule_change(schedule: dict[str, Any] | None, timezone: str, at: datetime) -> datetime | None:
    """When the schedule next opens or closes after `at` (None: no schedule, or no change within a
    week). A scan of the coming days' edges: only for readers who ask."""
    if schedule is None:
        return None
    return next_change(parse_schedule(schedule), zone(timezone), at)
