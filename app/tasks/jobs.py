"""The jobs. Each takes ids, is safe to run twice, and leaves its outcome in PostgreSQL."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta

from taskiq import Context, TaskiqDepends

from app.services import notifications
from app.services.distribution import run_distribution, sweep
from app.tasks.broker import broker, settings
from app.tasks.dispatch import DISTRIBUTE, NOTIFY


async def _respect_rate_limit(context: Context) -> None:
    """Optional global limit (distributions per second, all workers): a counter per second in Redis."""
    limit = settings.rate_limit_per_second
    if not limit:
        return
    redis = context.state.redis
    while True:
        second = int(time.time())
        key = f"lw:rate:{second}"
        count = await redis.incr(key)
        if count == 1:
            await redis.expire(key, 5)
        if count <= limit:
            return
        await asyncio.sleep(second + 1 - time.time())


@broker.task(task_name=DISTRIBUTE)
async def distribute_run(
    run_id: str, lead_id: str | None = None, batch_id: str | None = None, context: Context = TaskiqDepends()
) -> None:
    state = context.state
    await _respect_rate_limit(context)
    execution = await run_distribution(
        state.db,
        run_id=uuid.UUID(run_id),
        lead_id=uuid.UUID(lead_id) if lead_id else None,
        batch_id=uuid.UUID(batch_id) if batch_id else None,
        settings=state.settings,
        publisher=state.publisher,
    )
    if execution.result is not None and execution.result.assigned:
        # separate job: a slow or dead mail server never holds up distributions
        await state.dispatcher.notify(execution.result.lead_id)


@broker.task(task_name=NOTIFY)
async def send_notifications(
    lead_id: str | None = None, notification_ids: list[str] | None = None, context: Context = TaskiqDepends()
) -> None:
    await notifications.deliver(
        context.state.db,
        settings=context.state.settings,
        lead_id=uuid.UUID(lead_id) if lead_id else None,
        notification_ids=[uuid.UUID(i) for i in notification_ids or []],
    )


@broker.task(task_name="leadwheel.sweep", schedule=[{"interval": settings.sweep_interval_seconds}])
async def sweep_task(context: Context = TaskiqDepends()) -> None:
    state = context.state
    await sweep(state.db, settings=state.settings, dispatcher=state.dispatcher)
    due = await notifications.due_notifications(
        state.db, stale_after=timedelta(seconds=state.settings.stale_after_seconds)
    )
    if due:
        await send_notifications.kiq(notification_ids=[str(i) for i in due])
