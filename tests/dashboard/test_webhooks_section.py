"""The dashboard's webhook section in headless Chromium: a flagged endpoint, a failing one and a
failed delivery are listed, and the buttons re-enable the endpoint and queue the delivery again."""

from pathlib import Path

import pyotp
import sqlalchemy as sa

from app.db import Database
from app.services import auth
from app.services.audit import SYSTEM
from app.services.webhooks import deliveries
from app.services.webhooks.sender import send_due
from tests.api.conftest import PASSWORD, api_settings
from tests.dashboard.test_dashboard import CHROMIUM_FLAGS, chromium
from tests.factories import make_provider
from tests.factories.webhooks import SETTINGS, make_endpoint
from tests.receiver import Receiver, statuses
from tests.services.webhooks.test_backoff import WAITING
from tests.services.webhooks.test_deliveries import Woken
from tests.tasks.conftest import Stack


async def test_flagged_endpoints_and_failed_deliveries_on_the_dashboard(
    db: Database, stack: Stack, receiver: Receiver, tmp_path: Path
) -> None:
    from playwright.async_api import async_playwright

    executable = chromium()
    receiver.respond = statuses(500)
    provider = await make_provider(db, name="Acme Roofing")
    created = await make_endpoint(db, provider, receiver.url)
    test = await deliveries.send_test(db, actor=SYSTEM, endpoint_id=created.endpoint.id, dispatcher=Woken())
    # one failure disables here: the failed test flags its endpoint
    assert await send_due(db, SETTINGS.model_copy(update={"webhook_disable_after_failures": 1})) == 1
    # another buyer's endpoint fails once: enabled, waiting for its next try
    failing = await make_endpoint(db, await make_provider(db, name="Beta Roofing"), receiver.url + "?beta")
    await deliveries.send_test(db, actor=SYSTEM, endpoint_id=failing.endpoint.id, dispatcher=Woken())
    assert await send_due(db, WAITING) == 1
    admin = await auth.create_admin(db, email="ops@example.test", password=PASSWORD, settings=api_settings())
    api = await stack.api()
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_FLAGS)
        page = await browser.new_page(viewport={"width": 1280, "height": 1100})
        await page.goto(f"{api}/dashboard")
        await page.fill("#email", "ops@example.test")
        await page.fill("#password", PASSWORD)
        await page.click("#login button")
        await page.wait_for_selector("#code", state="visible")
        await page.fill("#code", pyotp.TOTP(admin.admin.totp_secret).now())
        await page.click("#mfa button")
        await page.wait_for_selector(f"#webhook-flagged >> text={receiver.url}", timeout=15_000)
        await page.wait_for_selector("#webhook-failed >> text=HTTP 500", timeout=15_000)
        await page.wait_for_selector(f"#webhook-failing >> text={receiver.url}?beta", timeout=15_000)
        assert "1 endpoints disabled" in await page.inner_text("#webhook-counts")
        await page.screenshot(path=str(tmp_path / "webhooks.png"), full_page=True)
        await page.click(f"button[data-delivery='{test.id}']")  # its endpoint is disabled: refused
        await page.wait_for_selector("#webhook-error >> text=CONFLICT", timeout=15_000)
        await page.click(f"button[data-endpoint='{created.endpoint.id}']")
        await page.wait_for_selector("#webhook-flagged >> text=no flagged endpoint", timeout=15_000)
        await page.click(f"button[data-delivery='{test.id}']")
        # the failing endpoint's failed test is listed too; the flagged one's test went again
        await page.wait_for_selector(f"#webhook-failed >> text={str(test.id)[:8]}", state="detached")
        await browser.close()
    async with db.engine.connect() as conn:
        enabled = (
            await conn.execute(
                sa.text("SELECT enabled FROM webhook_endpoints WHERE id = :id"), {"id": created.endpoint.id}
            )
        ).scalar_one()
        status = (
            await conn.execute(
                sa.text("SELECT status FROM webhook_deliveries WHERE id = :id"), {"id": test.id}
            )
        ).scalar_one()
    assert enabled is True
    assert status == "PENDING"  # queued again (no worker runs here to send it)
