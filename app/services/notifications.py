"""The notification outbox: `lead_assigned` rows written with each assignment, delivered by SMTP
(aiosmtplib) with retries and backoff, or written to the log when no SMTP server is configured.
A mail server that is down costs retries here, never a distribution."""

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
from sqlmodel import col, select

from app import metrics
from app.db import Database
from app.models.base import utcnow
from app.models.distribution import Notification, NotificationStatus
from app.models.leads import Assignment
from app.settings import Settings

log = logging.getLogger("leadwheel.notifications")

TEMPLATES = {
    "lead_assigned": (
        "New lead in {niche_name}",
        "Hello {provider_name},\n\n"
        "A new lead in {niche_name} ({level_name}) is yours. {price_charged} was charged to your balance.\n"
        "See it on your dashboard: {dashboard_url}\n\n— LeadWheel\n",
    )
}


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
    db: Database,
    *,
    settings: Settings,
    lead_id: uuid.UUID | None = None,
    notification_ids: Sequence[uuid.UUID] = (),
) -> dict[uuid.UUID, NotificationStatus]:
    """Sends the PENDING, due notifications of a lead's assignments and/or the given ones, in one
    transaction: their row locks (SKIP LOCKED) are held while sending, so two workers never send the
    same message. Returns each attempted notification's new status."""
    if lead_id is None and not notification_ids:
        return {}
    chosen = []
    if lead_id is not None:
        chosen.append(
            col(Notification.assignment_id).in_(
                select(col(Assignment.id)).where(col(Assignment.lead_id) == lead_id)
            )
        )
    if notification_ids:
        chosen.append(col(Notification.id).in_(notification_ids))
    async with db.begin() as session:
        notes = (
            await session.execute(
                select(Notification)
                .where(Notification.status == NotificationStatus.PENDING, sa.or_(*chosen))
                .with_for_update(skip_locked=True)
            )
        ).scalars()
        now = utcnow()
        due = [n for n in notes if n.next_attempt_at is None or n.next_attempt_at <= now]
        await asyncio.gather(*(_attempt(settings, note) for note in due))
        return {note.id: note.status for note in due}


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
    metrics.NOTIFICATIONS.labels("sent").inc()


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
