"""The jobs. Each takes ids, is safe to run twice, and leaves its outcome in PostgreSQL."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from datetime import timedelta

from taskiq import Context, TaskiqDepends

from app.progress.publish import add_publishes
from app.services import notifications
from app.services.execution import run_distribution
from app.services.sweep import sweep
from app.services.webhooks.claims import hold_stranded, sender_needed
from app.tasks import worker  # noqa: F401  (opens each worker process's resources)
from app.tasks.broker import ack_with, broker, settings
from app.tasks.dispatch import DISTRIBUTE, NOTIFY, SEND_UNSENT, SEND_WEBHOOKS, SENDER_QUEUED

log = logging.getLogger("leadwheel.tasks")


async def _respect_rate_limit(context: Context) -> None:
    """Optional global limit (distributions per second, all workers): a counter per second in Redis."""
    limit = context.state.settings.rate_limit_per_second
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
    run_id: str, lead_id: str, batch_id: str | None = None, context: Context = TaskiqDepends()
) -> None:
    """After the commit, one round trip: the run's progress events, the notification sender's
    wake when it assigned, and the acknowledgement of this job's message (ack_with)."""
    state = context.state
    await _respect_rate_limit(context)
    execution = await run_distribution(
        state.db,
        run_id=uuid.UUID(run_id),
        lead_id=uuid.UUID(lead_id),
        batch_id=uuid.UUID(batch_id) if batch_id else None,
        settings=state.settings,
        publisher=None,  # sent below, with the acknowledgement
        webhook_lease_seconds=state.settings.webhook_lease_seconds,
    )
    result = execution.result
    if result is not None:
        # this process's sender, at once (no job behind the queue's distributions): what is leased
        # to it without a claim; its requests run beside the job slots, so a slow or dead endpoint
        # never holds up distributions
        if result.webhooks_leased:
            state.webhook_sender.send_leased(result.webhooks_leased)
        if result.webhooks_due:
            state.webhook_sender.wake()
    pipe = broker.redis().pipeline(transaction=False)
    add_publishes(pipe, execution.events, batch_id=execution.batch_id)
    if result is not None and result.assigned:
        # sent by another job: a slow or dead mail server never holds up distributions; a lost
        # wake leaves the outbox's rows to the sweep
        state.dispatcher.add_notify(pipe)
    await ack_with(context, pipe)


@broker.task(task_name=SEND_UNSENT)
async def send_unsent_notifications(context: Context = TaskiqDepends()) -> None:
    state = context.state
    await state.redis.delete(SENDER_QUEUED)  # first: a distribution committed after this wakes another
    await notifications.deliver_unsent(state.db, settings=state.settings)


@broker.task(task_name=SEND_WEBHOOKS)
async def send_webhooks(context: Context = TaskiqDepends()) -> None:
    """Wakes this process's webhook sender and returns: the sender's requests run beside the job
    slots (app/services/webhooks/sender.py), so a slow endpoint never holds one. The sender clears
    the wake's mark when it runs out of work, so while it works commits queue no more jobs."""
    context.state.webhook_sender.wake(by_job=True)


@broker.task(task_name=NOTIFY)
async def send_notifications(notification_ids: list[str], context: Context = TaskiqDepends()) -> None:
    """The given notifications: the sweep's retries and first sends whose job was lost."""
    state = context.state
    ids = [uuid.UUID(i) for i in notification_ids]
    await notifications.deliver(state.db, settings=state.settings, notification_ids=ids)


# a schedule is fixed when tasks are declared: from the broker's settings, the object the jobs
# read as context.state.settings
@broker.task(task_name="leadwheel.sweep", schedule=[{"interval": settings.sweep_interval_seconds}])
async def sweep_task(context: Context = TaskiqDepends()) -> None:
    state = context.state
    await sweep(state.db, settings=state.settings, dispatcher=state.dispatcher)
    due = await notifications.due_notifications(
        state.db, stale_after=timedelta(seconds=state.settings.stale_after_seconds)
    )
    if due:
        await send_notifications.kiq(notification_ids=[str(i) for i in due])
    # webhook retries that are due, and deliveries whose wake or sender was lost (a dead worker's
    # endpoints, a Redis restarted empty): a job whatever the wake's mark
    if await sender_needed(state.db, stale_after=state.settings.stale_after_seconds):
        await send_webhooks.kiq()
    # what endpoints disabled by a sender that died before holding their backlog still have due
    # (waits on no lock; what it cannot hold now it holds at a later tick)
    await hold_stranded(state.db, stale_after=state.settings.stale_after_seconds)
