from app.db import Database
from app.engine.distribute import distribute_lead
from app.models.distribution import RunStatus
from tests.factories import make_lead, make_niche, make_provider, subscribe


async def test_one_distribution(db: Database) -> None:
    niche, levels = await make_niche(db, levels=[(1000, 2)])
    providers = [await make_provider(db, balance_cents=5000) for _ in range(3)]
    for p in providers:
        await subscribe(db, p, levels[0])
    lead = await make_lead(db, niche)
    result = await distribute_lead(db, lead_id=lead.id)
    assert result.status is RunStatus.SUCCESS
    assert len(result.assigned) == 2
    assert [e.type.value for e in result.events][0] == "STARTED"
    assert result.events[-1].type.value == "COMPLETED"
