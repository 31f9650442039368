"""The dashboard in headless Chromium, against orbit-server served for real over HTTP.

- ``dashboard``: the API and the dashboard served by uvicorn in a thread on 127.0.0.1 and a
  free port, with Services built as in tests/api/conftest.py: the real conductor (threads,
  dispatcher, recorder), the in-memory FakeDriver, a real database through the ``db``
  fixture (SQLite and PostgreSQL). Users: ``admin`` and the member ``alice``; hosts h1-h3.
  The FakeDriver is slow on purpose (``tick_s`` 0.05 s): VM ``hot`` (256 MiB, sending
  4 MiB and dirtying 8 MiB per tick) never converges in pre-copy, so with post-copy the
  policy ``auto`` switches after the first pass, and the chart has something to show
  (~3 s of pre-copy, ~3 s of post-copy).
- ``browser`` (once per session): Debian's Chromium through Playwright.
- ``page``: a fresh browser context (no cookies) at 1280x800 per test.
- ``shots``: where a test's screenshots go (``artifacts/dashboard/<backend>/``).
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import uvicorn
from playwright.sync_api import Browser, Page, expect, sync_playwright

from orbit.api.app import create_app
from orbit.api.deps import Services
from orbit.conductor.conductor import Conductor
from orbit.config import ServerConfig
from orbit.db.database import Database
from orbit.db.models import Host
from orbit.identity.service import create_user, ensure_admin
from orbit.virt.fake import MIB, FakeDriver, FakeWorkload
from tests.api.conftest import api  # noqa: F401  (the in-process API, for test_pages.py)
from tests.dashboard.browser import DESKTOP, Screenshots, artifacts_dir, launch_chromium

ADMIN_PASSWORD = "test-root-pass-41"
MEMBER_PASSWORD = "member-secret-1"
HOSTS = {"h1": "fake://h1", "h2": "fake://h2", "h3": "fake://h3"}
#: the only address the server listens on
LOOPBACK = "127.0.0.1"
TICK_S = 0.05
SERVER_START_TIMEOUT_S = 10.0
SERVER_STOP_TIMEOUT_S = 10.0
#: how long Playwright waits for an element or a page by default
UI_TIMEOUT_MS = 10_000
#: how long a post-copy migration of 'hot' may take on the fake (it takes ~7 s)
MIGRATION_TIMEOUT_MS = 60_000
UPDATE_DOCS_ENV = "ORBIT_UPDATE_SCREENSHOTS"

#: 'hot' cannot converge in pre-copy: it dirties twice what one tick sends
HOT = FakeWorkload(memory_bytes=256 * MIB, bandwidth_bytes=4 * MIB, dirty_bytes=8 * MIB)
QUIET = FakeWorkload(memory_bytes=512 * MIB, bandwidth_bytes=64 * MIB, dirty_bytes=0)


@dataclass
class Dashboard:
    """orbit-server at ``url`` (http://127.0.0.1:PORT) and its insides, for checks."""

    url: str
    db: Database
    driver: FakeDriver
    conductor: Conductor

    def at(self, path: str) -> str:
        return f"{self.url}/dashboard{path}"

    def login(self, page: Page, user: str = "admin", password: str = ADMIN_PASSWORD) -> None:
        page.goto(self.at("/login"))
        page.get_by_label("User name").fill(user)
        page.get_by_label("Password").fill(password)
        page.get_by_role("button", name="Log in").click()
        expect(page).to_have_url(self.at("/instances"))


def make_driver() -> FakeDriver:
    driver = FakeDriver(tick_s=TICK_S)
    for uri in HOSTS.values():
        driver.add_host(uri)
    driver.add_domain(HOSTS["h1"], "hot", workload=HOT)
    driver.add_domain(HOSTS["h1"], "vm1", workload=QUIET)
    driver.add_domain(HOSTS["h2"], "web1", workload=QUIET)
    return driver


def _loopback_socket() -> socket.socket:
    """A socket bound to 127.0.0.1 and a free port, handed to uvicorn (no race for it)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((LOOPBACK, 0))
    return sock


@pytest.fixture
def dashboard(db: Database) -> Iterator[Dashboard]:
    sock = _loopback_socket()
    port = int(sock.getsockname()[1])
    config = ServerConfig(bind=f"{LOOPBACK}:{port}", sync_interval_s=0.5, driver="fake")
    with db.session() as session:
        ensure_admin(session, password=ADMIN_PASSWORD)
        create_user(
            session, name="alice", password=MEMBER_PASSWORD, project_name="demo", role="member"
        )
        for name, uri in HOSTS.items():
            session.add(Host(name=name, uri=uri))
    driver = make_driver()
    conductor = Conductor(db, driver, config)
    conductor.start()  # syncs first: hosts up, servers listed
    server = uvicorn.Server(
        uvicorn.Config(
            create_app(Services(config=config, db=db, conductor=conductor)),
            host=LOOPBACK,
            port=port,
            log_level="warning",
            access_log=False,
        )
    )
    thread = threading.Thread(
        target=server.run, kwargs={"sockets": [sock]}, name="orbit-server", daemon=True
    )
    thread.start()
    try:
        deadline = time.monotonic() + SERVER_START_TIMEOUT_S
        while not server.started:
            assert thread.is_alive(), "orbit-server (uvicorn) stopped while starting"
            assert time.monotonic() < deadline, "orbit-server (uvicorn) did not start"
            time.sleep(0.01)
        yield Dashboard(config.base_url, db, driver, conductor)
    finally:
        server.should_exit = True
        thread.join(SERVER_STOP_TIMEOUT_S)
        sock.close()
        conductor.stop()
        assert not thread.is_alive(), "orbit-server (uvicorn) did not stop"


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        chromium = launch_chromium(playwright)
        try:
            yield chromium
        finally:
            chromium.close()


#: console messages that are expected: the browser reports every 4xx page this way
EXPECTED_CONSOLE_ERRORS = ("Failed to load resource: the server responded with a status of 4",)


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A page in a fresh context; afterwards, no script error and no CSP violation was seen."""
    context = browser.new_context(viewport=DESKTOP)
    context.set_default_timeout(UI_TIMEOUT_MS)
    errors: list[str] = []
    context.on("weberror", lambda e: errors.append(f"uncaught: {e.error}"))
    context.on(
        "console",
        lambda m: (
            errors.append(m.text)
            if m.type == "error" and not m.text.startswith(EXPECTED_CONSOLE_ERRORS)
            else None
        ),
    )
    try:
        yield context.new_page()
    finally:
        context.close()
    assert errors == [], errors


@pytest.fixture
def shots(request: pytest.FixtureRequest) -> Screenshots:
    callspec = getattr(request.node, "callspec", None)
    backend = str(callspec.params.get("db_url", "any")) if callspec is not None else "any"
    return Screenshots(
        artifacts_dir(backend),
        update_docs=backend == "sqlite" and os.environ.get(UPDATE_DOCS_ENV) == "1",
    )
