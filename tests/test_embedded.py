"""The embedded PostgreSQL the service starts when DATABASE_URL is unset."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from app.embedded import EmbeddedPostgres


def test_embedded_postgres_does_not_zero_fill_wal_segments() -> None:
    """A new cluster creates each WAL segment it fills; zero-filled, every commit waited for it
    (docs/benchmarks.md). Kept off across a restart of the same data directory."""
    data = Path(tempfile.mkdtemp(prefix="lw-emb-"))  # short: unix socket paths are limited
    pg = EmbeddedPostgres(data / "pg")
    try:
        for _ in range(2):  # created, then restarted on the same data
            pg.start()
            assert pg._server is not None
            assert "off" in pg._server.psql("SHOW wal_init_zero")
            pg.stop()
    finally:
        pg.stop()
        shutil.rmtree(data, ignore_errors=True)
