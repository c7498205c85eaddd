"""Lead contact details (SPEC §6): an admin and the buyers a lead was assigned to read them; a buyer
who did not get the lead reads nothing of it, and a read-only operator key reads the lead without
them. In queries, nested fields, and the live feed (myAssignments, snapshot and new assignments)."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from redis.asyncio import Redis

from app.db import Database
from app.engine.distribute import distribute_lead
from app.progress.publish import RedisPublisher
from tests.api.conftest import Api, error_code
from tests.api.world import InProcess, World, build_world
from tests.factories import make_lead

LEAD = "query($id: UUID!) { lead(id: $id) { attributes assignments { providerId } } }"
ASSIGNMENTS = """query($l: UUID!) { assignments(leadId: $l) { edges { node { providerId
  lead { attributes } } } } }"""
FEED = """subscription($p: UUID) { myAssignments(providerId: $p, recent: 5) { snapshot
  assignments { leadId lead { attributes assignments { providerId } } } } }"""


async def test_in_queries(api: Api, db: Database, redis: Redis) -> None:
    w = await build_world(db, redis)
    a, b = w.a, w.b

    async def lead(token: str, lead_id: Any) -> dict[str, Any]:
        return await api.gql(LEAD, {"id": str(lead_id)}, token=token)

    full_a = {**a.contact, "state": "TX"}
    assert (await lead(w.admin_token, a.lead))["data"]["lead"]["attributes"] == full_a
    assert (await lead(w.read_key, a.lead))["data"]["lead"]["attributes"] == {"state": "TX"}
    for token in (a.user_token, a.key_secret):  # its buyer: its user and its key
        seen = (await lead(token, a.lead))["data"]["lead"]
        assert seen == {"attributes": full_a, "assignments": [{"providerId": str(a.provider)}]}
        assert error_code(await lead(token, b.lead)) == "NOT_FOUND"  # not its lead: absent
        # not its lead: NOT_FOUND, as for a lead that does not exist (SPEC §10)
        assert error_code(await api.gql(ASSIGNMENTS, {"l": str(b.lead)}, token=token)) == "NOT_FOUND"
        mine = (await api.gql(ASSIGNMENTS, {"l": str(a.lead)}, token=token))["data"]["assignments"]["edges"]
        assert mine == [{"node": {"providerId": str(a.provider), "lead": {"attributes": full_a}}}]
        shared = (await lead(token, w.shared_lead))["data"]["lead"]
        assert shared["attributes"] == {**w.shared_contact, "state": "OK"}  # both bought it
        assert shared["assignments"] == [{"providerId": str(a.provider)}]  # not the other buyer's
    via_assignment = await api.gql(ASSIGNMENTS, {"l": str(a.lead)}, token=b.user_token)
    assert error_code(via_assignment) == "NOT_FOUND"
    assert via_assignment.get("data") is None
    missing_id = uuid.uuid4()
    missing = await api.gql(ASSIGNMENTS, {"l": str(missing_id)}, token=b.user_token)
    # the same answer for a lead that exists as for one that does not: nothing tells them apart
    assert _message(via_assignment, a.lead) == _message(missing, missing_id) == "lead <id> does not exist"
    # an operator: a lead's assignments, none for a lead that does not exist
    admin_listed = await api.ok(ASSIGNMENTS, {"l": str(a.lead)}, token=w.admin_token)
    assert [e["node"]["providerId"] for e in admin_listed["assignments"]["edges"]] == [str(a.provider)]
    admin_missing = await api.ok(ASSIGNMENTS, {"l": str(missing_id)}, token=w.admin_token)
    assert admin_missing["assignments"]["edges"] == []


def _message(body: dict[str, Any], asked: Any) -> str:
    return str(body["errors"][0]["message"]).replace(str(asked), "<id>")


async def _first(stream: Any) -> Any:
    result = await asyncio.wait_for(anext(stream), 10)
    assert not result.errors, result.errors
    return result.data["myAssignments"]


async def test_in_the_live_feed(db: Database, redis: Redis) -> None:
    w: World = await build_world(db, redis)
    a, b = w.a, w.b
    async with InProcess(db, redis) as live:
        feeds = {
            "admin": await live.subscribe(FEED, {"p": str(a.provider)}, w.admin_token),
            "reader": await live.subscribe(FEED, {"p": str(a.provider)}, w.read_key),
            "a": await live.subscribe(FEED, {"p": str(a.provider)}, a.user_token),
            "b": await live.subscribe(FEED, {}, b.user_token),
        }
        try:
            snapshots = {name: await _first(stream) for name, stream in feeds.items()}
            by_lead = {x["leadId"]: x["lead"] for x in snapshots["a"]["assignments"]}
            assert snapshots["a"]["snapshot"] is True
            assert by_lead[str(a.lead)]["attributes"] == {**a.contact, "state": "TX"}
            assert str(a.lead) not in {x["leadId"] for x in snapshots["b"]["assignments"]}
            reader = {x["leadId"]: x["lead"] for x in snapshots["reader"]["assignments"]}
            assert reader[str(a.lead)]["attributes"] == {"state": "TX"}

            # a new lead in the niche both buy from: each feed gets it as it commits
            contact = {"name": "Lee New", "email": "lee@new.test"}
            niche = await _niche_of(db, w)
            new = await make_lead(db, niche, {**contact, "state": "OK"})
            result = await distribute_lead(db, lead_id=new.id)
            assert len(result.assigned) == 2
            await RedisPublisher(redis).publish(result.events)  # what the worker does after commit
            got = {name: await _first(stream) for name, stream in feeds.items()}
        finally:
            for stream in feeds.values():
                await stream.aclose()
    for name in ("admin", "a", "b"):
        (item,) = got[name]["assignments"]
        assert got[name]["snapshot"] is False and item["leadId"] == str(new.id)
        assert item["lead"]["attributes"] == {**contact, "state": "OK"}  # admin and both buyers
    (reader_item,) = got["reader"]["assignments"]
    assert reader_item["lead"]["attributes"] == {"state": "OK"}  # a read-only key: no contact details
    # one payload object for all of them, each executed for its own principal
    assert {x["providerId"] for x in got["admin"]["assignments"][0]["lead"]["assignments"]} == {
        str(a.provider),
        str(b.provider),
    }
    assert got["a"]["assignments"][0]["lead"]["assignments"] == [{"providerId": str(a.provider)}]
    assert got["b"]["assignments"][0]["lead"]["assignments"] == [{"providerId": str(b.provider)}]


async def _niche_of(db: Database, w: World) -> Any:
    """The niche of the lead both sides bought."""
    from app.services import leads, niches
    from app.services.audit import SYSTEM

    shared = await leads.get_lead(db, w.shared_lead, actor=SYSTEM)
    return await niches.get_niche(db, shared.niche_id, actor=SYSTEM)
