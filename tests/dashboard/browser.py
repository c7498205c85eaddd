"""Headless Chromium for the page tests: Debian's binary driven by Playwright (its own browser
download cannot work here), and the dashboard's sign-in."""

from __future__ import annotations

import os
import shutil
import subprocess
from typing import Any

import pyotp
import pytest

from tests.api.conftest import PASSWORD

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


class Watched:
    """Collects what the browser reports as wrong on a page: console errors (a CSP violation is
    one), uncaught exceptions and responses of 400 or more."""

    def __init__(self, page: Any) -> None:
        self.problems: list[str] = []
        page.on("console", lambda m: self.problems.append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: self.problems.append(str(e)))
        page.on(
            "response", lambda r: self.problems.append(f"{r.status} {r.url}") if r.status >= 400 else None
        )


async def sign_in(page: Any, url: str, *, email: str, totp_secret: str) -> None:
    """Opens `url` (a dashboard address) and signs in with the password and a TOTP code."""
    await page.goto(url)
    await page.fill("#email", email)
    await page.fill("#password", PASSWORD)
    await page.click("#login button")
    await page.wait_for_selector("#code", state="visible")
    await page.fill("#code", pyotp.TOTP(totp_secret).now())
    await page.click("#mfa button")
