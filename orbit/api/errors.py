"""ORBIT's exception tree to HTTP: the one place where errors become responses.

Compute errors use Nova's body shape, ``{"badRequest": {"code": 400, "message": "…"}}``;
identity errors use Keystone's, ``{"error": {"code": 401, "title": "Unauthorized",
"message": "…"}}``.
"""

from __future__ import annotations

import logging
import math

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from starlette.exceptions import HTTPException as StarletteHTTPException

from orbit.errors import (
    AuthError,
    ConfigError,
    Conflict,
    DatabaseError,
    Forbidden,
    HostUnreachable,
    InvalidMigration,
    InvalidState,
    MigrationInProgress,
    MigrationRefused,
    NotFound,
    NoValidHost,
    OrbitError,
    TooManyAttempts,
)

log = logging.getLogger(__name__)

#: Nova's name for each status in an error body
NOVA_KEYS = {
    400: "badRequest",
    401: "unauthorized",
    403: "forbidden",
    404: "itemNotFound",
    405: "badMethod",
    406: "notAcceptable",
    409: "conflictingRequest",
    413: "overLimit",
    429: "overLimit",
    415: "badMediaType",
    500: "computeFault",
    503: "serviceUnavailable",
}
TITLES = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
          405: "Method Not Allowed", 409: "Conflict", 413: "Payload Too Large",
          429: "Too Many Requests",
          500: "Internal Server Error"}  # fmt: skip


class ApiError(OrbitError):
    """An HTTP error raised by the API layer itself (malformed body, unknown URL)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def status_of(err: OrbitError) -> int:
    if isinstance(err, TooManyAttempts):
        return 429
    if isinstance(err, ApiError):
        return err.status
    if isinstance(err, Forbidden):
        return 403
    if isinstance(err, AuthError):
        return 401
    if isinstance(err, NotFound):
        return 404
    if isinstance(err, (InvalidState, MigrationInProgress, MigrationRefused, Conflict)):
        return 409
    if isinstance(err, (ConfigError, InvalidMigration, NoValidHost, HostUnreachable)):
        return 400
    if isinstance(err, DatabaseError):
        return 503
    return 500


def error_body(status: int, message: str, *, identity: bool) -> dict[str, object]:
    if identity:
        return {"error": {"code": status, "title": TITLES.get(status, "Error"), "message": message}}
    return {NOVA_KEYS.get(status, "computeFault"): {"code": status, "message": message}}


#: seconds a client should wait before asking again after a 503
RETRY_AFTER_S = 2


def error_response(
    status: int, message: str, *, identity: bool, headers: dict[str, str] | None = None
) -> JSONResponse:
    headers = dict(headers or {})
    if status == 401:
        headers["WWW-Authenticate"] = 'Keystone uri="/identity"'
    elif status == 503:
        headers["Retry-After"] = str(RETRY_AFTER_S)
    return JSONResponse(
        error_body(status, message, identity=identity), status_code=status, headers=headers
    )


def _is_identity(request: Request) -> bool:
    return request.url.path.startswith("/identity")


def install(app: FastAPI) -> None:
    @app.exception_handler(OrbitError)
    async def orbit_error(request: Request, err: OrbitError) -> JSONResponse:
        status = status_of(err)
        if status >= 500:
            log.error("request failed path=%s error=%s", request.url.path, err)
        headers = None
        if isinstance(err, TooManyAttempts):
            headers = {"Retry-After": str(math.ceil(err.wait_s))}
        return error_response(status, str(err), identity=_is_identity(request), headers=headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, err: RequestValidationError) -> JSONResponse:
        first = err.errors()[0] if err.errors() else {"msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body")
        message = f"invalid request: {where + ': ' if where else ''}{first.get('msg')}"
        return error_response(400, message, identity=_is_identity(request))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> JSONResponse:
        # the router's own headers stay (405: Allow)
        return error_response(
            err.status_code,
            str(err.detail),
            identity=_is_identity(request),
            headers=dict(err.headers or {}),
        )

    @app.exception_handler(DataError)
    async def unstorable(request: Request, err: DataError) -> JSONResponse:
        # PostgreSQL refuses NUL characters and strings longer than their column
        log.info("input refused by the database path=%s error=%s", request.url.path, err.orig)
        return error_response(
            400,
            "invalid input: a value is too long or contains a character that cannot be "
            "stored (NUL)",
            identity=_is_identity(request),
        )

    @app.exception_handler(PoolTimeout)
    async def pool_exhausted(request: Request, err: PoolTimeout) -> JSONResponse:
        log.warning("database pool exhausted path=%s", request.url.path)
        return error_response(
            503,
            "the database is busy: all its connections are in use; try again in a moment",
            identity=_is_identity(request),
        )

    @app.exception_handler(Exception)
    async def unexpected(request: Request, err: Exception) -> JSONResponse:
        log.exception("unexpected error path=%s", request.url.path)
        return error_response(
            500, "internal error; the server log has details", identity=_is_identity(request)
        )
