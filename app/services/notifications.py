"""The notification outbox: `lead_assigned` rows written with each assignment and `provider_invite`
rows written with each invite, delivered by SMTP (aiosmtplib) with retries and backoff, or written
to the log when no SMTP server is configured. A mail server that is down costs retries here, never
a distribution. Variables that carry a secret (an invite's link) are blanked once the message has
been sent or has failed for good: the outbox keeps no usable token."""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.message import EmailMessage
from typing import Any

import aiosmtplib
import asyncpg
import sqlalchemy as sa
from sqlmodel import col, select

from app import metrics
from app.db import Database, driver_connection
from app.engine.sql import compile_named
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


# The sender's statements, on the asyncpg driver (as the engine's): an ORM unit of work per batch,
# an UPDATE per row, was about 0.2 ms of PostgreSQL and more of the worker per distribution in a
# burst (bench/e2e.py (b), pg_stat_statements). Statuses are spelled in the text, from the enum, so
# the plan is generic and uses the partial indexes (a bound status cannot prove their predicate).
_PENDING = NotificationStatus.PENDING.value
_COLUMNS = "id, template, recipient, variables, attempts, next_attempt_at"
CLAIM_UNSENT = compile_named(f"""
SELECT {_COLUMNS} FROM notifications
WHERE status = '{_PENDING}' AND attempts = 0
ORDER BY created_at LIMIT :size
FOR UPDATE SKIP LOCKED""")
CLAIM_GIVEN = compile_named(f"""
SELECT {_COLUMNS} FROM notifications
WHERE status = '{_PENDING}' AND id = ANY(CAST(:ids AS uuid[]))
FOR UPDATE SKIP LOCKED""")
RECORD = compile_named("""
UPDATE notifications n
SET status = u.status, attempts = u.attempts, sent_at = u.sent_at,
    last_error = COALESCE(u.last_error, n.last_error),  -- a success keeps the last failure's text
    next_attempt_at = u.next_attempt_at, variables = COALESCE(CAST(u.variables AS jsonb), n.variables)
FROM unnest(CAST(:ids AS uuid[]), CAST(:statuses AS text[]), CAST(:attempts AS int[]),
            CAST(:sent_at AS timestamptz[]), CAST(:errors AS text[]),
            CAST(:next_at AS timestamptz[]), CAST(:variables AS text[]))
     AS u (id, status, attempts, sent_at, last_error, next_attempt_at, variables)
WHERE n.id = u.id""")


@dataclass
class Note:
    """A claimed outbox row, and what its attempt changed."""

    id: uuid.UUID
    template: str
    recipient: str
    variables: dict[str, Any]
    attempts: int
    next_attempt_at: datetime | None
    status: NotificationStatus = NotificationStatus.PENDING
    last_error: str | None = None
    sent_at: datetime | None = None
    forgot_secrets: bool = False


async def deliver(
    db: Database, *, settings: Settings, notification_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, NotificationStatus]:
    """Sends the given notifications that are still PENDING and due (the sweep's retries and lost
    first sends). Returns each attempted notification's new status."""
    if not notification_ids:
        return {}
    async with driver_connection(db.engine) as conn, conn.transaction():
        notes = await _claim(conn, CLAIM_GIVEN.text, *CLAIM_GIVEN.args({"ids": list(notification_ids)}))
        now = utcnow()
        due = [n for n in notes if n.next_attempt_at is None or n.next_attempt_at <= now]
        await _attempt_all(settings, due)
        await _record(conn, due)
        return {note.id: note.status for note in due}


async def deliver_unsent(
    db: Database, *, settings: Settings, batch: int | None = None
) -> dict[uuid.UUID, NotificationStatus]:
    """Sends every first send (PENDING, never attempted), oldest first, one transaction and one
    write per batch (default: twice SMTP_MAX_CONNECTIONS): what the sender job does when woken
    after distributions. A job and a transaction per lead were a third of a worker's CPU in a
    burst. Rows another sender holds are skipped (it is sending them). Stops after a batch in
    which a send failed: the mail server is in trouble, and a batch's transaction stays short
    (at worst two rounds of SMTP_TIMEOUT_SECONDS); the rest waits for the next wake or the sweep."""
    size = batch or 2 * settings.smtp_max_connections
    sent: dict[uuid.UUID, NotificationStatus] = {}
    while True:
        async with driver_connection(db.engine) as conn, conn.transaction():
            notes = await _claim(conn, CLAIM_UNSENT.text, *CLAIM_UNSENT.args({"size": size}))
            await _attempt_all(settings, notes)
            await _record(conn, notes)
            sent.update((note.id, note.status) for note in notes)
        if len(notes) < size or any(note.last_error for note in notes):
            return sent


async def _claim(conn: asyncpg.Connection, query: str, *args: Any) -> list[Note]:
    """The rows, locked (SKIP LOCKED) until the sends are recorded: two senders never send one
    message."""
    return [Note(**dict(row)) for row in await conn.fetch(query, *args)]


async def _record(conn: asyncpg.Connection, notes: Sequence[Note]) -> None:
    if not notes:
        return
    await conn.execute(
        RECORD.text,
        *RECORD.args(
            {
                "ids": [n.id for n in notes],
                "statuses": [n.status.value for n in notes],
                "attempts": [n.attempts for n in notes],
                "sent_at": [n.sent_at for n in notes],
                "errors": [n.last_error for n in notes],
                "next_at": [n.next_attempt_at for n in notes],
                "variables": [json.dumps(n.variables) if n.forgot_secrets else None for n in notes],
            }
        ),
    )


async def _attempt_all(settings: Settings, notes: Sequence[Note]) -> None:
    limit = asyncio.Semaphore(settings.smtp_max_connections)

    async def attempt(note: Note) -> None:
        async with limit:
            await _attempt(settings, note)

    await asyncio.gather(*(attempt(note) for note in notes))


async def _attempt(settings: Settings, note: Note) -> None:
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


def _forget_secrets(note: Note) -> None:
    secret = SECRET_VARIABLES.get(note.template, ())
    if secret:
        note.variables = {k: ("[sent]" if k in secret else v) for k, v in note.variables.items()}
        note.forgot_secrets = True


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
