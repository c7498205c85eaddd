"""Delivery schedules (SPEC §8): windows in local wall-clock time (across midnight, across both
2027 DST changes of America/Chicago), blackout dates, validation, and the engine skipping
OUTSIDE_SCHEDULE with backfill."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import asyncpg
import pytest

from app.db import Database
from app.engine.distribute import distribute_lead
from app.engine.plan import plan_distribution
from app.engine.schedule import ScheduleError, as_json, next_change, parse_schedule
from app.engine.snapshot import lock_lead, read_niche_state
from app.errors import InvalidInput
from app.models.distribution import RunStatus, SkipReason
from app.services import caps, subscriptions
from app.services.audit import SYSTEM
from tests.factories import make_lead, make_niche, make_provider, subscribe

CHICAGO = ZoneInfo("America/Chicago")
WEEKDAYS = ["MON", "TUE", "WED", "THU", "FRI"]
OFFICE = parse_schedule({"windows": [{"days": WEEKDAYS, "from": "08:00", "to": "18:00"}]})


def at(text: str) -> datetime:
    return datetime.fromisoformat(text)


@pytest.mark.parametrize(
    ("instant", "is_open"),
    [
        # Friday 2027-03-12, CST (UTC-6): 08:00 local is 14:00Z
        ("2027-03-12T13:59:00+00:00", False),
        ("2027-03-12T14:00:00+00:00", True),
        ("2027-03-12T23:59:00+00:00", True),  # 17:59 CST
        ("2027-03-13T00:00:00+00:00", False),  # 18:00 CST
        # Monday 2027-03-15, CDT (UTC-5) after the spring-forward of Sunday 03-14: 08:00 is 13:00Z
        ("2027-03-15T12:59:00+00:00", False),
        ("2027-03-15T13:00:00+00:00", True),
        ("2027-03-15T22:59:00+00:00", True),
        ("2027-03-15T23:00:00+00:00", False),
        # Friday 2027-11-05, CDT: 08:00 is 13:00Z
        ("2027-11-05T13:00:00+00:00", True),
        ("2027-11-05T12:59:00+00:00", False),
        # Monday 2027-11-08, CST again after the fall-back of Sunday 11-07: 08:00 is 14:00Z
        ("2027-11-08T13:00:00+00:00", False),
        ("2027-11-08T14:00:00+00:00", True),
        ("2027-11-08T23:59:00+00:00", True),
        ("2027-11-09T00:00:00+00:00", False),
        # the weekend
        ("2027-03-13T16:00:00+00:00", False),
    ],
)
def test_a_08_to_18_window_stays_08_to_18_local_across_both_dst_changes(instant: str, is_open: bool) -> None:
    assert OFFICE.is_open(CHICAGO, at(instant)) is is_open


def test_a_window_across_midnight_covers_the_evening_and_the_next_morning() -> None:
    night = parse_schedule({"windows": [{"days": ["FRI"], "from": "22:00", "to": "06:00"}]})
    utc = ZoneInfo("UTC")
    assert night.is_open(utc, at("2027-01-08T22:00:00+00:00"))  # Friday 22:00
    assert night.is_open(utc, at("2027-01-09T05:59:00+00:00"))  # Saturday 05:59
    assert not night.is_open(utc, at("2027-01-09T06:00:00+00:00"))
    assert not night.is_open(utc, at("2027-01-08T05:00:00+00:00"))  # Friday morning: Thursday's is not set
    assert not night.is_open(utc, at("2027-01-09T22:30:00+00:00"))  # Saturday evening


def test_a_blackout_date_closes_its_whole_local_day() -> None:
    saturdays = parse_schedule(
        {"windows": [{"days": ["SAT"], "from": "00:00", "to": "24:00"}], "blackoutDates": ["2027-12-25"]}
    )
    assert not saturdays.is_open(CHICAGO, at("2027-12-25T18:00:00+00:00"))  # Saturday noon, blacked out
    assert saturdays.is_open(CHICAGO, at("2028-01-01T18:00:00+00:00"))  # the next Saturday noon


def test_blackout_is_judged_on_the_local_date_not_the_utc_date() -> None:
    holiday = parse_schedule({"blackoutDates": ["2027-12-25"]})
    assert not holiday.is_open(CHICAGO, at("2027-12-26T05:59:00+00:00"))  # 23:59 on the 25th local
    assert holiday.is_open(CHICAGO, at("2027-12-26T06:00:00+00:00"))  # 00:00 on the 26th local
    assert holiday.is_open(ZoneInfo("UTC"), at("2027-12-26T05:59:00+00:00"))


def test_next_change_finds_the_next_opening_across_a_weekend() -> None:
    friday_evening = at("2027-03-12T23:30:00+00:00")  # 17:30 CST
    assert next_change(OFFICE, CHICAGO, friday_evening) == at("2027-03-13T00:00:00+00:00")
    saturday = at("2027-03-13T12:00:00+00:00")
    assert next_change(OFFICE, CHICAGO, saturday) == at("2027-03-15T13:00:00+00:00")  # Monday 08:00 CDT


@pytest.mark.parametrize(
    "raw",
    [
        None,
        [],
        {"windows": [{"days": [], "from": "08:00", "to": "18:00"}]},
        {"windows": [{"days": ["MONDAY"], "from": "08:00", "to": "18:00"}]},
        {"windows": [{"days": ["MON"], "from": "8:00", "to": "18:00"}]},
        {"windows": [{"days": ["MON"], "from": "08:00", "to": "24:01"}]},
        {"windows": [{"days": ["MON"], "from": "24:00", "to": "06:00"}]},
        {"windows": [{"days": ["MON"], "from": "08:00", "to": "08:00"}]},
        {"windows": [{"days": ["MON"], "from": "08:00"}]},
        {"blackoutDates": ["2027-02-30"]},
        {"hours": []},
    ],
)
def test_bad_schedules_are_refused_with_a_reason(raw: object) -> None:
    with pytest.raises(ScheduleError):
        parse_schedule(raw)


def test_the_stored_form_is_canonical() -> None:
    raw = {
        "windows": [{"days": ["FRI", "MON"], "from": "22:00", "to": "24:00"}],
        "blackoutDates": ["2027-12-31", "2027-01-01"],
    }
    assert as_json(parse_schedule(raw)) == {
        "windows": [{"days": ["MON", "FRI"], "from": "22:00", "to": "24:00"}],
        "blackoutDates": ["2027-01-01", "2027-12-31"],
    }


def _window_around(now: datetime, zone: ZoneInfo, *, open_: bool) -> dict[str, object]:
    """A window containing `now` (local), or one that ended an hour before it."""
    local = now.astimezone(zone)
    day = ["MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"][local.weekday()]
    start = local - timedelta(hours=2 if open_ else 3)
    end = local + timedelta(hours=2) if open_ else local - timedelta(hours=1)
    days = (
        [day]
        if start.date() == local.date()
        else [["MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"][start.weekday()]]
    )
    return {"windows": [{"days": days, "from": start.strftime("%H:%M"), "to": end.strftime("%H:%M")}]}


async def test_the_engine_skips_a_closed_subscription_and_backfills(db: Database) -> None:
    niche, (level,) = await make_niche(db, levels=[(100, 1)])
    closed = await make_provider(db, balance_cents=1000, provider_id=uuid.UUID(int=1))
    fallback = await make_provider(db, balance_cents=1000, provider_id=uuid.UUID(int=2))
    closed_sub = await subscribe(db, closed, level)
    await subscribe(db, fallback, level)
    await caps.set_timezone(db, actor=SYSTEM, provider_id=closed.id, timezone="Asia/Kolkata")
    zone = ZoneInfo("Asia/Kolkata")
    await subscriptions.set_schedule(
        db,
        actor=SYSTEM,
        subscription_id=closed_sub.id,
        schedule=_window_around(datetime.now(UTC), zone, open_=False),
    )
    result = await distribute_lead(db, lead_id=(await make_lead(db, niche)).id)
    assert result.status is RunStatus.SUCCESS  # the buyer's own hours are not a PARTIAL
    assert [a.provider_id for a in result.assigned] == [fallback.id]
    assert [(s.provider_id, s.reason) for s in result.skipped] == [(closed.id, SkipReason.OUTSIDE_SCHEDULE)]
    await subscriptions.set_schedule(
        db,
        actor=SYSTEM,
        subscription_id=closed_sub.id,
        schedule=_window_around(datetime.now(UTC), zone, open_=True),
    )
    result = await distribute_lead(db, lead_id=(await make_lead(db, niche)).id)
    assert [a.provider_id for a in result.assigned] == [closed.id]


async def test_the_engine_reads_the_window_in_the_providers_zone_on_dst_days(
    db: Database, database_url: str
) -> None:
    """The engine's own read and plan at instants of the 2027 DST days: 07:59 local closed, 08:00
    open, on both sides of each change."""
    niche, (level,) = await make_niche(db, levels=[(100, 1)])
    p = await make_provider(db, balance_cents=1000)
    sub = await subscribe(db, p, level)
    await caps.set_timezone(db, actor=SYSTEM, provider_id=p.id, timezone="America/Chicago")
    await subscriptions.set_schedule(
        db,
        actor=SYSTEM,
        subscription_id=sub.id,
        schedule={
            "windows": [
                {"days": ["MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"], "from": "08:00", "to": "18:00"}
            ]
        },
    )
    lead = await make_lead(db, niche)
    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        locked = await lock_lead(conn, lead.id, None)
        assert locked is not None
        for instant, expected in [
            ("2027-03-13T13:59:00+00:00", False),  # Saturday 07:59 CST
            ("2027-03-13T14:00:00+00:00", True),
            ("2027-03-14T12:59:00+00:00", False),  # Sunday 07:59 CDT (changed at 02:00)
            ("2027-03-14T13:00:00+00:00", True),
            ("2027-11-07T13:59:00+00:00", False),  # Sunday 07:59 CST (changed at 02:00)
            ("2027-11-07T14:00:00+00:00", True),
        ]:
            state = await read_niche_state(conn, lead=locked, niche_id=niche.id, at=at(instant))
            plan = plan_distribution(state, lead.attributes)
            assert bool(plan.picks) is expected, instant
            if not expected:
                assert plan.skips[0].reason is SkipReason.OUTSIDE_SCHEDULE
    finally:
        await conn.close()


async def test_a_bad_schedule_writes_nothing(db: Database) -> None:
    _, (level,) = await make_niche(db, levels=[(100, 1)])
    sub = await subscribe(db, await make_provider(db), level)
    with pytest.raises(InvalidInput):
        await subscriptions.set_schedule(
            db,
            actor=SYSTEM,
            subscription_id=sub.id,
            schedule={"windows": [{"days": ["MON"], "from": "9", "to": "5"}]},
        )
    async with db.read() as session:
        from app.models.billing import Subscription

        assert (await session.get(Subscription, sub.id)).schedule is None  # type: ignore[union-attr]
