"""Errors as pages: the one place where the dashboard turns exceptions into responses.

- :class:`~orbit.dashboard.auth.LoginRequired`: a redirect to the log-in page (401 JSON
  for the progress polling, which asks for JSON).
- :class:`~orbit.dashboard.auth.CsrfRejected`: a 403 page that says what happened.
- :class:`~orbit.errors.OrbitError`: a page with the API's status for it
  (:func:`orbit.api.errors.status_of`, so both answer alike) and its one-line message.
- Unknown paths, malformed ids, anything unexpected: 404, 400 and 500 pages.

Form errors never get here: the routes show them in the form.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, RedirectResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from orbit.api.errors import TITLES, status_of
from orbit.dashboard.auth import CsrfRejected, LoginRequired
from orbit.dashboard.render import page, path_for
from orbit.errors import OrbitError

log = logging.getLogger(__name__)

CSRF_MESSAGE = (
    "The form was rejected: its security token is missing or does not match your session. "
    "Nothing was changed. Reload the page and try again."
)


def _wants_json(request: Request) -> bool:
    return "application/json" in request.headers.get("accept", "")


def error_page(request: Request, status: int, message: str) -> Response:
    if _wants_json(request):
        return JSONResponse({"error": {"code": status, "message": message}}, status_code=status)
    return page(
        request,
        "error.html",
        viewer=None,
        title=TITLES.get(status, "Error"),
        status_code=status,
        status=status,
        message=message,
    )


def install(app: FastAPI) -> None:
    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, err: LoginRequired) -> Response:
        if _wants_json(request):
            return error_page(request, 401, err.message or "log in to the dashboard first")
        target = path_for(request, "login")
        if err.message:  # a session that ended (its token expired or was revoked)
            target += "?notice=session-ended"
        return RedirectResponse(target, status_code=303)

    @app.exception_handler(CsrfRejected)
    async def csrf_rejected(request: Request, err: CsrfRejected) -> Response:
        log.warning("dashboard form rejected path=%s reason=csrf", request.url.path)
        return error_page(request, 403, CSRF_MESSAGE)

    @app.exception_handler(OrbitError)
    async def orbit_error(request: Request, err: OrbitError) -> Response:
        status = status_of(err)
        if status >= 500:
            log.error("dashboard request failed path=%s error=%s", request.url.path, err)
        return error_page(request, status, str(err))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, err: RequestValidationError) -> Response:
        return error_page(request, 404, "There is no such page: the address is not valid.")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> Response:
        message = "There is no such page." if err.status_code == 404 else str(err.detail)
        return error_page(request, err.status_code, message)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, err: Exception) -> Response:
        log.exception("dashboard: unexpected error path=%s", request.url.path)
        return error_page(request, 500, "Internal error; the server log has details.")
