"""Buyer controls through the GraphQL API: caps, time zone, schedule and filters are set, shown
with their usage and open state, used by previews, and bad input is INVALID_INPUT writing nothing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from app.db import Database
from tests.api.conftest import Api, error_code
from tests.factories import make_lead, make_niche, make_provider, subscribe

PROVIDER = """query($id: UUID!) { provider(id: $id) { timezone
  caps { period providerWide maxLeads maxSpendCents usedLeads usedSpendCents periodStart }
  subscriptions { id caps { period maxLeads usedLeads } openNow scheduleChangesAt
                  schedule { windows { days from to } blackoutDates } filters } } }"""
TIMEZONE = (
    "mutation($p: UUID!, $tz: String!) { setProviderTimezone(providerId: $p, timezone: $tz) { timezone } }"
)
PROVIDER_CAPS = """mutation($p: UUID!, $c: [CapInput!]!) {
  setProviderCaps(providerId: $p, caps: $c) { caps { period maxLeads maxSpendCents } } }"""
SUB_CAPS = """mutation($s: UUID!, $c: [CapInput!]!) {
  setSubscriptionCaps(subscriptionId: $s, caps: $c) { caps { period maxLeads usedLeads } } }"""
SCHEDULE = """mutation($s: UUID!, $w: DeliveryScheduleInput) {
  setSubscriptionSchedule(subscriptionId: $s, schedule: $w) { openNow schedule { windows { days from to } } } }"""
FILTERS = """mutation($s: UUID!, $f: JSON!) { setSubscriptionFilters(subscriptionId: $s, filters: $f) { filters } }"""
PREVIEW = """query($id: UUID!) { previewDistribution(leadId: $id) { outcome
  levels { candidates { providerId decision reason detail caps { period maxLeads usedLeads } } } } }"""
# rows (providers and subscriptions) that have caps
CAPPED_ROWS = """SELECT (SELECT count(*) FROM providers WHERE caps IS NOT NULL)
                      + (SELECT count(*) FROM subscriptions WHERE caps IS NOT NULL)"""
ALL_WEEK = ["MON", "TUE", "WED", "THU", "FRI", "SAT", "SUN"]


async def _count(db: Database, sql: str) -> int:
    async with db.engine.connect() as conn:
        return int((await conn.execute(sa.text(sql))).scalar_one())


async def test_caps_schedule_and_timezone_are_set_shown_and_previewed(admin_api: Api, db: Database) -> None:
    niche, (level,) = await make_niche(db, levels=[(100, 1)])
    capped = await make_provider(db, balance_cents=10_000)
    closed = await make_provider(db, balance_cents=10_000)
    capped_sub = await subscribe(db, capped, level)
    closed_sub = await subscribe(db, closed, level)
    pid, sid = str(capped.id), str(capped_sub.id)

    assert (await admin_api.ok(TIMEZONE, {"p": pid, "tz": "America/Chicago"}))["setProviderTimezone"] == {
        "timezone": "America/Chicago"
    }
    caps = await admin_api.ok(PROVIDER_CAPS, {"p": pid, "c": [{"period": "MONTH", "maxSpendCents": 50_000}]})
    assert caps["setProviderCaps"]["caps"] == [{"period": "MONTH", "maxLeads": None, "maxSpendCents": 50_000}]
    sub_caps = await admin_api.ok(SUB_CAPS, {"s": sid, "c": [{"period": "DAY", "maxLeads": 0}]})
    assert sub_caps["setSubscriptionCaps"]["caps"] == [{"period": "DAY", "maxLeads": 0, "usedLeads": 0}]
    past = {"windows": [], "blackoutDates": ["2020-01-01"]}
    assert (await admin_api.ok(SCHEDULE, {"s": str(closed_sub.id), "w": past}))["setSubscriptionSchedule"][
        "openNow"
    ] is True
    # blacked out yesterday, today and tomorrow (UTC): today in the provider's zone, whatever it is
    today = datetime.now(UTC).date()
    shut = {"windows": [], "blackoutDates": [(today + timedelta(days=d)).isoformat() for d in (-1, 0, 1)]}
    closed_now = await admin_api.ok(SCHEDULE, {"s": str(closed_sub.id), "w": shut})
    assert closed_now["setSubscriptionSchedule"]["openNow"] is False

    shown = (await admin_api.ok(PROVIDER, {"id": pid}))["provider"]
    assert shown["timezone"] == "America/Chicago"
    assert [c["period"] for c in shown["caps"]] == ["MONTH"] and shown["caps"][0]["providerWide"] is True
    assert shown["caps"][0]["periodStart"] is not None
    (sub,) = shown["subscriptions"]
    assert sub["caps"] == [{"period": "DAY", "maxLeads": 0, "usedLeads": 0}]
    assert sub["openNow"] is True and sub["schedule"] is None and sub["scheduleChangesAt"] is None

    lead = await make_lead(db, niche)
    preview = (await admin_api.ok(PREVIEW, {"id": str(lead.id)}))["previewDistribution"]
    assert preview["outcome"] == "NO_ELIGIBLE"
    by_provider = {c["providerId"]: c for c in preview["levels"][0]["candidates"]}
    assert by_provider[pid]["reason"] == "CAP_REACHED"
    assert by_provider[pid]["detail"] == "subscription DAY cap: 0/0 leads"
    assert {(c["period"], c["maxLeads"]) for c in by_provider[pid]["caps"]} == {("MONTH", None), ("DAY", 0)}
    assert by_provider[str(closed.id)]["reason"] == "OUTSIDE_SCHEDULE"

    window = {"windows": [{"days": ALL_WEEK, "from": "00:00", "to": "24:00"}], "blackoutDates": []}
    reopened = await admin_api.ok(SCHEDULE, {"s": str(closed_sub.id), "w": window})
    assert reopened["setSubscriptionSchedule"]["schedule"]["windows"] == [
        {"days": ALL_WEEK, "from": "00:00", "to": "24:00"}
    ]
    cleared = await admin_api.ok(SCHEDULE, {"s": str(closed_sub.id), "w": None})
    assert cleared["setSubscriptionSchedule"] == {"openNow": True, "schedule": None}
    texas = [{"field": "state", "op": "eq", "value": "TX"}]
    assert (await admin_api.ok(FILTERS, {"s": sid, "f": texas}))["setSubscriptionFilters"]["filters"] == texas


async def test_bad_controls_are_invalid_input_and_write_nothing(admin_api: Api, db: Database) -> None:
    _, (level,) = await make_niche(db, levels=[(100, 1)])
    p = await make_provider(db, balance_cents=1_000)
    sub = await subscribe(db, p, level)
    pid, sid = str(p.id), str(sub.id)
    audit_before = await _count(db, "SELECT count(*) FROM audit_log")
    bad = [
        (TIMEZONE, {"p": pid, "tz": "Mars/Olympus_Mons"}),
        (PROVIDER_CAPS, {"p": pid, "c": [{"period": "DAY", "maxLeads": -1}]}),
        (PROVIDER_CAPS, {"p": pid, "c": [{"period": "DAY"}]}),
        (SUB_CAPS, {"s": sid, "c": [{"period": "WEEK", "maxLeads": 1}, {"period": "WEEK", "maxLeads": 2}]}),
        (SUB_CAPS, {"s": sid, "c": [{"period": "FORTNIGHT", "maxLeads": 1}]}),
        (SCHEDULE, {"s": sid, "w": {"windows": [{"days": ["MON"], "from": "25:00", "to": "18:00"}]}}),
        (SCHEDULE, {"s": sid, "w": {"windows": [{"days": [], "from": "08:00", "to": "18:00"}]}}),
        (SCHEDULE, {"s": sid, "w": {"windows": [{"days": ["MON"], "from": "09:00", "to": "09:00"}]}}),
        (FILTERS, {"s": sid, "f": [{"field": "state", "op": "approximately", "value": "TX"}]}),
    ]
    for query, variables in bad:
        body = await admin_api.gql(query, variables)
        assert error_code(body) == "INVALID_INPUT", (variables, body)
    assert (
        await _count(
            db,
            CAPPED_ROWS,
        )
        == 0
    )
    assert await _count(db, "SELECT count(*) FROM audit_log") == audit_before
    shown = (await admin_api.ok(PROVIDER, {"id": pid}))["provider"]
    assert shown["timezone"] == "UTC" and shown["subscriptions"][0]["schedule"] is None


async def test_unknown_ids_are_not_found(admin_api: Api) -> None:
    missing = "00000000-0000-0000-0000-000000000001"
    for query, variables in [
        (TIMEZONE, {"p": missing, "tz": "UTC"}),
        (PROVIDER_CAPS, {"p": missing, "c": []}),
        (SUB_CAPS, {"s": missing, "c": []}),
        (SCHEDULE, {"s": missing, "w": None}),
        (FILTERS, {"s": missing, "f": []}),
    ]:
        assert error_code(await admin_api.gql(query, variables)) == "NOT_FOUND", variables
