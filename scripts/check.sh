#!/usr/bin/env bash
# The gate before a commit: lint, format, types, schema file, every test. Exits non-zero on any.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
.venv/bin/ruff check app tests bench
.venv/bin/ruff format --check app tests bench
.venv/bin/mypy
.venv/bin/strawberry export-schema app.resolvers.schema:schema --output schema.graphql >/dev/null
git diff --quiet schema.graphql || { echo "schema.graphql changed: review and commit it"; exit 1; }
.venv/bin/pytest -q "$@"
