"""The distribution engine: knows PostgreSQL and the rules of SPEC §2–3, nothing of GraphQL."""
