"""A worker process's start-up, run as the worker runs it (its own interpreter)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = """
import asyncio, gc, json
from taskiq import TaskiqState
from app.tasks.worker import close_resources, open_resources

async def main():
    state = TaskiqState()
    await open_resources(state)
    # frozen objects are left out of gc.get_objects(): the sender, made by the start-up, is one
    made_at_start = any(o is state.webhook_sender for o in gc.get_objects())
    print(json.dumps({"threshold": gc.get_threshold(), "sender_scanned": made_at_start}))
    await close_resources(state)

asyncio.run(main())
"""


def test_a_worker_tunes_its_collector_once_started(database_url: str, redis_url: str) -> None:
    # what start-up made (models, compiled statements, the sender) is never scanned again, and the
    # young generation is large enough for a distribution's short-lived objects
    env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_url}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    tuned = json.loads(done.stdout.strip().splitlines()[-1])
    assert tuned["threshold"] == [10_000, 20, 20]
    assert tuned["sender_scanned"] is False
