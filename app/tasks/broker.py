"""The taskiq-redis stream broker. Workers acknowledge a message after its task has run (the CLI
is started with --ack-type when_executed), so a killed worker's job stays pending and is
reclaimed after `queue_idle_timeout_ms`; the stream is bounded by `queue_maxlen`. Tasks take ids,
are idempotent, and PostgreSQL's sweep re-sends whatever a lost message would have done.

Workers: `leadwheel worker` (taskiq worker app.tasks.broker:broker app.tasks.jobs …)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from contextvars import ContextVar

from redis.asyncio import Redis
from redis.asyncio.client import Pipeline
from redis.exceptions import RedisError, ResponseError
from taskiq import BrokerMessage, Context
from taskiq_redis import RedisStreamBroker

from app.internals.taskiq import task_message
from app.redis_client import retrying
from app.settings import Settings, get_settings

QUEUE = "leadwheel:jobs"
CONSUMER_GROUP = "leadwheel-workers"

log = logging.getLogger("leadwheel.tasks")

# Commands a running job sends together with its message's acknowledgement (ack_with): set only
# while that job's own ack runs, in its own task
_WITH_ACK: ContextVar[Pipeline | None] = ContextVar("leadwheel_with_ack", default=None)


class StreamBroker(RedisStreamBroker):
    """taskiq-redis's stream broker, able to queue a job on a pipeline of other commands: the API
    publishes a run's QUEUED event and sends its job in one round trip, and a batch's jobs go in
    one. The entry is what RedisStreamBroker.kick writes; the workers read it unchanged. The taskiq
    and taskiq-redis internals this relies on are listed and checked in app/internals/."""

    _client: Redis | None = None

    def redis(self) -> Redis:
        """One client on the broker's pool, reused: building a redis-py client copies its table of
        response callbacks, which cost a worker 3% of its CPU when done for every ack and kick."""
        if self._client is None:
            self._client = Redis(connection_pool=self.connection_pool)
        return self._client

    def entry(self, task_name: str, *args: str, **kwargs: str | None) -> bytes:
        """A job's stream entry, as RedisStreamBroker.kick writes it."""
        return self.formatter.dumps(task_message(self, task_name, list(args), kwargs)).message

    def add_job(self, pipe: Pipeline, task_name: str, *args: str, **kwargs: str | None) -> None:
        pipe.xadd(
            self.queue_name,
            {b"data": self.entry(task_name, *args, **kwargs)},
            maxlen=self.maxlen,
            approximate=self.approximate,
        )

    async def kick(self, message: BrokerMessage) -> None:
        await self.redis().xadd(
            message.labels.get("queue_name") or self.queue_name,
            {b"data": message.message},
            maxlen=self.maxlen,
            approximate=self.approximate,
        )

    def _ack_generator(self, id: str, queue_name: str) -> Callable[[], Awaitable[None]]:  # noqa: A002
        async def ack() -> None:
            pipe = _WITH_ACK.get()
            if pipe is None:
                await self.redis().xack(queue_name, self.consumer_group_name, id)
                return
            pipe.xack(queue_name, self.consumer_group_name, id)
            *sent, acked = await pipe.execute(raise_on_error=False)
            for reply in sent:
                if isinstance(reply, Exception):  # best effort (events, wakes): see ack_with
                    log.warning("tasks.sent_with_ack_failed: %s", reply)
            if isinstance(acked, Exception):
                raise acked

        return ack


async def ack_with(context: Context, pipe: Pipeline) -> None:
    """Sends `pipe` (a job's progress events and wakes, after its commit) and then acknowledges the
    job's message, in one round trip instead of one each: Redis runs a pipeline's commands in
    order, so this is the order the job would send them in itself. What `pipe` carries is best
    effort: a failed command is logged; with Redis unreachable nothing is acknowledged here, and
    taskiq's own acknowledgement after the job (a no-op once acknowledged) tries again. A message
    that is not ackable, or was acknowledged already, only gets the pipeline."""
    if not context.is_ackable or context.is_acked:
        try:
            await pipe.execute(raise_on_error=False)
        except RedisError:
            log.warning("tasks.send_failed", exc_info=True)
        return
    token = _WITH_ACK.set(pipe)
    try:
        await context.ack()
    except RedisError:
        log.warning("tasks.send_with_ack_failed", exc_info=True)
    finally:
        _WITH_ACK.reset(token)


def make_broker(redis_url: str, settings: Settings) -> StreamBroker:
    return StreamBroker(
        url=redis_url,
        queue_name=QUEUE,
        consumer_group_name=CONSUMER_GROUP,
        maxlen=settings.queue_maxlen,
        idle_timeout=settings.queue_idle_timeout_ms,
        xread_block=1000,
        unacknowledged_batch_size=100,
        **retrying(),
    )


# The worker's settings: read once, here, where the broker needs its URL; the tasks read this same
# object as context.state.settings (app/tasks/worker.py).
settings = get_settings()
broker = make_broker(settings.redis_url or "redis://127.0.0.1:6379/0", settings)


def worker_argv(settings: Settings, *, processes: int | None = None) -> list[str]:
    """The taskiq CLI arguments `leadwheel worker` runs."""
    return [
        "worker",
        "app.tasks.broker:broker",
        "app.tasks.jobs",
        "--log-level",
        settings.log_level.value,
        "--ack-type",
        "when_executed",
        "--workers",
        str(processes or settings.worker_processes),
        "--max-async-tasks",
        str(settings.worker_concurrency),
        "--wait-tasks-timeout",
        "30",
        "--shutdown-timeout",
        "35",
    ]


def scheduler_argv(settings: Settings) -> list[str]:
    """The taskiq CLI arguments `leadwheel scheduler` runs."""
    return ["scheduler", "app.tasks.scheduler:scheduler", "--log-level", settings.log_level.value]


async def job_delivered_since(redis: Redis, since_ms: int) -> bool:
    """True once a job added to the stream at or after `since_ms` (Redis's clock, in ms) has been
    handed to a worker: the scheduler sends (its sweep, every second) and a worker reads."""
    try:
        groups = await redis.xinfo_groups(QUEUE)
    except ResponseError:  # no stream yet
        return False
    for group in groups:
        if _text(group.get("name")) == CONSUMER_GROUP:
            delivered = _text(group.get("last-delivered-id")) or "0-0"
            return int(delivered.split("-")[0]) >= since_ms
    return False


def _text(value: object) -> str | None:
    return value.decode() if isinstance(value, bytes) else None if value is None else str(value)
