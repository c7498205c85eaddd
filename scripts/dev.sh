#!/usr/bin/env bash
# Starts LeadWheel for a newcomer: virtualenv + install, embedded PostgreSQL and Redis (unless
# DATABASE_URL / REDIS_URL are set), migrations, then the demo distribution.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
exec .venv/bin/leadwheel demo "$@"
