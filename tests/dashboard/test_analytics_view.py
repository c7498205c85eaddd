"""The dashboard's analytics view in headless Chromium: a known set of distributions, moved to known
hours, with returns their buyers asked for and the operator decided, is drawn by the charts of a
chosen date range (read back from Chart.js on the page, not just a canvas), nothing outside the
range shows, the niche filter narrows it, the CSV button downloads the range's assignments, and the
browser reports no error (a CSP violation would be one).

UPDATE_SCREENSHOTS=1 also writes the screenshot to docs/analytics.png."""

import csv
import math
import os
import shutil
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from app.db import Database
from app.engine.distribute import distribute_lead
from app.engine.result import DistributionResult
from app.models.audit import ActorType
from app.models.niches import CompetitionLevel, Niche
from app.models.returns import ReturnReason
from app.services import auth, returns
from app.services.audit import Actor
from app.services.tokens import PROVIDER_SCOPES, SCOPES
from tests.api.conftest import PASSWORD, api_settings
from tests.dashboard.browser import CHROMIUM_FLAGS, chromium, sign_in
from tests.factories import backdate_assignments, make_lead, make_niche, make_provider, subscribe
from tests.tasks.conftest import Stack

DOCS = Path(__file__).resolve().parents[2] / "docs"
DAY = datetime(2026, 3, 2, tzinfo=UTC)  # the range chosen on the page: 2 and 3 March, 48 hours
TERMINAL = ("SUCCESS", "PARTIAL", "NO_ELIGIBLE", "FAILED")


@dataclass(frozen=True)
class Asked:
    """A return the buyer of an assignment asked for, and what the operator is to decide."""

    niche: str
    return_id: uuid.UUID
    price_cents: int
    inside: bool  # the assignment is in the chosen range
    approve: bool | None  # None: left undecided


async def _ask_return(db: Database, niche: Niche, result: DistributionResult, asked: list[Asked]) -> None:
    """The first buyer of the run asks to return its lead, while the window (by the database's
    clock, from the assignment's real time) is open: before the assignment is moved back."""
    bought = result.assigned[0]
    buyer = Actor(ActorType.USER, uuid.uuid4(), scopes=PROVIDER_SCOPES, provider_id=bought.provider_id)
    made = await returns.request_return(
        db, actor=buyer, assignment_id=bought.assignment_id, reason=ReturnReason.INVALID_CONTACT
    )
    decision = (True, False, True)[len(asked) % 3]  # approve two of three
    asked.append(Asked(niche.name, made.id, bought.price_cents, inside=True, approve=decision))


async def _decide(db: Database, ops: Actor, asked: list[Asked]) -> None:
    for one in asked:
        if one.approve:
            await returns.approve_return(db, actor=ops, return_id=one.return_id)
        elif one.approve is False:
            await returns.reject_return(db, actor=ops, return_id=one.return_id, note="the phone answers")


async def _distribute_at(
    db: Database, niche: Niche, at: datetime, *, asked: list[Asked] | None = None
) -> DistributionResult:
    """One lead of `niche` distributed (its return asked for into `asked`, if given and someone
    bought it), its run and assignments then moved to `at`."""
    result = await distribute_lead(db, lead_id=(await make_lead(db, niche)).id)
    if asked is not None and result.assigned:
        await _ask_return(db, niche, result, asked)
    async with db.engine.begin() as conn:
        await conn.execute(
            sa.text("UPDATE distribution_runs SET created_at = :at WHERE lead_id = :l"),
            {"at": at, "l": result.lead_id},
        )
    await backdate_assignments(db, "lead_id = :l", ":at", at=at, l=result.lead_id)
    return result


async def _known_distributions(
    db: Database,
) -> tuple[list[tuple[datetime, str, DistributionResult]], dict[uuid.UUID, list[uuid.UUID]], list[Asked]]:
    """Three niches: one with two levels and a provider whose money runs out (PARTIAL runs), one
    with a single level, one nobody subscribes to (NO_ELIGIBLE). Returns (when, niche name, result)
    of the runs inside the range, each level's subscribed providers, and the returns asked for: of
    every third run that sold its lead, two of three to approve, one to reject, the last one left
    undecided, and one approved outside the range."""
    roofing, roofing_levels = await make_niche(db, levels=[(4500, 1), (3000, 2)], name="Roofing / Texas")
    solar, (solar_level,) = await make_niche(db, levels=[(2500, 1)], name="Solar / Ohio")
    pools, _ = await make_niche(db, levels=[(1200, 1)], name="Pools / Florida")
    subscribers: dict[uuid.UUID, list[uuid.UUID]] = defaultdict(list)

    async def join(provider_balance: int, name: str, levels: list[CompetitionLevel]) -> None:
        provider = await make_provider(db, balance_cents=provider_balance, name=name)
        for level in levels:
            await subscribe(db, provider, level)
            subscribers[level.id].append(provider.id)

    for i in range(4):
        await join(1_000_000, f"Roofer {i + 1}", roofing_levels)
    await join(5_000, "Tight Budget Roofing", roofing_levels)  # one charge, then INSUFFICIENT_BALANCE
    for i in range(2):
        await join(1_000_000, f"Solar {i + 1}", [solar_level])

    inside: list[tuple[datetime, str, DistributionResult]] = []
    asked: list[Asked] = []
    sold = 0
    schedule = {  # hour of the range -> leads of each niche
        8: (2, 1, 0), 9: (4, 2, 1), 10: (3, 0, 0), 13: (1, 3, 1), 17: (2, 1, 0),
        26: (1, 1, 0), 31: (3, 2, 2), 33: (2, 0, 0), 40: (1, 1, 1), 47: (0, 2, 0),
    }  # fmt: skip
    for hour, per_niche in schedule.items():
        for niche, count in zip((roofing, solar, pools), per_niche, strict=True):
            for k in range(count):
                at = DAY + timedelta(hours=hour, minutes=7 * k)
                ask = niche is not pools and sold % 3 == 0  # pools sells nothing
                sold += niche is not pools
                result = await _distribute_at(db, niche, at, asked=asked if ask else None)
                inside.append((at, niche.name, result))
    asked[-1] = replace(asked[-1], approve=None)
    # outside the range: just before (with an approved return), at its (exclusive) end, and now
    outside: list[Asked] = []
    await _distribute_at(db, roofing, DAY - timedelta(seconds=1), asked=outside)
    asked.append(replace(outside[0], inside=False, approve=True))
    await _distribute_at(db, solar, DAY + timedelta(days=2))
    await distribute_lead(db, lead_id=(await make_lead(db, solar)).id)
    return inside, subscribers, asked


def _percent(rate: float) -> float:
    """As the page shows a rate: the API's 4 places, then % to one place (JavaScript's Math.round)."""
    return math.floor(round(rate, 4) * 1000 + 0.5) / 10


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


async def _chart(page: Any, canvas: str) -> dict[str, Any]:
    data: dict[str, Any] = await page.evaluate(
        """(id) => { const c = Chart.getChart(id);
             return {labels: c.data.labels, datasets: c.data.datasets.map((d) => ({label: d.label ?? null, data: d.data}))}; }""",
        canvas,
    )
    return data


async def test_the_analytics_view_charts_a_chosen_range(db: Database, stack: Stack, tmp_path: Path) -> None:
    from playwright.async_api import async_playwright

    executable = chromium()
    inside, subscribers, asked = await _known_distributions(db)
    outcomes = Counter(r.status.value for _, _, r in inside)
    assert outcomes["SUCCESS"] and outcomes["PARTIAL"] and outcomes["NO_ELIGIBLE"], outcomes  # a varied set

    # what the charts must show, from the engine's own results
    hourly: dict[str, list[int]] = defaultdict(lambda: [0] * 48)
    for at, _, r in inside:
        hourly[r.status.value][int((at - DAY).total_seconds() // 3600)] += 1
    names = sorted({name for _, name, _ in inside})
    finished = {n: [r for _, name, r in inside if name == n and r.status.value in TERMINAL] for n in names}
    rates = [
        sum(r.status.value in ("SUCCESS", "PARTIAL") for r in finished[n]) / len(finished[n]) for n in names
    ]
    success = [_percent(rate) for rate in rates]
    revenue = [
        sum(a.price_cents for _, name, r in inside if name == n for a in r.assigned) / 100 for n in names
    ]
    received: dict[uuid.UUID, Counter[uuid.UUID]] = defaultdict(Counter)
    level_names: dict[uuid.UUID, tuple[str, str]] = {}
    for _, name, r in inside:
        for a in r.assigned:
            received[a.level_id][a.provider_id] += 1
            level_names[a.level_id] = (name, a.level_name)
    spreads = {
        f"{niche} · {level}": max(received[lid][p] for p in subscribers[lid])
        - min(received[lid][p] for p in subscribers[lid])
        for lid, (niche, level) in level_names.items()
    }
    assignment_ids = {str(a.assignment_id) for _, _, r in inside for a in r.assigned}
    # return rate: approved returns of the range's assignments / those assignments, per niche
    sold = Counter(name for _, name, r in inside for _ in r.assigned)
    approved = Counter(a.niche for a in asked if a.inside and a.approve)
    return_rates = [_percent(approved[n] / sold[n]) if sold[n] else None for n in names]
    assert [bool(rate) for rate in return_rates] == [False, True, True], return_rates  # pools sells none
    in_range = [a for a in asked if a.inside]
    refunded = sum(a.price_cents for a in in_range if a.approve)
    returns_note = (
        f"{sum(approved.values())} approved of {len(in_range)} returns asked, ${refunded / 100:.2f} refunded"
    )

    created = await auth.create_admin(
        db, email="ops@example.test", password=PASSWORD, settings=api_settings()
    )
    ops = Actor(ActorType.USER, created.admin.id, label=created.admin.email, scopes=SCOPES)
    await _decide(db, ops, asked)
    api = await stack.api()
    problems: list[str] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=executable, headless=True, args=CHROMIUM_FLAGS)
        page = await browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
        page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: problems.append(str(e)))
        page.on("response", lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 else None)
        await sign_in(
            page,
            f"{api}/dashboard#analytics",
            email="ops@example.test",
            totp_secret=created.admin.totp_secret,
        )
        await page.wait_for_selector("#analytics >> text=runs,", timeout=15_000)  # the default range drawn
        await page.fill("#from", "2026-03-02")
        await page.fill("#to", "2026-03-03")
        await page.click("#range button:not([type=button])")
        await page.wait_for_selector("#summary >> text=2026-03-02 to 2026-03-03", timeout=15_000)

        by_hour = await _chart(page, "chart-hourly")
        assert len(by_hour["labels"]) == 48
        assert by_hour["labels"][0] == "03-02 00h" and by_hour["labels"][-1] == "03-03 23h"
        assert {d["label"]: d["data"] for d in by_hour["datasets"]} == dict(hourly)
        assert await _chart(page, "chart-success") == {
            "labels": names,
            "datasets": [{"label": None, "data": success}],
        }
        assert await _chart(page, "chart-revenue") == {
            "labels": names,
            "datasets": [{"label": None, "data": revenue}],
        }
        fairness = await _chart(page, "chart-fairness")
        assert dict(zip(fairness["labels"], fairness["datasets"][0]["data"], strict=True)) == spreads
        assert max(spreads.values()) > 0  # the provider out of money fell behind: a spread to see
        assert await _chart(page, "chart-returns") == {
            "labels": names,
            "datasets": [{"label": None, "data": return_rates}],
        }
        assert await page.text_content("#returns-note") == returns_note
        summary = await page.text_content("#summary")
        assert f"{len(inside)} runs, {len(assignment_ids)} assignments" in str(summary)

        async with page.expect_download() as download_info:
            await page.click("#csv")
        download = await download_info.value
        rows = _csv_rows(await download.path())
        assert {r["assignment_id"] for r in rows} == assignment_ids
        assert download.suggested_filename == "assignments-2026-03-02-to-2026-03-03.csv"

        screenshot = tmp_path / "analytics.png"
        await page.screenshot(path=str(screenshot), full_page=True)

        # one niche: the charts and the CSV narrow to it
        await page.select_option("#niche", label="Solar / Ohio")
        await page.click("#range button:not([type=button])")
        await page.wait_for_function(
            "() => Chart.getChart('chart-success').data.labels.length === 1", timeout=15_000
        )
        solar = await _chart(page, "chart-hourly")
        expected = Counter(r.status.value for _, name, r in inside if name == "Solar / Ohio")
        assert {d["label"]: sum(d["data"]) for d in solar["datasets"]} == dict(expected)
        assert (await _chart(page, "chart-returns"))["datasets"][0]["data"] == [
            return_rates[names.index("Solar / Ohio")]
        ]
        async with page.expect_download() as download_info:
            await page.click("#csv")
        assert {r["niche"] for r in _csv_rows(await (await download_info.value).path())} == {"Solar / Ohio"}
        await browser.close()
    assert problems == []
    assert screenshot.stat().st_size > 20_000
    if os.environ.get("UPDATE_SCREENSHOTS"):
        shutil.copy(screenshot, DOCS / "analytics.png")
