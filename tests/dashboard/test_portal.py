"""The buyers' portal (/portal) in headless Chromium, on real API and worker processes: a buyer
enrolls from its invite link (password, the QR code, the first TOTP code) and is signed in, signs
out (its token revoked) and in again with a TOTP code; then it sees a lead sold to it appear
without a reload, with the lead's attributes, its charge in the balance and ledger and the cap's
usage; adds a webhook endpoint on a real local receiver (its secret shown once, then verifying
every request), sees the lead's delivery and two test events (one refused, one delivered) in the
log; pauses and resumes a subscription, is told FORBIDDEN for one its operator paused, sets a cap,
asks for a return and reads the operator's decision. Then its own settings: its time zone, a
delivery schedule (a window across midnight, a blackout date; a bad one refused with the server's
message and nothing written), filters; an endpoint disabled and enabled, a failed delivery sent
again, the secret rotated, the endpoint deleted. The browser reports no error (a CSP violation
would be one).

UPDATE_SCREENSHOTS=1 also writes the screenshot to docs/portal.png."""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pyotp
import sqlalchemy as sa
from werkzeug import Response

from app.db import Database
from app.engine.distribute import distribute_lead
from app.models.caps import CapPeriod
from app.services import auth, billing, caps, provider_users, subscriptions
from app.services.audit import SYSTEM
from app.services.caps import CapLimit
from app.services.tokens import hash_password
from tests.api.conftest import PASSWORD, api_settings
from tests.dashboard.browser import CHROMIUM_FLAGS, Watched, chromium, sign_in
from tests.factories import make_lead, make_niche, make_provider, subscribe
from tests.factories.accounts import make_provider_user
from tests.receiver import Received, Receiver
from tests.tasks.conftest import Stack, gql

DOCS = Path(__file__).resolve().parents[2] / "docs"
ZONE = "America/Chicago"


async def _answer(api: str, token: str, query: str) -> dict[str, Any]:
    async with httpx.AsyncClient() as client:
        response = await client.post(
            f"{api}/graphql", json={"query": query}, headers={"Authorization": f"Bearer {token}"}
        )
    return dict(response.json())


async def _scalar(db: Database, sql: str, **params: Any) -> Any:
    async with db.engine.connect() as conn:
        return (await conn.execute(sa.text(sql), params)).scalar_one()


async def test_a_buyer_enrolls_from_its_invite_and_signs_in_with_totp(
    db: Database, stack: Stack, tmp_path: Path
) -> None:
    from playwright.async_api import async_playwright

    executable = chromium()
    provider = await make_provider(db, balance_cents=5_000, name="Acme Roofing")
    invited = await provider_users.invite(
        db, actor=SYSTEM, provider_id=provider.id, email="pat@acme.test", settings=api_settings()
    )
    invite_token = invited.invite_url.split("#invite=", 1)[1]
    admin = await auth.create_admin(db, email="ops@example.test", password=PASSWORD, settings=api_settings())
    api = await stack.api()
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_FLAGS)
        page = await browser.new_page(viewport={"width": 1280, "height": 900})
        watched = Watched(page)
        # an operator signing in here is sent to its own page, its token revoked
        await sign_in(page, f"{api}/portal", email="ops@example.test", totp_secret=admin.admin.totp_secret)
        await page.wait_for_selector("#signin-error >> text=operators sign in at /dashboard", timeout=15_000)
        assert await page.is_hidden("#portal")
        assert await page.evaluate("() => sessionStorage.getItem('lw-portal-token')") is None
        revoked_at = await _scalar(
            db, "SELECT revoked_at FROM access_tokens WHERE admin_id = :id", id=admin.admin.id
        )
        assert revoked_at is not None
        await page.goto(f"{api}/portal#invite={invite_token}")
        await page.wait_for_selector("#accept", state="visible")
        assert await page.is_hidden("#signin")
        await page.fill("#new-password", "a long buyer password")
        await page.fill("#new-password-again", "a long buyer passworD")
        await page.click("#accept button")
        await page.wait_for_selector("#enroll-error >> text=differ")
        await page.fill("#new-password-again", "a long buyer password")
        await page.click("#accept button")
        await page.wait_for_selector("#qr", state="visible")
        # the QR code is drawn (an SVG in an <img>, allowed by the page's img-src data:)
        width = await page.evaluate("() => document.getElementById('qr').naturalWidth")
        assert width > 50
        uri = str(await page.text_content("#uri"))
        assert uri.startswith("otpauth://totp/")
        assert await page.evaluate("() => location.hash") == ""  # the spent invite left the address bar
        secret = pyotp.parse_uri(uri).secret
        await page.fill("#first-code", "000000" if pyotp.TOTP(secret).now() != "000000" else "111111")
        await page.click("#confirm button")
        await page.wait_for_selector("#enroll-error >> text=UNAUTHENTICATED")  # a wrong code is said
        await page.fill("#first-code", pyotp.TOTP(secret).now())
        await page.click("#confirm button")
        await page.wait_for_selector("#who >> text=Acme Roofing", timeout=15_000)
        assert await page.is_visible("#portal")
        await page.wait_for_selector("#balance >> text=$50.00")
        first_token = await page.evaluate("() => sessionStorage.getItem('lw-portal-token')")
        assert first_token

        await page.click("#signout")
        await page.wait_for_selector("#login", state="visible")
        assert await page.evaluate("() => sessionStorage.getItem('lw-portal-token')") is None
        revoked = await _answer(api, first_token, "{ me { label } }")
        assert revoked["errors"][0]["extensions"]["code"] == "UNAUTHENTICATED"

        # again with the password and a TOTP code: the next step's (the first one is spent)
        later = pyotp.TOTP(secret).at(datetime.now().timestamp() + 30)  # noqa: DTZ005 (an instant)
        await page.fill("#email", "pat@acme.test")
        await page.fill("#password", "a long buyer password")
        await page.click("#login button")
        await page.wait_for_selector("#code", state="visible")
        await page.fill("#code", later)
        await page.click("#mfa button")
        await page.wait_for_selector("#who >> text=pat@acme.test", timeout=15_000)
        await page.wait_for_selector("#live >> text=live", timeout=15_000)
        await browser.close()
    assert watched.problems == []
    enrolled = await _scalar(db, "SELECT enrolled_at FROM provider_users WHERE email = 'pat@acme.test'")
    assert enrolled is not None


async def _buyer_world(db: Database) -> dict[str, Any]:
    """Acme Roofing in Chicago: a roofing subscription with a daily cap, a solar one its operator
    paused whose schedule is closed today and tomorrow (blackout dates), a monthly spend cap across
    both, twelve top-ups (more than a ledger page) and a user with a password."""
    roofing, (roof_level,) = await make_niche(db, levels=[(1500, 1)], name="Roofing / Texas")
    solar, (solar_level,) = await make_niche(db, levels=[(2500, 1)], name="Solar / Ohio")
    provider = await make_provider(db, balance_cents=10_000, name="Acme Roofing")
    for n in range(11):
        await billing.top_up(
            db, actor=SYSTEM, provider_id=provider.id, amount_cents=1_000, reference=f"wire-{n}"
        )
    await caps.set_timezone(db, actor=SYSTEM, provider_id=provider.id, timezone=ZONE)
    roof = await subscribe(db, provider, roof_level)
    solar_sub = await subscribe(db, provider, solar_level)
    await caps.set_caps(
        db, actor=SYSTEM, subscription_id=roof.id, caps=[CapLimit(CapPeriod.DAY, max_leads=5)]
    )
    await caps.set_caps(
        db, actor=SYSTEM, provider_id=provider.id, caps=[CapLimit(CapPeriod.MONTH, max_spend_cents=100_000)]
    )
    today = datetime.now(ZoneInfo(ZONE)).date()
    await subscriptions.set_schedule(
        db,
        actor=SYSTEM,
        subscription_id=solar_sub.id,
        schedule={
            "windows": [{"days": ["MON", "TUE", "WED", "THU", "FRI"], "from": "08:00", "to": "18:00"}],
            "blackoutDates": [today.isoformat(), (today + timedelta(days=1)).isoformat()],
        },
    )
    await billing.pause_subscription(db, actor=SYSTEM, subscription_id=solar_sub.id)
    user = await make_provider_user(db, provider.id)
    async with db.engine.begin() as conn:
        await conn.execute(
            sa.text("UPDATE provider_users SET password_hash = :h WHERE id = :id"),
            {"h": await hash_password(PASSWORD), "id": user.id},
        )
    return {"provider": provider, "roofing": roofing, "roof": roof, "solar": solar_sub, "user": user}


@asynccontextmanager
async def _signed_in(stack: Stack, world: dict[str, Any]) -> AsyncIterator[tuple[str, Any, Watched]]:
    """API and worker processes (which may send webhooks to a local receiver), and the world's
    buyer signed in on /portal with its leads live: (the API's address, the page, its problems)."""
    from playwright.async_api import async_playwright

    executable = chromium()
    local = {"WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true"}  # the receiver listens on 127.0.0.1
    api = await stack.api(**local)
    stack.worker(**local)
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_FLAGS)
        try:
            page = await browser.new_page(viewport={"width": 1280, "height": 1000})
            watched = Watched(page)
            await sign_in(
                page, f"{api}/portal", email=world["user"].email, totp_secret=world["user"].totp_secret
            )
            await page.wait_for_selector("#live >> text=(live)", timeout=15_000)
            yield api, page, watched
        finally:
            await browser.close()


async def test_a_buyer_follows_its_leads_live_and_runs_its_subscriptions(
    db: Database, stack: Stack, token: str, receiver: Receiver, tmp_path: Path
) -> None:
    world = await _buyer_world(db)
    roof, solar = world["roof"].id, world["solar"].id
    earlier = await make_lead(db, world["roofing"], {"name": "Sam Early", "state": "TX", "zip": "75002"})
    await distribute_lead(db, lead_id=earlier.id)  # before the page opens: in the snapshot
    lead = await make_lead(
        db, world["roofing"], {"name": "Jane Prospect", "phone": "+1 555 0199", "state": "TX", "zip": "75001"}
    )

    def respond(n: int, got: Received) -> Response:
        """The buyer's endpoint: busy (503) for the first test event, fine for everything else."""
        tests = [r for r in receiver.received if r.payload["type"] == "webhook.test"]
        busy = got.payload["type"] == "webhook.test" and len(tests) == 1
        return Response("busy", 503) if busy else Response("ok", 200)

    receiver.respond = respond
    async with _signed_in(stack, world) as (api, page, watched):
        # a webhook endpoint on the buyer's (real, local) receiver: its secret shown once
        assert "No endpoints" in str(await page.text_content("#endpoints"))
        await page.fill("#endpoint-url", receiver.url)
        await page.fill("#endpoint-description", "our CRM")
        await page.click("#endpoint-form button")
        await page.wait_for_selector("#secret-box", state="visible")
        secret = str(await page.text_content("#secret"))
        assert secret.startswith("whsec_")
        receiver.secrets.append(secret)  # the receiver verifies every request with it (else 401)
        endpoint = page.locator("#endpoints tr[data-endpoint]", has_text=receiver.url)
        await endpoint.wait_for()
        assert await endpoint.locator(".state").text_content() == "enabled"
        assert "lead.assigned, return.decided" in str(await endpoint.text_content())
        await page.click("#secret-done")
        assert await page.is_hidden("#secret-box") and await page.text_content("#secret") == ""
        assert await page.locator("#leads tr[data-assignment]").count() == 1
        assert "Sam Early" in str(await page.text_content("#leads tr[data-assignment]"))
        assert await page.text_content("#zone") == f"Times in {ZONE}."

        # subscriptions: cap usage, schedule, status
        roof_row, solar_row = (
            f"#subscriptions tr[data-subscription='{roof}']",
            f"#subscriptions tr[data-subscription='{solar}']",
        )
        assert "today: 1/5 leads" in str(await page.text_content(roof_row))
        assert "open" in str(await page.text_content(f"{roof_row} .schedule-state"))
        solar_text = str(await page.text_content(solar_row))
        assert "PAUSED" in solar_text and "paused by the operator" in solar_text
        assert await page.text_content(f"{solar_row} .schedule-state") == "closed now"
        assert "opens" in solar_text and "Mon Tue Wed Thu Fri 08:00–18:00" in solar_text
        assert "this month: $15.00/$1000.00" in str(await page.text_content("#provider-caps"))

        # balance and ledger, newest first, paged
        assert await page.text_content("#balance") == "$195.00"
        assert await page.locator("#ledger tr[data-entry]").count() == 10
        await page.click("#ledger-more")
        await page.wait_for_selector("#ledger-more", state="hidden")
        assert await page.locator("#ledger tr[data-entry]").count() == 13
        assert "initial" in str(await page.locator("#ledger tr[data-entry]").last.text_content())

        # a lead sold to the buyer appears without a reload, with what it bought
        await gql(
            api, token, "mutation($id: UUID!) { distributeLead(leadId: $id) { id } }", {"id": str(lead.id)}
        )
        row = page.locator("#leads tr[data-assignment]", has_text="Jane Prospect")
        await row.wait_for(timeout=20_000)
        assert "Jane Prospect" in str(await page.text_content("#leads tr[data-assignment]"))  # newest first
        assert await page.locator("#leads tr[data-assignment]").count() == 2
        text = str(await row.text_content())
        assert (
            "+1 555 0199" in text and "75001" in text and "$15.00" in text and "Roofing / Texas · L1" in text
        )
        await page.wait_for_selector("#balance >> text=$180.00", timeout=10_000)
        first_entry = str(await page.text_content("#ledger tr[data-entry]"))
        assert "CHARGE" in first_entry and "−$15.00" in first_entry and "$180.00" in first_entry
        await page.wait_for_selector(f"{roof_row} >> text=today: 2/5 leads", timeout=10_000)
        assert "this month: $30.00/$1000.00" in str(await page.text_content("#provider-caps"))
        assert await page.locator("#ledger tr[data-entry]").count() == 10  # back to the first page
        # its lead.assigned webhook is in the delivery log, delivered
        assigned = page.locator("#deliveries tr[data-delivery]", has_text="lead.assigned")
        await assigned.locator(".status >> text=DELIVERED").wait_for(timeout=20_000)
        assert "HTTP 200" in str(await assigned.text_content())

        # test events: the first one the endpoint refuses (shown with its status), the next one arrives
        await endpoint.locator("button[data-test]").click()
        refused = page.locator("#deliveries tr[data-delivery]", has_text="webhook.test")
        await refused.locator(".status >> text=FAILED").wait_for(timeout=20_000)  # a test is sent once
        text = str(await refused.text_content())
        assert "http_error" in text and "HTTP 503" in text and " ms" in text
        await endpoint.locator("button[data-test]").click()
        delivered = page.locator("#deliveries tr[data-delivery]", has_text="webhook.test").filter(
            has=page.locator(".status", has_text="DELIVERED")
        )
        await delivered.wait_for(timeout=20_000)
        text = str(await delivered.text_content())
        assert "success" in text and "HTTP 200" in text
        received = [r for r in receiver.received if r.payload["type"] == "webhook.test"]
        assert len(received) == 2 and all(r.verified_by == (secret,) for r in received)
        assert received[1].webhook_id in text  # the log names the webhook-id the receiver got
        (lead_event,) = [r for r in receiver.received if r.payload["type"] == "lead.assigned"]
        assert "Jane Prospect" in lead_event.body and lead_event.verified_by == (secret,)
        # pause and resume its own subscription
        await page.click(f"{roof_row} button[data-pause]")
        await page.wait_for_selector(f"{roof_row} .status >> text=PAUSED")
        status = await _scalar(db, "SELECT status FROM subscriptions WHERE id = :id", id=roof)
        assert status == "PAUSED"
        await page.click(f"{roof_row} button[data-resume]")
        await page.wait_for_selector(f"{roof_row} .status >> text=ACTIVE")
        # its operator's pause is not the buyer's to lift: the answer is shown
        await page.click(f"{solar_row} button[data-resume]")
        await page.wait_for_selector("#subscriptions-error >> text=FORBIDDEN")
        assert "only an operator can resume it" in str(await page.text_content("#subscriptions-error"))
        assert await _scalar(db, "SELECT status FROM subscriptions WHERE id = :id", id=solar) == "PAUSED"

        # its own caps
        await page.click(f"{roof_row} button[data-caps]")
        assert await page.input_value("#caps-DAY-leads") == "5"
        await page.fill("#caps-DAY-leads", "3")
        await page.fill("#caps-WEEK-spend", "50")
        await page.click("#caps-form button:not([type=button])")
        await page.wait_for_selector(f"{roof_row} >> text=today: 2/3 leads")
        assert "this week: $30.00/$50.00" in str(await page.text_content(roof_row))
        assert await page.is_hidden("#caps-form")
        assert await page.text_content("#subscriptions-error") == ""

        # a return: the answer to a bad request is shown, then the request is listed
        await row.locator("button[data-return]").click()
        await page.select_option("#return-reason", "OTHER")
        await page.click("#return-form button:not([type=button])")
        await page.wait_for_selector("#leads-error >> text=INVALID_INPUT")  # OTHER needs a note
        await page.select_option("#return-reason", "OUT_OF_AREA")
        await page.fill("#return-note", "Caller lives in Oklahoma")
        await page.click("#return-form button:not([type=button])")
        await page.wait_for_selector("#returns >> text=REQUESTED")
        await page.wait_for_selector("#leads >> text=return REQUESTED")
        assert "Caller lives in Oklahoma" in str(await page.text_content("#returns"))
        return_id = await _scalar(db, "SELECT id FROM returns")
        await gql(
            api,
            token,
            "mutation($id: UUID!) { rejectReturn(id: $id, note: $n) { status } }".replace(
                "$n", '"zip 75001 is in Texas"'
            ),
            {"id": str(return_id)},
        )
        await page.reload()  # still signed in (the tab's sessionStorage); the decision is read
        await page.wait_for_selector(
            f"#returns tr[data-return='{return_id}'] >> text=REJECTED", timeout=15_000
        )
        assert "zip 75001 is in Texas" in str(await page.text_content("#returns"))
        await page.wait_for_selector("#live >> text=(live)", timeout=15_000)
        await page.wait_for_selector("#leads >> text=Jane Prospect")  # the snapshot
        assert await page.locator("#leads tr[data-assignment]").count() == 2
        screenshot = tmp_path / "portal.png"
        await page.screenshot(path=str(screenshot), full_page=True)
    assert watched.problems == []
    assert screenshot.stat().st_size > 20_000
    if os.environ.get("UPDATE_SCREENSHOTS"):
        shutil.copy(screenshot, DOCS / "portal.png")
    assert uuid.UUID(str(return_id))


async def _json(db: Database, sql: str, **params: Any) -> Any:
    text = await _scalar(db, sql, **params)
    return None if text is None else json.loads(text)


async def test_a_buyer_sets_its_time_zone_schedules_and_filters_and_runs_its_endpoints(
    db: Database, stack: Stack, receiver: Receiver
) -> None:
    """Time zone, a delivery schedule (a window across midnight, a blackout date; a bad one refused
    with the server's message and nothing written; always open again), filters; an endpoint
    disabled and enabled, a failed delivery sent again, the secret rotated (shown once, and it
    signs), the endpoint deleted after a confirmation."""
    world = await _buyer_world(db)
    roof = world["roof"].id
    roof_row = f"#subscriptions tr[data-subscription='{roof}']"
    # the first request (a test event) is refused: a FAILED delivery to send again
    receiver.respond = lambda n, got: Response("busy", 503) if n == 1 else Response("ok", 200)
    async with _signed_in(stack, world) as (_, page, watched):
        # the time zone: an unknown name is refused with the server's message, a real one taken
        assert await page.input_value("#zone-name") == ZONE
        await page.fill("#zone-name", "Mars/Olympus_Mons")
        await page.click("#zone-form button")
        await page.wait_for_selector("#subscriptions-error >> text=INVALID_INPUT")
        assert "unknown time zone 'Mars/Olympus_Mons'" in str(await page.text_content("#subscriptions-error"))
        provider_zone = "SELECT timezone FROM providers WHERE id = :id"
        assert await _scalar(db, provider_zone, id=world["provider"].id) == ZONE
        await page.fill("#zone-name", "Europe/Berlin")
        await page.click("#zone-form button")
        await page.wait_for_selector("#zone >> text=Times in Europe/Berlin.")
        assert await page.text_content("#subscriptions-error") == ""
        assert await _scalar(db, provider_zone, id=world["provider"].id) == "Europe/Berlin"
        today = datetime.now(ZoneInfo("Europe/Berlin")).date()

        # a schedule: weekdays by day, weekend nights across midnight, closed today
        assert "no schedule: always" in str(await page.text_content(f"{roof_row} .schedule"))
        await page.click(f"{roof_row} button[data-schedule]")
        assert await page.is_checked("#schedule-always") and await page.is_hidden("#schedule-fields")
        await page.uncheck("#schedule-always")
        windows = page.locator("#schedule-windows tr")
        assert await windows.count() == 1  # a first window to start from: weekdays 08:00–18:00
        await page.click("#window-add")
        night = windows.nth(1)
        for day in ("MON", "TUE", "WED", "THU", "FRI"):
            await night.locator(f"input[data-day='{day}']").uncheck()
        await night.locator("input[data-day='SAT']").check()
        await night.locator("input[data-day='SUN']").check()
        await night.locator(".from").fill("22:00")
        await night.locator(".to").fill("02:00")
        await page.fill("#schedule-blackouts", today.isoformat())
        await page.click("#schedule-form button:not([type=button])")
        await page.wait_for_selector(f"{roof_row} .schedule-state >> text=closed now")
        assert await page.is_hidden("#schedule-form")
        shown = str(await page.text_content(f"{roof_row} .schedule"))
        assert "Mon Tue Wed Thu Fri 08:00–18:00; Sat Sun 22:00–02:00" in shown
        assert f"closed on {today.isoformat()}" in shown and "opens" in shown
        stored = {
            "windows": [
                {"days": ["MON", "TUE", "WED", "THU", "FRI"], "from": "08:00", "to": "18:00"},
                {"days": ["SAT", "SUN"], "from": "22:00", "to": "02:00"},
            ],
            "blackoutDates": [today.isoformat()],
        }
        schedule_of = "SELECT schedule::text FROM subscriptions WHERE id = :id"
        assert await _json(db, schedule_of, id=roof) == stored

        # a bad one: the server's message, the editor still open, nothing written
        await page.click(f"{roof_row} button[data-schedule]")
        assert (
            await windows.count() == 2 and await page.input_value("#schedule-blackouts") == today.isoformat()
        )
        await windows.nth(0).locator(".to").fill("08:00")
        await page.click("#schedule-form button:not([type=button])")
        await page.wait_for_selector("#subscriptions-error >> text=INVALID_INPUT")
        assert "from and to are equal" in str(await page.text_content("#subscriptions-error"))
        assert await page.is_visible("#schedule-form")
        assert await _json(db, schedule_of, id=roof) == stored
        assert await page.text_content(f"{roof_row} .schedule-state") == "closed now"

        # open all day every day but tomorrow: open now, closing at midnight
        await windows.nth(1).locator(".remove").click()
        for day in ("SAT", "SUN"):
            await windows.nth(0).locator(f"input[data-day='{day}']").check()
        await windows.nth(0).locator(".from").fill("00:00")
        await windows.nth(0).locator(".to").fill("24:00")
        tomorrow = today + timedelta(days=1)
        await page.fill("#schedule-blackouts", tomorrow.isoformat())
        await page.click("#schedule-form button:not([type=button])")
        await page.wait_for_selector(f"{roof_row} .schedule-state >> text=open now")
        closes = f"closes {tomorrow.strftime('%a')} {tomorrow.isoformat()} 00:00"
        assert closes in str(await page.text_content(f"{roof_row} .schedule"))
        assert await page.text_content("#subscriptions-error") == ""
        assert (await _json(db, schedule_of, id=roof))["blackoutDates"] == [tomorrow.isoformat()]
        # and always open again (no schedule)
        await page.click(f"{roof_row} button[data-schedule]")
        await page.check("#schedule-always")
        await page.click("#schedule-form button:not([type=button])")
        await page.wait_for_selector(f"{roof_row} .schedule >> text=no schedule: always")
        assert await _json(db, schedule_of, id=roof) is None

        # eligibility filters: a list and a number, as the API takes them
        assert "none: every lead" in str(await page.text_content(f"{roof_row} .filters"))
        await page.click(f"{roof_row} button[data-filters]")
        conditions = page.locator("#filter-rows tr")

        async def condition(n: int, field: str, op: str, value: str, kind: str | None = None) -> None:
            if n:
                await page.click("#filter-add")
            await conditions.nth(n).locator(".field").fill(field)
            await conditions.nth(n).locator(".op").select_option(op)
            await conditions.nth(n).locator(".value").fill(value)
            if kind is not None:
                await conditions.nth(n).locator(".kind").select_option(kind)

        await condition(0, "state", "in", "TX, OK")
        await condition(1, "roof_age", "gte", "ten")
        assert await conditions.nth(1).locator(".kind").is_hidden()  # gte compares numbers only
        # eq compares as the attribute is: a number, and text that looks like one
        await condition(2, "units", "eq", "3", "number")
        await condition(3, "zip", "eq", "02139")
        await page.click("#filters-form button:not([type=button])")
        await page.wait_for_selector("#subscriptions-error >> text=INVALID_INPUT")  # not a number
        refused = str(await page.text_content("#subscriptions-error"))
        assert "condition 2 (roof_age)" in refused and "is not a number" in refused
        filters_of = "SELECT filters::text FROM subscriptions WHERE id = :id"
        assert await _json(db, filters_of, id=roof) == []
        await conditions.nth(1).locator(".value").fill("10")
        await page.click("#filters-form button:not([type=button])")
        await page.wait_for_selector(f"{roof_row} .filters >> text=state in TX, OK")
        assert "roof_age gte 10" in str(await page.text_content(f"{roof_row} .filters"))
        assert await _json(db, filters_of, id=roof) == [
            {"field": "state", "op": "in", "value": ["TX", "OK"]},
            {"field": "roof_age", "op": "gte", "value": 10},
            {"field": "units", "op": "eq", "value": 3},
            {"field": "zip", "op": "eq", "value": "02139"},
        ]

        # an endpoint on the buyer's receiver, disabled and enabled again
        await page.fill("#endpoint-url", receiver.url)
        await page.click("#endpoint-form button")
        await page.wait_for_selector("#secret-box", state="visible")
        first_secret = str(await page.text_content("#secret"))
        receiver.secrets.append(first_secret)
        await page.click("#secret-done")
        endpoint = page.locator("#endpoints tr[data-endpoint]", has_text=receiver.url)
        await endpoint.locator("button[data-disable]").click()
        await endpoint.locator(".state >> text=disabled").wait_for()
        assert await _scalar(db, "SELECT enabled FROM webhook_endpoints") is False
        await endpoint.locator("button[data-enable]").click()
        await endpoint.locator(".state >> text=enabled").wait_for()
        assert await _scalar(db, "SELECT enabled FROM webhook_endpoints") is True

        # a test event the receiver refuses, sent again from the log: a new attempt, delivered
        await endpoint.locator("button[data-test]").click()
        delivery = page.locator("#deliveries tr[data-delivery]", has_text="webhook.test")
        await delivery.locator(".status >> text=FAILED").wait_for(timeout=20_000)
        assert await delivery.locator(".attempt").count() == 1
        await delivery.locator("button[data-redeliver]").click()
        await delivery.locator(".status >> text=DELIVERED").wait_for(timeout=20_000)
        assert await delivery.locator(".attempt").count() == 2
        assert "HTTP 503" in str(await delivery.locator(".attempt").nth(0).text_content())
        assert "HTTP 200" in str(await delivery.locator(".attempt").nth(1).text_content())
        assert await delivery.locator("button[data-redeliver]").count() == 0
        assert (
            len(receiver.received) == 2 and receiver.received[0].webhook_id == receiver.received[1].webhook_id
        )

        # a new secret, shown once; the old one signs too for the overlap
        await endpoint.locator("button[data-rotate]").click()
        await page.wait_for_selector("#secret-box >> text=The new signing secret")
        new_secret = str(await page.text_content("#secret"))
        assert new_secret.startswith("whsec_") and new_secret != first_secret
        assert "not shown again" in str(await page.text_content("#secret-box"))
        assert "The previous secret signs too until" in str(await page.text_content("#secret-note"))
        await page.click("#secret-done")
        assert await page.is_hidden("#secret-box") and await page.text_content("#secret") == ""
        receiver.secrets.append(new_secret)
        await endpoint.locator("button[data-test]").click()
        await (
            page.locator("#deliveries tr[data-delivery]", has_text="webhook.test")
            .locator(".status >> text=DELIVERED")
            .nth(1)
            .wait_for(timeout=20_000)
        )
        assert receiver.received[-1].verified_by == (first_secret, new_secret)

        # deleted once confirmed; its log stays, with nothing to send again
        dialogs: list[str] = []

        async def answer(dialog: Any) -> None:  # "Cancel" the first time, "OK" the next
            dialogs.append(dialog.message)
            await (dialog.accept() if len(dialogs) > 1 else dialog.dismiss())

        page.on("dialog", answer)
        await endpoint.locator("button[data-delete]").click()
        await endpoint.locator("button[data-delete]").click()  # still there: nothing was deleted
        await page.wait_for_selector("#endpoints >> text=No endpoints")
        assert len(dialogs) == 2 and receiver.url in dialogs[0]
        assert await _scalar(db, "SELECT deleted_at FROM webhook_endpoints") is not None
        orphans = page.locator("#deliveries tr[data-delivery]", has_text="a deleted endpoint")
        await orphans.nth(1).wait_for()  # the log is read again after the endpoints
        assert await orphans.count() == 2 and await page.locator("button[data-redeliver]").count() == 0
    assert watched.problems == []
