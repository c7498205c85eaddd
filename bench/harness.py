"""What every benchmark needs around its load: a free port, waiting until the API answers, the
servers (embedded unless URLs are given) with a scratch database migrated for the duration of the
run, and `report`, which prints a figure with its target and records it for the JSON last line.

Absolute figures differ 2-3x between machines (and between runs on a shared one), so each
benchmark measures a floor in the same run on the same servers and reports its figures as ratios
to it: `report(summary, "lead_over_floor", 6.1, "<= 5")`."""

from __future__ import annotations

import asyncio
import contextlib
import operator
import socket
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import asyncpg
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


TARGETS = {"<=": operator.le, ">=": operator.ge}


def report(summary: dict[str, Any], name: str, value: float, target: str | None = None) -> float:
    """Prints `name = value (target <= 5: met)` and puts the value into `summary` (the JSON last
    line); a missed target also goes into summary["missed"], with how far off it is."""
    value = round(value, 3)
    summary[name] = value
    note = ""
    if target is not None:
        op, _, bound_text = target.partition(" ")
        bound = float(bound_text)
        if TARGETS[op](value, bound):
            note = f" (target {target}: met)"
        else:
            off = abs(value / bound - 1) * 100 if bound else float("inf")
            note = f" (target {target}: MISSED by {off:.0f}%)"
            summary.setdefault("missed", []).append(name)
    print(f"{name} = {value:g}{note}", flush=True)
    return value


def floor_drift(
    summary: dict[str, Any], name: str, before: float, after: float, limit: float = 0.25
) -> float:
    """A floor measured before and after its figure: records both and returns their mean. Load
    from elsewhere that changed meanwhile shows as a spread; above `limit` the ratio built on the
    mean is flagged as unreliable (summary["unsteady"]): run it again."""
    summary[f"{name}_before_after"] = [round(before, 1), round(after, 1)]
    spread = abs(after - before) / max(min(before, after), 1e-9)
    if spread > limit:
        summary.setdefault("unsteady", []).append(name)
        print(
            f"warning: {name} was {before:.1f} before and {after:.1f} after ({spread:.0%} apart): the load "
            "from elsewhere changed during the run, so the ratio to their mean is unreliable",
            flush=True,
        )
    return (before + after) / 2


def libpq(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def with_database(url: str, name: str) -> str:
    """The same server URL, database `name` (a unix-socket ?host= stays)."""
    head, _, tail = url.partition("?")
    return f"{head.rsplit('/', 1)[0]}/{name}" + (f"?{tail}" if tail else "")


async def admin_sql(server_url: str, sql: str) -> None:
    conn = await asyncpg.connect(libpq(server_url))
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


@contextlib.contextmanager
def scratch_database(server_url: str, prefix: str = "lw_bench") -> Iterator[str]:
    """A new database on the server of `server_url`, dropped afterwards: a run neither meets a
    previous run's rows (the seeds use fixed ids) nor touches what other users of a shared server
    keep in its databases. Synchronous: call it outside the event loop."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    asyncio.run(admin_sql(server_url, f'CREATE DATABASE "{name}"'))
    try:
        yield with_database(server_url, name)
    finally:
        asyncio.run(admin_sql(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def run_with_servers(
    prefix: str, database_url: str | None, redis_url: str | None, work: Callable[[str, str], Awaitable[Any]]
) -> Any:
    """Runs `work(database_url, redis_url)` on migrated servers, embedded ones when URLs are None;
    on a given server, in a scratch database (dropped afterwards)."""
    with (
        servers(
            data_dir=Path(tempfile.mkdtemp(prefix=prefix)),
            database_url=database_url,
            redis_url=redis_url,
            ephemeral=True,
        ) as (server_url, r_url),
        scratch_database(server_url) as db_url,
    ):
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
