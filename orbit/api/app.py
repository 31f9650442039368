"""The ASGI application: identity, compute (three URL prefixes, as Nova), errors, OpenAPI."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio.to_thread
from fastapi import Depends, FastAPI, Request, Response

from orbit.api import errors, limits, microversion, openapi
from orbit.api.deps import Services, url_project
from orbit.api.errors import ApiError, error_response
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
    app.include_router(identity.router)
    app.include_router(directory.router)
    app.include_router(metrics.router)
    app.include_router(compute.versions)
    for prefix in COMPUTE_PREFIXES:  # the project-less one first: it wins ambiguous paths
        checks = [Depends(url_project)] if "{project_id}" in prefix else []
        for router in (compute.router, drains.router):
            app.include_router(
                router, prefix=prefix, include_in_schema=prefix == "/v2.1", dependencies=checks
            )
    dashboard.install(app)  # the web dashboard under /dashboard
    openapi.install(app)  # bodies and the error codes the API really answers with

    @app.middleware("http")
    async def microversions(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        if not request.url.path.startswith("/v2"):
            return await call_next(request)
        try:
            version = microversion.requested(request)
        except ApiError as err:
            return error_response(err.status, str(err), identity=False)
        request.state.microversion = version
        response = await call_next(request)
        compute.microversion_headers(response, str(version))
        return response

    @app.middleware("http")
    async def timed(
        request: Request, call_next: Callable[[Request], Awaitable[Response]]
    ) -> Response:
        started = time.perf_counter()
        response = await call_next(request)
        route = request.scope.get("route")
        template = str(getattr(route, "path", "")) or "unmatched"
        services.latency.observe(
            request.method, template, response.status_code, time.perf_counter() - started
        )
        return response

    app.add_middleware(limits.LoginGuard)  # a throttled source: 429 before any work
    app.add_middleware(limits.BodyLimit)  # added last: the outermost, before any parsing
    return app
