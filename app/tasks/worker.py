"""A worker process's resources, opened when it starts and closed when it stops: one database
engine, one Redis client, the dispatcher and the webhook sender (with its HTTP
client), kept on taskiq's state for the tasks."""

from __future__ import annotations

from taskiq import TaskiqEvents, TaskiqState

from app.db import create_database
from app.internals import check_all
from app.logging import configure_logging
from app.redis_client import connect as connect_redis
from app.runtime import tune_gc
from app.services.webhooks.outbound import make_client
from app.services.webhooks.sender import WebhookSender
from app.tasks.broker import broker, settings
from app.tasks.dispatch import WEBHOOKS_QUEUED, TaskiqDispatcher


@broker.on_event(TaskiqEvents.WORKER_STARTUP)
async def open_resources(state: TaskiqState) -> None:
    check_all()  # before anything is opened: a worker on changed library internals does not start
    configure_logging(settings)
    state.settings = settings
    state.db = create_database(str(settings.database_url), settings)
    state.redis = connect_redis(str(settings.redis_url))
    state.dispatcher = TaskiqDispatcher(broker)
    # one pooled HTTP client and one sender loop per process, started by its first wake; it clears
    # the wake's mark when it runs out of work
    state.webhook_sender = WebhookSender(
        state.db, settings, make_client(settings), on_idle=lambda: state.redis.delete(WEBHOOKS_QUEUED)
    )
    tune_gc()  # last: what start-up made lives as long as the process


@broker.on_event(TaskiqEvents.WORKER_SHUTDOWN)
async def close_resources(state: TaskiqState) -> None:
    await state.webhook_sender.close(grace_seconds=settings.webhook_timeout_seconds)
    await state.redis.aclose()
    await state.db.dispose()
