#!/usr/bin/env bash
# Starts LeadWheel for a newcomer: virtualenv + install, embedded PostgreSQL and Redis (unless
# DATABASE_URL / REDIS_URL are set), migrations, demo data on an empty database (printed: who got
# which lead and why, and the demo admin's login), then API + worker + scheduler. Ctrl-C stops all.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
# a newcomer's webhook receiver runs on this machine
export WEBHOOK_ALLOW_PRIVATE_NETWORKS="${WEBHOOK_ALLOW_PRIVATE_NETWORKS:-true}"
exec .venv/bin/leadwheel serve "$@"
