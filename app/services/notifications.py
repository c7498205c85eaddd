"""The notification outbox: `lead_assigned` rows written with each assignment and `provider_invite`
rows written with each invite, delivered by SMTP (aiosmtplib) with retries and backoff, or written
to the log when no SMTP server is configured. A mail server that is down costs retries here, never
a distribution. Variables that carry a secret (an invite's link) are blanked once the message has
been sent or has failed for good: the outbox keeps no usable token."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from datetime import timedelta
from email.message import EmailMessage
from typing import Any

import aiosmtplib
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select
from sqlmodel.sql.expression import SelectOfScalar

from app import metrics
from app.db import Database
from app.models.base import utcnow
from app.models.distribution import Notification, NotificationStatus
from app.settings import Settings

log = logging.getLogger("leadwheel.notifications")

TEMPLATES = {
    "lead_assigned": (
        "New lead in {niche_name}",
        "Hello {provider_name},\n\n"
        "A new lead in {niche_name} ({level_name}) is yours. {price_charged} was charged to your balance.\n"
        "See it in your portal: {dashboard_url}\n\n— LeadWheel\n",
    ),
    "provider_invite": (
        "Your LeadWheel account for {provider_name}",
        "Hello,\n\n"
        "You are invited to LeadWheel as a user of {provider_name}. Open this link to choose a password "
        "and set up your authenticator app (it works once, until {expires_at}):\n"
        "{invite_url}\n\n— LeadWheel\n",
    ),
}
# variables holding a secret, blanked once the message is out (or has failed for good)
SECRET_VARIABLES = {"provider_invite": ("invite_url",)}


def render(template: str, variables: dict[str, Any]) -> tuple[str, str]:
    subject, body = TEMPLATES[template]
    values = {k: ("" if v is None else v) for k, v in variables.items()}
    return subject.format_map(values), body.format_map(values)


async def due_notifications(db: Database, *, stale_after: timedelta, limit: int = 500) -> list[uuid.UUID]:
    """PENDING notifications to (re)send: retries whose backoff has passed, and first sends whose
    job never ran (a worker that died between the distribution's commit and sending the job)."""
    now = utcnow()
    async with db.read() as session:
        rows = await session.execute(
            select(col(Notification.id))
            .where(
                Notification.status == NotificationStatus.PENDING,
                sa.or_(
                    sa.and_(col(Notification.attempts) > 0, col(Notification.next_attempt_at) <= now),
                    sa.and_(
                        col(Notification.attempts) == 0, col(Notification.created_at) <= now - stale_after
                    ),
                ),
            )
            .limit(limit)
        )
        return list(rows.scalars().all())


async def deliver(
    db: Database, *, settings: Settings, notification_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, NotificationStatus]:
    """Sends the given notifications that are still PENDING and due (the sweep's retries and lost
    first sends). Returns each attempted notification's new status."""
    if not notification_ids:
        return {}
    async with db.begin() as session:
        notes = await _lock(
            session,
            select(Notification).where(
                Notification.status == NotificationStatus.PENDING,
                col(Notification.id).in_(notification_ids),
            ),
        )
        now = utcnow()
        due = [n for n in notes if n.next_attempt_at is None or n.next_attempt_at <= now]
        await _attempt_all(settings, due)
        return {note.id: note.status for note in due}


async def deliver_unsent(
    db: Database, *, settings: Settings, batch: int | None = None
) -> dict[uuid.UUID, NotificationStatus]:
    """Sends every first send (PENDING, never attempted), oldest first, one transaction and one
    flush per batch (default: twice SMTP_MAX_CONNECTIONS): what the sender job does when woken
    after distributions. A job and a transaction per lead were a third of a worker's CPU in a
    burst. Rows another sender holds are skipped (it is sending them). Stops after a batch in
    which a send failed: the mail server is in trouble, and a batch's transaction stays short
    (at worst two rounds of SMTP_TIMEOUT_SECONDS); the rest waits for the next wake or the sweep."""
    size = batch or 2 * settings.smtp_max_connections
    sent: dict[uuid.UUID, NotificationStatus] = {}
    while True:
        async with db.begin() as session:
            notes = await _lock(
                session,
                select(Notification)
                .where(Notification.status == NotificationStatus.PENDING, col(Notification.attempts) == 0)
                .order_by(col(Notification.created_at))
                .limit(size),
            )
            await _attempt_all(settings, notes)
            sent.update((note.id, note.status) for note in notes)
        if len(notes) < size or any(note.last_error for note in notes):
            return sent


async def _lock(session: AsyncSession, query: SelectOfScalar[Notification]) -> list[Notification]:
    """The rows, locked (SKIP LOCKED) until the sends are recorded: two senders never send one
    message."""
    return list((await session.execute(query.with_for_update(skip_locked=True))).scalars())


async def _attempt_all(settings: Settings, notes: Sequence[Notification]) -> None:
    limit = asyncio.Semaphore(settings.smtp_max_connections)

    async def attempt(note: Notification) -> None:
        async with limit:
            await _attempt(settings, note)

    await asyncio.gather(*(attempt(note) for note in notes))


async def _attempt(settings: Settings, note: Notification) -> None:
    subject, body = render(note.template, note.variables)
    note.attempts += 1
    try:
        await _send(settings, to=note.recipient, subject=subject, body=body)
    except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
        metrics.SMTP_FAILURES.inc()
        note.last_error = f"{type(exc).__name__}: {exc}"[:1000]
        if note.attempts >= settings.notification_attempts:
            note.status = NotificationStatus.FAILED
            _forget_secrets(note)
            metrics.NOTIFICATIONS.labels("failed").inc()
            log.error("notification.failed id=%s error=%s", note.id, note.last_error)
        else:
            delays = settings.retry_delays_seconds
            note.next_attempt_at = utcnow() + timedelta(
                seconds=delays[min(note.attempts - 1, len(delays) - 1)]
            )
        return
    note.status = NotificationStatus.SENT
    note.sent_at = utcnow()
    _forget_secrets(note)
    metrics.NOTIFICATIONS.labels("sent").inc()


def _forget_secrets(note: Notification) -> None:
    secret = SECRET_VARIABLES.get(note.template, ())
    if secret:
        note.variables = {k: ("[sent]" if k in secret else v) for k, v in note.variables.items()}


async def _send(settings: Settings, *, to: str, subject: str, body: str) -> None:
    if not settings.smtp_host:
        log.info("notification.logged to=%s subject=%s\n%s", to, subject, body)
        return
    message = EmailMessage()
    message["From"] = settings.smtp_from
    message["To"] = to
    message["Subject"] = subject
    message.set_content(body)
    await aiosmtplib.send(
        message,
        hostname=settings.smtp_host,
        port=settings.smtp_port,
        username=settings.smtp_username,
        password=settings.smtp_password,
        start_tls=settings.smtp_starttls,
        timeout=settings.smtp_timeout_seconds,
    )


async def counts(db: Database) -> dict[str, int]:
    async with db.read() as session:
        rows = await session.execute(
            sa.select(col(Notification.status), sa.func.count()).group_by(col(Notification.status))
        )
        return {status: int(n) for status, n in rows.all()}
