"""``GET /metrics`` for Prometheus (admin): see :mod:`orbit.api.metrics`.

Prometheus sends a token as ``Authorization: Bearer <token>`` (``authorization:`` in its
scrape config); ``X-Auth-Token`` works too.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header
from fastapi.responses import Response

from orbit.api.deps import ServicesDep, SessionDep
from orbit.api.metrics import CONTENT_TYPE
from orbit.identity.service import validate_token

router = APIRouter(tags=["metrics"])


@router.get("/metrics", response_class=Response)
def metrics(
    services: ServicesDep,
    session: SessionDep,
    x_auth_token: Annotated[str | None, Header()] = None,
    authorization: Annotated[str | None, Header()] = None,
) -> Response:
    """ORBIT's metrics in Prometheus' text format (admin)."""
    token = x_auth_token
    if token is None and authorization and authorization.lower().startswith("bearer "):
        token = authorization[len("bearer ") :].strip()
    auth = validate_token(session, token=token)
    auth.require_admin("reading metrics")
    lines = services.metrics.lines(session) + services.latency.lines()
    return Response("\n".join(lines) + "\n", media_type=CONTENT_TYPE)
