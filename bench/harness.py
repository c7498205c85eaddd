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
import orjson

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


class GraphQLClient:
    """A lean load generator: GraphQL over keep-alive HTTP/1.1 connections (one request at a time
    each), bodies encoded with orjson. httpx cost the client ~4.6 ms of CPU per request on the same
    two cores as the service (bench/e2e.py (b)); this costs a fraction, so the figures measure the
    service, not the load generator. Raises on a non-200 answer or a GraphQL error."""

    def __init__(self, host: str, port: int, token: str, connections: int = 1) -> None:
        self.host, self.port, self.connections = host, port, connections
        self.head = (
            f"POST /graphql HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {token}\r\nContent-Length: "
        ).encode()
        # (reader, writer, when it was last used): uvicorn closes a connection idle for 5 s
        self._idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter, float]] = asyncio.Queue()
        self._opened = 0

    async def execute(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        body = orjson.dumps({"query": query, "variables": variables or {}})
        if self._idle.empty() and self._opened < self.connections:
            self._opened += 1
            self._idle.put_nowait((*await asyncio.open_connection(self.host, self.port), time.monotonic()))
        reader, writer, used = await self._idle.get()
        if time.monotonic() - used > 4:  # the server may be closing it: never send on it
            writer.close()
            reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            writer.write(self.head + str(len(body)).encode() + b"\r\n\r\n" + body)
            status = await reader.readline()
            length = 0
            while (line := await reader.readline()) not in (b"\r\n", b""):
                name, _, value = line.partition(b":")
                if name.lower() == b"content-length":
                    length = int(value)
            answer = orjson.loads(await reader.readexactly(length))
        except BaseException:
            writer.close()
            self._opened -= 1
            raise
        self._idle.put_nowait((reader, writer, time.monotonic()))
        if not status.startswith(b"HTTP/1.1 200") or answer.get("errors"):
            raise RuntimeError(f"{status.decode().strip()}: {answer}")
        return dict(answer["data"])

    async def close(self) -> None:
        while not self._idle.empty():
            _, writer, _ = self._idle.get_nowait()
            writer.close()
