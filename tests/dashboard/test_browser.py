"""When a missing Chromium fails the browser tests rather than skipping them."""

from tests.dashboard.browser import browser_required


def test_root_or_the_setting_requires_a_browser_a_developer_skips() -> None:
    assert browser_required(euid=0, env={})  # CI, which installs it first
    assert browser_required(euid=1000, env={"LW_REQUIRE_BROWSER": "1"})
    assert not browser_required(euid=1000, env={})
    assert not browser_required(euid=1000, env={"LW_REQUIRE_BROWSER": "0"})
    assert not browser_required(euid=1000, env={"LW_REQUIRE_BROWSER": ""})
