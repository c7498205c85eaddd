"""The notification outbox: a first send whose job never ran (the worker died after the
distribution committed) is found by the sweep once stale, then sent once."""

from __future__ import annotations

from datetime import timedelta

import sqlalchemy as sa

from app.db import Database
from app.engine.distribute import distribute_lead
from app.models.distribution import NotificationStatus
from app.services import notifications
from app.settings import Settings
from tests.factories import make_lead, make_niche, make_provider, subscribe


async def test_a_first_send_whose_job_was_lost_is_swept_once_stale(db: Database) -> None:
    niche, (level,) = await make_niche(db, levels=[(1000, 1)])
    await subscribe(db, await make_provider(db, balance_cents=5000), level)
    lead = await make_lead(db, niche)
    await distribute_lead(db, lead_id=lead.id)  # outbox row written; no job sent
    stale = timedelta(minutes=5)
    assert await notifications.due_notifications(db, stale_after=stale) == []  # its job may still come
    async with db.connect() as conn:
        await conn.execute(
            sa.text("UPDATE notifications SET created_at = created_at - interval '10 minutes'")
        )
    (due,) = await notifications.due_notifications(db, stale_after=stale)
    settings = Settings(_env_file=None, smtp_host=None)
    assert await notifications.deliver(db, settings=settings, notification_ids=[due]) == {
        due: NotificationStatus.SENT
    }
    assert await notifications.deliver(db, settings=settings, notification_ids=[due]) == {}  # once
    assert await notifications.due_notifications(db, stale_after=stale) == []
