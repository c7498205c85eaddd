"""Subscriptions. Each registers with the process's ProgressHub first, then reads the state from
PostgreSQL, then relays live events with a higher seq: no gap, no duplicate. A subscriber that
overflows, or hears nothing for a while (a lost pub/sub message, Redis down), re-reads the state.
A live event another subscriber of the same document already received is sent directly
(app/resolvers/relay.py), for the subscriptions marked `shared_subscription` only.

Who watches what: run progress, niche feeds and batches are for operators (a run names every
candidate, why it was passed over and what it would have paid: other buyers' business); a
provider principal watches its own new assignments with `myAssignments`, whose messages are
executed for each subscriber (they reach Lead.attributes and principal-scoped fields)."""

from __future__ import annotations

import asyncio
import uuid
from collections import OrderedDict
from collections.abc import AsyncGenerator
from datetime import UTC, datetime, timedelta

import strawberry
from strawberry.permission import BasePermission

from app.db import Database
from app.errors import InvalidInput
from app.models.base import utcnow
from app.models.leads import Assignment as AssignmentRow
from app.progress.events import EventType, ProgressEvent
from app.progress.hub import QUEUE_SIZE, RESYNC, Item
from app.progress.publish import batch_channel, niche_channel, provider_channel, run_channel
from app.resolvers.context import Info
from app.resolvers.cost import page_size
from app.resolvers.permissions import CanRead, CanReadOwn
from app.resolvers.relay import Relay
from app.resolvers.sharing import shared_subscription
from app.schema.progress import BatchProgress, RunProgress
from app.schema.types import Assignment, AssignmentFeed
from app.services import _guards, batches, billing, leads, niches, runs
from app.services.audit import Actor

READ: list[type[BasePermission]] = [CanRead]
READ_OWN: list[type[BasePermission]] = [CanReadOwn]
RESYNC_AFTER_SECONDS = 5.0
# a feed that may have missed announcements re-reads what committed since its newest assignment,
# less this margin (assignments of concurrent distributions commit in any order of created_at)
FEED_CATCH_UP_MARGIN = timedelta(minutes=5)
FEED_SEEN_MAX = 1000


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


class _AssignedEvents:
    """A provider's announced assignment, read once per event for all of a process's feeds of
    that provider (as RunProgress converts each event once): the same payload object for each,
    executed per subscriber (myAssignments is not a shared subscription)."""

    def __init__(self, size: int = 2048) -> None:
        self.size = size
        self._found: OrderedDict[ProgressEvent, asyncio.Future[AssignmentFeed]] = OrderedDict()

    async def feed_of(self, db: Database, actor: Actor, event: ProgressEvent) -> AssignmentFeed:
        found = self._found.get(event)
        if found is None:
            found = self._found[event] = asyncio.get_running_loop().create_future()
            if len(self._found) > self.size:
                self._found.popitem(last=False)
            try:
                assert event.provider_id is not None
                rows = await leads.assignments_of_leads(
                    db,
                    actor=actor,
                    provider_id=event.provider_id,
                    lead_ids=[event.lead_id],
                )
                found.set_result(AssignmentFeed(snapshot=False, assignments=[Assignment.of(r) for r in rows]))
            except BaseException as exc:
                self._found.pop(event, None)
                found.set_exception(exc)
                found.exception()  # retrieved: a failed read is each waiter's error, not a loop warning
                raise
        return await asyncio.shield(found)


_assigned = _AssignedEvents()


class _Seen:
    """The assignments a feed has sent (bounded), and the newest one's time."""

    def __init__(self, rows: list[AssignmentRow]) -> None:
        self.ids: OrderedDict[uuid.UUID, None] = OrderedDict((r.id, None) for r in reversed(rows))
        self.newest = max((r.created_at for r in rows), default=utcnow())

    def new(self, assignments: list[Assignment]) -> list[Assignment]:
        fresh = [a for a in assignments if a.id not in self.ids]
        for a in fresh:
            self.ids[a.id] = None
            self.newest = max(self.newest, a.created_at)
        while len(self.ids) > FEED_SEEN_MAX:
            self.ids.popitem(last=False)
        return fresh


@strawberry.type
class Subscription:
    @strawberry.subscription(
        permission_classes=READ,
        description="A run's progress: its current state, then each committed step; completes after "
        "COMPLETED or FAILED. Give runId, or leadId for the lead's latest run. A lead with no run yet "
        "first gets one WAITING message (runId null), then its first run's progress: subscribe, then "
        "call distributeLead, and nothing is missed. NOT_FOUND: no such run, or no such lead. "
        "Operators only.",
    )
    @shared_subscription
    async def distribution_progress(
        self, info: Info, run_id: uuid.UUID | None = None, lead_id: uuid.UUID | None = None
    ) -> AsyncGenerator[RunProgress, None]:
        db, hub = info.context.db, info.context.hub
        actor = await info.context.actor()
        if (run_id is None) == (lead_id is None):
            raise InvalidInput("give exactly one of runId and leadId", field="runId")
        if run_id is None:
            assert lead_id is not None
            niche_id = await runs.lead_niche_id(db, lead_id, actor=actor)  # NOT_FOUND before streaming
            # registered before the read: a run created after it announces itself on the niche's
            # channel (its QUEUED event), so waiting cannot miss it
            niche_queue = await hub.register(niche_channel(niche_id))
            try:
                run_id = await runs.latest_run_id(db, lead_id, actor=actor)
                if run_id is None:
                    yield RunProgress.waiting(lead_id=lead_id, niche_id=niche_id, at=datetime.now(UTC))
                while run_id is None:
                    item = await _next(niche_queue)
                    if isinstance(item, tuple):
                        run_id = next((e.run_id for e in item if e.lead_id == lead_id), None)
                    else:  # overflow, silence or a lost Redis subscription: PostgreSQL says
                        run_id = await runs.latest_run_id(db, lead_id, actor=actor)
            finally:
                hub.unregister(niche_channel(niche_id), niche_queue)
        channel = run_channel(run_id)
        relay = Relay.of(info)
        queue = await hub.register(channel)  # before the snapshot: nothing published after it is missed
        try:
            state = RunProgress.of_run(*await runs.run_snapshot(db, run_id, actor=actor))
            yield state
            seq, done = state.seq, state.terminal
            while not done:
                item = await _next(queue)
                if isinstance(item, tuple):
                    fresh = []
                    for event in item:
                        if event.seq > seq and not done:
                            progress = RunProgress.of_event(event)
                            seq, done = progress.seq, progress.terminal
                            fresh.append(progress)
                    position = 0
                    while (position := await relay.send_from(fresh, position)) < len(fresh):
                        yield fresh[position]  # the full path: the first subscriber, or errors
                        position += 1
                    continue
                progress = RunProgress.of_run(*await runs.run_snapshot(db, run_id, actor=actor))
                if progress.seq <= seq:
                    continue
                seq, done = progress.seq, progress.terminal
                yield progress
        finally:
            hub.unregister(channel, queue)

    @strawberry.subscription(
        permission_classes=READ,
        description="Every committed step of every run of a niche. A subscriber that fell behind, or "
        "whose API lost its event stream for a while, then gets each run of the niche that changed "
        "since a few minutes before its last step as it is now (snapshot: true, at most 500), and no "
        "step older than that. Operators only.",
    )
    @shared_subscription
    async def niche_activity(self, info: Info, niche_id: uuid.UUID) -> AsyncGenerator[RunProgress, None]:
        db, actor = info.context.db, await info.context.actor()
        await niches.get_niche(db, niche_id, actor=actor)  # NOT_FOUND before streaming
        channel = niche_channel(niche_id)
        relay = Relay.of(info)
        hub = info.context.hub
        queue = await hub.register(channel)
        newest = utcnow()  # the newest step sent: a catch-up reads what changed since
        caught: dict[uuid.UUID, int] = {}  # the runs a catch-up sent, as read: older steps are not news
        left = 0  # messages until those steps can no longer arrive (at most a full queue was queued)
        try:
            while True:
                item = await queue.get()
                if isinstance(item, tuple):
                    newest = max(newest, item[-1].at)  # a message's steps are in order
                    events = item
                    if caught:
                        events = tuple(e for e in item if e.seq > caught.get(e.run_id, 0))
                        left -= 1
                        if not left:
                            caught = {}
                    fresh = [RunProgress.of_event(event) for event in events]
                elif not hub.ready.is_set():
                    continue  # Redis is away: the hub says so again once it is subscribed again
                else:  # RESYNC: steps were missed; the runs that changed meanwhile, as they are now
                    changed = await runs.niche_runs_since(
                        db, niche_id, newest - FEED_CATCH_UP_MARGIN, actor=actor
                    )
                    fresh = [RunProgress.of_run(run, niche_id) for run in changed]
                    caught, left = {run.id: run.seq for run in changed}, QUEUE_SIZE
                    newest = max([newest, *(run.updated_at for run in changed)])
                position = 0
                while (position := await relay.send_from(fresh, position)) < len(fresh):
                    yield fresh[position]  # the full path: the first subscriber, or errors
                    position += 1
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
        queue = await hub.register(channel)
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

    @strawberry.subscription(
        permission_classes=READ_OWN,
        description="A provider's new assignments as they commit, with the leads' attributes: first "
        "its `recent` newest (snapshot), then each new one. A provider principal watches its own "
        "(providerId optional; another's is NOT_FOUND); an operator gives providerId.",
    )
    @page_size("recent", of="assignments")  # the snapshot; each later message is one commit's
    async def my_assignments(
        self, info: Info, provider_id: uuid.UUID | None = None, recent: int = 20
    ) -> AsyncGenerator[AssignmentFeed, None]:
        context = info.context
        db, actor = context.db, await context.actor()
        provider = provider_id or actor.provider_id
        if provider is None:
            raise InvalidInput("an operator watches one provider: give providerId", field="providerId")
        _guards.bounded_int(recent, field="recent", minimum=0, maximum=100)
        await billing.get_provider(db, provider, actor=actor)  # NOT_FOUND before streaming
        channel = provider_channel(provider)
        # before the snapshot: nothing committed after it is missed
        queue = await context.hub.register(channel)
        try:
            rows = await leads.recent_assignments(db, actor=actor, provider_id=provider, limit=recent)
            # what had committed by now is not news, sent in the snapshot or not: a catch-up skips it
            known = await leads.assignments_since(
                db,
                actor=actor,
                provider_id=provider,
                since=utcnow() - FEED_CATCH_UP_MARGIN,
                limit=FEED_SEEN_MAX,
            )
            seen = _Seen([*known, *rows])
            context.fresh_loaders()  # the connection's context outlives messages: no stale, no growth
            yield AssignmentFeed(snapshot=True, assignments=[Assignment.of(r) for r in rows])
            while True:
                item = await queue.get()
                if isinstance(item, tuple):
                    for event in item:
                        if event.type is not EventType.ASSIGNED or event.provider_id != provider:
                            continue
                        feed = await _assigned.feed_of(db, actor, event)
                        if not seen.new(feed.assignments):
                            continue
                        context.fresh_loaders()
                        yield feed
                    continue
                # announcements may have been missed: what committed since, less a margin
                since = seen.newest - FEED_CATCH_UP_MARGIN
                caught_up = await leads.assignments_since(db, actor=actor, provider_id=provider, since=since)
                fresh = seen.new([Assignment.of(r) for r in caught_up])
                if fresh:
                    context.fresh_loaders()
                    yield AssignmentFeed(snapshot=False, assignments=fresh)
        finally:
            context.hub.unregister(channel, queue)
