"""Live events relayed directly (app/resolvers/relay.py) over real WebSockets to a real API
process: every subscriber of the same document receives byte for byte what the full GraphQL path
sends; another selection or another niche gets its own; a run's progress still completes after
its terminal event on the direct path."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
from redis.asyncio import Redis

from app.db import Database
from app.progress.events import EventType, ProgressEvent
from app.progress.publish import RedisPublisher
from app.wsclient import subscription
from tests.factories import make_lead, make_niche, make_provider, subscribe
from tests.tasks.conftest import Stack, WsSubscription, gql, wait_for

FEED = "subscription($n: UUID!) { nicheActivity(nicheId: $n) { runId seq type levelName priceCents at } }"
OTHER_SELECTION = "subscription($n: UUID!) { nicheActivity(nicheId: $n) { seq providerId } }"
PROGRESS = "subscription($run: UUID!) { distributionProgress(runId: $run) { seq type runStatus } }"
DISTRIBUTE = "mutation($id: UUID!) { distributeLead(leadId: $id) { id } }"


class RawFeed:
    """One subscription's frames, as the server wrote them."""

    def __init__(self, base: str, token: str, query: str, variables: dict[str, Any]) -> None:
        self.url = base.replace("http://", "ws://") + "/graphql"
        self.token, self.query, self.variables = token, query, variables
        self.frames: list[str] = []
        self.task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async with subscription(self.url, self.token, self.query, self.variables) as ws:
            async for raw in ws:
                self.frames.append(str(raw))

    def payloads(self) -> list[str]:
        """Each frame without its operation id (the one part that differs between subscribers)."""
        return [frame.split('"payload":', 1)[1] for frame in self.frames]


async def _metric(base: str, name: str) -> float:
    async with httpx.AsyncClient() as client:
        text = (await client.get(f"{base}/metrics")).text
    found = re.search(rf"^{name} (\S+)$", text, re.M)
    assert found, text
    return float(found.group(1))


def _run_events(niche_id: uuid.UUID) -> list[ProgressEvent]:
    run, lead, at = uuid.uuid4(), uuid.uuid4(), datetime.now(UTC)
    kinds = [
        EventType.STARTED,
        EventType.LEVEL_STARTED,
        EventType.ASSIGNED,
        EventType.SKIPPED,
        EventType.COMPLETED,
    ]
    return [
        ProgressEvent(
            run_id=run,
            lead_id=lead,
            niche_id=niche_id,
            seq=seq,
            type=kind,
            at=at,
            level_name="Gold" if kind is EventType.ASSIGNED else None,
            price_cents=4500 if kind is EventType.ASSIGNED else None,
            provider_id=uuid.uuid4() if kind is EventType.ASSIGNED else None,
            outcome="SUCCESS" if kind is EventType.COMPLETED else None,
        )
        for seq, kind in enumerate(kinds, start=2)
    ]


async def test_relayed_events_are_what_the_full_path_sends(
    db: Database, stack: Stack, token: str, redis: Redis
) -> None:
    niche, _ = await make_niche(db)
    elsewhere, _ = await make_niche(db)
    api = await stack.api()
    same = [RawFeed(api, token, FEED, {"n": str(niche.id)}) for _ in range(4)]
    other = RawFeed(api, token, OTHER_SELECTION, {"n": str(niche.id)})
    quiet = RawFeed(api, token, FEED, {"n": str(elsewhere.id)})
    await wait_for(lambda: _subscribed(api, 6))
    relayed_before = await _metric(api, "lw_relayed_events")
    batched_before = await _metric(api, "lw_relayed_frames_batched")
    runs = [_run_events(niche.id) for _ in range(2)]
    for events in runs:
        await RedisPublisher(redis).publish(events)
    await wait_for(lambda: _all_have([*same, other], 10))
    try:
        first = same[0].payloads()
        assert all(feed.payloads() == first for feed in same[1:])
        received = [json.loads(f)["payload"]["data"]["nicheActivity"] for f in same[0].frames]
        assert [(e["seq"], e["type"]) for e in received] == [(e.seq, e.type.value) for r in runs for e in r]
        assert received[2]["levelName"] == "Gold" and received[2]["priceCents"] == 4500
        assert received[0]["at"] == runs[0][0].at.isoformat()
        others = [json.loads(f)["payload"]["data"]["nicheActivity"] for f in other.frames]
        assert others[2] == {"seq": 4, "providerId": str(runs[0][2].provider_id)}
        await asyncio.sleep(0.2)
        assert quiet.frames == []
        # one of the four executed each event; at least one other had it relayed
        relayed = await _metric(api, "lw_relayed_events") - relayed_before
        assert 10 <= relayed <= 30
        # served by uvicorn as in production: written through its protocol, one write per message
        assert await _metric(api, "lw_relayed_frames_batched") - batched_before == relayed
    finally:
        for feed in [*same, other, quiet]:
            feed.task.cancel()


async def _subscribed(api: str, n: int) -> bool:
    return await _metric(api, "lw_live_subscribers") == n


async def _all_have(feeds: list[RawFeed], n: int) -> bool:
    return all(len(feed.frames) >= n for feed in feeds)


async def test_progress_relayed_directly_still_completes(db: Database, stack: Stack, token: str) -> None:
    niche, (level,) = await make_niche(db, levels=[(4500, 2)])
    for _ in range(2):
        await subscribe(db, await make_provider(db, balance_cents=10_000), level)
    lead = await make_lead(db, niche)
    api = await stack.api()
    run = (await gql(api, token, DISTRIBUTE, {"id": str(lead.id)}))["distributeLead"]  # no worker yet
    watchers = [WsSubscription(api, token, PROGRESS, {"run": run["id"]}) for _ in range(3)]
    for watcher in watchers:
        await watcher.__aenter__()
    try:
        for watcher in watchers:
            await asyncio.wait_for(watcher.first.wait(), 10)  # the QUEUED state, from PostgreSQL
        stack.worker()
        seen = [await watcher.wait() for watcher in watchers]
    finally:
        for watcher in watchers:
            await watcher.__aexit__(None, None, None)
    assert all(events == seen[0] for events in seen)
    assert [e["type"] for e in seen[0]] == [
        "QUEUED",
        "STARTED",
        "LEVEL_STARTED",
        "ASSIGNED",
        "ASSIGNED",
        "COMPLETED",
    ]
    assert seen[0][-1]["runStatus"] == "SUCCESS"
    assert [e["seq"] for e in seen[0]] == list(range(1, 7))
