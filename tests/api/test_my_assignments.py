"""myAssignments: snapshot first, then each new assignment as it commits; an announcement lost
with the hub's Redis connection is caught up from PostgreSQL; an operator names the provider."""

from __future__ import annotations

import asyncio
from typing import Any

from redis.asyncio import Redis

from app.db import Database
from app.engine.distribute import distribute_lead
from app.progress.publish import RedisPublisher
from tests.api.world import InProcess, build_world
from tests.factories import make_lead

FEED = "subscription($p: UUID, $r: Int!) { myAssignments(providerId: $p, recent: $r) { snapshot assignments { leadId } } }"


async def _next(stream: Any) -> Any:
    return await asyncio.wait_for(anext(stream), 10)


async def test_snapshot_live_and_catch_up(db: Database, redis: Redis) -> None:
    w = await build_world(db, redis)
    async with InProcess(db, redis) as live:
        stream = await live.subscribe(FEED, {"r": 1}, w.a.user_token)
        try:
            first = (await _next(stream)).data["myAssignments"]
            assert first["snapshot"] is True and len(first["assignments"]) == 1  # the newest one
            niche = await _lead_niche(db, w.a.lead)
            announced = await make_lead(db, niche)
            result = await distribute_lead(db, lead_id=announced.id)
            await RedisPublisher(redis).publish(result.events)
            second = (await _next(stream)).data["myAssignments"]
            assert second == {"snapshot": False, "assignments": [{"leadId": str(announced.id)}]}
            silent = await make_lead(db, niche)
            await distribute_lead(db, lead_id=silent.id)  # committed, but its announcement is lost:
            await redis.execute_command("CLIENT", "KILL", "TYPE", "pubsub")  # the hub reconnects
            third = (await _next(stream)).data["myAssignments"]
            assert third == {"snapshot": False, "assignments": [{"leadId": str(silent.id)}]}
        finally:
            await stream.aclose()


async def test_an_operator_names_the_provider(db: Database, redis: Redis) -> None:
    w = await build_world(db, redis)
    async with InProcess(db, redis) as live:
        for variables, code in (
            ({"r": 5}, "INVALID_INPUT"),
            ({"p": str(w.a.provider), "r": 101}, "INVALID_INPUT"),
        ):
            stream = await live.subscribe(FEED, variables, w.admin_token)
            result = await _next(stream)
            await stream.aclose()
            assert result.errors and result.errors[0].extensions["code"] == code


async def _lead_niche(db: Database, lead_id: Any) -> Any:
    from app.services import leads, niches
    from app.services.audit import SYSTEM

    lead = await leads.get_lead(db, lead_id, actor=SYSTEM)
    return await niches.get_niche(db, lead.niche_id, actor=SYSTEM)
