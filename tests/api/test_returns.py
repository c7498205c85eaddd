"""Returns over GraphQL: request, list, approve, reject, and the error codes clients see."""

from __future__ import annotations

import uuid

from app.db import Database
from app.services import auth
from app.services.audit import SYSTEM
from tests.api.conftest import Api, error_code
from tests.factories import backdate_assignments, make_assignment, make_niche, make_provider, subscribe
from tests.invariants import assert_invariants

FIELDS = """id status reason note leadId requestedBy decidedBy decidedAt decisionNote refundEntryId
  assignment { id priceChargedCents } provider { id balanceCents } lead { id }
  refundEntry { kind amountCents balanceAfterCents assignmentId }"""
REQUEST = f"""mutation($a: UUID!, $r: ReturnReason!, $n: String) {{
  requestReturn(assignmentId: $a, reason: $r, note: $n) {{ {FIELDS} }} }}"""
APPROVE = f"mutation($id: UUID!) {{ approveReturn(id: $id) {{ {FIELDS} }} }}"
REJECT = f"mutation($id: UUID!, $n: String!) {{ rejectReturn(id: $id, note: $n) {{ {FIELDS} }} }}"
LIST = """query($s: ReturnStatus, $p: UUID, $after: String) {
  returns(status: $s, providerId: $p, first: 1, after: $after) {
    edges { cursor node { id status } } pageInfo { hasNextPage endCursor } } }"""


async def test_request_list_approve_and_reject(admin_api: Api, db: Database) -> None:
    niche, (level,) = await make_niche(db, levels=[(1200, 1)])
    provider = await make_provider(db, balance_cents=3000)
    await subscribe(db, provider, level)
    first, second = [await make_assignment(db, niche, provider) for _ in range(2)]

    requested = (
        await admin_api.ok(
            REQUEST, {"a": str(first.assignment_id), "r": "INVALID_CONTACT", "n": "wrong number"}
        )
    )["requestReturn"]
    assert requested["status"] == "REQUESTED" and requested["refundEntry"] is None
    assert requested["assignment"] == {"id": str(first.assignment_id), "priceChargedCents": 1200}
    assert requested["requestedBy"].startswith("user:")
    other = (await admin_api.ok(REQUEST, {"a": str(second.assignment_id), "r": "DUPLICATE"}))["requestReturn"]

    page = (await admin_api.ok(LIST, {"p": str(provider.id)}))["returns"]
    assert [e["node"]["id"] for e in page["edges"]] == [other["id"]]  # newest first
    assert page["pageInfo"]["hasNextPage"]
    rest = (await admin_api.ok(LIST, {"after": page["pageInfo"]["endCursor"]}))["returns"]
    assert [e["node"]["id"] for e in rest["edges"]] == [requested["id"]]

    approved = (await admin_api.ok(APPROVE, {"id": requested["id"]}))["approveReturn"]
    assert approved["status"] == "APPROVED" and approved["decidedAt"]
    assert approved["refundEntry"] == {
        "kind": "REFUND",
        "amountCents": 1200,
        "balanceAfterCents": 3000 - 1200,
        "assignmentId": str(first.assignment_id),
    }
    assert approved["provider"]["balanceCents"] == 3000 - 1200

    rejected = (await admin_api.ok(REJECT, {"id": other["id"], "n": "called and reached"}))["rejectReturn"]
    assert (rejected["status"], rejected["decisionNote"]) == ("REJECTED", "called and reached")
    assert rejected["refundEntry"] is None

    by_status = (await admin_api.ok(LIST, {"s": "APPROVED"}))["returns"]["edges"]
    assert [e["node"]["id"] for e in by_status] == [requested["id"]]
    stats = await admin_api.ok(
        """query($n: UUID) { distributionStats(nicheId: $n) {
             assignments revenueCents returnsRequested returnsApproved returnRate refundedCents } }""",
        {"n": str(niche.id)},
    )
    assert stats["distributionStats"] == [
        {
            "assignments": 2,
            "revenueCents": 2400,
            "returnsRequested": 2,
            "returnsApproved": 1,
            "returnRate": 0.5,
            "refundedCents": 1200,
        }
    ]
    await assert_invariants(db)


async def test_error_codes(admin_api: Api, db: Database) -> None:
    niche, (level,) = await make_niche(db, levels=[(500, 1)])
    provider = await make_provider(db, balance_cents=2000)
    await subscribe(db, provider, level)
    fresh, old = [await make_assignment(db, niche, provider) for _ in range(2)]
    await backdate_assignments(db, "id = :id", "now() - interval '73 hours'", id=old.assignment_id)

    missing = str(uuid.uuid4())
    assert error_code(await admin_api.gql(REQUEST, {"a": missing, "r": "DUPLICATE"})) == "NOT_FOUND"
    late = await admin_api.gql(REQUEST, {"a": str(old.assignment_id), "r": "DUPLICATE"})
    assert error_code(late) == "CONFLICT" and "closed at" in late["errors"][0]["message"]
    assert error_code(await admin_api.gql(REQUEST, {"a": str(fresh.assignment_id), "r": "OTHER"})) == (
        "INVALID_INPUT"
    )
    assert error_code(await admin_api.gql(REQUEST, {"a": str(fresh.assignment_id), "r": "NOPE"})) == (
        "INVALID_INPUT"
    )
    made = (await admin_api.ok(REQUEST, {"a": str(fresh.assignment_id), "r": "OUT_OF_AREA"}))["requestReturn"]
    assert error_code(await admin_api.gql(REQUEST, {"a": str(fresh.assignment_id), "r": "DUPLICATE"})) == (
        "CONFLICT"
    )
    assert error_code(await admin_api.gql(APPROVE, {"id": missing})) == "NOT_FOUND"
    assert error_code(await admin_api.gql(REJECT, {"id": made["id"], "n": " "})) == "INVALID_INPUT"

    reader = (await auth.create_api_key(db, actor=SYSTEM, name="r", scopes=["read"])).secret
    assert error_code(await admin_api.gql(APPROVE, {"id": made["id"]}, token=reader)) == "FORBIDDEN"
    assert (
        error_code(
            await admin_api.gql(REQUEST, {"a": str(fresh.assignment_id), "r": "DUPLICATE"}, token=reader)
        )
        == "FORBIDDEN"
    )
    listed = await admin_api.ok(LIST, {}, token=reader)
    assert [e["node"]["status"] for e in listed["returns"]["edges"]] == ["REQUESTED"]

    await admin_api.ok(APPROVE, {"id": made["id"]})
    assert error_code(await admin_api.gql(APPROVE, {"id": made["id"]})) == "CONFLICT"
    assert error_code(await admin_api.gql(REJECT, {"id": made["id"], "n": "late"})) == "CONFLICT"
    await assert_invariants(db)


async def test_niche_return_window(admin_api: Api) -> None:
    created = await admin_api.ok('mutation { createNiche(name: "W") { id returnWindowHours } }')
    assert created["createNiche"]["returnWindowHours"] == 72
    niche = created["createNiche"]["id"]
    updated = await admin_api.ok(
        "mutation($id: UUID!) { updateNiche(id: $id, returnWindowHours: 0) { returnWindowHours } }",
        {"id": niche},
    )
    assert updated["updateNiche"]["returnWindowHours"] == 0
    bad = await admin_api.gql(
        "mutation($id: UUID!) { updateNiche(id: $id, returnWindowHours: -1) { id } }", {"id": niche}
    )
    assert error_code(bad) == "INVALID_INPUT"
    bad = await admin_api.gql('mutation { createNiche(name: "X", returnWindowHours: 100000) { id } }')
    assert error_code(bad) == "INVALID_INPUT"
    assert (await admin_api.ok("query($id: UUID!) { niche(id: $id) { returnWindowHours } }", {"id": niche}))[
        "niche"
    ] == {"returnWindowHours": 0}
