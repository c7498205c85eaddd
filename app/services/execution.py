"""Executing a run: what the worker task and the inline dispatcher both call."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, field

import structlog

from app import metrics
from app.db import Database
from app.engine.distribute import distribute_lead
from app.engine.result import DistributionResult
from app.errors import DomainError
from app.progress.events import ProgressEvent
from app.progress.publish import Publisher
from app.services.retries import record_failed_attempt
from app.settings import Settings

log = logging.getLogger("leadwheel.distribution")


@dataclass
class Execution:
    """What running a run produced, for the caller to publish and follow up."""

    result: DistributionResult | None = None
    events: list[ProgressEvent] = field(default_factory=list)
    batch_id: uuid.UUID | None = None


async def run_distribution(
    db: Database,
    *,
    run_id: uuid.UUID,
    settings: Settings,
    publisher: Publisher | None,
    lead_id: uuid.UUID,
    batch_id: uuid.UUID | None = None,
    webhook_lease_seconds: float = 0,
) -> Execution:
    """Executes a run: what the worker task and the inline dispatcher both call. Safe to call twice:
    the engine replays a finished run, and leaves a run whose retry is not due yet (a redelivered
    message) to the sweep. A crash is recorded on the run as a failed attempt (retried later by the
    sweep, with backoff, or dead-lettered); progress is published after each commit, by `publisher`,
    or with None by the caller (`execution.events`: the worker sends them in the round trip that
    acknowledges its job). Jobs carry the run's lead and batch, so the engine starts without
    reading the run first. With `webhook_lease_seconds`, the caller sends the webhook deliveries
    the run leases to it (`execution.result.webhooks_leased`)."""
    structlog.contextvars.bind_contextvars(run_id=str(run_id), lead_id=str(lead_id))
    execution = Execution(batch_id=batch_id)
    try:
        with metrics.ENGINE_SECONDS.time():
            # SPEC §4's dashboard_url: the buyer's own dashboard, its portal
            result = await distribute_lead(
                db,
                lead_id=lead_id,
                run_id=run_id,
                dashboard_url=settings.portal_url,
                webhook_lease_seconds=webhook_lease_seconds,
            )
        execution.result, execution.events = result, result.events
        if not result.replayed:
            metrics.DISTRIBUTIONS.labels(result.status.value).inc()
    except DomainError as exc:  # the lead changed meanwhile (rejected…): final, no retry
        execution.events = await record_failed_attempt(
            db, run_id=run_id, error=str(exc), settings=settings, final=True
        )
    except Exception as exc:  # noqa: BLE001  (recorded on the run; the sweep retries it)
        log.exception("distribution.attempt_failed run_id=%s", run_id)
        execution.events = await record_failed_attempt(
            db, run_id=run_id, error=f"{type(exc).__name__}: {exc}", settings=settings, final=False
        )
    if publisher is not None:
        await publisher.publish(execution.events, batch_id=batch_id)
    return execution
