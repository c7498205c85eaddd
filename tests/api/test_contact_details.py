"""Lead contact details (SPEC §6): an admin and the buyers a lead was assigned to read them; a buyer
who did not get the lead reads nothing of it, and a read-only operator key reads the lead without
them. In queries and nested fields."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from app.db import Database
from tests.api.conftest import Api, error_code
from tests.api.world import build_world

LEAD = "query($id: UUID!) { lead(id: $id) { attributes assignments { providerId } } }"
ASSIGNMENTS = """query($l: UUID!) { assignments(leadId: $l) { edges { node { providerId
  lead { attributes } } } } }"""


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
        listed = await api.gql(ASSIGNMENTS, {"l": str(b.lead)}, token=token)
        assert listed["data"]["assignments"]["edges"] == []
        shared = (await lead(token, w.shared_lead))["data"]["lead"]
        assert shared["attributes"] == {**w.shared_contact, "state": "OK"}  # both bought it
        assert shared["assignments"] == [{"providerId": str(a.provider)}]  # not the other buyer's
    via_assignment = await api.gql(ASSIGNMENTS, {"l": str(a.lead)}, token=b.user_token)
    assert via_assignment["data"]["assignments"]["edges"] == []
