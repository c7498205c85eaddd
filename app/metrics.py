"""Prometheus metrics. Counters and histograms are recorded where things happen (API, workers);
with several processes `serve` sets PROMETHEUS_MULTIPROC_DIR and /metrics aggregates them
(prometheus-client's multiprocess mode). Queue depth, dead letters and live subscribers are read
at scrape time from PostgreSQL and the process's hub."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector

from app.models.distribution import OPEN_RUN_STATUSES, RunStatus
from app.models.webhooks import DeliveryStatus, DisabledReason

if TYPE_CHECKING:
    from app.db import Database
    from app.progress.hub import ProgressHub

DISTRIBUTIONS = Counter("lw_distributions_total", "Distribution runs finished, by outcome", ["outcome"])
ENGINE_SECONDS = Histogram(
    "lw_engine_seconds",
    "Time of one engine transaction",
    buckets=(0.001, 0.002, 0.003, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1, 5),
)
RETRIES = Counter("lw_distribution_retries_total", "Failed attempts that were scheduled again")
DEAD_LETTERED = Counter("lw_distribution_dead_lettered_total", "Runs that failed every attempt")
SMTP_FAILURES = Counter("lw_smtp_failures_total", "Notification sends that failed")
NOTIFICATIONS = Counter("lw_notifications_total", "Notifications delivered, by result", ["result"])
WEBHOOK_ATTEMPTS = Counter(
    "lw_webhook_attempts_total", "Webhook attempts, by outcome (success, http_error, timeout, …)", ["outcome"]
)
WEBHOOK_LATENCY = Histogram(
    "lw_webhook_latency_seconds",
    "Time of one webhook attempt, from its start to the answer read (or the failure)",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
WEBHOOK_ENDPOINTS_DISABLED = Counter(
    "lw_webhook_endpoints_disabled_total", "Endpoints the sender disabled after consecutive failures"
)
# subscription events this API process relayed (app/resolvers/relay.py): a plain int, bumped on the
# fan-out's hot path where a Counter's lock would cost more than the increment
RELAYED_EVENTS = [0]
# relayed frames written with one write per subscriber and message (app/internals/uvicorn.py); the
# rest went one Starlette send each (another server, or uvicorn's internals moved: it says which)
BATCHED_FRAMES = [0]


class _ScrapeTime:
    """Values read when /metrics is called (set just before generate_latest)."""

    def __init__(self) -> None:
        self.values: dict[str, tuple[str, float]] = {}

    def collect(self) -> Iterator[Metric]:
        for name, (doc, value) in self.values.items():
            family = GaugeMetricFamily(name, doc)
            family.add_metric([], value)
            yield family


_scrape = _ScrapeTime()
_in_default_registry = False  # our own record: prometheus-client keeps its collectors privately


def registry() -> CollectorRegistry:
    global _in_default_registry
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        merged = CollectorRegistry()
        MultiProcessCollector(merged)  # type: ignore[no-untyped-call]
        merged.register(_scrape)
        return merged
    from prometheus_client import REGISTRY

    if not _in_default_registry:
        REGISTRY.register(_scrape)
        _in_default_registry = True
    return REGISTRY


async def render(db: Database, hub: ProgressHub) -> bytes:
    async with db.read() as session:
        queued, failed = (
            await session.execute(
                sa.text(
                    "SELECT count(*) FILTER (WHERE status = ANY(CAST(:open AS text[]))), "
                    "count(*) FILTER (WHERE status = :failed) FROM distribution_runs"
                ),
                {"open": sorted(OPEN_RUN_STATUSES), "failed": RunStatus.FAILED.value},
            )
        ).one()
        flagged, pending = (
            await session.execute(
                sa.text(
                    "SELECT (SELECT count(*) FROM webhook_endpoints WHERE disabled_reason = :failing "
                    "AND deleted_at IS NULL), "
                    "(SELECT count(*) FROM webhook_deliveries WHERE status = :pending)"
                ),
                {"failing": DisabledReason.FAILING.value, "pending": DeliveryStatus.PENDING.value},
            )
        ).one()
    _scrape.values = {
        "lw_queue_depth": ("Runs QUEUED or RUNNING", float(queued)),
        "lw_webhook_disabled_endpoints": (
            "Webhook endpoints disabled and flagged for failing, waiting to be re-enabled",
            float(flagged),
        ),
        "lw_webhook_deliveries_pending": ("Webhook deliveries not delivered or failed yet", float(pending)),
        "lw_dead_letters": ("Runs FAILED (dead-lettered), retryable by hand", float(failed)),
        "lw_live_subscribers": ("Subscriptions open on this API process", float(hub.subscribers)),
        "lw_relayed_events": (
            "Subscription events this API process sent as the payload another subscriber of the same "
            "document received (since it started)",
            float(RELAYED_EVENTS[0]),
        ),
        "lw_relayed_frames_batched": (
            "Relayed frames written with one write per subscriber and message (since it started)",
            float(BATCHED_FRAMES[0]),
        ),
    }
    return generate_latest(registry())
