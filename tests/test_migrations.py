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


def test_provider_users_downgrade_with_buyer_data(server_url: str) -> None:
    """0007 down and up again with a provider user, its token and challenge, a provider key and an
    invite in the outbox: what 0004 cannot hold goes, the rest stays."""
    name = f"lw_mig_{uuid.uuid4().hex[:8]}"
    asyncio.run(admin_sql(server_url, f'CREATE DATABASE "{name}"'))
    url = _with_database(server_url, name)

    async def sql(script: str) -> list[object]:
        """The script's statements in order; the rows of the last."""
        *writes, query = [statement for statement in script.split(";") if statement.strip()]
        conn = await asyncpg.connect(_libpq(url))
        try:
            for statement in writes:
                await conn.execute(statement)
            return [tuple(r) for r in await conn.fetch(query)]
        finally:
            await conn.close()

    try:
        upgrade(url)
        counts = asyncio.run(
            sql("""
            INSERT INTO admin_users (email, password_hash, totp_secret) VALUES ('ops@x.test', 'h', 's');
            INSERT INTO providers (name, email) VALUES ('P', 'p@x.test');
            INSERT INTO provider_users (provider_id, email) SELECT id, 'b@x.test' FROM providers;
            INSERT INTO access_tokens (provider_user_id, token_hash, expires_at)
                SELECT id, 'u', now() FROM provider_users;
            INSERT INTO access_tokens (admin_id, token_hash, expires_at) SELECT id, 'a', now() FROM admin_users;
            INSERT INTO mfa_challenges (provider_user_id, token_hash, expires_at)
                SELECT id, 'c', now() FROM provider_users;
            INSERT INTO api_keys (name, prefix, key_hash, scopes, provider_id)
                SELECT 'k', 'p', 'k', '{provider:read}', id FROM providers;
            INSERT INTO notifications (template, recipient, variables) VALUES ('provider_invite', 'b@x.test', '{}');
            SELECT (SELECT count(*) FROM access_tokens), (SELECT count(*) FROM notifications)
            """)
        )
        assert counts == [(2, 1)]
        downgrade(url, "0004")
        assert asyncio.run(
            sql("SELECT (SELECT count(*) FROM access_tokens), (SELECT count(*) FROM api_keys)")
        ) == [(1, 0)]
        upgrade(url)
        assert asyncio.run(_diff(url)) == []
    finally:
        asyncio.run(admin_sql(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
