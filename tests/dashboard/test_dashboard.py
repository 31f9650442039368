"""The dashboard in headless Chromium, on SQLite and PostgreSQL, with the fake hypervisors.

Each test drives the pages as an operator would (labels, buttons, links) and checks what
the page shows and what the database then holds.
"""

from __future__ import annotations

import logging
import re
from dataclasses import replace

import httpx
import pytest
from playwright.sync_api import Page, Response, expect
from sqlalchemy import func, select

from orbit.db.models import Host, Migration, Project, Server, Token
from orbit.migration.model import Policy
from orbit.virt.driver import Owner
from orbit.virt.fake import MIB, FakeWorkload
from tests.dashboard.browser import PHONE, Screenshots
from tests.dashboard.conftest import (
    ADMIN_PASSWORD,
    MEMBER_PASSWORD,
    MIGRATION_TIMEOUT_MS,
    UI_TIMEOUT_MS,
    Dashboard,
)
from tests.paused import long_backoff, paused_after_a_refused_resume  # noqa: F401

#: the browser's paths that read and write as the API's do: on SQLite only (the live
#: migration with its progress runs on both databases; tests/api covers both throughout)
SQLITE_ONLY = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)


def _count(dash: Dashboard, model: type[object]) -> int:
    with dash.db.session() as s:
        return int(s.scalar(select(func.count()).select_from(model)) or 0)


def _open_live_migrate(dash: Dashboard, page: Page, server: str) -> None:
    page.goto(dash.at("/instances"))
    page.get_by_role("link", name=f"Live Migrate {server}").click()
    expect(page.get_by_role("heading", name=f"Live Migrate {server}")).to_be_visible()


def _form_controls_have_labels(page: Page) -> None:
    """Every visible control of the page's forms has a <label for> (keyboard, screen reader)."""
    unlabelled = page.evaluate(
        """() => [...document.querySelectorAll('main form input, main form select')]
                 .filter((el) => el.type !== 'hidden' && el.labels.length === 0)
                 .map((el) => el.name)"""
    )
    assert unlabelled == [], unlabelled


# -- logging in and out --------------------------------------------------------------------


@SQLITE_ONLY
def test_log_in_and_out(
    dashboard: Dashboard, page: Page, shots: Screenshots, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    page.goto(dashboard.at("/instances"))
    expect(page).to_have_url(dashboard.at("/login"))  # not logged in: sent to the log-in page
    expect(page.get_by_role("heading", name="Log in to ORBIT")).to_be_visible()
    _form_controls_have_labels(page)
    shots.take(page, "login")

    page.get_by_label("User name").fill("admin")
    page.get_by_label("Password").fill("not-the-password")
    with page.expect_response(dashboard.at("/login")) as refused:
        page.get_by_role("button", name="Log in").click()
    assert refused.value.status == 401
    expect(page.get_by_role("alert")).to_contain_text("user name or password is incorrect")
    expect(page.get_by_label("User name")).to_have_value("admin")  # kept
    expect(page.get_by_label("Password")).to_have_value("")  # never sent back

    dashboard.login(page)
    expect(page.get_by_role("heading", name="Instances")).to_be_visible()
    cookies = page.context.cookies()
    assert [c["name"] for c in cookies] == ["orbit_dashboard"]
    cookie = cookies[0]
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/dashboard"
    assert page.evaluate("document.cookie") == ""  # no script can read it
    assert _count(dashboard, Token) == 1  # the token stays on the server
    with dashboard.db.session() as s:
        assert s.scalar(select(Token.user_id)) is not None

    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(dashboard.at("/login?notice=logged-out"))
    expect(page.get_by_role("status")).to_have_text("You are logged out.")
    assert [c["name"] for c in page.context.cookies()] == ["orbit_login"]  # no session
    assert _count(dashboard, Token) == 0  # revoked
    page.goto(dashboard.at("/hypervisors"))
    expect(page).to_have_url(dashboard.at("/login"))

    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "dashboard log-in user=admin" in logged
    assert ADMIN_PASSWORD not in logged and "not-the-password" not in logged
    assert cookie["value"] not in logged


# -- the main flow: live migration with post-copy, watched live ------------------------------


def test_live_migrate_with_post_copy_through_the_browser(
    dashboard: Dashboard, page: Page, shots: Screenshots
) -> None:
    dashboard.login(page)
    table = page.locator("#instances")
    hot = table.locator("tr[data-server=hot]")
    expect(hot.locator("[data-cell=host]")).to_have_text("h1")
    expect(table.locator("tbody tr")).to_have_count(3)
    shots.take(page, "instances-before")

    # the filter box and a sortable column
    page.get_by_label("Filter").fill("web")
    expect(table.locator("tbody tr:visible")).to_have_count(1)
    expect(page.locator("[data-filter-count=instances]")).to_have_text("1 of 3 shown")
    page.get_by_label("Filter").fill("")
    page.get_by_role("button", name="Memory").click()  # ascending: hot (256 MiB) first
    expect(table.locator("tbody tr").first).to_have_attribute("data-server", "hot")
    page.get_by_role("button", name="Memory").click()
    expect(table.locator("tbody tr").last).to_have_attribute("data-server", "hot")

    _open_live_migrate(dashboard, page, "hot")
    _form_controls_have_labels(page)
    destination = page.get_by_label("Destination host")
    options = destination.locator("option").all_inner_texts()
    assert options[0] == "Automatically schedule"
    assert [o.split(" ")[0] for o in options[1:]] == ["h2", "h3"]  # up hosts but the source
    destination.select_option("h2")
    post_copy = page.get_by_label("Post-copy Migration")
    post_copy.focus()
    page.keyboard.press("Space")  # keyboard-usable
    expect(post_copy).to_be_checked()
    expect(page.locator("#post-copy-help")).to_contain_text("copy its remaining memory on demand")
    expect(page.get_by_label("Block Migration")).not_to_be_checked()
    expect(page.get_by_label("Disk Over Commit")).not_to_be_checked()
    page.get_by_text("Advanced").click()
    expect(page.get_by_label("Switch to post-copy after N iterations")).to_be_visible()
    expect(page.get_by_label("Policy")).to_be_visible()
    shots.take(page, "live-migrate-form", full_page=True)

    page.get_by_role("button", name="Live Migrate").click()
    expect(page).to_have_url(re.compile(re.escape(dashboard.at("/migrations/")) + r"\d+$"))
    expect(page.get_by_role("status")).to_have_text("Live migration of hot requested.")
    page.evaluate("window.notReloaded = true")
    _instances_while_migrating(page, dashboard, shots)

    status = page.locator("#migration [data-field=status]")
    expect(status).to_have_text("running-postcopy", timeout=MIGRATION_TIMEOUT_MS)
    abort = page.get_by_role("button", name="Abort")
    expect(abort).to_be_disabled()
    expect(page.locator("#abort-reason")).to_contain_text("not possible in post-copy")
    expect(page.get_by_role("button", name="Force complete")).to_be_disabled()

    expect(status).to_have_text("completed", timeout=MIGRATION_TIMEOUT_MS)
    assert page.evaluate("window.notReloaded") is True  # updated by polling, not reloads
    marker = page.locator("#chart .switch-marker")
    expect(marker).to_have_count(1)
    expect(marker).to_contain_text("post-copy")
    expect(page.locator("#chart .series-remaining")).to_have_count(1)
    expect(page.locator("#chart .series-dirty")).to_have_count(1)
    expect(page.locator("[data-field=switch_at]")).to_have_text(re.compile(r"^\d+\.\d s$"))
    expect(page.locator("[data-field=memory_remaining]")).to_have_text("0.0 MiB")
    assert int(page.locator("[data-field=postcopy_requests]").inner_text()) > 0
    expect(page.locator("[data-decisions]")).to_contain_text("switch-to-postcopy")
    expect(abort).to_be_disabled()
    expect(page.locator("#abort-reason")).to_contain_text("over (completed)")
    shots.take(page, "migration-chart", full_page=True)

    with dashboard.db.session() as s:
        m = s.scalars(select(Migration)).one()
        assert (m.status, m.post_copy, m.policy) == ("completed", True, Policy.AUTO.value)
        assert m.dest_host is not None and m.dest_host.name == "h2"
        assert m.switch_at_s is not None and m.postcopy_requests > 0
        server = s.scalars(select(Server).where(Server.name == "hot")).one()
        assert server.host is not None and server.host.name == "h2"
        assert m.prediction is not None and m.total_s is not None
        predicted = (
            f"Predicted {m.prediction['total_s']:.1f} s ({m.prediction['strategy']}) "
            f"{m.prediction['made_at_s']:.1f} s in, took {m.total_s:.1f} s"
        )
    _shows_the_prediction(page, predicted)  # as the polling left it
    page.reload()
    _shows_the_prediction(page, predicted)  # as the server renders it

    page.get_by_role("link", name="Instances", exact=True).click()
    expect(hot.locator("[data-cell=host]")).to_have_text("h2")
    expect(hot.locator("[data-cell=migration]")).to_have_text("—")

    page.get_by_role("link", name="Migrations", exact=True).click()
    row = page.locator("#migrations tbody tr").first
    expect(row.locator("[data-cell=status]")).to_have_text("completed")
    expect(row).to_contain_text("hot")
    shots.take(page, "migrations")

    page.get_by_role("link", name="Hypervisors", exact=True).click()
    expect(page.locator("tr[data-host=h2] [data-cell=vms]")).to_have_text("2")
    expect(page.locator("tr[data-host=h1] [data-cell=vms]")).to_have_text("1")
    with dashboard.db.session() as s:  # what PUT /os-services/{id} does
        h3 = s.scalars(select(Host).where(Host.name == "h3")).one()
        h3.disabled, h3.disabled_reason = True, "maintenance"
    page.reload()
    expect(page.locator("tr[data-host=h3] [data-cell=disabled]")).to_have_text(
        "disabled: maintenance"
    )
    expect(page.locator("tr[data-host=h2] [data-cell=disabled]")).to_have_count(0)
    shots.take(page, "hypervisors")


@SQLITE_ONLY
def test_abort_in_pre_copy_and_force_complete(dashboard: Dashboard, page: Page) -> None:
    dashboard.login(page)
    status = page.locator("#migration [data-field=status]")
    # without post-copy, 'hot' never converges: abort it while pre-copy runs
    _open_live_migrate(dashboard, page, "hot")
    page.get_by_label("Destination host").select_option("h2")
    page.get_by_role("button", name="Live Migrate").click()
    expect(status).to_have_text("running-precopy", timeout=MIGRATION_TIMEOUT_MS)
    page.get_by_role("button", name="Abort").click()
    expect(page.get_by_role("status")).to_contain_text("Abort requested")
    expect(status).to_have_text("cancelled", timeout=MIGRATION_TIMEOUT_MS)
    expect(page.get_by_role("button", name="Abort")).to_be_disabled()
    with dashboard.db.session() as s:
        hot = s.scalars(select(Server).where(Server.name == "hot")).one()
        assert hot.host is not None and hot.host.name == "h1"

    # again, then force complete: without post-copy the VM is paused so pre-copy finishes
    _open_live_migrate(dashboard, page, "hot")
    page.get_by_label("Destination host").select_option("h2")
    page.get_by_role("button", name="Live Migrate").click()
    expect(status).to_have_text("running-precopy", timeout=MIGRATION_TIMEOUT_MS)
    page.get_by_role("button", name="Force complete").click()
    expect(page.get_by_role("status")).to_contain_text("Force complete: pausing the VM")
    expect(status).to_have_text("completed", timeout=MIGRATION_TIMEOUT_MS)
    expect(page.locator("#chart .switch-marker")).to_have_count(0)  # it never switched
    with dashboard.db.session() as s:
        assert [m.status for m in s.scalars(select(Migration).order_by(Migration.id))] == [
            "cancelled",
            "completed",
        ]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the API's path on both
@pytest.mark.usefixtures("long_backoff")
def test_resume_now_on_a_paused_post_copy(dashboard: Dashboard, page: Page) -> None:
    """Post-copy paused, the engine's first resume refused and its next a minute away:
    Resume now completes it within seconds (tests/paused.py)."""
    with httpx.Client(base_url=dashboard.url, timeout=10.0, trust_env=False) as http:
        user = {"name": "admin", "password": ADMIN_PASSWORD}
        body = {"auth": {"identity": {"methods": ["password"], "password": {"user": user}}}}
        token = http.post("/identity/v3/auth/tokens", json=body).headers["X-Subject-Token"]
        headers = {"X-Auth-Token": token, "OpenStack-API-Version": "compute 2.65"}
        mid = paused_after_a_refused_resume(
            http, headers, dashboard.driver, dashboard.conductor,
            workload=FakeWorkload(memory_bytes=256 * MIB, bandwidth_bytes=4 * MIB,
                                  dirty_bytes=8 * MIB),
        ).mid  # fmt: skip
    dashboard.login(page)
    page.goto(dashboard.at(f"/migrations/{mid}"))
    expect(page.locator("#migration [data-field=status]")).to_have_text("postcopy-paused")
    reason = page.locator("#resume-reason")
    expect(reason).to_contain_text("Post-copy is paused for")
    expect(reason).to_contain_text("(1 attempt(s) so far)")
    page.get_by_role("button", name="Resume now").click()
    expect(page.get_by_role("status")).to_contain_text("Resume: resuming post-copy now.")
    # well before the engine's own attempt (LONG_BACKOFF_S)
    expect(page.locator("#migration [data-field=status]")).to_have_text("completed", timeout=20_000)
    expect(page.get_by_role("button", name="Resume now")).to_be_disabled()
    with dashboard.db.session() as s:
        m = s.get(Migration, mid)
        assert m is not None
        made = [d["source"] for d in m.decisions
                if d["action"] == "resume-postcopy" and "skipped" not in d["reason"]]  # fmt: skip
        assert made == ["engine", "operator"]


# -- roles, CSRF and form errors -----------------------------------------------------------


@SQLITE_ONLY
def test_a_member_sees_its_projects_instances_and_no_migrate_action(
    dashboard: Dashboard, page: Page
) -> None:
    with dashboard.db.session() as s:  # vm1's domain names alice's project, demo
        demo = s.scalars(select(Project).where(Project.name == "demo")).one()
        owner = Owner(demo.id, demo.name)
    for host in dashboard.driver.hosts.values():
        if "vm1" in host.domains:
            host.domains["vm1"] = replace(host.domains["vm1"], owner=owner)
    dashboard.conductor.sync()
    dashboard.login(page, "alice", MEMBER_PASSWORD)
    rows = page.locator("#instances tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_have_attribute("data-server", "vm1")
    expect(page.get_by_text("Live Migrate")).to_have_count(0)
    for link in ("Migrations", "Hypervisors"):
        expect(page.get_by_role("link", name=link, exact=True)).to_have_count(0)
    server_id = _server_id(dashboard, "vm1")
    for path in (f"/instances/{server_id}/live-migrate", "/migrations"):
        with page.expect_response(dashboard.at(path)) as answer:
            page.goto(dashboard.at(path))
        assert answer.value.status == 403
        expect(page.get_by_role("alert")).to_contain_text("needs the admin role")


@SQLITE_ONLY
def test_a_tampered_csrf_token_is_rejected(dashboard: Dashboard, page: Page) -> None:
    dashboard.login(page)
    _open_live_migrate(dashboard, page, "vm1")
    page.get_by_label("Destination host").select_option("h2")
    page.locator("#live-migrate-form input[name=csrf_token]").evaluate(
        "(el) => { el.value = 'forged-token'; }"
    )
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        page.get_by_role("button", name="Live Migrate").click()
    assert answer.value.status == 403
    expect(page.get_by_role("heading", name="403 Forbidden")).to_be_visible()
    expect(page.get_by_role("alert")).to_contain_text("security token is missing or does not match")
    assert _count(dashboard, Migration) == 0

    # the log-out form is protected as well: the session survives a forged log-out
    page.goto(dashboard.at("/instances"))
    page.locator("form.user input[name=csrf_token]").evaluate("(el) => el.remove()")
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_role("heading", name="403 Forbidden")).to_be_visible()
    page.goto(dashboard.at("/instances"))
    expect(page.get_by_role("heading", name="Instances")).to_be_visible()


@SQLITE_ONLY
def test_a_bad_form_shows_the_error_in_the_form(dashboard: Dashboard, page: Page) -> None:
    dashboard.login(page)
    _open_live_migrate(dashboard, page, "vm1")
    # N without post-copy: MigrationSettings.resolve refuses it, as the API does
    page.get_by_label("Destination host").select_option("h3")
    page.get_by_label("Block Migration").check()
    page.get_by_text("Advanced").click()
    page.get_by_label("Switch to post-copy after N iterations").fill("5")
    answer = _submit(page)
    assert answer.status == 400
    alert = page.locator("[data-form-error]")
    expect(alert).to_contain_text("The migration was not started.")
    expect(alert).to_contain_text("post_copy_after_iterations needs post_copy=true")
    # re-filled as submitted
    expect(page.get_by_label("Destination host")).to_have_value("h3")
    expect(page.get_by_label("Block Migration")).to_be_checked()
    expect(page.get_by_label("Post-copy Migration")).not_to_be_checked()
    expect(page.get_by_label("Switch to post-copy after N iterations")).to_have_value("5")

    # N out of range (the browser's own check bypassed, as a script could)
    page.get_by_label("Post-copy Migration").check()
    n = page.get_by_label("Switch to post-copy after N iterations")
    n.evaluate("(el) => { el.removeAttribute('max'); }")
    n.fill("101")
    assert _submit(page).status == 400
    expect(page.locator("[data-form-error]")).to_contain_text(
        "post_copy_after_iterations must be 0..100, got 101"
    )

    # destination = source (a stale or edited form): the conductor refuses it
    n.fill("")
    page.get_by_label("Destination host").evaluate(
        "(el) => el.add(new Option('h1 (the source)', 'h1'))"
    )
    page.get_by_label("Destination host").select_option("h1")
    assert _submit(page).status == 400
    expect(page.locator("[data-form-error]")).to_contain_text(
        "the destination h1 is the server's current host"
    )
    expect(page.get_by_label("Destination host")).to_have_value("h1")
    assert _count(dashboard, Migration) == 0


# -- small screens -------------------------------------------------------------------------


@SQLITE_ONLY
def test_pages_fit_a_phone(dashboard: Dashboard, page: Page, shots: Screenshots) -> None:
    page.set_viewport_size(PHONE)
    page.goto(dashboard.at("/login"))
    _no_page_scroll(page)
    shots.take(page, "login-390")
    dashboard.login(page)
    for path, name in (("/instances", "instances-390"), ("/hypervisors", "hypervisors-390")):
        page.goto(dashboard.at(path))
        _no_page_scroll(page)
        wrap = page.locator(".table-wrap")
        assert wrap.evaluate("(el) => el.scrollWidth > el.clientWidth")  # the table scrolls
        shots.take(page, name, full_page=True)
    _open_live_migrate(dashboard, page, "vm1")
    _no_page_scroll(page)
    shots.take(page, "live-migrate-form-390", full_page=True)
    page.get_by_label("Destination host").select_option("h3")
    page.get_by_role("button", name="Live Migrate").click()  # vm1 is quiet: done in ~0.5 s
    expect(page.locator("#migration [data-field=status]")).to_have_text(
        "completed", timeout=MIGRATION_TIMEOUT_MS
    )
    expect(page.locator("#chart .series-remaining")).to_have_count(1)
    _no_page_scroll(page)
    shots.take(page, "migration-390", full_page=True)


# -- helpers -------------------------------------------------------------------------------


def _instances_while_migrating(page: Page, dash: Dashboard, shots: Screenshots) -> None:
    """In a second tab: the Instances page shows the migration in progress."""
    tab = page.context.new_page()
    try:
        tab.goto(dash.at("/instances"))
        hot = tab.locator("#instances tr[data-server=hot]")
        expect(hot.locator("[data-cell=migration]")).to_contain_text(
            re.compile(r"#\d+ (queued|preparing|running)")
        )
        expect(hot.get_by_role("link", name="Live Migrate hot")).to_have_count(0)
        shots.take(tab, "instances")
    finally:
        tab.close()


def _shows_the_prediction(page: Page, predicted: str) -> None:
    """auto's plan of 'hot' (post-copy after N passes), its reason and rates, with units."""
    plan = page.locator("#plan")
    expect(plan.locator("[data-field=prediction]")).to_have_text(predicted)
    assert re.fullmatch(
        r"Predicted \d+\.\d s \(postcopy-after-\d\) \d+\.\d s in, took \d+\.\d s", predicted
    )
    expect(plan.locator("[data-field=plan_reason]")).to_contain_text(
        re.compile(r"^plan postcopy-after-\d: .* from dirty rate \d+\.\d MiB/s \(")
    )
    rate_and_source = re.compile(r"^\d+(\.\d+)? [KMG]iB/s \(\S.*\)$")
    expect(plan.locator("[data-field=plan_dirty_rate]")).to_have_text(rate_and_source)
    expect(plan.locator("[data-field=plan_link_rate]")).to_have_text(rate_and_source)
    expect(plan.locator("[data-field=achieved_link_rate]")).to_have_text(
        re.compile(r"^(\d+(\.\d+)? [KMG]iB/s|—)$")
    )
    expect(page.locator("[data-decisions] li").first).to_contain_text("auto's plan: plan ")


def _server_id(dash: Dashboard, name: str) -> str:
    with dash.db.session() as s:
        return str(s.scalars(select(Server.id).where(Server.name == name)).one())


def _submit(page: Page) -> Response:
    with page.expect_response(lambda r: r.request.method == "POST", timeout=UI_TIMEOUT_MS) as r:
        page.get_by_role("button", name="Live Migrate").click()
    page.wait_for_load_state()
    return r.value


def _no_page_scroll(page: Page) -> None:
    """The page itself does not scroll sideways (wide tables scroll in their own box)."""
    width = page.evaluate("document.documentElement.scrollWidth")
    wide = page.evaluate(
        """(limit) => [...document.querySelectorAll('body *')]
             .filter((el) => el.getBoundingClientRect().right > limit + 0.5
                             && !el.closest('.table-wrap table'))
             .map((el) => el.tagName + '.' + el.className)""",
        PHONE["width"],
    )
    assert width <= PHONE["width"], f"page is {width} px wide at {PHONE['width']} px: {wide}"


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # drains on both: tests/api
def test_drain_a_host_through_the_browser(
    dashboard: Dashboard, page: Page, shots: Screenshots
) -> None:
    dashboard.login(page)
    page.get_by_role("link", name="Hypervisors", exact=True).click()
    page.get_by_role("link", name="Drain host h1").click()
    expect(page.get_by_role("heading", name="Drain host h1")).to_be_visible()
    # the destinations offered: up, enabled, not h1
    boxes = page.locator("#drain-form input[name=to]")
    assert sorted(boxes.evaluate_all("els => els.map(e => e.value)")) == ["h2", "h3"]
    page.get_by_label("Post-copy Migration").check()
    page.get_by_role("button", name="Show plan").click()
    plan = page.locator("#plan")
    expect(plan.locator("tr[data-vm]")).to_have_count(2)
    expect(plan.locator("tr[data-vm=hot] [data-cell=state]")).to_have_text("pending")
    expect(page.get_by_label("Post-copy Migration")).to_be_checked()  # the form kept its values
    shots.take(page, "drain-plan", full_page=True)
    with dashboard.db.session() as s:  # the plan changed nothing
        assert not s.scalars(select(Host.disabled).where(Host.name == "h1")).one()
    page.get_by_role("button", name="Drain h1").click()
    expect(page.locator("[data-field=status]")).to_have_text("completed", timeout=30_000)
    rows = page.locator("#drain-items tr[data-vm]")
    expect(rows).to_have_count(2)
    for vm in ("hot", "vm1"):
        expect(page.locator(f"tr[data-vm={vm}] [data-cell=state]")).to_have_text("moved")
    expect(page.locator("[data-cell=summary]")).to_contain_text("2 of 2 moved")
    shots.take(page, "drain-done", full_page=True)
    page.get_by_role("navigation", name="Admin").get_by_role("link", name="Hypervisors").click()
    expect(page.locator("tr[data-host=h1] [data-cell=vms]")).to_have_text("0")
    expect(page.locator("tr[data-host=h1] [data-cell=disabled]")).to_contain_text("draining")
