#!/usr/bin/env bash
# Runs every test on real PostgreSQL (embedded unless DATABASE_URL is set), after the lock check, lint
# and types. tests/test_install.py builds the wheel and installs it as production does.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
# uv.lock must be what pyproject.toml asks for (after a dependency change: `make lock`, and commit both)
UV_PYTHON_DOWNLOADS=never .venv/bin/uv lock --check --quiet
.venv/bin/ruff check app tests bench
.venv/bin/ruff format --check app tests bench
.venv/bin/mypy
# page tests: no chromium fails them as root or with LW_REQUIRE_BROWSER=1 (tests/dashboard/browser.py)
# the slowest tests are listed at the end, to keep the suite well under its 15 minutes
exec .venv/bin/pytest -q --durations=25 "$@"
