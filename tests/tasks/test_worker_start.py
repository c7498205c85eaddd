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
    print(json.dumps({"threshold": gc.get_threshold(), "frozen": gc.get_freeze_count()}))
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
        check=True,
    )
    tuned = json.loads(done.stdout.strip().splitlines()[-1])
    assert tuned["threshold"] == [10_000, 20, 20]
    assert tuned["frozen"] > 10_000
