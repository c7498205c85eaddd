"""Nested lists load through dataloaders: a fixed number of SQL statements whatever the page holds."""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import event

from app.db import Database
from app.engine.distribute import distribute_lead
from tests.api.conftest import Api
from tests.factories import make_lead, make_niche, make_provider, subscribe

QUERY = """{ leads(first: 100) { edges { node { assignments { provider { name } competitionLevel { name } } } } } }"""


@contextmanager
def count_statements(db: Database) -> Iterator[list[str]]:
    seen: list[str] = []

    def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    event.listen(db.engine.sync_engine, "before_cursor_execute", before)
    try:
        yield seen
    finally:
        event.remove(db.engine.sync_engine, "before_cursor_execute", before)


async def _seed(db: Database, leads: int) -> None:
    niche, levels = await make_niche(db, levels=[(100, 2), (50, 2)])
    for _ in range(6):
        p = await make_provider(db, balance_cents=1_000_000)
        for level in levels:
            await subscribe(db, p, level)
    for _ in range(leads):
        await distribute_lead(db, lead_id=(await make_lead(db, niche)).id)


async def test_nested_leads_page_costs_at_most_six_statements(admin_api: Api, db: Database) -> None:
    await _seed(db, 5)
    await admin_api.ok("{ me { label } }")  # the credential is now verified: both pages read it from memory
    with count_statements(db) as few:
        small = await admin_api.ok(QUERY)
    await _seed(db, 95)
    await admin_api.ok("{ me { label } }")  # seeding can outlast the credential cache on a busy machine
    with count_statements(db) as many:
        big = await admin_api.ok(QUERY)
    assert len(small["leads"]["edges"]) == 5
    assert len(big["leads"]["edges"]) == 100
    assert sum(len(e["node"]["assignments"]) for e in big["leads"]["edges"]) == 400
    assert len(many) <= 6, many
    assert len(many) == len(few)  # independent of the page's content
