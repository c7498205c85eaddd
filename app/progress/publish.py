"""Publishing committed progress to Redis pub/sub: per run, per niche, and per batch (terminal
events only). Called after the commit; a Redis failure is logged and never fails a run:
subscribers read the truth from PostgreSQL when they (re)synchronise."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from typing import Protocol

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from app.progress.events import ProgressEvent

log = logging.getLogger("leadwheel.progress")


def run_channel(run_id: uuid.UUID) -> str:
    return f"lw:run:{run_id}"


def niche_channel(niche_id: uuid.UUID) -> str:
    return f"lw:niche:{niche_id}"


def batch_channel(batch_id: uuid.UUID) -> str:
    return f"lw:batch:{batch_id}"


class Publisher(Protocol):
    async def publish(
        self, events: Sequence[ProgressEvent], *, batch_id: uuid.UUID | None = None
    ) -> None: ...


class RedisPublisher:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def publish(self, events: Sequence[ProgressEvent], *, batch_id: uuid.UUID | None = None) -> None:
        if not events:
            return
        try:
            pipe = self.redis.pipeline(transaction=False)
            add_publishes(pipe, events, batch_id=batch_id)
            await pipe.execute()
        except Exception:  # noqa: BLE001  (best effort by design, see module doc)
            log.warning("progress.publish_failed run_id=%s", events[0].run_id, exc_info=True)


def add_publishes(
    pipe: Pipeline, events: Sequence[ProgressEvent], *, batch_id: uuid.UUID | None = None
) -> None:
    """Queues each event's PUBLISH commands on `pipe`: per run, per niche, per batch (terminal only)."""
    for event in events:
        data = event.to_json()
        pipe.publish(run_channel(event.run_id), data)
        pipe.publish(niche_channel(event.niche_id), data)
        if batch_id is not None and event.is_terminal:
            pipe.publish(batch_channel(batch_id), data)


class NullPublisher:
    async def publish(self, events: Sequence[ProgressEvent], *, batch_id: uuid.UUID | None = None) -> None:
        return None
