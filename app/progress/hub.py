"""ProgressHub: one Redis pub/sub connection per API process (PSUBSCRIBE lw:*), fanning out to
bounded in-process queues by channel. Never a connection per subscriber. A subscriber that falls
behind gets RESYNC instead of blocking the others, and re-reads its state from PostgreSQL.

A queue's item is a message's events together (a tuple, in seq order), not one event at a time: a
run's steps travel in one message, so a subscriber wakes once for them and can write them at once
(one queue operation per message and subscriber instead of one per event, in a 1,000-subscriber
fan-out)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Callable
from typing import Final

from redis.asyncio import Redis
from redis.asyncio.client import PubSub

from app.progress.events import ProgressEvent, decode_events

log = logging.getLogger("leadwheel.progress")
RESYNC: Final = "RESYNC"
# per subscriber, in messages (a message holds a run's events, usually from STARTED to COMPLETED):
# a subscriber this far behind gets RESYNC and reads the state again rather than growing memory
QUEUE_SIZE = 256

Events = tuple[ProgressEvent, ...]
Item = Events | str  # a message's events, or RESYNC


class ProgressHub:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._queues: dict[str, set[asyncio.Queue[Item]]] = defaultdict(set)
        self._pubsub: PubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        self._watchers: dict[str, list[Callable[[bytes | None], None]]] = defaultdict(list)
        self.ready = asyncio.Event()  # set while subscribed

    async def start(self) -> None:
        """Does not wait for Redis: the API starts (and /readyz says so) while Redis is down."""
        self._reader = asyncio.create_task(self._run(), name="progress-hub")

    async def stop(self) -> None:
        self.ready.clear()
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._reader
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()  # type: ignore[no-untyped-call]

    @property
    def subscribers(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def register(self, channel: str) -> asyncio.Queue[Item]:
        queue: asyncio.Queue[Item] = asyncio.Queue(maxsize=QUEUE_SIZE)
        self._queues[channel].add(queue)
        return queue

    def unregister(self, channel: str, queue: asyncio.Queue[Item]) -> None:
        queues = self._queues.get(channel)
        if queues is not None:
            queues.discard(queue)
            if not queues:
                del self._queues[channel]

    def watch(self, channel: str, handler: Callable[[bytes | None], None]) -> None:
        """`handler(data)` for each message on `channel` (under lw:), in the reader; and
        `handler(None)` whenever the subscription was lost, as messages may have been missed."""
        self._watchers[channel].append(handler)

    def _deliver(self, channel: str, item: Item) -> None:
        for queue in list(self._queues.get(channel, ())):
            try:
                queue.put_nowait(item)
            except asyncio.QueueFull:
                # drop its backlog: it will re-read the state from PostgreSQL
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait(RESYNC)

    async def _run(self) -> None:
        """Reads forever. A lost connection tells every subscriber to resync (events published
        meanwhile were missed), whether it surfaces as an error (then this reconnects) or redis-py
        reconnected by itself (it retries, app/redis_client.py): then the pattern is confirmed
        again, which is how this notices."""
        lost = False  # since the last confirmation: subscribers re-read once it is confirmed again
        while True:
            try:
                self._pubsub = self.redis.pubsub()
                await self._pubsub.psubscribe("lw:*")
                async for message in self._pubsub.listen():
                    kind = message.get("type")
                    if kind == "psubscribe":  # confirmed: from here on nothing published is missed
                        if self.ready.is_set() or lost:
                            log.warning("progress.hub_resubscribed")
                            self._lost()  # what was published before this confirmation was missed
                        lost = False
                        self.ready.set()
                    if kind != "pmessage":
                        continue
                    channel = message["channel"].decode()
                    for handler in self._watchers.get(channel, ()):
                        handler(message["data"])
                    if channel not in self._queues:
                        continue  # nobody here watches it: not worth decoding (most events)
                    try:
                        events = tuple(decode_events(message["data"]))
                    except (ValueError, KeyError, TypeError):
                        log.warning("progress.bad_message channel=%s", channel)
                        continue
                    if events:
                        self._deliver(channel, events)
            except asyncio.CancelledError:
                raise
            except Exception:  # noqa: BLE001  (Redis went away: retry, never die)
                log.warning("progress.hub_reconnect", exc_info=True)
                self.ready.clear()
                self._lost()  # now, so subscribers read the state as it is; and again once back
                lost = True
                await asyncio.sleep(0.5)

    def _lost(self) -> None:
        for handlers in self._watchers.values():
            for handler in handlers:
                handler(None)
        for channel in list(self._queues):
            self._deliver(channel, RESYNC)
