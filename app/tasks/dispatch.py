"""Dispatchers: TaskiqDispatcher sends jobs to the workers (by task name, through any broker
instance on the same stream); InlineDispatcher runs them in the calling process."""

from __future__ import annotations

from collections.abc import Sequence

from redis.asyncio.client import Pipeline

from app.db import Database
from app.progress.events import ProgressEvent
from app.progress.publish import Publisher, add_publishes
from app.services import notifications
from app.services.dispatch import RunJob
from app.services.execution import run_distribution
from app.services.webhooks import sender as webhook_sender
from app.settings import Settings
from app.tasks.broker import StreamBroker

DISTRIBUTE = "leadwheel.distribute_run"
NOTIFY = "leadwheel.send_notifications"  # given notifications (the sweep's retries)
SEND_UNSENT = "leadwheel.send_unsent_notifications"  # every first send: woken after distributions
SEND_WEBHOOKS = "leadwheel.send_webhooks"  # wakes a worker process's webhook sender

# Set while a sender job is queued; the sender deletes it before it reads the outbox, so a wake
# after that queues another one and no committed notification waits for the sweep. It expires in
# case its job is lost (the sweep sends what that job would have).
SENDER_QUEUED = "lw:notifications:sender-queued"
SENDER_QUEUED_TTL_MS = 30_000
# The same for the webhook sender's wake (commits in the API), cleared by a sender when it runs
# out of work, so a run of wakes while it works queues no more jobs.
WEBHOOKS_QUEUED = "lw:webhooks:sender-queued"
# Queues each sender (KEYS[2..], entries ARGV[4..]) unless one is already queued: SET NX and XADD
# in one atomic round trip for all of them. KEYS[1] is the stream.
WAKE_SENDER = """
local queued = 0
for i = 2, #KEYS do
  if redis.call('SET', KEYS[i], '1', 'NX', 'PX', ARGV[1]) then
    if ARGV[2] == '0' then redis.call('XADD', KEYS[1], '*', 'data', ARGV[i + 2])
    else redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[3], ARGV[2], '*', 'data', ARGV[i + 2]) end
    queued = queued + 1
  end
end
return queued
"""


class TaskiqDispatcher:
    inline = False

    def __init__(self, broker: StreamBroker) -> None:
        self.broker = broker
        self._wake_sender = broker.redis().register_script(WAKE_SENDER)

    async def distribute(self, runs: Sequence[RunJob], announce: Sequence[ProgressEvent] = ()) -> None:
        """One round trip: the announcements, then the jobs (so no worker starts a run before its
        QUEUED event is out). A Redis error is raised: the runs are committed, and the sweep
        sends their jobs again once they are stale."""
        pipe = self.broker.redis().pipeline(transaction=False)
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

    async def notify(self) -> None:
        """Wakes the sender: one job sends the outbox's first sends of every distribution since it
        was queued, instead of a job per distribution."""
        await self._wake((SENDER_QUEUED, SEND_UNSENT))

    async def wake_webhooks(self) -> None:
        """For commits outside the workers (the API: a redelivery, a test, an endpoint enabled;
        other events' enqueue_event). A worker's distribution wakes its own process's sender."""
        await self._wake((WEBHOOKS_QUEUED, SEND_WEBHOOKS))

    def add_notify(self, pipe: Pipeline) -> None:
        """notify() as one more command of `pipe` (a worker's commands after its commit). EVAL with
        the script's text: Redis runs it from its cache by hash, and a pipeline holding a Script
        object would first ask the server whether it knows it (a round trip of its own)."""
        keys, args = self._wake_arguments((SENDER_QUEUED, SEND_UNSENT))
        pipe.eval(WAKE_SENDER, len(keys), *keys, *args)

    async def _wake(self, *senders: tuple[str, str]) -> None:
        keys, args = self._wake_arguments(*senders)
        await self._wake_sender(keys=keys, args=args)

    def _wake_arguments(self, *senders: tuple[str, str]) -> tuple[list[str], list[str | int | bytes]]:
        broker = self.broker
        return (
            [broker.queue_name, *(mark for mark, _ in senders)],
            [
                SENDER_QUEUED_TTL_MS,
                broker.maxlen or 0,
                "~" if broker.approximate else "=",
                *(broker.entry(task) for _, task in senders),
            ],
        )


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
            result = execution.result
            if result is not None and result.assigned:
                await self.notify()
            if result is not None and result.webhooks_due:  # none leased: the runs lease none
                await self.wake_webhooks()

    async def notify(self) -> None:
        await notifications.deliver_unsent(self.db, settings=self.settings)

    async def wake_webhooks(self) -> None:
        """Sends what is due now, here: scripts and the demo have no workers."""
        await webhook_sender.send_due(self.db, self.settings)
