"""Loaders read their rows on the asyncpg driver (app/resolvers/loaders.fetch_rows): the same values
SQLAlchemy's own execution gives, for every statement `make_loaders` builds, scoped or not."""

from __future__ import annotations

import functools
import uuid
from typing import Any

import pytest
import sqlalchemy as sa

from app.db import Database
from app.resolvers import loaders
from tests.factories import make_assignment, make_niche, make_provider, subscribe
from tests.factories.webhooks import make_endpoint

Shape = tuple[sa.Table, str, tuple[str, ...], bool]
# each loader is made on its first use
LOADERS = [
    name for name, made in vars(loaders.Loaders).items() if isinstance(made, functools.cached_property)
]


def _statements(db: Database, monkeypatch: pytest.MonkeyPatch) -> dict[Shape, sa.Select[Any]]:
    """Every statement the loaders of an operator and of a provider principal run, as they build them."""
    built: dict[Shape, sa.Select[Any]] = {}
    real = loaders._select  # noqa: SLF001

    def recording(table: sa.Table, column: str, order: tuple[str, ...] = (), scoped: bool = False) -> Any:
        built[(table, column, order, scoped)] = stmt = real(table, column, order, scoped)
        return stmt

    with monkeypatch.context() as patched:
        patched.setattr(loaders, "_select", recording)
        for made in (loaders.make_loaders(db), loaders.make_loaders(db, provider_id=uuid.uuid4())):
            for name in LOADERS:
                getattr(made, name)
    return built


async def test_every_loader_statement_reads_as_sqlalchemy_does(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    niche, levels = await make_niche(db)
    provider = await make_provider(db, balance_cents=100_000)  # a ledger entry
    await subscribe(db, provider, levels[0])
    await make_assignment(db, niche, provider)
    await make_endpoint(db, provider, "http://127.0.0.1:9/hook")
    # another buyer in another niche: nothing of it may load for the first one's principal
    other_niche, other_levels = await make_niche(db)
    other = await make_provider(db, balance_cents=100_000)
    await subscribe(db, other, other_levels[0])
    await make_assignment(db, other_niche, other)
    await make_endpoint(db, other, "http://127.0.0.1:9/other")
    foreign = {other.id, other_niche.id, *(level.id for level in other_levels)}
    async with db.connect() as conn:
        for owned in ("assignments", "subscriptions", "ledger_entries", "webhook_endpoints"):
            rows = await conn.execute(
                sa.text(f"SELECT id FROM {owned} WHERE provider_id = :p"), {"p": other.id}
            )
            foreign |= {r[0] for r in rows}
        rows = await conn.execute(
            sa.text("SELECT lead_id FROM assignments WHERE provider_id = :p"), {"p": other.id}
        )
        foreign |= {r[0] for r in rows}
    statements = _statements(db, monkeypatch)
    loads = [f for f in LOADERS if f != "caps_by_provider"]  # a service's read
    assert len(statements) == 2 * len(loads)  # one per loader, scoped and not: none missed
    referenced = {"id": None, "niche_id": "niches", "lead_id": "leads", "provider_id": "providers"}
    checked = 0
    for (table, column, _order, scoped), stmt in statements.items():
        async with db.connect() as conn:
            keyed = referenced[column] or table.name
            keys = [r[0] for r in (await conn.execute(sa.text(f"SELECT id FROM {keyed}"))).all()]
        params: dict[str, Any] = {"keys": keys, **({"own": provider.id} if scoped else {})}
        got = await loaders.fetch_rows(db, stmt, params)
        async with db.connect() as conn:
            expected = (await conn.execute(stmt, params)).all()
        # the data reaches every statement; a provider principal never loads runs (operators only)
        assert bool(expected) != (scoped and table.name == "distribution_runs"), (table.name, column, scoped)
        assert [tuple(r) for r in got] == [tuple(r) for r in expected], (table.name, column, scoped)
        assert [r._asdict() for r in got] == [dict(r._mapping) for r in expected]
        loaded = {r.id for r in got}
        if scoped:
            assert not loaded & foreign, (table.name, column)  # nothing of the other buyer
        elif table.name != "distribution_runs":
            assert loaded & foreign, (table.name, column)  # an operator's loaders see it
        checked += 1
    assert checked == len(statements)


class _Tagged(sa.TypeDecorator[uuid.UUID]):
    """A parameter type whose bind processor does real work: "p-<uuid>" is bound as the uuid."""

    impl = sa.Uuid
    cache_ok = True

    def process_bind_param(self, value: Any, dialect: Any) -> Any:
        return None if value is None else uuid.UUID(value.removeprefix("p-"))


async def test_parameters_go_through_their_bind_processors(db: Database) -> None:
    provider = await make_provider(db)
    table = loaders.Provider.__table__
    stmt = sa.select(table).where(table.c.id == sa.bindparam("tagged", type_=_Tagged()))
    rows = await loaders.fetch_rows(db, stmt, {"tagged": f"p-{provider.id}"})
    assert [r.id for r in rows] == [provider.id]
