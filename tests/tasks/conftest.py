"""Real processes: uvicorn API processes, taskiq workers and the scheduler, as subprocesses on the
test database and Redis; clients speak HTTP and graphql-transport-ws to them."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from email import message_from_bytes
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiosmtpd.controller import Controller

from app.db import Database
from app.main import api_argv
from app.services import auth
from app.services.audit import SYSTEM
from app.settings import Settings
from app.tasks.broker import worker_argv
from app.wsclient import subscription

ROOT = Path(__file__).resolve().parents[2]
FAST = {
    "RETRY_DELAYS_SECONDS": "[0.3, 0.3]",  # three attempts, fast
    "RETRY_JITTER": "0",
    "STALE_AFTER_SECONDS": "2",
    "SWEEP_INTERVAL_SECONDS": "1",
    "QUEUE_IDLE_TIMEOUT_MS": "2000",
    "ENVIRONMENT": "test",
    # buyers' endpoints are local receivers
    "WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true",
    "WEBHOOK_TIMEOUT_SECONDS": "2",
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Inbox:
    """What a local SMTP server received."""

    def __init__(self) -> None:
        self.messages: list[Any] = []

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802 (aiosmtpd API)
        self.messages.append(message_from_bytes(envelope.content))
        return "250 OK"


@pytest.fixture
def smtp() -> Iterator[tuple[Controller, Inbox]]:
    """A real SMTP server in this process (aiosmtpd): (its controller, for the port; its inbox)."""
    inbox = Inbox()
    logging.getLogger("mail.log").setLevel(logging.WARNING)  # its per-connection lines, in the test output
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())  # port=0 fails: pick one
    controller.start()
    yield controller, inbox
    controller.stop()


@dataclass
class Stack:
    database_url: str
    redis_url: str
    metrics_dir: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def env(self, **overrides: str) -> dict[str, str]:
        urls = {
            "DATABASE_URL": self.database_url,
            "REDIS_URL": self.redis_url,
            "PROMETHEUS_MULTIPROC_DIR": self.metrics_dir,  # as `leadwheel serve` sets it
        }
        return os.environ | FAST | urls | overrides

    def _spawn(self, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        # own process group: taskiq's worker runs jobs in a child process, and a kill or stop must
        # reach it too (a SIGKILLed manager leaves its child running with this test's settings)
        proc = subprocess.Popen([sys.executable, *argv], cwd=ROOT, env=env, start_new_session=True)
        self.procs.append(proc)
        return proc

    @staticmethod
    def kill(proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL to the process and its children: a crash, mid-job."""
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

    def worker(self, **overrides: str) -> subprocess.Popen[bytes]:
        settings = Settings(_env_file=None, worker_processes=1)  # type: ignore[call-arg]
        return self._spawn(["-m", "taskiq", *worker_argv(settings)], self.env(**overrides))

    def scheduler(self, **overrides: str) -> subprocess.Popen[bytes]:
        return self._spawn(
            ["-m", "taskiq", "scheduler", "app.tasks.scheduler:scheduler"], self.env(**overrides)
        )

    async def api(self, **overrides: str) -> str:
        port = free_port()
        self._spawn(
            ["-m", *api_argv(port=port, quiet=True)],
            self.env(**overrides),
        )
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient() as client:
            for _ in range(200):
                try:
                    if (await client.get(f"{base}/readyz")).status_code == 200:
                        return base
                except httpx.TransportError:
                    pass
                await asyncio.sleep(0.05)
        raise RuntimeError("API process did not become ready")

    def stop(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 15
        for proc in self.procs:
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # whatever of the group is left
            except ProcessLookupError:
                pass


@pytest.fixture
def stack(database_url: str, redis_url: str, tmp_path: Path) -> Iterator[Stack]:
    running = Stack(database_url, redis_url, str(tmp_path))
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
async def token(db: Database) -> str:
    created = await auth.create_api_key(
        db, actor=SYSTEM, name="e2e", scopes=["admin", "read", "distribution:write", "leads:write"]
    )
    return created.secret


async def gql(base: str, token: str, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    async with httpx.AsyncClient(timeout=30) as client:
        response = await client.post(
            f"{base}/graphql",
            json={"query": query, "variables": variables or {}},
            headers={"Authorization": f"Bearer {token}"},
        )
    body = response.json()
    assert "errors" not in body, body
    return dict(body["data"])


class WsSubscription:
    """One graphql-transport-ws subscription; `events` fills as messages arrive."""

    def __init__(self, base: str, token: str | None, query: str, variables: dict[str, Any]) -> None:
        self.url = base.replace("http://", "ws://") + "/graphql"
        self.token, self.query, self.variables = token, query, variables
        self.events: list[dict[str, Any]] = []
        self.completed = asyncio.Event()
        self.first = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> WsSubscription:
        self.task = asyncio.create_task(self._run())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.task is not None:
            self.task.cancel()
            try:
                await self.task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass

    async def _run(self) -> None:
        async with subscription(self.url, self.token, self.query, self.variables) as ws:
            async for raw in ws:
                message = json.loads(raw)
                if message["type"] == "next":
                    data = message["payload"].get("data")
                    assert data is not None, message
                    self.events.append(next(iter(data.values())))
                    self.first.set()
                elif message["type"] in ("complete", "error"):
                    assert message["type"] == "complete", message
                    self.completed.set()
                    return
                elif message["type"] == "ping":
                    await ws.send(json.dumps({"type": "pong"}))

    async def wait(self, timeout: float = 30) -> list[dict[str, Any]]:
        await asyncio.wait_for(self.completed.wait(), timeout)
        return self.events


async def wait_for(predicate: Any, timeout: float = 30, interval: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = await predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError("condition not met in time")
        await asyncio.sleep(interval)


@pytest.fixture
async def lead_lock(database_url: str) -> AsyncIterator[Any]:
    """Holds a lead's row lock so a worker's distribution waits at its first statement."""
    import asyncpg

    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    state: dict[str, Any] = {}

    async def hold(lead_id: Any) -> None:
        state["tx"] = conn.transaction()
        await state["tx"].start()
        await conn.execute("SELECT 1 FROM leads WHERE id = $1 FOR NO KEY UPDATE", lead_id)

    async def release() -> None:
        await state.pop("tx").commit()

    yield hold, release
    if "tx" in state:
        await state["tx"].rollback()
    await conn.close()
