"""The live dashboard in headless Chromium (Debian's binary, driven by Playwright): sign in with
password + TOTP, and a lead distributed through the API appears on the page without a reload; the
providers' table shows each subscription's cap usage and whether its schedule is open now."""

import os
import shutil
from datetime import datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

from app.db import Database
from app.models.caps import CapPeriod
from app.services import auth, caps, subscriptions
from app.services.audit import SYSTEM
from app.services.caps import CapLimit
from tests.api.conftest import PASSWORD, api_settings
from tests.dashboard.browser import CHROMIUM_FLAGS, Watched, chromium, sign_in
from tests.factories import make_lead, make_niche, make_provider, subscribe
from tests.tasks.conftest import Stack, gql

DOCS = Path(__file__).resolve().parents[2] / "docs"


async def test_a_distribution_appears_live_on_the_dashboard(
    db: Database, stack: Stack, token: str, tmp_path: Path
) -> None:
    from playwright.async_api import async_playwright

    executable = chromium()
    niche, (level,) = await make_niche(db, levels=[(1500, 1)], name="Roofing / Texas")
    _, (solar_level,) = await make_niche(db, levels=[(2500, 1)], name="Solar / Ohio")
    acme = await make_provider(db, balance_cents=10_000, name="Acme Roofing")
    await caps.set_timezone(db, actor=SYSTEM, provider_id=acme.id, timezone="America/Chicago")
    roofing = await subscribe(db, acme, level)
    await caps.set_caps(
        db, actor=SYSTEM, subscription_id=roofing.id, caps=[CapLimit(CapPeriod.DAY, max_leads=5)]
    )
    solar = await subscribe(db, acme, solar_level)
    today = datetime.now(ZoneInfo("America/Chicago")).date()
    await subscriptions.set_schedule(  # closed today and tomorrow, whatever the hour
        db,
        actor=SYSTEM,
        subscription_id=solar.id,
        schedule={"blackoutDates": [today.isoformat(), (today + timedelta(days=1)).isoformat()]},
    )
    lead = await make_lead(db, niche)
    created = await auth.create_admin(
        db, email="ops@example.test", password=PASSWORD, settings=api_settings()
    )
    api = await stack.api()
    stack.worker()
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_FLAGS)
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        watched = Watched(page)
        await sign_in(
            page, f"{api}/dashboard", email="ops@example.test", totp_secret=created.admin.totp_secret
        )
        await page.wait_for_selector("#niches >> text=Roofing / Texas", timeout=15_000)
        await page.wait_for_timeout(500)  # the feed's WebSocket subscribes right after the first render
        await gql(
            api, token, "mutation($id: UUID!) { distributeLead(leadId: $id) { id } }", {"id": str(lead.id)}
        )
        completed = page.locator("#feed li", has_text="COMPLETED SUCCESS")
        await completed.wait_for(timeout=20_000)  # no reload: it came over the subscription
        assert await page.locator("#feed li", has_text="L1 →").count() == 1
        await page.wait_for_selector("#leads >> text=DISTRIBUTED", timeout=15_000)
        # the providers' table: cap usage in the current period, open or closed now
        roofing_line = f"#providers [data-subscription='{roofing.id}']"
        await page.wait_for_selector(f"{roofing_line} >> text=today: 1/5 leads", timeout=15_000)
        assert await page.text_content(f"{roofing_line} .schedule-state") == "open"
        solar_line = f"#providers [data-subscription='{solar.id}']"
        assert await page.text_content(f"{solar_line} .schedule-state") == "closed now"
        opens = (today + timedelta(days=2)).isoformat()
        assert f"opens {(today + timedelta(days=2)).strftime('%a')} {opens} 00:00" in str(
            await page.text_content(solar_line)
        )
        screenshot = tmp_path / "dashboard.png"  # UPDATE_SCREENSHOTS=1: docs/dashboard.png
        await page.screenshot(path=str(screenshot), full_page=True)
        await browser.close()
    assert watched.problems == []
    assert screenshot.stat().st_size > 10_000
    if os.environ.get("UPDATE_SCREENSHOTS"):
        shutil.copy(screenshot, DOCS / "dashboard.png")


async def test_providers_come_a_page_at_a_time(db: Database, stack: Stack) -> None:
    """25 a page (with their subscriptions and caps, 50 would pass half the query cost limit);
    More adds the next page, and the refreshes keep reading the pages shown."""
    from playwright.async_api import async_playwright

    executable = chromium()
    oldest = await make_provider(db, name="Oldest Provider")
    for n in range(25):
        await make_provider(db, name=f"Provider {n + 1}")
    created = await auth.create_admin(
        db, email="ops@example.test", password=PASSWORD, settings=api_settings()
    )
    api = await stack.api()
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_FLAGS)
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        watched = Watched(page)
        await sign_in(
            page, f"{api}/dashboard", email="ops@example.test", totp_secret=created.admin.totp_secret
        )
        await page.wait_for_selector("#providers >> text=Provider 25", timeout=15_000)
        assert await page.locator("#providers tr[data-provider]").count() == 25
        assert await page.locator(f"#providers tr[data-provider='{oldest.id}']").count() == 0
        await page.click("#providers-more")
        await page.wait_for_selector(f"#providers tr[data-provider='{oldest.id}']", timeout=15_000)
        assert await page.is_hidden("#providers-more")
        await page.evaluate("() => refresh()")  # what the 10 s timer does
        assert await page.locator("#providers tr[data-provider]").count() == 26
        await browser.close()
    assert watched.problems == []
