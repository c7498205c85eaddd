"""The notification outbox: a first send whose job never ran (the worker died after the
distribution committed) is found by the sweep once stale, then sent once."""

from __future__ import annotations

import socket
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


async def test_a_failed_send_waits_for_its_backoff_then_is_sent_keeping_its_last_error(db: Database) -> None:
    niche, (level,) = await make_niche(db, levels=[(1000, 1)])
    await subscribe(db, await make_provider(db, balance_cents=5000), level)
    await distribute_lead(db, lead_id=(await make_lead(db, niche)).id)
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]
    dead = Settings(_env_file=None, smtp_host="127.0.0.1", smtp_port=dead_port, smtp_timeout_seconds=1)  # type: ignore[call-arg]
    ((note_id, status),) = (await notifications.deliver_unsent(db, settings=dead)).items()
    assert status == NotificationStatus.PENDING
    read = sa.text("SELECT status, attempts, last_error, next_attempt_at > now(), sent_at FROM notifications")
    async with db.connect() as conn:
        state, attempts, error, later, sent_at = (await conn.execute(read)).one()
    assert (state, attempts, later, sent_at) == ("PENDING", 1, True, None) and error
    logged = Settings(_env_file=None, smtp_host=None)  # type: ignore[call-arg]
    assert await notifications.deliver(db, settings=logged, notification_ids=[note_id]) == {}  # not due
    async with db.connect() as conn:
        await conn.execute(sa.text("UPDATE notifications SET next_attempt_at = now() - interval '1 second'"))
    assert await notifications.deliver(db, settings=logged, notification_ids=[note_id]) == {
        note_id: NotificationStatus.SENT
    }
    async with db.connect() as conn:
        state, attempts, kept, _, sent_at = (await conn.execute(read)).one()
    assert (state, attempts, kept) == ("SENT", 2, error) and sent_at is not None
