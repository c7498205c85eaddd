"""ProgressHub: one Redis pub/sub connection per API process, subscribed to the channels this
process's subscribers watch (SUBSCRIBE per channel, on demand), fanning out to bounded in-process
queues by channel. Never a connection per subscriber. A subscriber that falls behind gets RESYNC
instead of blocking the others, and re-reads its state from PostgreSQL.

Only watched channels: with PSUBSCRIBE lw:* every API process received every run's messages
(about seven per distribution, whether anyone watched or not), which cost it as much CPU as the
distributeLead requests themselves in a burst.

A queue's item is a message's events together (a tuple, in seq order), not one event at a time: a
run's steps travel in one message, so a subscriber wakes once for them and can write them at once
(one queue operation per message and subscriber instead of one per event, in a 1,000-subscriber
fan-out)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Callable, Coroutine
from typing import Any, Final

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


# Subscribed on every connection (nobody publishes on it): its confirmation says the connection
# is subscribed, which is what `ready` means.
HUB_CHANNEL = "lw:hub"
# How long register() waits for Redis to confirm a new channel; past it the subscriber reads its
# state anyway and gets RESYNC once the confirmation comes.
CONFIRM_SECONDS = 5.0


class ProgressHub:
    def __init__(self, redis: Redis) -> None:
        self.redis = redis
        self._queues: dict[str, set[asyncio.Queue[Item]]] = defaultdict(set)
        self._pubsub: PubSub | None = None
        self._reader: asyncio.Task[None] | None = None
        self._watchers: dict[str, list[Callable[[bytes | None], None]]] = defaultdict(list)
        self.ready = asyncio.Event()  # set while subscribed
        self._confirmed: set[str] = set()  # on the current connection
        self._asked: dict[str, asyncio.Future[None]] = {}  # SUBSCRIBE sent, confirmation awaited
        self._resync: set[str] = set()  # told RESYNC once confirmed: messages may have been missed
        self._commands = asyncio.Lock()  # one SUBSCRIBE / UNSUBSCRIBE decision at a time
        self._live = False  # the connection's first SUBSCRIBE is sent: later ones follow it
        self._tasks: set[asyncio.Task[None]] = set()
        self._leaving: set[str] = set()  # an UNSUBSCRIBE task is on its way

    async def start(self) -> None:
        """Does not wait for Redis: the API starts (and /readyz says so) while Redis is down."""
        self._reader = asyncio.create_task(self._run(), name="progress-hub")

    async def stop(self) -> None:
        self.ready.clear()
        for task in [*self._tasks, *([self._reader] if self._reader else [])]:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._pubsub is not None:
            with contextlib.suppress(Exception):
                await self._pubsub.aclose()  # type: ignore[no-untyped-call]

    @property
    def subscribers(self) -> int:
        return sum(len(q) for q in self._queues.values())

    async def register(self, channel: str) -> asyncio.Queue[Item]:
        """A queue of the channel's messages, once Redis has confirmed the channel: what is
        published after this returns reaches it (or, with Redis away, RESYNC once it is back)."""
        queue: asyncio.Queue[Item] = asyncio.Queue(maxsize=QUEUE_SIZE)
        self._queues[channel].add(queue)
        try:
            await self._subscribe(channel)
        except BaseException:
            self.unregister(channel, queue)
            raise
        return queue

    def unregister(self, channel: str, queue: asyncio.Queue[Item]) -> None:
        queues = self._queues.get(channel)
        if queues is not None:
            queues.discard(queue)
            if not queues:
                del self._queues[channel]
                self._leave(channel)

    def watch(self, channel: str, handler: Callable[[bytes | None], None]) -> None:
        """`handler(data)` for each message on `channel` (under lw:), in the reader; and
        `handler(None)` whenever the subscription was lost, as messages may have been missed.
        Call before start()."""
        self._watchers[channel].append(handler)

    def _wanted(self) -> list[str]:
        return [*self._watchers, *self._queues, HUB_CHANNEL]  # ready: the rest is confirmed too

    async def _subscribe(self, channel: str) -> None:
        """SUBSCRIBE `channel` and wait for Redis to confirm it, CONFIRM_SECONDS at most in all;
        otherwise (Redis away, slow, or the connection being remade) the channel is subscribed when
        the connection is, and its subscribers get RESYNC then."""
        if channel in self._confirmed:
            return
        try:
            async with asyncio.timeout(CONFIRM_SECONDS):
                async with self._commands:
                    if channel in self._confirmed:
                        return
                    asked = self._asked.get(channel)
                    if asked is None:
                        asked = await self._ask(channel)
                        if asked is None:
                            self._resync.add(channel)
                            return
                await asyncio.shield(asked)
        except TimeoutError:
            # its confirmation (or the next reconnection) resolves the future others may share
            self._resync.add(channel)

    async def _ask(self, channel: str) -> asyncio.Future[None] | None:
        """Sends SUBSCRIBE (under `_commands`) on a connected pub/sub, never one being connected:
        redis-py's connect() is not for two tasks at once, and the reader's reconnection
        subscribes every wanted channel. None when not sent."""
        pubsub = self._connected()
        if pubsub is None:
            return None
        asked: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._asked[channel] = asked
        try:
            await pubsub.subscribe(channel)
        except BaseException as exc:
            # not known to be sent (a failure, or this registrant cancelled): nobody waits on it
            self._asked.pop(channel, None)
            if not asked.done():
                asked.set_result(None)
            if not isinstance(exc, Exception):
                raise  # cancelled, or _subscribe's time is up (it marks the channel for RESYNC)
            return None
        return asked

    def _connected(self) -> PubSub | None:
        """The pub/sub to send a command on: live and connected, never one being (re)connected."""
        pubsub = self._pubsub
        connection = pubsub.connection if pubsub is not None else None
        if not self._live or connection is None or not connection.is_connected:
            return None
        return pubsub

    def _leave(self, channel: str) -> None:
        if channel == HUB_CHANNEL:  # always subscribed: its confirmation is what `ready` means
            return
        if channel not in self._leaving:  # one UNSUBSCRIBE on its way is enough
            self._leaving.add(channel)
            self._spawn(self._unsubscribe(channel))

    async def _unsubscribe(self, channel: str) -> None:
        try:
            async with self._commands:
                if channel in self._queues or channel in self._watchers or channel not in self._confirmed:
                    return  # wanted again meanwhile, or not subscribed on this connection
                self._confirmed.discard(channel)
                pubsub = self._connected()
                if pubsub is not None:
                    with contextlib.suppress(Exception):  # a lost connection forgets it anyway
                        await pubsub.unsubscribe(channel)
        finally:
            self._leaving.discard(channel)

    def _spawn(self, work: Coroutine[Any, Any, None]) -> None:
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:  # a generator finalised outside the loop: the process is ending
            work.close()
            return
        task = loop.create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _confirm(self, channel: str) -> None:
        """Redis confirmed `channel`: from here on nothing published on it is missed."""
        again = channel in self._confirmed  # redis-py reconnected and subscribed again by itself
        self._confirmed.add(channel)
        asked = self._asked.pop(channel, None)
        if asked is not None and not asked.done():
            asked.set_result(None)
        if channel == HUB_CHANNEL:  # confirmed after the channels wanted when the connection was made
            if again:
                log.warning("progress.hub_resubscribed")
            self.ready.set()
            wanted = set(self._wanted())
            due = {c for c in self._resync if c in self._confirmed}
            self._resync = {c for c in self._resync if c in wanted and c not in due}
            for lost in due:  # now that `ready` is set, which subscribers check when told
                self._lost(lost)
            if self._resync:  # wanted while redis-py remade the connection: never sent
                self._spawn(self._subscribe_all(list(self._resync)))
            return
        if again or channel in self._resync:
            if self.ready.is_set():
                self._resync.discard(channel)
                self._lost(channel)
            else:
                self._resync.add(channel)  # told once the connection is ready
        if channel not in self._queues and channel not in self._watchers:
            self._leave(channel)  # its subscriber left before the confirmation

    async def _subscribe_all(self, channels: list[str]) -> None:
        await asyncio.gather(*(self._subscribe(c) for c in channels))

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
        meanwhile were missed), whether it surfaces as an error (then this reconnects and
        subscribes again) or redis-py reconnected by itself (it retries, app/redis_client.py, and
        subscribes again): then a channel is confirmed again, which is how this notices."""
        while True:
            try:
                self._pubsub = self.redis.pubsub()
                async with self._commands:
                    await self._pubsub.subscribe(*self._wanted())
                    self._live = True
                async for message in self._pubsub.listen():
                    kind = message.get("type")
                    if kind == "subscribe":
                        self._confirm(message["channel"].decode())
                        continue
                    if kind != "message":
                        continue
                    channel = message["channel"].decode()
                    for handler in self._watchers.get(channel, ()):
                        handler(message["data"])
                    if channel not in self._queues:
                        if channel not in self._watchers:
                            self._leave(channel)  # its last subscriber left
                        continue
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
                self._live = False
                wanted = self._wanted()
                self._confirmed.clear()
                for asked in self._asked.values():  # their subscribers read now, and re-read later
                    if not asked.done():
                        asked.set_result(None)
                self._asked.clear()
                self._resync = set(wanted)  # and none that is no longer wanted
                for channel in wanted:  # now, so subscribers read the state as it is; and again
                    self._lost(channel)  # once subscribed again
                if self._pubsub is not None:
                    with contextlib.suppress(Exception):
                        await self._pubsub.aclose()  # type: ignore[no-untyped-call]
                await asyncio.sleep(0.5)

    def _lost(self, channel: str) -> None:
        for handler in self._watchers.get(channel, ()):
            handler(None)
        self._deliver(channel, RESYNC)
