"""The dashboard's pages, served by orbit-server under ``/dashboard``.

It is a FastAPI sub-application mounted by :func:`install`: its errors are pages (not the
API's JSON), it has no OpenAPI document, and every page, script and style comes from
orbit-server itself (the Content-Security-Policy allows nothing else). Actions call the
same code as the API: :meth:`MigrationSettings.resolve` and the conductor.

    /dashboard/login                      log in (POST) / the form (GET); POST /logout
    /dashboard/instances                  servers; Live Migrate for admins
    /dashboard/instances/{id}/live-migrate   the form (GET), the request (POST)
    /dashboard/migrations                 every migration (admins, as os-migrations)
    /dashboard/migrations/{id}            one migration, live; POST .../force-complete,
                                          .../abort, .../resume (a paused post-copy)
    /dashboard/migrations/{id}/progress   its state and new samples as JSON (polled)
    /dashboard/hypervisors                hosts: state, memory, VM count; Drain host
    /dashboard/hypervisors/{name}/drain   the drain form (GET); its plan or its start (POST)
    /dashboard/drains/{id}                a drain: each VM's state, refreshed until it ends;
                                          POST .../cancel
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from sqlalchemy.orm import Session
from starlette.datastructures import FormData
from starlette.responses import Response

from orbit.api.deps import Services, ServicesDep, SessionDep
from orbit.api.errors import status_of
from orbit.api.routes.drains import plan_view
from orbit.api.views import drain_view, sample_view
from orbit.dashboard import errors, queries
from orbit.dashboard.auth import (
    FormDep,
    Viewer,
    ViewerDep,
    browser_session,
    end_login_form,
    end_session_cookie,
    login_form_token,
    session_store,
    set_login_cookie,
    set_session_cookie,
)
from orbit.dashboard.forms import (
    FORM_ERRORS,
    POLICY_CHOICES,
    POST_COPY_HELP,
    DrainForm,
    LiveMigrateForm,
)
from orbit.dashboard.present import migration_state
from orbit.dashboard.render import page, path_for
from orbit.dashboard.sessions import Flash, FlashLevel, SessionStore
from orbit.db.models import Host, Server
from orbit.errors import AuthError, MigrationRefused, TooManyAttempts
from orbit.identity.service import issue_token, revoke_token_id, token_id_of
from orbit.migration.model import MAX_POST_COPY_AFTER_ITERATIONS

log = logging.getLogger(__name__)

PREFIX = "/dashboard"
STATIC_DIR = Path(__file__).parent / "static"
#: how often the migration page asks for new progress (the script reads it from the page)
POLL_INTERVAL_MS = 1000
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}

LOGIN_FAILED = "The user name or password is incorrect."

router = APIRouter()


def _redirect(request: Request, name: str, **params: Any) -> RedirectResponse:
    return RedirectResponse(path_for(request, name, **params), status_code=303)


def _matches(q: str, *texts: str | None) -> bool:
    """The filter box's rule (the script applies the same as you type): a substring, any case."""
    needle = q.strip().lower()
    return not needle or any(needle in t.lower() for t in texts if t)


def _name(host: Host | None) -> str | None:
    return host.name if host is not None else None


def _field(form: FormData, key: str) -> str:
    value = form.get(key)
    return value if isinstance(value, str) else ""


# -- logging in and out ------------------------------------------------------------------


@router.get("/", name="home")
def home(request: Request) -> RedirectResponse:
    return _redirect(request, "instances")


#: one-time notices on the log-in page, named in its URL (?notice=...): fixed texts only
NOTICES = {
    "logged-out": Flash(FlashLevel.INFO, "You are logged out."),
    "session-ended": Flash(
        FlashLevel.ERROR, "Your session ended (its token expired or was revoked); log in again."
    ),
}


def _login_page(
    request: Request, *, status_code: int = 200, username: str = "", error: str = ""
) -> Response:
    """The log-in form; no session is made for it (its CSRF token is a signed cookie)."""
    notice = NOTICES.get(request.query_params.get("notice", ""))
    token, new_cookie = login_form_token(request)
    response = page(
        request,
        "login.html",
        viewer=None,
        title="Log in",
        status_code=status_code,
        username=username,
        error=error,
        flashes=[notice] if notice is not None else [],
        csrf_token=token,
    )
    if new_cookie is not None:
        set_login_cookie(response, request, new_cookie)
    return response


@router.get("/login", name="login")
def login_page(request: Request) -> Response:
    if browser_session(request) is not None:
        return _redirect(request, "instances")
    return _login_page(request)


@router.post("/login", name="login_submit")
def login(request: Request, form: FormDep, services: ServicesDep, db: SessionDep) -> Response:
    username = _field(form, "username").strip()
    source = request.client.host if request.client else "-"
    wait_s = services.throttle.retry_after_s(username, source)
    error, status = "", 200
    if wait_s > 0:  # refused without a password check (orbit/identity/throttle.py)
        error, status = str(TooManyAttempts(wait_s)).capitalize() + ".", 429
    else:
        try:
            token, ctx = issue_token(
                db,
                user_name=username,
                password=_field(form, "password"),
                project_name=None,
                ttl_s=services.config.token_ttl_s,
            )
        except AuthError:  # the same message for an unknown user and a wrong password
            services.throttle.failed(username, source)
            error, status = LOGIN_FAILED, 401
    if error:
        log.info("dashboard log-in refused user=%r status=%d", username, status)
        refused = _login_page(request, status_code=status, username=username, error=error)
        if status == 429:
            refused.headers["Retry-After"] = str(math.ceil(wait_s))
        return refused
    services.throttle.succeeded(username)
    db.commit()  # before the browser can use the session
    store = session_store(request)
    old = browser_session(request)
    if old is not None:
        store.drop(old.id)  # a new id after log-in: no session fixation
    token_id = token_id_of(db, token=token)
    assert token_id is not None  # issued and committed just above
    session = store.new(token_id=token_id)
    log.info("dashboard log-in user=%s role=%s", ctx.user_name, ctx.role)
    response = _redirect(request, "instances")
    set_session_cookie(response, request, session)
    end_login_form(response, request)
    return response


@router.post("/logout", name="logout")
def logout(request: Request, viewer: ViewerDep, form: FormDep, db: SessionDep) -> Response:
    revoke_token_id(db, token_id=viewer.session.token_id)
    db.commit()
    session_store(request).drop(viewer.session.id)  # gone with its token already
    log.info("dashboard log-out user=%s", viewer.auth.user_name)
    response = RedirectResponse(f"{path_for(request, 'login')}?notice=logged-out", status_code=303)
    end_session_cookie(response, request)
    return response


# -- instances and the Live Migrate form -------------------------------------------------


@router.get("/instances", name="instances")
def instances(request: Request, viewer: ViewerDep, db: SessionDep, q: str = "") -> Response:
    rows = [
        r
        for r in queries.servers(db, auth=viewer.auth)
        if _matches(q, r.server.name, r.server.status, _name(r.server.host))
    ]
    return page(request, "instances.html", viewer=viewer, title="Instances", rows=rows, q=q)


def _live_migrate_page(
    request: Request,
    viewer: Viewer,
    db: Session,
    server: Server,
    form: LiveMigrateForm,
    *,
    error: str = "",
    status_code: int = 200,
) -> Response:
    destinations = queries.destinations(db, source_host_id=server.host_id)
    return page(
        request,
        "live_migrate.html",
        viewer=viewer,
        title=f"Live Migrate {server.name}",
        status_code=status_code,
        server=server,
        form=form,
        error=error,
        destinations=destinations,
        destination_names=[h.name for h in destinations],
        policy_choices=POLICY_CHOICES,
        post_copy_help=POST_COPY_HELP,
        max_after=MAX_POST_COPY_AFTER_ITERATIONS,
    )


@router.get("/instances/{server_id}/live-migrate", name="live_migrate")
def live_migrate_form(
    request: Request, server_id: str, viewer: ViewerDep, db: SessionDep
) -> Response:
    viewer.auth.require_admin("live-migrating a server")
    server = queries.server(db, server_id=server_id, auth=viewer.auth)
    return _live_migrate_page(request, viewer, db, server, LiveMigrateForm())


@router.post("/instances/{server_id}/live-migrate", name="live_migrate_submit")
def live_migrate(
    request: Request,
    server_id: str,
    viewer: ViewerDep,
    form: FormDep,
    db: SessionDep,
    services: ServicesDep,
) -> Response:
    viewer.auth.require_admin("live-migrating a server")
    server = queries.server(db, server_id=server_id, auth=viewer.auth)
    fields = LiveMigrateForm.from_form(form)
    try:
        migration_id = services.conductor.request_migration(
            db,
            server=server,
            dest_host_name=fields.dest_host_name,
            settings=fields.settings(),
            block_migration_auto=False,
            disk_over_commit=fields.disk_over_commit,
            user_id=viewer.auth.user_id,
            project_id=viewer.auth.project_id,
        )
        name = server.name
        db.commit()  # before the dispatcher looks and before the browser asks for it
    except FORM_ERRORS as err:
        db.rollback()
        return _live_migrate_page(
            request, viewer, db, server, fields, error=str(err), status_code=status_of(err)
        )
    services.conductor.kick()
    viewer.session.flash(f"Live migration of {name} requested.")
    return _redirect(request, "migration", migration_id=migration_id)


# -- migrations ----------------------------------------------------------------------------


@router.get("/migrations", name="migrations")
def migrations(request: Request, viewer: ViewerDep, db: SessionDep, q: str = "") -> Response:
    viewer.auth.require_admin("listing all migrations")
    rows = [
        m
        for m in queries.migrations(db)
        if _matches(
            q,
            m.server.name,
            m.status,
            _name(m.source_host),
            _name(m.dest_host),
        )
    ]
    return page(request, "migrations.html", viewer=viewer, title="Migrations", migrations=rows, q=q)


@router.get("/migrations/{migration_id}", name="migration")
def migration(request: Request, migration_id: int, viewer: ViewerDep, db: SessionDep) -> Response:
    m = queries.migration(db, migration_id=migration_id, auth=viewer.auth)
    state = migration_state(m, queries.latest_sample(db, migration_id=m.id))
    return page(
        request,
        "migration.html",
        viewer=viewer,
        title=f"Migration {m.id}",
        m=m,
        state=state,
        poll_interval_ms=POLL_INTERVAL_MS,
    )


@router.get("/migrations/{migration_id}/progress", name="migration_progress")
def migration_progress(
    migration_id: int, viewer: ViewerDep, db: SessionDep, after_s: float = -1.0
) -> JSONResponse:
    """The migration's state and its samples taken after ``after_s`` (for the live page)."""
    m = queries.migration(db, migration_id=migration_id, auth=viewer.auth)
    new = queries.samples(db, migration_id=m.id, after_s=after_s)
    latest = new[-1] if new else queries.latest_sample(db, migration_id=m.id)
    return JSONResponse(
        {"migration": migration_state(m, latest), "samples": [sample_view(s) for s in new]},
        headers={"Cache-Control": "no-store"},
    )


@router.post("/migrations/{migration_id}/force-complete", name="force_complete")
def force_complete(
    request: Request,
    migration_id: int,
    viewer: ViewerDep,
    form: FormDep,
    db: SessionDep,
    services: ServicesDep,
) -> Response:
    viewer.auth.require_admin("force_complete")
    m = queries.migration(db, migration_id=migration_id, auth=viewer.auth)
    try:
        what = services.conductor.force_complete(db, m)
    except MigrationRefused as err:
        viewer.session.flash(f"Force complete refused: {err}", FlashLevel.ERROR)
    else:
        viewer.session.flash(f"Force complete: {what}.")
    return _redirect(request, "migration", migration_id=migration_id)


@router.post("/migrations/{migration_id}/resume", name="resume")
def resume(
    request: Request,
    migration_id: int,
    viewer: ViewerDep,
    form: FormDep,
    db: SessionDep,
    services: ServicesDep,
) -> Response:
    viewer.auth.require_admin("resuming a paused post-copy")
    m = queries.migration(db, migration_id=migration_id, auth=viewer.auth)
    try:
        what = services.conductor.resume_now(db, m)
    except MigrationRefused as err:
        viewer.session.flash(f"Resume refused: {err}", FlashLevel.ERROR)
    else:
        viewer.session.flash(f"Resume: {what}.")
    return _redirect(request, "migration", migration_id=migration_id)


@router.post("/migrations/{migration_id}/abort", name="abort")
def abort(
    request: Request,
    migration_id: int,
    viewer: ViewerDep,
    form: FormDep,
    db: SessionDep,
    services: ServicesDep,
) -> Response:
    viewer.auth.require_admin("aborting a live migration")
    m = queries.migration(db, migration_id=migration_id, auth=viewer.auth)
    try:
        services.conductor.abort(db, m)
    except MigrationRefused as err:
        db.rollback()
        viewer.session.flash(f"Abort refused: {err}", FlashLevel.ERROR)
    else:
        db.commit()
        viewer.session.flash("Abort requested: the VM stays on its source host.")
    return _redirect(request, "migration", migration_id=migration_id)


# -- hypervisors ---------------------------------------------------------------------------


@router.get("/hypervisors", name="hypervisors")
def hypervisors(request: Request, viewer: ViewerDep, db: SessionDep) -> Response:
    viewer.auth.require_admin("listing hypervisors")
    rows = queries.hosts(db)
    return page(request, "hypervisors.html", viewer=viewer, title="Hypervisors", rows=rows)


# -- draining a host ----------------------------------------------------------------------

#: how often a running drain's page reloads itself
DRAIN_REFRESH_S = 2


def _drain_targets(db: Session, host: Host) -> list[Host]:
    return queries.destinations(db, source_host_id=host.id)


def _drain_page(
    request: Request,
    viewer: Viewer,
    db: Session,
    host: Host,
    form: DrainForm,
    *,
    plan: dict[str, Any] | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    return page(
        request,
        "drain.html",
        viewer=viewer,
        title=f"Drain {host.name}",
        status_code=status_code,
        host=host,
        targets=_drain_targets(db, host),
        form=form,
        plan=plan,
        items=plan["items"] if plan else [],
        error=error,
    )


@router.get("/hypervisors/{name}/drain", name="drain_form")
def drain_form(
    request: Request, name: str, viewer: ViewerDep, db: SessionDep, services: ServicesDep
) -> Response:
    viewer.auth.require_admin("draining a host")
    host = queries.host(db, name=name)
    form = DrainForm(max_parallel=str(services.config.max_outgoing_per_host))
    return _drain_page(request, viewer, db, host, form)


@router.post("/hypervisors/{name}/drain", name="drain_submit")
def drain_submit(
    request: Request,
    name: str,
    viewer: ViewerDep,
    form: FormDep,
    db: SessionDep,
    services: ServicesDep,
) -> Response:
    viewer.auth.require_admin("draining a host")
    host = queries.host(db, name=name)
    fields = DrainForm.from_form(form)
    drains = services.conductor.drains
    try:
        drain_request = fields.request(name)
        planned = drains.plan(db, drain_request)
        if _field(form, "action") != "start":
            return _drain_page(
                request, viewer, db, host, fields, plan=plan_view(drain_request, planned)
            )
        drain = drains.start(db, drain_request, planned, user_id=viewer.auth.user_id,
                             project_id=viewer.auth.project_id)  # fmt: skip
    except (*FORM_ERRORS, MigrationRefused) as err:
        db.rollback()
        host = queries.host(db, name=name)
        return _drain_page(request, viewer, db, host, fields, error=str(err),
                           status_code=status_of(err))  # fmt: skip
    viewer.session.flash(f"Draining {name}: it is disabled, its VMs are leaving.")
    return _redirect(request, "drain", drain_id=drain.id)


@router.get("/drains/{drain_id}", name="drain")
def drain_status(request: Request, drain_id: int, viewer: ViewerDep, db: SessionDep) -> Response:
    viewer.auth.require_admin("showing a drain")
    d = drain_view(queries.drain(db, drain_id=drain_id))
    final = d["status"] in ("completed", "incomplete", "cancelled")
    return page(request, "drain_status.html", viewer=viewer, title=f"Drain {drain_id}", d=d,
                final=final, refresh_s=DRAIN_REFRESH_S)  # fmt: skip


@router.post("/drains/{drain_id}/cancel", name="drain_cancel")
def drain_cancel(
    request: Request,
    drain_id: int,
    viewer: ViewerDep,
    form: FormDep,
    db: SessionDep,
    services: ServicesDep,
) -> Response:
    viewer.auth.require_admin("cancelling a drain")
    drain = queries.drain(db, drain_id=drain_id)
    try:
        services.conductor.drains.cancel(db, drain)
    except MigrationRefused as err:
        viewer.session.flash(f"Cancel refused: {err}", FlashLevel.ERROR)
    else:
        viewer.session.flash("Drain cancelled: nothing more starts; migrations under way finish.")
    return _redirect(request, "drain", drain_id=drain_id)


# -- the application -----------------------------------------------------------------------


async def security_headers(
    request: Request, call_next: Callable[[Request], Awaitable[Response]]
) -> Response:
    response = await call_next(request)
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    if response.media_type == "text/html" or "text/html" in response.headers.get(
        "content-type", ""
    ):
        response.headers.setdefault("Cache-Control", "no-store")
    return response


def create_dashboard(services: Services) -> FastAPI:
    """The dashboard as an application of its own (mounted under :data:`PREFIX`)."""
    app = FastAPI(title="ORBIT dashboard", openapi_url=None, docs_url=None, redoc_url=None)
    app.state.services = services
    app.state.sessions = SessionStore(services.db)
    errors.install(app)
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.middleware("http")(security_headers)
    return app


def install(app: FastAPI) -> None:
    """Serve the dashboard under ``/dashboard``, with the services in ``app.state``."""
    app.mount(PREFIX, create_dashboard(app.state.services), name="dashboard")
