"""Loaders read their rows on the asyncpg driver (app/resolvers/loaders.fetch_rows): the same values
SQLAlchemy's own execution gives, for every loader's statement, scoped or not."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa

from app.db import Database
from app.resolvers import loaders
from tests.factories import make_assignment, make_niche, make_provider, subscribe


async def test_every_loader_statement_reads_as_sqlalchemy_does(db: Database) -> None:
    niche, levels = await make_niche(db)
    provider = await make_provider(db, balance_cents=100_000)
    await subscribe(db, provider, levels[0])
    assigned = await make_assignment(db, niche, provider)
    async with db.connect() as conn:
        ids = {
            name: [row[0] for row in (await conn.execute(sa.text(f"SELECT id FROM {name}"))).all()]
            for name in (
                "niches",
                "competition_levels",
                "providers",
                "leads",
                "assignments",
                "distribution_runs",
            )
        }
    keys_of = {"id": None, "niche_id": "niches", "lead_id": "leads", "provider_id": "providers"}
    checked = 0
    for (table, column, _order, scoped), stmt in _statements():
        keys = ids.get(table.name if column == "id" else keys_of[column] or "", []) or ids["leads"]
        params: dict[str, Any] = {"keys": keys, **({"own": provider.id} if scoped else {})}
        got = await loaders.fetch_rows(db, stmt, params)
        async with db.connect() as conn:
            expected = (await conn.execute(stmt, params)).all()
        assert [tuple(r) for r in got] == [tuple(r) for r in expected], (table.name, column, scoped)
        assert [r._asdict() for r in got] == [dict(r._mapping) for r in expected]
        checked += bool(expected)
    assert checked >= 5
    assert assigned is not None


def _statements() -> list[tuple[tuple[sa.Table, str, tuple[str, ...], bool], sa.Select[Any]]]:
    from app.models.billing import Provider
    from app.models.distribution import DistributionRun
    from app.models.leads import Assignment, Lead
    from app.models.niches import CompetitionLevel, Niche

    shapes = [
        (Niche, "id", ()),
        (CompetitionLevel, "id", ()),
        (Provider, "id", ()),
        (Lead, "id", ()),
        (Assignment, "id", ()),
        (CompetitionLevel, "niche_id", ("order_position",)),
        (Assignment, "lead_id", ("created_at",)),
        (DistributionRun, "lead_id", ("created_at",)),
    ]
    found = []
    for model, column, order in shapes:
        table = model.__table__  # type: ignore[attr-defined]
        for scoped in (False, True):
            found.append(((table, column, order, scoped), loaders._select(table, column, order, scoped)))  # noqa: SLF001
    return found
