"""distributionStats and the CSV export of assignments."""

import csv
import io
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa

from app.db import Database
from app.engine.distribute import distribute_lead
from app.services import auth
from app.services.audit import SYSTEM
from tests.api.conftest import Api, error_code
from tests.factories import make_lead, make_niche, make_provider, subscribe

STATS = """query($n: UUID) { distributionStats(nicheId: $n) { nicheName successRate revenueCents assignments
  runsByOutcome { status count } levels { levelName spread providers { providerId received } } } }"""


async def _distributed(db: Database, leads: int) -> object:
    niche, (level,) = await make_niche(db, levels=[(500, 1)], name="Stats niche")
    for _ in range(3):
        await subscribe(db, await make_provider(db, balance_cents=100_000), level)
    for _ in range(leads):
        await distribute_lead(db, lead_id=(await make_lead(db, niche)).id)
    return niche


async def test_stats_report_outcomes_revenue_and_fairness(admin_api: Api, db: Database) -> None:
    niche = await _distributed(db, 7)
    stats = (await admin_api.ok(STATS, {"n": str(niche.id)}))["distributionStats"]
    assert len(stats) == 1
    s = stats[0]
    assert s["runsByOutcome"] == [{"status": "SUCCESS", "count": 7}]
    assert s["successRate"] == 1.0
    assert s["revenueCents"] == 7 * 500
    assert s["assignments"] == 7
    (level,) = s["levels"]
    assert sorted(p["received"] for p in level["providers"]) == [2, 2, 3]
    assert level["spread"] == 1


async def test_csv_export(admin_api: Api, db: Database) -> None:
    await _distributed(db, 4)
    response = await admin_api.client.get(
        "/exports/assignments.csv", headers={"Authorization": f"Bearer {admin_api.token}"}
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert len(rows) == 4
    assert {r["niche"] for r in rows} == {"Stats niche"}
    assert [r["created_at"] for r in rows] == sorted(r["created_at"] for r in rows)
    future = (datetime.now(UTC) + timedelta(days=1)).isoformat()
    empty = await admin_api.client.get(
        "/exports/assignments.csv",
        params={"from": future},
        headers={"Authorization": f"Bearer {admin_api.token}"},
    )
    assert empty.text.strip().splitlines() == [
        ",".join(
            [
                "assignment_id",
                "created_at",
                "lead_id",
                "niche",
                "level",
                "provider_id",
                "provider",
                "price_charged_cents",
            ]
        )
    ]


async def test_csv_export_of_one_niche(admin_api: Api, db: Database) -> None:
    await _distributed(db, 2)
    other, (level,) = await make_niche(db, levels=[(700, 1)], name="Other niche")
    await subscribe(db, await make_provider(db, balance_cents=10_000), level)
    await distribute_lead(db, lead_id=(await make_lead(db, other)).id)
    auth_header = {"Authorization": f"Bearer {admin_api.token}"}
    response = await admin_api.client.get(
        "/exports/assignments.csv", params={"nicheId": str(other.id)}, headers=auth_header
    )
    rows = list(csv.DictReader(io.StringIO(response.text)))
    assert [(r["niche"], r["price_charged_cents"]) for r in rows] == [("Other niche", "700")]
    everything = await admin_api.client.get("/exports/assignments.csv", headers=auth_header)
    assert len(list(csv.DictReader(io.StringIO(everything.text)))) == 3
    bad = await admin_api.client.get(
        "/exports/assignments.csv", params={"nicheId": "roofing"}, headers=auth_header
    )
    assert bad.status_code == 400
    assert bad.json()["errors"][0]["extensions"] == {"code": "INVALID_INPUT"}


async def test_csv_export_refuses_bad_input_and_wrong_scope(admin_api: Api, db: Database) -> None:
    assert (await admin_api.client.get("/exports/assignments.csv")).status_code == 401
    writer = (await auth.create_api_key(db, actor=SYSTEM, name="w", scopes=["leads:write"])).secret
    denied = await admin_api.client.get(
        "/exports/assignments.csv", headers={"Authorization": f"Bearer {writer}"}
    )
    assert denied.status_code == 403
    bad = await admin_api.client.get(
        "/exports/assignments.csv",
        params={"from": "yesterday"},
        headers={"Authorization": f"Bearer {admin_api.token}"},
    )
    assert bad.status_code == 400
    assert bad.json()["errors"][0]["extensions"]["code"] == "INVALID_INPUT"
    assert (
        error_code(
            await admin_api.gql(
                '{ distributionStats(from: "2026-02-01T00:00:00Z", to: "2026-01-01T00:00:00Z") { nicheId } }'
            )
        )
        == "INVALID_INPUT"
    )


HOURLY = """query($n: UUID, $from: DateTime, $to: DateTime) {
  distributionStats(nicheId: $n, from: $from, to: $to) {
    nicheName runsByOutcome { status count } runsByHour { hour status count } } }"""


async def _backdate_runs(db: Database, lead_ids: list[object], at: datetime) -> None:
    async with db.engine.begin() as conn:
        await conn.execute(
            sa.text("UPDATE distribution_runs SET created_at = :at WHERE lead_id = ANY(:ids)"),
            {"at": at, "ids": lead_ids},
        )


async def test_runs_by_hour_counts_each_utc_hour_by_status(admin_api: Api, db: Database) -> None:
    niche, (level,) = await make_niche(db, levels=[(500, 1)], name="Hourly niche")
    await subscribe(db, await make_provider(db, balance_cents=100_000), level)
    empty, _ = await make_niche(db, levels=[(500, 1)], name="Nobody subscribes")
    day = datetime(2026, 3, 2, tzinfo=UTC)
    plan = [  # (niche, leads, when)
        (niche, 3, day + timedelta(hours=9, minutes=5)),
        (niche, 2, day + timedelta(hours=9, minutes=59, seconds=59)),
        (niche, 1, day + timedelta(hours=14)),
        (empty, 2, day + timedelta(hours=14, minutes=30)),  # NO_ELIGIBLE
        (niche, 4, day - timedelta(minutes=1)),  # before the range
        (niche, 1, day + timedelta(days=1)),  # at `to`: excluded
    ]
    for target, count, at in plan:
        made = [await make_lead(db, target) for _ in range(count)]
        for lead in made:
            await distribute_lead(db, lead_id=lead.id)
        await _backdate_runs(db, [lead.id for lead in made], at)
    window = {"from": day.isoformat(), "to": (day + timedelta(days=1)).isoformat()}
    stats = {s["nicheName"]: s for s in (await admin_api.ok(HOURLY, window))["distributionStats"]}
    assert stats["Hourly niche"]["runsByHour"] == [
        {"hour": "2026-03-02T09:00:00+00:00", "status": "SUCCESS", "count": 5},
        {"hour": "2026-03-02T14:00:00+00:00", "status": "SUCCESS", "count": 1},
    ]
    assert stats["Nobody subscribes"]["runsByHour"] == [
        {"hour": "2026-03-02T14:00:00+00:00", "status": "NO_ELIGIBLE", "count": 2},
    ]
    for s in stats.values():  # the hours add up to the totals of the same range
        totals = {o["status"]: o["count"] for o in s["runsByOutcome"]}
        by_hour: dict[str, int] = {}
        for h in s["runsByHour"]:
            by_hour[h["status"]] = by_hour.get(h["status"], 0) + h["count"]
        assert by_hour == totals
    one = await admin_api.ok(HOURLY, window | {"n": str(empty.id)})
    assert [s["nicheName"] for s in one["distributionStats"]] == ["Nobody subscribes"]


async def test_runs_by_hour_needs_a_bounded_range(admin_api: Api) -> None:
    start = datetime(2026, 3, 1, tzinfo=UTC)
    for window in (
        {},  # no from
        {"to": start.isoformat()},
        {"from": start.isoformat(), "to": (start + timedelta(days=31, seconds=1)).isoformat()},
        {"from": (datetime.now(UTC) - timedelta(days=40)).isoformat()},  # to: now
    ):
        body = await admin_api.gql(HOURLY, window)
        assert error_code(body) == "INVALID_INPUT", window
        assert body["errors"][0]["extensions"]["field"] == "from"
    await admin_api.ok(HOURLY, {"from": start.isoformat(), "to": (start + timedelta(days=31)).isoformat()})
    # without runsByHour, no range is needed
    await admin_api.ok("{ distributionStats { nicheName runsByOutcome { status count } } }")
