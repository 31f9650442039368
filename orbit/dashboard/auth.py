"""Who is looking at a page, and whether a form really comes from the dashboard.

- :func:`current_viewer` (``ViewerDep``): the logged-in user behind the session cookie; the
  session's ORBIT token is validated against the database on every request, so an expired
  or revoked token ends the session. Raises :class:`LoginRequired` otherwise.
- :func:`checked_form` (``FormDep``): the POSTed form, after its ``csrf_token`` field was
  compared with the session's; raises :class:`CsrfRejected` on a missing or wrong one.

Both exceptions are the dashboard's own (not :class:`~orbit.errors.OrbitError`): they are
about the browser, and :mod:`orbit.dashboard.errors` turns them into a redirect to the
log-in page and a 403 page.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Response
from starlette.datastructures import FormData

from orbit.api.deps import SessionDep
from orbit.dashboard.sessions import COOKIE_NAME, DashboardSession, SessionStore
from orbit.errors import AuthError
from orbit.identity.service import AuthContext, validate_token

CSRF_FIELD = "csrf_token"


class LoginRequired(Exception):
    """No logged-in session (none, expired, or its token is no longer valid)."""

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message


class CsrfRejected(Exception):
    """A POST whose CSRF token is missing or is not the session's."""


@dataclass(frozen=True)
class Viewer:
    """A logged-in browser: its session and what its token stands for."""

    session: DashboardSession
    auth: AuthContext

    @property
    def is_admin(self) -> bool:
        return self.auth.is_admin

    @property
    def csrf_token(self) -> str:
        return self.session.csrf_token


def session_store(request: Request) -> SessionStore:
    store: SessionStore = request.app.state.sessions
    return store


def browser_session(request: Request) -> DashboardSession | None:
    """The session named by the request's cookie, if it is still alive."""
    return session_store(request).get(request.cookies.get(COOKIE_NAME))


def set_session_cookie(response: Response, request: Request, session: DashboardSession) -> None:
    """Send the session id: HttpOnly (no script reads it), SameSite=Strict, dashboard only."""
    response.set_cookie(
        COOKIE_NAME,
        session.id,
        path=str(request.scope.get("root_path") or "/"),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def current_viewer(request: Request, db: SessionDep) -> Viewer:
    session = browser_session(request)
    if session is None or session.token is None:
        raise LoginRequired()
    try:
        auth = validate_token(db, token=session.token)
    except AuthError as err:
        session_store(request).drop(session.id)
        raise LoginRequired(f"Your session ended ({err}); log in again.") from err
    return Viewer(session, auth)


async def checked_form(request: Request) -> FormData:
    form = await request.form()
    submitted = form.get(CSRF_FIELD)
    session = browser_session(request)
    if session is None or not isinstance(submitted, str) or not session.csrf_matches(submitted):
        raise CsrfRejected()
    return form


ViewerDep = Annotated[Viewer, Depends(current_viewer)]
FormDep = Annotated[FormData, Depends(checked_form)]
