"""The embedded PostgreSQL the service starts when DATABASE_URL is unset."""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path

from app.embedded import EmbeddedPostgres


def _setting(pg: EmbeddedPostgres, name: str) -> str:
    assert pg._server is not None
    return pg._server.psql(f"SELECT current_setting('{name}') AS value").split("\n")[2].strip()


def _eventually(pg: EmbeddedPostgres, name: str, value: str) -> str:
    """The setting as a new session sees it, once the reload has reached the server (it is
    asynchronous), or as it is after 5 s."""
    deadline = time.monotonic() + 5
    while (seen := _setting(pg, name)) != value and time.monotonic() < deadline:
        time.sleep(0.05)
    return seen


def test_embedded_postgres_does_not_zero_fill_wal_segments() -> None:
    """A new cluster creates each WAL segment it fills; zero-filled, every commit waited for it
    (docs/benchmarks.md). Set on a new data directory, and again on one that does not have it."""
    data = Path(tempfile.mkdtemp(prefix="lw-emb-"))  # short: unix socket paths are limited
    pg = EmbeddedPostgres(data / "pg")
    try:
        pg.start()
        assert _eventually(pg, "wal_init_zero", "off") == "off"
        assert pg._server is not None
        pg._server.psql("ALTER SYSTEM RESET wal_init_zero")  # as a data directory made before it
        pg.stop()
        pg.start()  # the same data directory again
        assert _eventually(pg, "wal_init_zero", "off") == "off"
    finally:
        pg.stop()
        shutil.rmtree(data, ignore_errors=True)
