"""Rotation across levels (SPEC §2.2) on real PostgreSQL."""

from app.db import Database
from app.engine.distribute import distribute_lead
from app.engine.plan import Level, starting_index
from app.models.niches import LevelStrategy, Niche
from app.services import niches
from app.services.audit import SYSTEM
from tests.factories import make_lead, make_niche, make_provider, subscribe


async def _starting_levels(db: Database, niche: Niche, count: int) -> list[str]:
    starts = []
    for _ in range(count):
        lead = await make_lead(db, niche)
        result = await distribute_lead(db, lead_id=lead.id)
        starts.append(result.events[1].level_name)  # LEVEL_STARTED of the starting level
    return starts


async def test_each_of_n_levels_starts_once_per_n_leads(db: Database) -> None:
    niche, levels = await make_niche(db, levels=[(100, 1)] * 4, strategy=LevelStrategy.FIRST_MATCH)
    provider = await make_provider(db, balance_cents=100_000)
    for level in levels:
        await subscribe(db, provider, level)
    starts = await _starting_levels(db, niche, 8)
    assert starts == ["L1", "L2", "L3", "L4", "L1", "L2", "L3", "L4"]


async def test_inactive_and_deleted_levels_never_take_a_turn(db: Database) -> None:
    niche, levels = await make_niche(db, levels=[(100, 1)] * 4)
    await niches.update_level(db, actor=SYSTEM, level_id=levels[1].id, active=False)
    await niches.delete_level(db, actor=SYSTEM, level_id=levels[2].id)
    starts = await _starting_levels(db, niche, 4)
    assert starts == ["L1", "L4", "L1", "L4"]


async def test_rotation_wraps_and_advances_even_without_candidates(db: Database) -> None:
    niche, _ = await make_niche(db, levels=[(100, 1)] * 3)
    starts = await _starting_levels(db, niche, 4)  # nobody subscribed: all NO_ELIGIBLE
    assert starts == ["L1", "L2", "L3", "L1"]
    fresh = await niches.get_niche(db, niche.id, actor=SYSTEM)
    assert fresh.next_start_level_order_position == 2


async def test_levels_added_later_join_the_rotation(db: Database) -> None:
    niche, _ = await make_niche(db, levels=[(100, 1)] * 2)
    assert await _starting_levels(db, niche, 2) == ["L1", "L2"]
    await niches.create_level(db, actor=SYSTEM, niche_id=niche.id, name="L3", price_cents=1, max_recipients=1)
    assert await _starting_levels(db, niche, 3) == ["L1", "L2", "L3"]


async def test_niche_without_active_levels_is_no_eligible_and_keeps_its_position(db: Database) -> None:
    niche, levels = await make_niche(db, levels=[(100, 1)])
    await niches.update_level(db, actor=SYSTEM, level_id=levels[0].id, active=False)
    lead = await make_lead(db, niche)
    result = await distribute_lead(db, lead_id=lead.id)
    assert result.status.value == "NO_ELIGIBLE"
    assert (await niches.get_niche(db, niche.id, actor=SYSTEM)).next_start_level_order_position == 1


def test_starting_index_rules() -> None:
    import uuid

    levels = [Level(uuid.uuid4(), f"L{p}", p, 0, 1) for p in (2, 5, 9)]
    assert starting_index(levels, 1) == 0
    assert starting_index(levels, 3) == 1  # smallest position >= 3 is 5
    assert starting_index(levels, 9) == 2
    assert starting_index(levels, 10) == 0  # wraps to the lowest
    assert starting_index([], 1) is None
