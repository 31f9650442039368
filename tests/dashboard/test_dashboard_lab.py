"""The dashboard on the real lab: a real VM live-migrated with post-copy from the browser.

orbit-server runs as a separate process (SQLite, libvirt driver) on 127.0.0.1, started by
``OrbitServer`` from tests/service/test_server_lab.py with the lab's hosts registered and
h1's link shaped to 400 mbit/s (its ``server`` and ``shaped`` fixtures). Headless Chromium
logs in, opens Instances, live-migrates the guest with "Post-copy Migration" checked, and
watches the migration page until it completes; the guest then verifies all its memory.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest
from playwright.sync_api import Browser, Page, expect

from orbit.lab.guest import Guests, GuestSpec
from orbit.lab.lab import Lab
from orbit.lab.libvirt_util import list_domains
from tests.dashboard.browser import DESKTOP, Screenshots, artifacts_dir
from tests.service.test_server_lab import (  # noqa: F401 - fixtures used by name
    ADMIN_PASSWORD,
    OrbitServer,
    server,
    shaped,
)

DASH = GuestSpec("dash", memory_mib=256, wss_mib=200, rate_mib_s=0)
UI_TIMEOUT_MS = 15_000
LISTED_TIMEOUT_S = 60.0
LISTED_POLL_S = 1.0
#: pre-copy pass + post-copy of 256 MiB over 400 mbit/s takes ~15 s; TCG is slower
MIGRATION_TIMEOUT_MS = 180_000


@pytest.fixture
def lab_page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport=DESKTOP)
    context.set_default_timeout(UI_TIMEOUT_MS)
    try:
        yield context.new_page()
    finally:
        context.close()


def _wait_listed_active(page: Page, url: str, name: str) -> None:
    """Reload Instances until orbit-server's inventory shows the guest running."""
    deadline = time.monotonic() + LISTED_TIMEOUT_S
    row = page.locator(f"#instances tr[data-server={name}]")
    while True:
        page.goto(f"{url}/dashboard/instances")
        if row.count() == 1 and "ACTIVE" in row.inner_text():
            return
        assert time.monotonic() < deadline, f"{name} never listed as ACTIVE on the dashboard"
        time.sleep(LISTED_POLL_S)


def test_dashboard_live_migrates_a_real_vm_with_post_copy(
    lab: Lab,
    guests: Guests,
    server: OrbitServer,  # noqa: F811 - the imported fixture
    shaped: None,  # noqa: F811 - the imported fixture
    lab_page: Page,
) -> None:
    page = lab_page
    shots = Screenshots(artifacts_dir("lab"))
    guests.start("h1", DASH)

    page.goto(f"{server.url}/dashboard/login")
    page.get_by_label("User name").fill("admin")
    page.get_by_label("Password").fill(ADMIN_PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page).to_have_url(f"{server.url}/dashboard/instances")
    _wait_listed_active(page, server.url, DASH.name)
    row = page.locator(f"#instances tr[data-server={DASH.name}]")
    expect(row.locator("[data-cell=host]")).to_have_text("h1")
    shots.take(page, "instances")

    page.get_by_role("link", name=f"Live Migrate {DASH.name}").click()
    page.get_by_label("Destination host").select_option("h2")
    page.get_by_label("Post-copy Migration").check()
    shots.take(page, "live-migrate-form", full_page=True)
    page.get_by_role("button", name="Live Migrate").click()
    expect(page).to_have_url(re.compile(re.escape(f"{server.url}/dashboard/migrations/") + r"\d+$"))
    page.evaluate("window.notReloaded = true")

    status = page.locator("#migration [data-field=status]")
    expect(status).to_have_text("completed", timeout=MIGRATION_TIMEOUT_MS)
    assert page.evaluate("window.notReloaded") is True
    expect(page.locator("#chart .switch-marker")).to_contain_text("post-copy")
    assert int(page.locator("[data-field=postcopy_requests]").inner_text()) > 0
    expect(page.locator("[data-decisions]")).to_contain_text("switch-to-postcopy")
    expect(page.get_by_role("button", name="Abort")).to_be_disabled()
    shots.take(page, "migration-chart", full_page=True)

    page.get_by_role("link", name="Instances", exact=True).click()
    expect(row.locator("[data-cell=host]")).to_have_text("h2")
    assert list_domains(lab.host("h2").uri) == {DASH.name: "running"}
    assert guests.wait_verified("h2", DASH.name).errors == 0
