#!/usr/bin/env bash
# Runs every test on real PostgreSQL (embedded unless DATABASE_URL is set), after lint and types.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
.venv/bin/ruff check app tests bench
.venv/bin/ruff format --check app tests bench
.venv/bin/mypy
exec .venv/bin/pytest -q "$@"
