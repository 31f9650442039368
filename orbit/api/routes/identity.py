"""Keystone-v3-style identity: version discovery and password tokens."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Header, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy.orm import Session

from orbit.api.deps import BodyDep, ServicesDep, SessionDep
from orbit.api.errors import ApiError
from orbit.errors import AuthError, TooManyAttempts
from orbit.identity.service import AuthContext, issue_token, revoke_token, validate_token

router = APIRouter(prefix="/identity", tags=["identity"])

IDENTITY_VERSION = "v3.14"
REGION = "RegionOne"
DOMAIN = {"id": "default", "name": "Default"}
UPDATED = "2026-11-01T00:00:00Z"


def _iso(ts: datetime) -> str:
    return ts.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _version(base: str) -> dict[str, Any]:
    return {
        "id": IDENTITY_VERSION,
        "status": "stable",
        "updated": UPDATED,
        "links": [{"rel": "self", "href": f"{base}/identity/v3/"}],
        "media-types": [
            {"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}
        ],
    }


@router.get("", include_in_schema=False)
@router.get("/")
def identity_versions(services: ServicesDep) -> JSONResponse:
    """Identity API versions (Keystone's discovery document)."""
    doc = {"versions": {"values": [_version(services.config.base_url)]}}
    return JSONResponse(doc, status_code=300)


@router.get("/v3", include_in_schema=False)
@router.get("/v3/")
def identity_v3(services: ServicesDep) -> dict[str, Any]:
    """The identity v3 version document."""
    return {"version": _version(services.config.base_url)}


def token_body(ctx: AuthContext, base: str) -> dict[str, Any]:
    compute_url = f"{base}/v2.1"
    return {
        "token": {
            "methods": ["password"],
            "user": {"id": ctx.user_id, "name": ctx.user_name, "domain": DOMAIN},
            "project": {"id": ctx.project_id, "name": ctx.project_name, "domain": DOMAIN},
            "roles": [{"id": role, "name": role} for role in ctx.roles],
            "issued_at": _iso(ctx.issued_at),
            "expires_at": _iso(ctx.expires_at),
            "catalog": [
                {
                    "type": "compute",
                    "name": "nova",
                    "id": "compute",
                    "endpoints": [
                        {"id": f"compute-{i}", "interface": i, "region": REGION,
                         "region_id": REGION, "url": compute_url}
                        for i in ("public", "internal", "admin")
                    ],
                },
                {
                    "type": "identity",
                    "name": "keystone",
                    "id": "identity",
                    "endpoints": [
                        {"id": f"identity-{i}", "interface": i, "region": REGION,
                         "region_id": REGION, "url": f"{base}/identity/v3"}
                        for i in ("public", "internal", "admin")
                    ],
                },
            ],
        }
    }  # fmt: skip


def _password_credentials(
    body: dict[str, Any],
) -> tuple[str, str, str | None, str | None]:
    try:
        identity = body["auth"]["identity"]
        methods = identity["methods"]
        user = identity["password"]["user"]
        name, password = user["name"], user["password"]
    except (KeyError, TypeError) as err:
        raise ApiError(
            400,
            "expected {'auth': {'identity': {'methods': ['password'], 'password': "
            "{'user': {'name': ..., 'password': ...}}}}}",
        ) from err
    if not isinstance(methods, list) or "password" not in methods:
        raise ApiError(400, "only the 'password' authentication method is supported")
    if not isinstance(name, str) or not isinstance(password, str):
        raise ApiError(400, "user name and password must be strings")
    scope = body["auth"].get("scope")
    project_name = project_id = None
    if isinstance(scope, dict) and isinstance(scope.get("project"), dict):
        project_name = scope["project"].get("name")
        project_id = scope["project"].get("id")
        for key, value in (("name", project_name), ("id", project_id)):
            if value is not None and not isinstance(value, str):
                raise ApiError(400, f"scope.project.{key} must be a string")
    return name, password, project_name, project_id


@router.post("/v3/auth/tokens", status_code=201)
def create_token(
    request: Request, body: BodyDep, services: ServicesDep, session: SessionDep
) -> JSONResponse:
    """Log in with a password; the token is in the X-Subject-Token header. Repeated
    failures are throttled (429 with Retry-After; orbit/identity/throttle.py)."""
    name, password, project, project_id = _password_credentials(body)
    source = request.client.host if request.client else "-"
    wait_s = services.throttle.retry_after_s(name, source)
    if wait_s > 0:
        raise TooManyAttempts(wait_s)
    try:
        token, ctx = issue_token(
            session,
            user_name=name,
            password=password,
            project_name=project,
            project_id=project_id,
            ttl_s=services.config.token_ttl_s,
        )
    except AuthError:
        services.throttle.failed(name, source)
        raise
    services.throttle.succeeded(name)
    session.commit()  # before the client can use the token
    return JSONResponse(
        token_body(ctx, services.config.base_url),
        status_code=201,
        headers={"X-Subject-Token": token},
    )


@router.get("/v3/auth/tokens")
def check_token(
    services: ServicesDep,
    session: SessionDep,
    x_auth_token: Annotated[str | None, Header()] = None,
    x_subject_token: Annotated[str | None, Header()] = None,
) -> JSONResponse:
    """Validate X-Subject-Token (the caller authenticates with X-Auth-Token): one's own
    token, or any as admin (Keystone's ``admin_or_token_subject``)."""
    caller = validate_token(session, token=x_auth_token)
    ctx = _subject(session, x_subject_token)
    _own_or_admin(caller, ctx, "validating another user's token")
    return JSONResponse(
        token_body(ctx, services.config.base_url),
        headers={"X-Subject-Token": x_subject_token or ""},
    )


@router.delete("/v3/auth/tokens", status_code=204)
def delete_token(
    session: SessionDep,
    x_auth_token: Annotated[str | None, Header()] = None,
    x_subject_token: Annotated[str | None, Header()] = None,
) -> Response:
    """Revoke X-Subject-Token: one's own, or any as admin."""
    caller = validate_token(session, token=x_auth_token)
    subject = _subject(session, x_subject_token)
    _own_or_admin(caller, subject, "revoking another user's token")
    revoke_token(session, token=str(x_subject_token))
    session.commit()
    return Response(status_code=204)


def _subject(session: Session, token: str | None) -> AuthContext:
    """What X-Subject-Token stands for: 400 without one, 404 if it is not valid (as
    Keystone)."""
    if not token:
        raise ApiError(400, "send the token to check or revoke in X-Subject-Token")
    try:
        return validate_token(session, token=token)
    except AuthError as err:
        raise ApiError(404, f"the subject token is not valid: {err}") from err


def _own_or_admin(caller: AuthContext, subject: AuthContext, action: str) -> None:
    if caller.user_id != subject.user_id:
        caller.require_admin(action)
