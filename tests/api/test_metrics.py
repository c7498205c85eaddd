"""Prometheus metrics at /metrics."""

from app.db import Database
from tests.api.conftest import Api
from tests.factories import make_lead, make_niche, make_provider, subscribe


async def test_metrics_count_distributions_and_read_the_queue(admin_api: Api, db: Database) -> None:
    niche, (level,) = await make_niche(db, levels=[(100, 1)])
    await subscribe(db, await make_provider(db, balance_cents=1000), level)
    lead = await make_lead(db, niche)
    await admin_api.ok("mutation($id: UUID!) { distributeLead(leadId: $id) { id } }", {"id": str(lead.id)})
    text = (await admin_api.client.get("/metrics")).text
    success = [
        line for line in text.splitlines() if line.startswith('lw_distributions_total{outcome="SUCCESS"}')
    ]
    assert success
    assert float(success[0].split()[-1]) >= 1
    for name in ("lw_engine_seconds_bucket", "lw_queue_depth 0.0", "lw_dead_letters", "lw_live_subscribers"):
        assert name in text, name
