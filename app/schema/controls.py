"""Buyer controls as GraphQL types (SPEC §8): caps with their usage, delivery schedules, and the
inputs that set them."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from enum import StrEnum
from typing import Any

import strawberry

from app.models.caps import CapPeriod
from app.schema.scalars import Cents


@strawberry.type(description="A limit on leads and/or spend per period, with what the current period used.")
class Cap:
    period: CapPeriod
    provider_wide: bool = strawberry.field(
        description="true: across all the provider's subscriptions; false: this subscription's own"
    )
    subscription_id: uuid.UUID | None
    max_leads: int | None
    max_spend_cents: Cents | None
    used_leads: int = strawberry.field(description="leads assigned in the current period (returns included)")
    used_spend_cents: Cents
    period_start: datetime | None = strawberry.field(
        description="when the current period began, in the provider's time zone; null for TOTAL"
    )

    @classmethod
    def of(cls, usage: Any) -> Cap:
        return cls(
            period=usage.period,
            provider_wide=usage.subscription_id is None,
            subscription_id=usage.subscription_id,
            max_leads=usage.max_leads,
            max_spend_cents=usage.max_spend_cents,
            used_leads=usage.used_leads,
            used_spend_cents=usage.used_spend_cents,
            period_start=usage.period_start,
        )


@strawberry.enum
class Weekday(StrEnum):
    MON = "MON"
    TUE = "TUE"
    WED = "WED"
    THU = "THU"
    FRI = "FRI"
    SAT = "SAT"
    SUN = "SUN"


@strawberry.type(
    description="Opens on each of `days` at `from` and closes at `to` (local wall-clock time), the same "
    "day when `to` is later, else the next day; 24:00 is the end of the day."
)
class DeliveryWindow:
    days: list[Weekday]
    from_: str = strawberry.field(name="from")
    to: str


@strawberry.type(
    description="When a subscription receives leads, in its provider's time zone: inside any window "
    "(no windows: at all times) and never on a blackout date."
)
class DeliverySchedule:
    windows: list[DeliveryWindow]
    blackout_dates: list[date]

    @classmethod
    def of(cls, stored: dict[str, Any] | None) -> DeliverySchedule | None:
        if stored is None:
            return None
        return cls(
            windows=[
                DeliveryWindow(days=[Weekday(d) for d in w["days"]], from_=w["from"], to=w["to"])
                for w in stored.get("windows", [])
            ],
            blackout_dates=[date.fromisoformat(d) for d in stored.get("blackoutDates", [])],
        )


@strawberry.input
class CapInput:
    period: CapPeriod
    max_leads: int | None = None
    max_spend_cents: Cents | None = None


@strawberry.input
class DeliveryWindowInput:
    days: list[Weekday]
    from_: str = strawberry.field(name="from", description="HH:MM local")
    to: str = strawberry.field(description="HH:MM local; earlier than from: the next day; 24:00")


@strawberry.input
class DeliveryScheduleInput:
    windows: list[DeliveryWindowInput] = strawberry.field(default_factory=list)
    blackout_dates: list[date] = strawberry.field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "windows": [
                {"days": [d.value for d in w.days], "from": w.from_, "to": w.to} for w in self.windows
            ],
            "blackoutDates": [d.isoformat() for d in self.blackout_dates],
        }
