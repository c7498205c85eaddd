"""What a provider owns, read straight from the tables: its providers row and every row of every
table that carries a provider's id (a `provider_id` column or a foreign key to providers), or
hangs off such a row by a foreign key (an invite off a provider user, a notification off an
assignment). Derived from the metadata, so a new provider-owned table is in it without anyone
adding it; the access matrix compares snapshots to prove a call changed nothing of a side."""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from sqlmodel import SQLModel

import app.models  # noqa: F401  (every table in the metadata)
from app.db import Database

# written by a key's own use (at most once a minute, on a read too): not a change of the data
RECORDS_OF_USE = {"api_keys": ("last_used_at",)}


def provider_owned_tables() -> dict[str, str]:
    """Table name → the condition on its alias `t` that picks provider `:p`'s rows."""
    tables = list(SQLModel.metadata.sorted_tables)
    owned = {"providers": "t.id = :p"}
    grew = True
    while grew:
        grew = False
        for table in tables:
            if table.name in owned:
                continue
            condition = _owner_condition(table, owned)
            if condition is not None:
                owned[table.name] = condition
                grew = True
    return owned


def _owner_condition(table: sa.Table, owned: dict[str, str]) -> str | None:
    if "provider_id" in table.c:
        return "t.provider_id = :p"
    for fk in sorted(table.foreign_keys, key=lambda f: f.parent.name):
        parent = fk.column.table.name
        if parent == "providers":
            return f"t.{fk.parent.name} = :p"
        if parent in owned:
            return f"t.{fk.parent.name} IN (SELECT t.{fk.column.name} FROM {parent} t WHERE {owned[parent]})"
    return None


OWNED_TABLES = provider_owned_tables()


def _snapshot_sql() -> sa.TextClause:
    columns = []
    for name, condition in OWNED_TABLES.items():
        row = "to_jsonb(t)" + "".join(f" - '{c}'" for c in RECORDS_OF_USE.get(name, ()))
        columns.append(
            f"(SELECT coalesce(string_agg(({row})::text, ',' ORDER BY t.id), '') "
            f"FROM {name} t WHERE {condition}) AS {name}"
        )
    return sa.text("SELECT " + ",\n".join(columns))


SNAPSHOT = _snapshot_sql()


async def owned_state(db: Database, provider_id: uuid.UUID) -> dict[str, str]:
    """Every row the provider owns, table by table, as text."""
    async with db.engine.connect() as conn:
        row = (await conn.execute(SNAPSHOT, {"p": provider_id})).one()
    return dict(row._mapping)  # noqa: SLF001


def changed_tables(before: dict[str, str], after: dict[str, str]) -> list[str]:
    return [name for name in before if before[name] != after[name]]
