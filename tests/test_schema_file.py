"""schema.graphql is the API contract: it must be what the code exports (`make schema`)."""

from pathlib import Path

from app.resolvers.schema import schema

ROOT = Path(__file__).resolve().parent.parent


def test_schema_graphql_is_current() -> None:
    checked_in = (ROOT / "schema.graphql").read_text()
    assert checked_in.strip() == schema.as_str().strip(), "schema.graphql is stale: run `make schema`"


def test_contract_names_are_present() -> None:
    sdl = schema.as_str()
    for name in [
        "lead(id:",
        "leads(",
        "assignments(",
        "distributionStatus(",
        "distributionRun(",
        "niches:",
        "niche(id:",
        "providers(",
        "provider(id:",
        "auditLog(",
        "previewDistribution(",
        "me:",
        "distributionStats(",
        "login(",
        "verifyMfa(",
        "logout:",
        "createNiche(",
        "createCompetitionLevel(",
        "updateCompetitionLevel(",
        "deleteCompetitionLevel(",
        "createProvider(",
        "topUpBalance(",
        "subscribeProvider(",
        "pauseSubscription(",
        "resumeSubscription(",
        "submitLead(",
        "approveLead(",
        "rejectLead(",
        "distributeLead(",
        "distributeLeads(",
        "retryDistribution(",
        "createApiKey(",
        "revokeApiKey(",
        "distributionProgress(",
        "batchProgress(",
        "nicheActivity(",
    ]:
        assert name in sdl, name
