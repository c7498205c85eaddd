"""An in-memory reference model of SPEC §2–3, written from the spec's text and sharing no code
with app/engine: if both agree on every choice over random operations, both are probably right."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo


@dataclass
class MLevel:
    id: uuid.UUID
    position: int
    price: int
    max_recipients: int
    active: bool = True


@dataclass
class MSub:
    id: uuid.UUID
    provider: uuid.UUID
    level: uuid.UUID
    filters: list[dict[str, Any]]
    paused: bool = False
    schedule: dict[str, Any] | None = None  # as stored: {"windows": [...], "blackoutDates": [...]}
    # when it last received a lead: (lead number, pick number) orders like the engine's timestamps
    last: tuple[int, int] | None = None


@dataclass
class MProvider:
    id: uuid.UUID
    balance: int
    suspended: bool = False
    timezone: str = "UTC"


@dataclass
class MCap:
    provider: uuid.UUID
    subscription: uuid.UUID | None  # None: across all the provider's subscriptions
    period: str  # DAY, WEEK, MONTH, TOTAL
    max_leads: int | None
    max_spend: int | None


@dataclass
class MAssignment:
    provider: uuid.UUID
    subscription: uuid.UUID
    price: int
    at: datetime


@dataclass
class Model:
    strategy: str  # ALL_LEVELS or FIRST_MATCH
    next_position: int = 1
    levels: dict[uuid.UUID, MLevel] = field(default_factory=dict)
    providers: dict[uuid.UUID, MProvider] = field(default_factory=dict)
    subs: dict[uuid.UUID, MSub] = field(default_factory=dict)
    caps: list[MCap] = field(default_factory=list)
    history: list[MAssignment] = field(default_factory=list)
    leads_done: int = 0

    def distribute(
        self, attributes: dict[str, Any], now: datetime | None = None
    ) -> list[tuple[uuid.UUID, uuid.UUID, int]]:
        """Returns (level id, provider id, price) per assignment, in walk order."""
        now = now or datetime.now(UTC)
        self.leads_done += 1
        active = sorted((lv for lv in self.levels.values() if lv.active), key=lambda lv: lv.position)
        if not active:
            return []
        # 2. rotation: smallest active position >= next, wrapping; next becomes the following level's
        at_or_after = [i for i, lv in enumerate(active) if lv.position >= self.next_position]
        start = at_or_after[0] if at_or_after else 0
        self.next_position = active[(start + 1) % len(active)].position
        # 3. traversal, 4. fairness with backfill, 5. charge
        assigned: list[tuple[uuid.UUID, uuid.UUID, int]] = []
        holders: set[uuid.UUID] = set()
        pick = 0
        for k in range(len(active)):
            level = active[(start + k) % len(active)]
            queue = sorted(
                (s for s in self.subs.values() if s.level == level.id),
                key=lambda s: (s.last is not None, s.last or (0, 0), s.provider),
            )
            taken = 0
            for sub in queue:
                if taken == level.max_recipients:
                    break
                provider = self.providers[sub.provider]
                if sub.provider in holders or provider.suspended or sub.paused:
                    continue
                zone = ZoneInfo(provider.timezone)
                if sub.schedule is not None and not _open(sub.schedule, now.astimezone(zone)):
                    continue
                if not _eligible(sub.filters, attributes):
                    continue
                if not self._within_caps(sub, level.price, now, zone):
                    continue
                if provider.balance < level.price:
                    continue
                provider.balance -= level.price
                self.history.append(MAssignment(sub.provider, sub.id, level.price, now))
                pick += 1
                sub.last = (self.leads_done, pick)
                holders.add(sub.provider)
                assigned.append((level.id, sub.provider, level.price))
                taken += 1
            if taken and self.strategy == "FIRST_MATCH":
                break
        return assigned

    def _within_caps(self, sub: MSub, price: int, now: datetime, zone: ZoneInfo) -> bool:
        for cap in self.caps:
            if cap.provider != sub.provider or cap.subscription not in (None, sub.id):
                continue
            current = _period(cap.period, now.astimezone(zone))
            counted = [
                a
                for a in self.history
                if a.provider == cap.provider
                and cap.subscription in (None, a.subscription)
                and _period(cap.period, a.at.astimezone(zone)) == current
            ]
            if cap.max_leads is not None and len(counted) + 1 > cap.max_leads:
                return False
            if cap.max_spend is not None and sum(a.price for a in counted) + price > cap.max_spend:
                return False
        return True


DAYS = ["MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"]


def _period(period: str, local: datetime) -> object:
    """Which period a local time falls in: a date, an ISO (year, week), a (year, month), or all."""
    if period == "DAY":
        return local.date()
    if period == "WEEK":
        return local.isocalendar()[:2]
    if period == "MONTH":
        return (local.year, local.month)
    return "TOTAL"


def _open(schedule: dict[str, Any], local: datetime) -> bool:
    """SPEC §8 in the plainest words: closed on a blackout date; else open inside any window
    (minutes from local midnight; a window whose end is not after its start ends the next day)."""
    if local.date().isoformat() in schedule.get("blackoutDates", []):
        return False
    windows = schedule.get("windows", [])
    if not windows:
        return True
    minute = local.hour * 60 + local.minute
    today, yesterday = DAYS[local.weekday()], DAYS[(local.date() - timedelta(days=1)).weekday()]
    for window in windows:
        start, end = (int(t[:2]) * 60 + int(t[3:]) for t in (window["from"], window["to"]))
        end = end % (24 * 60)
        if start < end:
            if today in window["days"] and start <= minute < end:
                return True
        elif (today in window["days"] and minute >= start) or (yesterday in window["days"] and minute < end):
            return True
    return False


def blackout_around(today: date) -> list[str]:
    """Blackout dates covering a test run even across midnight in any zone."""
    return [(today + timedelta(days=d)).isoformat() for d in (-2, -1, 0, 1, 2)]


def _eligible(filters: list[dict[str, Any]], attributes: dict[str, Any]) -> bool:
    """SPEC §3; a condition that cannot be evaluated makes the provider ineligible."""
    for f in filters:
        name, op, value = f["field"], f["op"], f.get("value")
        present = attributes.get(name) is not None
        if op == "exists":
            if present != (True if value is None else value):
                return False
            continue
        if not present:
            return False
        actual = attributes[name]
        if op in ("gte", "lte"):
            if isinstance(actual, bool) or not isinstance(actual, int | float):
                return False
            if not (actual >= value if op == "gte" else actual <= value):
                return False
        elif op == "prefix":
            if not isinstance(actual, str) or not actual.startswith(value):
                return False
        else:
            values = value if op in ("in", "not_in") else [value]
            same = [
                v
                for v in values
                if type(v) is type(actual)
                or (
                    isinstance(v, int | float)
                    and isinstance(actual, int | float)
                    and not isinstance(v, bool)
                    and not isinstance(actual, bool)
                )
            ]
            if not same:
                return False
            if (actual in same) != (op in ("eq", "in")):
                return False
    return True
