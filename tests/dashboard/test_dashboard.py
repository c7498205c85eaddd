"""The live dashboard in headless Chromium (Debian's binary, driven by Playwright): sign in with
password + TOTP, and a lead distributed through the API appears on the page without a reload."""

from pathlib import Path

from app.db import Database
from app.services import auth
from tests.api.conftest import PASSWORD, api_settings
from tests.dashboard.browser import CHROMIUM_FLAGS, chromium, sign_in
from tests.factories import make_lead, make_niche, make_provider, subscribe
from tests.tasks.conftest import Stack, gql


async def test_a_distribution_appears_live_on_the_dashboard(
    db: Database, stack: Stack, token: str, tmp_path: Path
) -> None:
    from playwright.async_api import async_playwright

    executable = chromium()
    niche, (level,) = await make_niche(db, levels=[(1500, 1)], name="Roofing / Texas")
    await subscribe(db, await make_provider(db, balance_cents=10_000, name="Acme Roofing"), level)
    lead = await make_lead(db, niche)
    created = await auth.create_admin(
        db, email="ops@example.test", password=PASSWORD, settings=api_settings()
    )
    api = await stack.api()
    stack.worker()
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_FLAGS)
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
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
        screenshot = tmp_path / "dashboard.png"  # docs/dashboard.png is one of these
        await page.screenshot(path=str(screenshot), full_page=True)
        await browser.close()
    assert screenshot.stat().st_size > 10_000
