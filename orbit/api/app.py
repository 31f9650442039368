"""The ASGI application: identity, compute (three URL prefixes, as Nova), errors, OpenAPI."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import Depends, FastAPI, Request
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from orbit.api import errors, limits, microversion, openapi
from orbit.api.deps import Services, url_project
from orbit.api.errors import ApiError, error_response
from orbit.api.metrics import ApiLatency
from orbit.api.routes import compute, directory, drains, identity, metrics
from orbit.dashboard import routes as dashboard

COMPUTE_PREFIXES = ("/v2.1", "/v2.1/{project_id}", "/v2/{project_id}")
#: Requests handled at once (the others wait their turn, holding nothing). The handlers are
#: Python, bound by the processor: 40 at once (the default) made each 40 times slower and
#: held 40 database connections, so a burst timed out waiting for one (503).
API_THREADS = 12


@asynccontextmanager
async def _lifespan(_app: FastAPI) -> AsyncIterator[None]:
    anyio.to_thread.current_default_thread_limiter().total_tokens = API_THREADS
    yield


class Microversions:
    """ASGI middleware: the compute microversion a request asks for, parsed once (406 or 400
    for a bad one, before any work) and left in the request's state; every answer of the
    compute API says which version it speaks."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not Request(scope).url.path.startswith("/v2"):
            await self.app(scope, receive, send)
            return
        try:
            version = microversion.requested(Request(scope))
        except ApiError as err:
            await error_response(err.status, str(err), identity=False)(scope, receive, send)
            return
        scope.setdefault("state", {})["microversion"] = version
        text = str(version)

        async def send_with_version(message: Message) -> None:
            if message["type"] == "http.response.start":
                compute.microversion_headers(MutableHeaders(scope=message), text)
            await send(message)

        await self.app(scope, receive, send_with_version)


class Timed:
    """ASGI middleware: each request's time until its answer starts, by route template and
    status code (``/metrics``)."""

    def __init__(self, app: ASGIApp, latency: ApiLatency) -> None:
        self.app = app
        self.latency = latency

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()

        async def send_timed(message: Message) -> None:
            if message["type"] == "http.response.start":
                route = scope.get("route")
                template = str(getattr(route, "path", "")) or "unmatched"
                elapsed_s = time.perf_counter() - started
                self.latency.observe(scope["method"], template, message["status"], elapsed_s)
            await send(message)

        await self.app(scope, receive, send_timed)


def create_app(services: Services) -> FastAPI:
    app = FastAPI(
        title="ORBIT",
        summary="Live-migration control plane: Nova-compatible compute API with post-copy",
        version=compute.MAX_VERSION,
        openapi_url="/openapi.json",
        docs_url=None,  # Swagger UI would load its scripts from a CDN: nothing from elsewhere
        redoc_url=None,
        lifespan=_lifespan,
    )
    app.state.services = services
    errors.install(app)
    # The compute API first: it takes most requests, and a request walks the routes in
    # order (no other router's paths start with /v2).
    for prefix in COMPUTE_PREFIXES:  # the project-less one first: it wins ambiguous paths
        checks = [Depends(url_project)] if "{project_id}" in prefix else []
        for router in (compute.router, drains.router):
            app.include_router(
                router, prefix=prefix, include_in_schema=prefix == "/v2.1", dependencies=checks
            )
    app.include_router(compute.versions)
    app.include_router(identity.router)
    app.include_router(directory.router)
    app.include_router(metrics.router)
    dashboard.install(app)  # the web dashboard under /dashboard
    openapi.install(app)  # bodies and the error codes the API really answers with

    app.add_middleware(Microversions)
    app.add_middleware(Timed, latency=services.latency)
    app.add_middleware(limits.LoginGuard)  # a throttled source: 429 before any work
    app.add_middleware(limits.BodyLimit)  # added last: the outermost, before any parsing
    return app
