"""`leadwheel invite-provider-user PROVIDER EMAIL` prints a working invite link."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from redis.asyncio import Redis

from app.db import Database
from app.services import provider_users
from app.settings import Settings
from tests.factories import make_provider

ROOT = Path(__file__).resolve().parent.parent


def _leadwheel(database_url: str, redis_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = os.environ | {"DATABASE_URL": database_url, "REDIS_URL": redis_url, "COLUMNS": "400"}
    return subprocess.run(
        [sys.executable, "-m", "app.cli", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


async def test_the_cli_invites_by_provider_email_and_prints_the_link(
    db: Database, redis: Redis, database_url: str, redis_url: str
) -> None:
    provider = await make_provider(db, name="Acme Roofing")
    done = _leadwheel(database_url, redis_url, "invite-provider-user", provider.email, "Buyer@Acme.test")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "invited buyer@acme.test" in done.stdout
    found = re.search(r"#invite=(lwi_[\w-]+)", done.stdout)
    assert found, done.stdout
    settings = Settings(_env_file=None)  # type: ignore[call-arg]
    enrollment = await provider_users.accept_invite(
        db, redis, token=found.group(1), password="a long buyer password", client="t", settings=settings
    )
    assert enrollment.provisioning_uri.startswith("otpauth://totp/")
    unknown = _leadwheel(database_url, redis_url, "invite-provider-user", "nobody@x.test", "b@x.test")
    assert unknown.returncode == 1 and "NOT_FOUND" in unknown.stdout


async def test_the_cli_finds_the_provider_by_id_or_by_exact_name(
    db: Database, database_url: str, redis_url: str
) -> None:
    provider = await make_provider(db, name="Acme Roofing")
    await make_provider(db, name="Acme Roofing Two")  # a name that starts the same is not it
    for ref, email in ((str(provider.id), "by-id@acme.test"), ("Acme Roofing", "by-name@acme.test")):
        done = _leadwheel(database_url, redis_url, "invite-provider-user", ref, email)
        assert done.returncode == 0, done.stdout + done.stderr
        assert f"invited {email}" in done.stdout and f"for provider {provider.id}" in done.stdout
    await make_provider(db, name="Acme Roofing")
    twice = _leadwheel(database_url, redis_url, "invite-provider-user", "Acme Roofing", "c@acme.test")
    assert twice.returncode == 1 and "CONFLICT" in twice.stdout and "give its id" in twice.stdout
