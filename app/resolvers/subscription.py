"""Subscriptions. Each registers with the process's ProgressHub first, then reads the state from
PostgreSQL, then relays live events with a higher seq: no gap, no duplicate. A subscriber that
overflows, or hears nothing for a while (a lost pub/sub message, Redis down), re-reads the state.
A live event another subscriber of the same document already received is sent directly
(app/resolvers/relay.py).

Run progress, niche feeds and batches are for operators: a run names every candidate, why it was
passed over and what it would have paid, other buyers' business."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncGenerator

import strawberry
from strawberry.permission import BasePermission

from app.errors import InvalidInput
from app.progress.events import ProgressEvent
from app.progress.hub import RESYNC, Item
from app.progress.publish import batch_channel, niche_channel, run_channel
from app.resolvers.context import Info
from app.resolvers.permissions import CanRead
from app.resolvers.relay import Relay
from app.schema.progress import BatchProgress, RunProgress
from app.services import batches, niches, runs

READ: list[type[BasePermission]] = [CanRead]
RESYNC_AFTER_SECONDS = 5.0


async def _next(queue: asyncio.Queue[Item]) -> Item:
    try:
        return await asyncio.wait_for(queue.get(), timeout=RESYNC_AFTER_SECONDS)
    except TimeoutError:
        return RESYNC


def to_batch_progress(s: batches.BatchState) -> BatchProgress:
    return BatchProgress(
        batch_id=s.batch_id,
        total=s.total,
        processed=s.processed,
        assigned=s.assigned,
        no_eligible=s.no_eligible,
        failed=s.failed,
        rate_per_second=round(s.rate_per_second, 2),
        eta_seconds=None if s.eta_seconds is None else round(s.eta_seconds, 1),
        done=s.done,
        revenue_cents=s.revenue_cents,
    )


@strawberry.type
class Subscription:
    @strawberry.subscription(
        permission_classes=READ,
        description="A run's progress: its current state, then each committed step; completes after "
        "COMPLETED or FAILED. Give runId, or leadId for the lead's latest run. Operators only.",
    )
    async def distribution_progress(
        self, info: Info, run_id: uuid.UUID | None = None, lead_id: uuid.UUID | None = None
    ) -> AsyncGenerator[RunProgress, None]:
        db, hub = info.context.db, info.context.hub
        actor = await info.context.actor()
        if (run_id is None) == (lead_id is None):
            raise InvalidInput("give exactly one of runId and leadId", field="runId")
        if run_id is None:
            assert lead_id is not None
            run_id = await runs.latest_run_id(db, lead_id, actor=actor)
        channel = run_channel(run_id)
        relay = Relay.of(info)
        queue = hub.register(channel)  # before the snapshot: nothing published after it is missed
        try:
            state = RunProgress.of_run(*await runs.run_snapshot(db, run_id, actor=actor))
            yield state
            seq, done = state.seq, state.terminal
            while not done:
                item = await _next(queue)
                if isinstance(item, ProgressEvent):
                    if item.seq <= seq:
                        continue
                    progress = RunProgress.of_event(item)
                    seq, done = progress.seq, progress.terminal
                    if relay is None or not await relay.send(progress):
                        yield progress
                    continue
                progress = RunProgress.of_run(*await runs.run_snapshot(db, run_id, actor=actor))
                if progress.seq <= seq:
                    continue
                seq, done = progress.seq, progress.terminal
                yield progress
        finally:
            hub.unregister(channel, queue)

    @strawberry.subscription(
        permission_classes=READ, description="Every committed step of every run of a niche. Operators only."
    )
    async def niche_activity(self, info: Info, niche_id: uuid.UUID) -> AsyncGenerator[RunProgress, None]:
        actor = await info.context.actor()
        await niches.get_niche(info.context.db, niche_id, actor=actor)  # NOT_FOUND before streaming
        channel = niche_channel(niche_id)
        relay = Relay.of(info)
        queue = info.context.hub.register(channel)
        try:
            while True:
                item = await queue.get()
                if isinstance(item, ProgressEvent):
                    progress = RunProgress.of_event(item)
                    if relay is None or not await relay.send(progress):
                        yield progress
        finally:
            info.context.hub.unregister(channel, queue)

    @strawberry.subscription(
        permission_classes=READ,
        description="A batch's counters (processed / total, assigned, no eligible, failed, rate, ETA), "
        "after each finished run; completes when every run has finished. Operators only.",
    )
    async def batch_progress(self, info: Info, batch_id: uuid.UUID) -> AsyncGenerator[BatchProgress, None]:
        db, hub = info.context.db, info.context.hub
        actor = await info.context.actor()
        channel = batch_channel(batch_id)
        queue = hub.register(channel)
        try:
            state = await batches.batch_state(db, batch_id, actor=actor)
            yield to_batch_progress(state)
            while not state.done:
                await _next(queue)
                while not queue.empty():  # one read for a burst of finished runs
                    queue.get_nowait()
                fresh = await batches.batch_state(db, batch_id, actor=actor)
                if fresh.processed != state.processed or fresh.done:
                    state = fresh
                    yield to_batch_progress(state)
        finally:
            hub.unregister(channel, queue)
