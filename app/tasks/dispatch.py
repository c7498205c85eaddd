"""Dispatchers: TaskiqDispatcher sends jobs to the workers (by task name, through any broker
instance on the same stream); InlineDispatcher runs them in the calling process."""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from taskiq.kicker import AsyncKicker

from app.db import Database
from app.progress.events import ProgressEvent
from app.progress.publish import Publisher, add_publishes
from app.services import notifications
from app.services.dispatch import RunJob
from app.services.distribution import run_distribution
from app.settings import Settings
from app.tasks.broker import StreamBroker

DISTRIBUTE = "leadwheel.distribute_run"
NOTIFY = "leadwheel.send_notifications"


class TaskiqDispatcher:
    inline = False

    def __init__(self, broker: StreamBroker) -> None:
        self.broker = broker

    async def distribute(self, runs: Sequence[RunJob], announce: Sequence[ProgressEvent] = ()) -> None:
        """One round trip: the announcements, then the jobs (so no worker starts a run before its
        QUEUED event is out). A Redis error is raised: the runs are committed, and the sweep
        sends their jobs again once they are stale."""
        async with self.broker.redis() as redis:
            pipe = redis.pipeline(transaction=False)
            add_publishes(pipe, announce)
            for run in runs:
                self.broker.add_job(
                    pipe,
                    DISTRIBUTE,
                    str(run.run_id),
                    lead_id=str(run.lead_id),
                    batch_id=str(run.batch_id) if run.batch_id else None,
                )
            await pipe.execute()

    async def notify(self, lead_id: uuid.UUID) -> None:
        kicker: AsyncKicker[..., None] = AsyncKicker(NOTIFY, self.broker, {})
        await kicker.kiq(lead_id=str(lead_id))


class InlineDispatcher:
    inline = True

    def __init__(self, db: Database, settings: Settings, publisher: Publisher) -> None:
        self.db, self.settings, self.publisher = db, settings, publisher

    async def distribute(self, runs: Sequence[RunJob], announce: Sequence[ProgressEvent] = ()) -> None:
        await self.publisher.publish(announce)
        for run in runs:
            execution = await run_distribution(
                self.db,
                run_id=run.run_id,
                lead_id=run.lead_id,
                batch_id=run.batch_id,
                settings=self.settings,
                publisher=self.publisher,
            )
            if execution.result is not None and execution.result.assigned:
                await self.notify(execution.result.lead_id)

    async def notify(self, lead_id: uuid.UUID) -> None:
        await notifications.deliver(self.db, settings=self.settings, lead_id=lead_id)
