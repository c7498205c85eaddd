"""A provider user's invite by real SMTP (an in-process aiosmtpd server): the email carries the
working link, and once it is sent the outbox row no longer holds the token."""

from __future__ import annotations

import sqlalchemy as sa
from aiosmtpd.controller import Controller
from redis.asyncio import Redis

from app.db import Database
from app.models.distribution import NotificationStatus
from app.services import notifications, provider_users
from app.services.audit import SYSTEM
from app.settings import Settings
from tests.factories import make_provider
from tests.tasks.conftest import Inbox


async def test_the_invite_is_mailed_with_its_link_and_the_outbox_forgets_the_token(
    db: Database, redis: Redis, smtp: tuple[Controller, Inbox]
) -> None:
    controller, inbox = smtp
    settings = Settings(_env_file=None, smtp_host="127.0.0.1", smtp_port=controller.port)  # type: ignore[call-arg]
    provider = await make_provider(db, name="Acme Roofing")
    invited = await provider_users.invite(
        db, actor=SYSTEM, provider_id=provider.id, email="buyer@acme.test", settings=settings
    )
    token = invited.invite_url.split("#invite=", 1)[1]
    sent = await notifications.deliver_unsent(db, settings=settings)
    assert list(sent.values()) == [NotificationStatus.SENT]

    (message,) = inbox.messages
    assert message["To"] == "buyer@acme.test"
    assert message["Subject"] == "Your LeadWheel account for Acme Roofing"
    body = message.get_payload(decode=True).decode()
    assert f"{settings.portal_url}#invite={token}" in body.splitlines()  # the link, on a line of its own
    assert f"until {invited.expires_at:%Y-%m-%d %H:%M} UTC" in body

    async with db.engine.connect() as conn:
        stored = (await conn.execute(sa.text("SELECT variables::text FROM notifications"))).scalar_one()
    assert token not in stored and '"invite_url": "[sent]"' in stored
    enrollment = await provider_users.accept_invite(  # the mailed link works
        db, redis, token=token, password="a long buyer password", client="t", settings=settings
    )
    assert enrollment.provisioning_uri.startswith("otpauth://totp/")
