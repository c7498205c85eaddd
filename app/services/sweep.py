"""The sweep: PostgreSQL is the truth, Redis only carries work. Every second the scheduler sends
again what no worker is going to run."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa
from sqlmodel import col, select

from app.db import Database
from app.models.base import utcnow
from app.models.distribution import OPEN_RUN_STATUSES, DistributionRun
from app.services.dispatch import Dispatcher, RunJob
from app.settings import Settings


async def sweep(db: Database, *, settings: Settings, dispatcher: Dispatcher, limit: int = 1000) -> int:
    """Sends again what no worker is going to run: QUEUED runs whose backoff is over, and QUEUED
    or RUNNING runs whose job was sent longer ago than `stale_after` (a dead worker, a Redis that
    restarted empty). Claims them with SKIP LOCKED, so two sweeps never send one run twice."""
    now = utcnow()
    stale = now - timedelta(seconds=settings.stale_after_seconds)
    async with db.begin() as session:
        due = [
            RunJob(*row)
            for row in await session.execute(
                select(col(DistributionRun.id), col(DistributionRun.lead_id), col(DistributionRun.batch_id))
                .where(
                    col(DistributionRun.status).in_(OPEN_RUN_STATUSES),
                    sa.or_(
                        col(DistributionRun.next_attempt_at).is_(None),
                        col(DistributionRun.next_attempt_at) <= now,
                    ),
                    sa.or_(
                        col(DistributionRun.enqueued_at).is_(None),
                        col(DistributionRun.enqueued_at) < stale,
                        col(DistributionRun.enqueued_at) < col(DistributionRun.next_attempt_at),
                    ),
                )
                .order_by(col(DistributionRun.updated_at))
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
        ]
        if due:
            await session.execute(
                sa.update(DistributionRun)
                .where(col(DistributionRun.id).in_([job.run_id for job in due]))
                .values(enqueued_at=now)
            )
    if due:
        await dispatcher.distribute(due)
    return len(due)
