"""`alembic upgrade head` on an empty database and `downgrade base` both work; the models and
the migrations agree."""

import asyncio
import uuid

import asyncpg
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlmodel import SQLModel

import app.models  # noqa: F401
from app.migrate import downgrade, upgrade
from tests.conftest import _libpq, _with_database, admin_sql


def test_upgrade_downgrade_upgrade(server_url: str) -> None:
    name = f"lw_mig_{uuid.uuid4().hex[:8]}"

    async def tables(url: str) -> set[str]:
        conn = await asyncpg.connect(_libpq(url))
        try:
            rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            return {r["tablename"] for r in rows}
        finally:
            await conn.close()

    asyncio.run(admin_sql(server_url, f'CREATE DATABASE "{name}"'))
    url = _with_database(server_url, name)
    try:
        upgrade(url)
        assert {"leads", "assignments", "ledger_entries", "audit_log"} <= asyncio.run(tables(url))
        downgrade(url, "base")
        assert asyncio.run(tables(url)) == {"alembic_version"}
        upgrade(url)
        diff = asyncio.run(_diff(url))
        assert diff == []
    finally:
        asyncio.run(admin_sql(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


async def _diff(url: str) -> list[object]:
    from sqlalchemy.ext.asyncio import create_async_engine

    engine = create_async_engine(url)
    try:
        async with engine.connect() as conn:
            return await conn.run_sync(
                lambda sync: compare_metadata(MigrationContext.configure(sync), SQLModel.metadata)
            )
    finally:
        await engine.dispose()
