"""The permission matrix: every scope against every kind of operation."""

import pytest

from app.db import Database
from app.services import auth
from app.services.audit import SYSTEM
from tests.api.conftest import Api, error_code

OPERATIONS = {
    "read": "{ niches { id } }",
    "admin": 'mutation { createNiche(name: "X") { id } }',
    "leads:write": 'mutation { submitLead(nicheId: "00000000-0000-0000-0000-000000000001", attributes: {}) { id } }',
    "distribution:write": 'mutation { distributeLead(leadId: "00000000-0000-0000-0000-000000000001") { id } }',
    "user-only": 'mutation { createApiKey(name: "k", scopes: ["read"]) { secret } }',
}


@pytest.mark.parametrize("scope", ["read", "leads:write", "distribution:write", "admin"])
async def test_each_scope_allows_exactly_its_operations(api: Api, db: Database, scope: str) -> None:
    key = (await auth.create_api_key(db, actor=SYSTEM, name=scope, scopes=[scope])).secret
    for needs, query in OPERATIONS.items():
        body = await api.gql(query, token=key)
        code = error_code(body) if body.get("errors") else None
        if needs == "user-only":
            assert code == "FORBIDDEN", (scope, needs, body)
        elif needs == scope:
            assert code != "FORBIDDEN", (scope, needs, body)  # allowed (NOT_FOUND is fine: fake ids)
        else:
            assert code == "FORBIDDEN", (scope, needs, body)
            assert scope in body["errors"][0]["message"] or needs in body["errors"][0]["message"]


async def test_admin_user_may_do_everything(admin_api: Api) -> None:
    for needs, query in OPERATIONS.items():
        body = await admin_api.gql(query)
        assert not body.get("errors") or error_code(body) in ("NOT_FOUND",), (needs, body)


async def test_contact_details_only_for_admins(admin_api: Api, db: Database) -> None:
    niche = (await admin_api.ok('mutation { createNiche(name: "N") { id } }'))["createNiche"]["id"]
    lead = (
        await admin_api.ok(
            'mutation($n: UUID!) { submitLead(nicheId: $n, attributes: {name: "Pat", email: "p@x.test", state: "TX"}) { id } }',
            {"n": niche},
        )
    )["submitLead"]["id"]
    reader = (await auth.create_api_key(db, actor=SYSTEM, name="r", scopes=["read"])).secret
    seen = await admin_api.ok(
        "query($id: UUID!) { lead(id: $id) { attributes } }", {"id": lead}, token=reader
    )
    assert seen["lead"]["attributes"] == {"state": "TX"}
    full = await admin_api.ok("query($id: UUID!) { lead(id: $id) { attributes } }", {"id": lead})
    assert full["lead"]["attributes"]["email"] == "p@x.test"
