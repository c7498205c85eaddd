"""A buyer's `lead_assigned` email links its portal (PORTAL_URL): SPEC §4's `dashboard_url`, the
provider's dashboard, not the operators' /dashboard."""

from __future__ import annotations

import logging

import pytest

from app.db import Database
from app.models.distribution import NotificationStatus
from app.progress.publish import NullPublisher
from app.services import execution, notifications, runs
from app.services.audit import SYSTEM
from app.settings import Environment, Settings
from tests.factories import make_lead, make_niche, make_provider, subscribe
from tests.services.test_run_distribution import Held

SETTINGS = Settings(
    _env_file=None,  # type: ignore[call-arg]
    environment=Environment.TEST,
    smtp_host=None,
    portal_url="https://leads.example.test/portal",
)


async def _assign_one(db: Database) -> None:
    """A lead assigned to one buyer, run as the worker runs it: one lead_assigned row."""
    niche, (level,) = await make_niche(db, levels=[(1000, 1)], name="Roofing")
    await subscribe(db, await make_provider(db, balance_cents=5000, name="Acme Roofing"), level)
    lead = await make_lead(db, niche)
    run = await runs.request_distribution(
        db, actor=SYSTEM, lead_id=lead.id, idempotency_key=None, dispatcher=Held()
    )
    await execution.run_distribution(
        db, run_id=run.id, lead_id=lead.id, settings=SETTINGS, publisher=NullPublisher()
    )


async def _send(db: Database, caplog: pytest.LogCaptureFixture) -> str:
    with caplog.at_level(logging.INFO, logger="leadwheel.notifications"):
        sent = await notifications.deliver_unsent(db, settings=SETTINGS)
    assert list(sent.values()) == [NotificationStatus.SENT]
    return caplog.text


async def test_a_buyers_lead_assigned_email_links_its_portal(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    await _assign_one(db)
    body = await _send(db, caplog)
    assert "Hello Acme Roofing" in body
    assert "See it in your portal: https://leads.example.test/portal\n" in body
    assert "/dashboard" not in body
