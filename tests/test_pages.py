"""The pages and their assets carry the hardening headers, and the pages hold nothing inline that
the Content-Security-Policy would have to allow. No database: page routes read no state."""

import tomllib
from collections.abc import AsyncIterator
from html.parser import HTMLParser
from pathlib import Path

import httpx
import pytest

from app.main import create_app
from app.pages import HERE, PAGES, STATIC
from app.settings import Environment, Settings

EXPECTED = {
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "x-frame-options": "DENY",
}


async def _client(environment: Environment) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(Settings(environment=environment, graphql_ide=True))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
        yield client


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async for c in _client(Environment.TEST):
        yield c


@pytest.fixture
async def production() -> AsyncIterator[httpx.AsyncClient]:
    async for c in _client(Environment.PRODUCTION):
        yield c


class _Inline(HTMLParser):
    """Collects what a strict CSP would block: inline scripts, <style>, style= and on*= attributes;
    and the assets the page loads."""

    def __init__(self) -> None:
        super().__init__()
        self.inline: list[str] = []
        self.assets: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        if tag == "script":
            if not attributes.get("src"):
                self.inline.append("<script> without src")
            else:
                self.assets.append(str(attributes["src"]))
        if tag == "link" and attributes.get("rel") == "stylesheet":
            self.assets.append(str(attributes["href"]))
        if tag == "style":
            self.inline.append("<style>")
        self.inline += [f"{tag} {name}=" for name in attributes if name == "style" or name.startswith("on")]


def _assert_hardened(response: httpx.Response) -> None:
    for name, value in EXPECTED.items():
        assert response.headers.get(name) == value, (response.url, name)
    policy = {d.split()[0]: d.split()[1:] for d in response.headers["content-security-policy"].split("; ")}
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["script-src"] == ["'self'"]  # no 'unsafe-inline', no 'unsafe-eval', no CDN
    assert policy["style-src"] == ["'self'"]
    assert policy["default-src"] == ["'none'"]
    assert policy["img-src"] == ["'self'", "data:"]  # data: only for the portal's QR code in an <img>


@pytest.mark.parametrize("url", sorted(PAGES))
async def test_every_page_and_its_assets_are_hardened(client: httpx.AsyncClient, url: str) -> None:
    page = await client.get(url)
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    _assert_hardened(page)
    assert "strict-transport-security" not in page.headers  # production only
    parsed = _Inline()
    parsed.feed(page.text)
    assert parsed.inline == []
    assert parsed.assets, "the page loads its script and styles from /static"
    for asset in parsed.assets:
        assert asset.startswith("/static/"), asset  # served by the app itself: works offline
        response = await client.get(asset)
        assert response.status_code == 200, asset
        assert response.headers["content-type"].split(";")[0] in ("text/javascript", "text/css"), asset
        _assert_hardened(response)


async def test_a_missing_asset_is_hardened_too(client: httpx.AsyncClient) -> None:
    response = await client.get("/static/nothing-here.js")
    assert response.status_code == 404
    _assert_hardened(response)


async def test_production_adds_hsts(production: httpx.AsyncClient) -> None:
    for url in [*PAGES, "/static/dashboard.js"]:
        response = await production.get(url)
        _assert_hardened(response)
        max_age = response.headers["strict-transport-security"].split(";")[0]
        assert int(max_age.removeprefix("max-age=")) >= 31_536_000  # a year at least


async def test_the_api_is_not_given_the_page_policy(client: httpx.AsyncClient) -> None:
    # JSON needs none, and GraphiQL (development only) runs inline code from a CDN
    health = await client.get("/healthz")
    assert "content-security-policy" not in health.headers


def test_the_wheel_ships_every_page_and_asset() -> None:
    """Each file under app/static and each page matches a package-data glob of pyproject.toml."""
    pyproject = tomllib.loads((HERE.parent / "pyproject.toml").read_text())
    shipped = {
        p for pattern in pyproject["tool"]["setuptools"]["package-data"]["app"] for p in HERE.glob(pattern)
    }
    needed = {p for p in STATIC.rglob("*") if p.is_file()} | set(PAGES.values())
    assert needed - shipped == set()
    assert Path(STATIC / "vendor" / "chart.js" / "LICENSE.md") in shipped
