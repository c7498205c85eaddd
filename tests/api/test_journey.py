"""The whole admin journey through the GraphQL API, on real PostgreSQL and Redis."""

from app.db import Database
from tests.api.conftest import Admin, Api
from tests.invariants import assert_invariants

NICHE = """mutation($name: String!) { createNiche(name: $name, levelStrategy: ALL_LEVELS) { id name } }"""
LEVEL = """mutation($n: UUID!, $name: String!, $p: Cents!, $m: Int!) {
  createCompetitionLevel(nicheId: $n, name: $name, priceCents: $p, maxRecipients: $m) { id orderPosition } }"""
PROVIDER = (
    """mutation($name: String!, $email: String!) { createProvider(name: $name, email: $email) { id } }"""
)
TOP_UP = """mutation($p: UUID!, $a: Cents!, $r: String!) {
  topUpBalance(providerId: $p, amountCents: $a, reference: $r) { id balanceAfterCents } }"""
SUBSCRIBE = """mutation($p: UUID!, $l: UUID!, $f: JSON) {
  subscribeProvider(providerId: $p, competitionLevelId: $l, filters: $f) { id status } }"""


async def test_admin_journey(admin_api: Api, db: Database, admin: Admin) -> None:
    api = admin_api
    me = await api.ok("{ me { actorType label scopes } }")
    assert me["me"]["actorType"] == "USER"
    niche = (await api.ok(NICHE, {"name": "Roofing / Texas"}))["createNiche"]
    gold = (await api.ok(LEVEL, {"n": niche["id"], "name": "Exclusive", "p": 4500, "m": 1}))[
        "createCompetitionLevel"
    ]
    shared = (await api.ok(LEVEL, {"n": niche["id"], "name": "Shared", "p": 2500, "m": 2}))[
        "createCompetitionLevel"
    ]
    assert [gold["orderPosition"], shared["orderPosition"]] == [1, 2]
    providers = []
    for i in range(3):
        p = (await api.ok(PROVIDER, {"name": f"Roofer {i}", "email": f"r{i}@example.test"}))["createProvider"]
        entry = (await api.ok(TOP_UP, {"p": p["id"], "a": 10_000, "r": "inv-1"}))["topUpBalance"]
        assert entry["balanceAfterCents"] == 10_000
        again = (await api.ok(TOP_UP, {"p": p["id"], "a": 10_000, "r": "inv-1"}))["topUpBalance"]
        assert again["id"] == entry["id"]  # applied once
        providers.append(p)
    texas_only = [{"field": "state", "op": "eq", "value": "TX"}]
    for p in providers:
        for level in (gold, shared):
            sub = (await api.ok(SUBSCRIBE, {"p": p["id"], "l": level["id"], "f": texas_only}))[
                "subscribeProvider"
            ]
            assert sub["status"] == "ACTIVE"
    lead = (
        await api.ok(
            """mutation($n: UUID!, $a: JSON!) { submitLead(nicheId: $n, attributes: $a) { id status } }""",
            {"n": niche["id"], "a": {"name": "Pat Doe", "phone": "555-0100", "state": "TX", "zip": "75001"}},
        )
    )["submitLead"]
    assert lead["status"] == "PENDING_REVIEW"
    approved = await api.ok("mutation($id: UUID!) { approveLead(id: $id) { status } }", {"id": lead["id"]})
    assert approved["approveLead"]["status"] == "APPROVED"
    preview = await api.ok(
        """query($id: UUID!) { previewDistribution(leadId: $id) { distributable outcome
             levels { name visited candidates { providerId decision reason } } } }""",
        {"id": lead["id"]},
    )
    assert preview["previewDistribution"]["outcome"] == "SUCCESS"
    would = [
        c["providerId"]
        for lv in preview["previewDistribution"]["levels"]
        for c in lv["candidates"]
        if c["decision"] == "WOULD_ASSIGN"
    ]
    run = (
        await api.ok(
            """mutation($id: UUID!, $k: String!) { distributeLead(leadId: $id, idempotencyKey: $k) {
             id status attempts skipped { reason } } }""",
            {"id": lead["id"], "k": "k-1"},
        )
    )["distributeLead"]
    assert run["status"] == "SUCCESS"
    same = (
        await api.ok(
            """mutation($id: UUID!, $k: String!) { distributeLead(leadId: $id, idempotencyKey: $k) { id } }""",
            {"id": lead["id"], "k": "k-1"},
        )
    )["distributeLead"]
    assert same["id"] == run["id"]
    status = (
        await api.ok(
            """query($id: UUID!) { distributionStatus(leadId: $id) { status distributionAttempts assignmentCount
             runs { id status } auditEntries { action } } }""",
            {"id": lead["id"]},
        )
    )["distributionStatus"]
    assert status["status"] == "DISTRIBUTED"
    assert status["assignmentCount"] == 3
    actions = [e["action"] for e in status["auditEntries"]]
    assert actions[:3] == ["LEAD_SUBMITTED", "LEAD_APPROVED", "DISTRIBUTION_REQUESTED"]
    assert actions.count("ASSIGNMENT_CREATED") == 3
    assert "DISTRIBUTION_COMPLETED" in actions
    assignments = (
        await api.ok(
            """query($id: UUID!) { lead(id: $id) { attributes assignments { priceChargedCents
             provider { id name } competitionLevel { name } } } }""",
            {"id": lead["id"]},
        )
    )["lead"]
    assert assignments["attributes"]["phone"] == "555-0100"  # admins see contact details
    got = sorted((a["competitionLevel"]["name"], a["priceChargedCents"]) for a in assignments["assignments"])
    assert got == [("Exclusive", 4500), ("Shared", 2500), ("Shared", 2500)]
    assert sorted(would) == sorted(a["provider"]["id"] for a in assignments["assignments"])
    ledger = (
        await api.ok(
            """query($id: UUID!) { provider(id: $id) { balanceCents ledger(first: 10) {
             edges { node { kind amountCents balanceAfterCents } } } } }""",
            {"id": assignments["assignments"][0]["provider"]["id"]},
        )
    )["provider"]
    kinds = [e["node"]["kind"] for e in ledger["ledger"]["edges"]]
    assert kinds == ["CHARGE", "TOP_UP"]
    assert sum(e["node"]["amountCents"] for e in ledger["ledger"]["edges"]) == ledger["balanceCents"]
    audit = await api.ok(
        """{ auditLog(action: "ASSIGNMENT_CREATED", first: 10) { edges { node { entityId } } } }"""
    )
    assert len(audit["auditLog"]["edges"]) == 3
    await assert_invariants(db)
