"""distributionStats and the CSV export of assignments."""

import csv
import io
from datetime import UTC, datetime, timedelta

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
