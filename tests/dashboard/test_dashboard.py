"""The live dashboard in headless Chromium (Debian's binary, driven by Playwright): sign in with
password + TOTP, and a lead distributed through the API appears on the page without a reload."""

import os
import shutil
import subprocess
from pathlib import Path

import pyotp
import pytest

from app.db import Database
from app.services import auth
from tests.api.conftest import PASSWORD, api_settings
from tests.factories import make_lead, make_niche, make_provider, subscribe
from tests.tasks.conftest import Stack, gql

CHROMIUM_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def chromium() -> str:
    found = shutil.which("chromium")
    if found is None and os.geteuid() == 0 and shutil.which("apt-get"):
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, timeout=300)
        subprocess.run(
            ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"],
            capture_output=True,
            timeout=600,
            env=os.environ | {"DEBIAN_FRONTEND": "noninteractive"},
        )
        found = shutil.which("chromium")
    if found is None:
        pytest.skip(
            "no chromium: install Debian's package `chromium` (Playwright's own download cannot work here)"
        )
    return found


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
        await page.goto(f"{api}/dashboard")
        await page.fill("#email", "ops@example.test")
        await page.fill("#password", PASSWORD)
        await page.click("#login button")
        await page.wait_for_selector("#code", state="visible")
        await page.fill("#code", pyotp.TOTP(created.admin.totp_secret).now())
        await page.click("#mfa button")
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
