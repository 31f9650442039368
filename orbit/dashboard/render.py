"""Jinja2 templates: one environment (autoescaped, strict), the filters, and :func:`page`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jinja2
from fastapi import Request
from fastapi.templating import Jinja2Templates
from starlette.responses import HTMLResponse

from orbit.dashboard import present
from orbit.dashboard.auth import CSRF_FIELD, Viewer
from orbit.dashboard.sessions import DashboardSession, Flash

TEMPLATES_DIR = Path(__file__).parent / "templates"


def path_for(request: Request, name: str, /, **params: Any) -> str:
    """The path of a named dashboard route or static file, under the mount (``/dashboard``).

    Starlette's ``url_for`` resolves names from the outermost router (the API's), so the
    dashboard's own names are looked up in its own application and prefixed here.
    """
    root = str(request.scope.get("root_path") or "")
    return root + str(request.app.url_path_for(name, **params))


@jinja2.pass_context
def _template_path_for(context: jinja2.runtime.Context, name: str, /, **params: Any) -> str:
    return path_for(context["request"], name, **params)


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES_DIR),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters.update(
        bytes=present.fmt_bytes,
        mib=present.fmt_mib,
        rate=present.fmt_rate,
        seconds=present.fmt_seconds,
        ms=present.fmt_ms,
        time=present.fmt_time,
    )
    env.globals.update(
        path_for=_template_path_for, csrf_field_name=CSRF_FIELD, progress_pct=present.progress_pct
    )
    return env


templates = Jinja2Templates(env=_environment())


def page(
    request: Request,
    template: str,
    *,
    viewer: Viewer | None,
    title: str,
    status_code: int = 200,
    session: DashboardSession | None = None,
    **context: Any,
) -> HTMLResponse:
    """Render a page for ``viewer`` (or an anonymous ``session``: the log-in page).

    The session's one-time messages are shown, and used up, here; its CSRF token goes into
    every form of the page.
    """
    session = viewer.session if viewer is not None else session
    flashes: list[Flash] = session.pop_flashes() if session is not None else []
    return templates.TemplateResponse(
        request,
        template,
        {
            "viewer": viewer,
            "title": title,
            "flashes": flashes,
            "csrf_token": session.csrf_token if session is not None else "",
            **context,  # the log-in page brings its own flashes and CSRF token
        },
        status_code=status_code,
    )
