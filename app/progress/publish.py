"""Publishing committed progress to Redis pub/sub: per run, per niche, per batch (terminal events
only), and per provider (its ASSIGNED events: the buyer's live feed, myAssignments). Called after
the commit; a Redis failure is logged and never fails a run: subscribers read the truth from
PostgreSQL when they (re)synchronise."""

from __future__ import annotations

import logging
import uuid
from collections import defaultdict
from collections.abc import Sequence
from typing import Protocol

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline

from app.progress.events import EventType, ProgressEvent, encode_events

log = logging.getLogger("leadwheel.progress")


def run_channel(run_id: uuid.UUID) -> str:
    return f"lw:run:{run_id}"


def niche_channel(niche_id: uuid.UUID) -> str:
    return f"lw:niche:{niche_id}"


def batch_channel(batch_id: uuid.UUID) -> str:
    return f"lw:batch:{batch_id}"


def provider_channel(provider_id: uuid.UUID) -> str:
    return f"lw:provider:{provider_id}"


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
    """Queues one PUBLISH per channel on `pipe` with that channel's events in order: per run, per
    niche, per batch (terminal events only), per assigned provider (its ASSIGNED events)."""
    by_channel: dict[str, list[bytes]] = defaultdict(list)  # in order of first use
    for event in events:
        data = event.to_json()
        by_channel[run_channel(event.run_id)].append(data)
        by_channel[niche_channel(event.niche_id)].append(data)
        if batch_id is not None and event.is_terminal:
            by_channel[batch_channel(batch_id)].append(data)
        if event.type is EventType.ASSIGNED and event.provider_id is not None:
            by_channel[provider_channel(event.provider_id)].append(data)
    for channel, items in by_channel.items():
        pipe.publish(channel, encode_events(items))


class NullPublisher:
    async def publish(self, events: Sequence[ProgressEvent], *, batch_id: uuid.UUID | None = None) -> None:
        return None
