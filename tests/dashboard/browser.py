"""Headless Chromium for the page tests: Debian's binary driven by Playwright (its own browser
download cannot work here), and the dashboard's sign-in."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping
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


REQUIRE_BROWSER = "LW_REQUIRE_BROWSER"


def browser_required(*, euid: int, env: Mapping[str, str]) -> bool:
    """Whether a missing Chromium fails the browser tests instead of skipping them. Root (CI: it
    installs Chromium with apt first) or LW_REQUIRE_BROWSER=1: a failed install must not pass
    unseen. A developer without root, who cannot install it here, gets a skip."""
    return euid == 0 or env.get(REQUIRE_BROWSER) == "1"


def _install_with_apt() -> str:
    """Installs Debian's `chromium`; returns what went wrong, if anything."""
    if shutil.which("apt-get") is None:
        return "no apt-get to install it with"
    steps = [
        ["apt-get", "update", "-qq"],
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"],
    ]
    for step in steps:
        try:
            done = subprocess.run(
                step,
                capture_output=True,
                text=True,
                timeout=600,
                env=os.environ | {"DEBIAN_FRONTEND": "noninteractive"},
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            return f"`{' '.join(step)}`: {exc}"
        if done.returncode != 0:
            return f"`{' '.join(step)}` exited {done.returncode}: {done.stderr.strip()[-800:]}"
    return ""


def chromium() -> str:
    """The Chromium binary; as root it is installed first. Missing, it fails the test when
    `browser_required`, else skips it."""
    found = shutil.which("chromium")
    problem = ""
    if found is None and os.geteuid() == 0:
        problem = _install_with_apt()
        found = shutil.which("chromium")
    if found is not None:
        return found
    reason = "no chromium: install Debian's package `chromium` (Playwright's own download cannot work here)"
    if problem:
        reason += f"; the install failed: {problem}"
    if browser_required(euid=os.geteuid(), env=os.environ):
        pytest.fail(f"{reason} (a browser is required as root or with {REQUIRE_BROWSER}=1)", pytrace=False)
    pytest.skip(f"{reason} (not root, {REQUIRE_BROWSER} unset: skipped)")


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
