"""Who is looking at a page, and whether a form really comes from the dashboard.

- :func:`current_viewer` (``ViewerDep``): the logged-in user behind the session cookie; the
  session's ORBIT token is validated against the database on every request, so an expired
  or revoked token ends the session. Raises :class:`LoginRequired` otherwise.
- :func:`checked_form` (``FormDep``): the POSTed form, after its ``csrf_token`` field was
  compared with the session's (or, for the log-in form, with the HMAC of the log-in
  cookie's value); raises :class:`CsrfRejected` on a missing or wrong one.

Both exceptions are the dashboard's own (not :class:`~orbit.errors.OrbitError`): they are
about the browser, and :mod:`orbit.dashboard.errors` turns them into a redirect to the
log-in page and a 403 page.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request, Response
from starlette.datastructures import FormData

from orbit.api.deps import SessionDep
from orbit.dashboard.sessions import (
    COOKIE_NAME,
    LOGIN_COOKIE,
    SECRET_BYTES,
    DashboardSession,
    SessionStore,
)
from orbit.errors import AuthError
from orbit.identity.service import AuthContext, validate_token_id

CSRF_FIELD = "csrf_token"
#: a log-in cookie longer than this is not one ORBIT made: a new one replaces it
MAX_NONCE_LEN = 128


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
    _set_cookie(response, request, COOKIE_NAME, session.id)


def _set_cookie(response: Response, request: Request, name: str, value: str) -> None:
    response.set_cookie(
        name,
        value,
        path=_cookie_path(request),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )


def _cookie_path(request: Request) -> str:
    return str(request.scope.get("root_path") or "/")


def login_form_token(request: Request) -> tuple[str, str | None]:
    """The log-in form's CSRF token, an HMAC of the browser's log-in cookie, and a new value
    for that cookie if the browser has none (send it: :func:`set_login_cookie`). No
    session is made for it."""
    nonce = request.cookies.get(LOGIN_COOKIE)
    new = None
    if not nonce or len(nonce) > MAX_NONCE_LEN:
        nonce = new = secrets.token_urlsafe(SECRET_BYTES)
    return session_store(request).login_csrf(nonce), new


def set_login_cookie(response: Response, request: Request, nonce: str) -> None:
    _set_cookie(response, request, LOGIN_COOKIE, nonce)


def end_login_form(response: Response, request: Request) -> None:
    """The log-in cookie is no longer needed once logged in (or out)."""
    response.delete_cookie(LOGIN_COOKIE, path=_cookie_path(request))


def end_session_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(COOKIE_NAME, path=_cookie_path(request))


def current_viewer(request: Request, db: SessionDep) -> Viewer:
    session = browser_session(request)
    if session is None:
        raise LoginRequired()
    try:
        auth = validate_token_id(db, token_id=session.token_id)
        session.db = db  # its messages go with the request's work
        db.rollback()  # nothing written: no connection held while the page waits its turn
    except AuthError as err:
        session_store(request).drop(session.id)
        raise LoginRequired(f"Your session ended ({err}); log in again.") from err
    return Viewer(session, auth)


async def checked_form(request: Request) -> FormData:
    form = await request.form()
    submitted = form.get(CSRF_FIELD)
    if not isinstance(submitted, str):
        raise CsrfRejected()
    session = browser_session(request)
    if session is not None:
        if not session.csrf_matches(submitted):
            raise CsrfRejected()
    elif not session_store(request).login_csrf_matches(
        request.cookies.get(LOGIN_COOKIE), submitted
    ):
        raise CsrfRejected()
    return form


ViewerDep = Annotated[Viewer, Depends(current_viewer)]
FormDep = Annotated[FormData, Depends(checked_form)]
