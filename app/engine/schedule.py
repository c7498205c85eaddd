"""Delivery schedules (SPEC §8): weekly windows in the provider's local wall-clock time, and
blackout dates. Stored as JSON on the subscription, validated when written, parsed once per
distinct text by the engine, evaluated for the instant of the distribution.

    {"windows": [{"days": ["MON", "TUE"], "from": "08:00", "to": "18:00"}],
     "blackoutDates": ["2027-12-25"]}

A window opens on each of its days at `from` and closes at `to`, the same day when `to` is later,
else the next day (a window across midnight); "24:00" is the end of the day. Times are local wall
clock, whatever daylight saving does: a 08:00-18:00 window is 08:00-18:00 on both sides of a
change. A blackout date closes its whole local day. No windows: open at all times but the
blackout dates. No schedule at all (None): always open."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta
from functools import lru_cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS = ("MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN")
_CLOCK = re.compile(r"^([01]\d|2[0-3]):([0-5]\d)$|^24:00$")
MAX_WINDOWS = 50
MAX_BLACKOUT_DATES = 1000


class ScheduleError(ValueError):
    """A schedule or time zone that cannot be used; the message names what is wrong."""


@dataclass(frozen=True, slots=True)
class Window:
    days: frozenset[int]  # 0 = Monday, as date.weekday()
    opens: int  # minutes after local midnight
    closes: int  # minutes after local midnight; <= opens: on the next day

    def covers(self, weekday: int, minute: int) -> bool:
        if self.closes > self.opens:
            return weekday in self.days and self.opens <= minute < self.closes
        # across midnight: the evening of one of its days, or the morning after one
        return (weekday in self.days and minute >= self.opens) or (
            (weekday - 1) % 7 in self.days and minute < self.closes
        )


@dataclass(frozen=True, slots=True)
class Schedule:
    windows: tuple[Window, ...]
    blackout_dates: frozenset[date]

    def is_open(self, zone: ZoneInfo, at: datetime) -> bool:
        local = at.astimezone(zone)
        if local.date() in self.blackout_dates:
            return False
        if not self.windows:
            return True
        minute = local.hour * 60 + local.minute
        weekday = local.weekday()
        return any(window.covers(weekday, minute) for window in self.windows)


def zone(name: str) -> ZoneInfo:
    """The IANA time zone; ScheduleError if there is none of that name."""
    return _zone(name)


@lru_cache(maxsize=1024)
def _zone(name: str) -> ZoneInfo:
    if not isinstance(name, str) or not name or len(name) > 64 or name.startswith(("/", ".")):
        raise ScheduleError(f"{name!r} is not an IANA time zone name such as America/Chicago")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleError(f"unknown time zone {name!r}: use an IANA name such as America/Chicago") from None


def _minutes(text: Any, where: str) -> int:
    if not isinstance(text, str) or not _CLOCK.match(text):
        raise ScheduleError(f"{where} must be a local time HH:MM (00:00 to 24:00), got {text!r}")
    hours, minutes = text.split(":")
    return int(hours) * 60 + int(minutes)


def parse_schedule(raw: Any) -> Schedule:
    """Validates and parses a stored or submitted schedule."""
    if not isinstance(raw, Mapping):
        raise ScheduleError("a schedule is an object: {windows: [...], blackoutDates: [...]}")
    unknown = set(raw) - {"windows", "blackoutDates"}
    if unknown:
        raise ScheduleError(f"unknown schedule keys {sorted(unknown)}: use windows and blackoutDates")
    raw_windows = raw.get("windows") or []
    raw_dates = raw.get("blackoutDates") or []
    if not isinstance(raw_windows, list) or len(raw_windows) > MAX_WINDOWS:
        raise ScheduleError(f"windows must be a list of at most {MAX_WINDOWS} windows")
    if not isinstance(raw_dates, list) or len(raw_dates) > MAX_BLACKOUT_DATES:
        raise ScheduleError(f"blackoutDates must be a list of at most {MAX_BLACKOUT_DATES} dates")
    windows = []
    for n, item in enumerate(raw_windows):
        where = f"windows[{n}]"
        if not isinstance(item, Mapping) or set(item) != {"days", "from", "to"}:
            raise ScheduleError(f'{where} must be {{"days": [...], "from": "HH:MM", "to": "HH:MM"}}')
        days = item["days"]
        if not isinstance(days, list) or not days or any(d not in DAYS for d in days):
            raise ScheduleError(f"{where}.days must be a non-empty list of {', '.join(DAYS)}")
        opens, closes = _minutes(item["from"], f"{where}.from"), _minutes(item["to"], f"{where}.to")
        if opens == 24 * 60:
            raise ScheduleError(f"{where}.from must be before 24:00")
        if opens == closes:
            raise ScheduleError(f"{where}: from and to are equal; for a whole day use 00:00 to 24:00")
        windows.append(Window(frozenset(DAYS.index(d) for d in days), opens, closes % (24 * 60)))
    dates = set()
    for item in raw_dates:
        try:
            dates.add(date.fromisoformat(item))
        except (TypeError, ValueError):
            raise ScheduleError(f"blackoutDates: {item!r} is not a date YYYY-MM-DD") from None
    return Schedule(tuple(windows), frozenset(dates))


@lru_cache(maxsize=4096)
def parse_stored(text: str) -> Schedule:
    """A stored schedule's JSON text, parsed once per process (subscriptions share a few)."""
    return parse_schedule(json.loads(text))


def as_json(schedule: Schedule) -> dict[str, Any]:
    """The canonical stored form (days in week order, dates sorted)."""

    def clock(minutes: int) -> str:
        return f"{minutes // 60:02d}:{minutes % 60:02d}"

    return {
        "windows": [
            {
                "days": [DAYS[d] for d in sorted(w.days)],
                "from": clock(w.opens),
                "to": "24:00" if w.closes == 0 else clock(w.closes),
            }
            for w in schedule.windows
        ],
        "blackoutDates": [d.isoformat() for d in sorted(schedule.blackout_dates)],
    }


def next_change(schedule: Schedule, zone: ZoneInfo, at: datetime, horizon_days: int = 8) -> datetime | None:
    """When the schedule next opens or closes after `at` (to the minute), within `horizon_days`;
    None if it does not change in that time. For people reading a subscription's state."""
    state = schedule.is_open(zone, at)
    start = at.replace(second=0, microsecond=0) + timedelta(minutes=1)
    # candidate instants: every window edge and every local midnight, in local wall time
    local_day = start.astimezone(zone).date()
    edges = set()
    for offset in range(horizon_days + 1):
        day = local_day + timedelta(days=offset)
        minutes = {0} | {w.opens for w in schedule.windows} | {w.closes for w in schedule.windows}
        for m in minutes:
            edges.add(datetime.combine(day, time(m // 60, m % 60), tzinfo=zone))
    for edge in sorted(e for e in edges if e >= start):
        if schedule.is_open(zone, edge) != state:
            return edge
    return None
