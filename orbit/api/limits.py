"""Request bodies over a limit are refused (413) before anything reads, parses or
authenticates them: a client without a token cannot make orbit-server hold a large body.

As Nova (oslo.middleware's ``sizelimit``, 112 KiB by default): a declared Content-Length
over the limit is answered at once; a body without one (chunked) is read up to the limit
first and refused as soon as it passes it.
"""

from __future__ import annotations

import math

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orbit.api.errors import error_response
from orbit.errors import TooManyAttempts

#: the largest request body accepted, in bytes (Nova's default)
MAX_BODY_BYTES = 114_688


def _too_large(limit: int) -> str:
    return f"the request body is larger than {limit:,} bytes: refused"


class BodyLimit:
    """ASGI middleware: 413 for a request body over ``limit`` bytes, 400 for a NUL
    character in the path or the query string (no row, name or filter can hold one)."""

    def __init__(self, app: ASGIApp, limit: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = str(scope.get("path", ""))
        identity = path.startswith("/identity")
        query = bytes(scope.get("query_string", b"")).lower()
        if "\x00" in path or b"%00" in query or b"\x00" in query:
            refusal = "invalid request: the URL contains a NUL character"
            await error_response(400, refusal, identity=identity)(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        declared = headers.get(b"content-length")
        try:
            length = int(declared) if declared is not None else None
        except ValueError:
            length = None  # the server (h11) refuses a malformed one itself
        if length is not None and length > self.limit:
            await error_response(413, _too_large(self.limit), identity=identity)(
                scope, receive, send
            )
            return
        if length is not None:
            await self.app(scope, receive, send)  # the server delivers no more than declared
            return
        # no length (chunked): read up to the limit here, then hand the body on
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                break
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.limit:
                await error_response(413, _too_large(self.limit), identity=identity)(
                    scope, receive, send
                )
                return
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


#: the API's log-in
LOGIN_PATH = "/identity/v3/auth/tokens"


class LoginGuard:
    """ASGI middleware: a log-in from a source that must wait (too many failures from it,
    :mod:`orbit.identity.throttle`) is answered 429 here, before its body is read and
    before a worker thread or a database session is taken: a guessing flood costs the
    server as little as an answer can."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope.get("method") == "POST"
            and scope.get("path") == LOGIN_PATH
        ):
            client = scope.get("client")
            services = getattr(scope["app"].state, "services", None)
            if client and services is not None:
                wait_s = services.throttle.source_retry_after_s(str(client[0]))
                if wait_s > 0:
                    refused = TooManyAttempts(wait_s)
                    headers = {"Retry-After": str(math.ceil(wait_s))}
                    response = error_response(429, str(refused), identity=True, headers=headers)
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)
