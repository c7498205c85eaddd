"""What every benchmark needs around its load: a free port, waiting until the API answers, and
the servers (embedded unless URLs are given) migrated for the duration of the run."""

from __future__ import annotations

import asyncio
import socket
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from app.embedded import servers  # noqa: E402
from app.migrate import upgrade  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def wait_ready(http: httpx.AsyncClient, base: str, path: str = "/readyz", seconds: float = 60) -> None:
    """Polls until the server answers 200; a server that never does fails the benchmark."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            if (await http.get(f"{base}{path}")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.05)
    raise RuntimeError(f"{base}{path} was not ready within {seconds:.0f} s")


def run_with_servers(
    prefix: str, database_url: str | None, redis_url: str | None, work: Callable[[str, str], Awaitable[Any]]
) -> Any:
    """Runs `work(database_url, redis_url)` on migrated servers, embedded ones when URLs are None."""
    with servers(
        data_dir=Path(tempfile.mkdtemp(prefix=prefix)),
        database_url=database_url,
        redis_url=redis_url,
        ephemeral=True,
    ) as (db_url, r_url):
        upgrade(db_url)
        return asyncio.run(work(db_url, r_url))
