"""PostgreSQL or Redis out of reach is UNAVAILABLE (HTTP 503 with Retry-After), not INTERNAL: an API
process runs on its own embedded PostgreSQL and Redis, and we stop them under it. Queries,
mutations, the CSV export and WebSocket sign-in say so while a server is down, and work again once
it is back, without restarting the API."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import websockets

from app.db import create_database
from app.embedded import EmbeddedPostgres, EmbeddedRedis
from app.main import api_argv
from app.migrate import upgrade
from app.services import auth
from app.services.audit import SYSTEM
from app.settings import Settings
from tests.tasks.conftest import free_port

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery staple"
NICHES = "{ niches { id } }"


@dataclass
class Outage:
    """An API process on servers of its own, which the tests may stop and start."""

    pg: EmbeddedPostgres
    redis: EmbeddedRedis
    database_url: str
    base: str
    log: Path

    def stop_postgres(self) -> None:
        self.pg.stop()

    def start_postgres(self) -> None:
        assert self.pg.start() == self.database_url  # same socket: the API's URL still holds


@pytest.fixture(scope="module")
def outage() -> Iterator[Outage]:
    # short paths: unix socket paths are limited to ~107 bytes
    data = Path(tempfile.mkdtemp(prefix="lw-out-"))
    pg = EmbeddedPostgres(data / "pg")  # stop() keeps the data: start() brings the same cluster back
    redis = EmbeddedRedis()
    proc: subprocess.Popen[bytes] | None = None
    try:
        database_url = pg.start()
        redis_url = redis.start()
        upgrade(database_url)
        port = free_port()
        log = data / "api.log"
        env = os.environ | {
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "ENVIRONMENT": "test",
            "AUTH_CACHE_SECONDS": "0",  # every request authenticates against PostgreSQL
            "PROMETHEUS_MULTIPROC_DIR": str(data),
        }
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", *api_argv(port=port, quiet=True)],
                cwd=ROOT,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline and proc.poll() is None, log.read_text()
            time.sleep(0.05)
        yield Outage(pg, redis, database_url, base, log)
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        redis.stop()
        pg.stop()
        shutil.rmtree(data, ignore_errors=True)


async def _api_key(outage: Outage) -> str:
    db = create_database(outage.database_url)
    try:
        created = await auth.create_api_key(db, actor=SYSTEM, name="outage", scopes=["admin", "read"])
    finally:
        await db.dispose()
    return created.secret


async def _admin(outage: Outage, email: str) -> None:
    db = create_database(outage.database_url)
    try:
        await auth.create_admin(
            db,
            email=email,
            password=PASSWORD,
            settings=Settings(_env_file=None),  # type: ignore[call-arg]
        )
    finally:
        await db.dispose()


async def _post(
    http: httpx.AsyncClient, query: str, variables: dict[str, Any] | None = None, token: str | None = None
) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return await http.post("/graphql", json={"query": query, "variables": variables or {}}, headers=headers)


def _assert_unavailable(response: httpx.Response, server: str) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"].isdigit()
    assert 1 <= int(response.headers["Retry-After"]) <= 10
    errors = response.json()["errors"]
    assert {e["extensions"]["code"] for e in errors} == {"UNAVAILABLE"}, errors
    assert server in errors[0]["message"]
    assert "retry" in errors[0]["message"]


async def _ws_sign_in(base: str, token: str) -> tuple[str, int | None, str]:
    """('ack', None, '') or ('closed', code, reason)."""
    url = base.replace("http://", "ws://") + "/graphql"
    async with websockets.connect(url, subprotocols=["graphql-transport-ws"]) as ws:  # type: ignore[list-item]
        await ws.send(
            json.dumps({"type": "connection_init", "payload": {"authorization": f"Bearer {token}"}})
        )
        try:
            reply = json.loads(await asyncio.wait_for(ws.recv(), 10))
        except websockets.ConnectionClosed as closed:
            assert closed.rcvd is not None
            return "closed", closed.rcvd.code, closed.rcvd.reason
    return str(reply["type"]).removeprefix("connection_"), None, ""


async def _until_ok(http: httpx.AsyncClient, token: str, timeout: float = 15) -> None:
    """The first request after a restart may still find a connection the restart broke."""
    deadline = time.monotonic() + timeout
    while (await _post(http, NICHES, token=token)).status_code != 200:
        assert time.monotonic() < deadline, "the API did not recover"
        await asyncio.sleep(0.1)


async def test_postgresql_down_is_unavailable_and_back_is_ok(outage: Outage) -> None:
    token = await _api_key(outage)
    async with httpx.AsyncClient(base_url=outage.base, timeout=30) as http:
        assert (await _post(http, NICHES, token=token)).status_code == 200  # the pool holds a connection
        await asyncio.to_thread(outage.stop_postgres)
        try:
            for _ in range(3):  # first a pooled connection found dead, then no server to connect to
                _assert_unavailable(await _post(http, NICHES, token=token), "PostgreSQL")
            created = await _post(
                http, 'mutation { createNiche(name: "During the outage") { id } }', token=token
            )
            _assert_unavailable(created, "PostgreSQL")
            login = await _post(
                http,
                "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { challenge } }",
                {"e": "nobody@example.test", "p": PASSWORD},
            )
            _assert_unavailable(login, "PostgreSQL")  # the rate limit (Redis) passed, the read did not
            export = await http.get("/exports/assignments.csv", headers={"Authorization": f"Bearer {token}"})
            _assert_unavailable(export, "PostgreSQL")
            kind, code, reason = await _ws_sign_in(outage.base, token)
            assert (kind, code) == ("closed", 1013), (kind, code, reason)  # Try Again Later
            assert reason.startswith("UNAVAILABLE: PostgreSQL")
        finally:
            await asyncio.to_thread(outage.start_postgres)
        await _until_ok(http, token)
        assert (await _post(http, NICHES, token=token)).status_code == 200
        created = await _post(http, 'mutation { createNiche(name: "After the outage") { id } }', token=token)
        assert created.status_code == 200 and "errors" not in created.json(), created.text
        export = await http.get("/exports/assignments.csv", headers={"Authorization": f"Bearer {token}"})
        assert export.status_code == 200
        assert await _ws_sign_in(outage.base, token) == ("ack", None, "")
    logged = outage.log.read_text()
    assert "graphql.unavailable" in logged
    assert "graphql.unexpected" not in logged  # nothing was taken for a defect
    assert "ws.connect_failed" not in logged


async def test_redis_down_is_unavailable_where_a_request_needs_it(outage: Outage) -> None:
    token = await _api_key(outage)
    await _admin(outage, "redis.outage@example.test")
    login = "mutation($e: String!, $p: String!) { login(email: $e, password: $p) { challenge } }"
    variables = {"e": "redis.outage@example.test", "p": PASSWORD}
    async with httpx.AsyncClient(base_url=outage.base, timeout=30) as http:
        await asyncio.to_thread(outage.redis.down)
        try:
            _assert_unavailable(await _post(http, login, variables), "Redis")  # its rate limit
            # a request that needs only PostgreSQL is served meanwhile
            assert (await _post(http, NICHES, token=token)).status_code == 200
            assert await _ws_sign_in(outage.base, token) == ("ack", None, "")
        finally:
            await asyncio.to_thread(outage.redis.up)
        back = await _post(http, login, variables)
        assert back.status_code == 200, back.text
        assert back.json()["data"]["login"]["challenge"]
    assert "graphql.unexpected" not in outage.log.read_text()
