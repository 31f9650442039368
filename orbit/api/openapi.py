"""The OpenAPI document as the API really answers: request bodies described, the error
codes it uses (400, never FastAPI's 422), the error bodies' shape.

The routes read their JSON bodies themselves (:func:`orbit.api.deps.json_body`, so that a
bad body is one clear 400 in Nova's or Keystone's shape); their schemas are therefore
written here, one per operation, and merged into FastAPI's document.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import FastAPI

from orbit.migration.model import MAX_POSTCOPY_WEIGHT, Policy

_STR = {"type": "string"}
_BOOL = {"type": "boolean"}
_NAME = {"type": "string", "minLength": 1, "maxLength": 255}


def _obj(required: list[str] | None = None, **props: Any) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": props, "additionalProperties": False}
    if required:
        schema["required"] = required
    return schema


LIVE_MIGRATE = _obj(
    host={"type": ["string", "null"], "description": "destination; null: the scheduler's"},
    block_migration={"oneOf": [_BOOL, {"enum": ["auto"]}]},
    disk_over_commit=_BOOL,
    force=_BOOL,
    post_copy={**_BOOL, "description": "permit post-copy (the seed's checkbox)"},
    post_copy_after_iterations={"type": "integer", "minimum": 0},
    migration_policy={"enum": [p.value for p in Policy]},
    postcopy_weight={"type": "number", "minimum": 0, "maximum": MAX_POSTCOPY_WEIGHT},
)
PASSWORD_AUTH = _obj(
    ["auth"],
    auth=_obj(
        ["identity"],
        identity=_obj(
            ["methods", "password"],
            methods={"type": "array", "items": {"enum": ["password"]}},
            password=_obj(
                ["user"],
                user={
                    "type": "object",
                    "required": ["name", "password"],
                    "properties": {"name": _STR, "password": _STR, "domain": {"type": "object"}},
                },
            ),
        ),
        scope={
            "type": "object",
            "properties": {
                "project": {
                    "type": "object",
                    "properties": {"name": _STR, "id": _STR, "domain": {"type": "object"}},
                }
            },
        },
    ),
)
USER_FIELDS = {
    "name": _NAME,
    "password": _STR,
    "default_project_id": {"type": ["string", "null"]},
    "domain_id": {"enum": ["default"]},
    "enabled": _BOOL,
    "description": _STR,
    "email": _STR,
    "options": {"type": "object"},
}

PROJECT_FIELDS = {
    "name": _NAME,
    "domain_id": {"enum": ["default"]},
    "description": _STR,
    "enabled": _BOOL,
}

#: (path, method) -> the JSON body the operation takes
BODIES: dict[tuple[str, str], dict[str, Any]] = {
    ("/v2.1/servers/{server_id}/action", "post"): {
        "oneOf": [
            _obj(["os-migrateLive"], **{"os-migrateLive": LIVE_MIGRATE}),
            _obj(
                ["orbit-assignProject"],
                **{"orbit-assignProject": _obj(["project"], project={"type": ["string", "null"]})},
            ),
        ]
    },
    ("/v2.1/servers/{server_id}/migrations/{migration_id}/action", "post"): {
        "oneOf": [
            _obj(["force_complete"], force_complete={"type": "null"}),
            _obj(["resume"], resume={"type": "null"}),
        ]
    },
    ("/v2.1/orbit-hosts", "post"): _obj(
        ["name", "uri"],
        name=_NAME,
        uri={**_STR, "description": "libvirt URI, e.g. qemu+tls://198.18.0.1/system"},
        migration_address=_STR,
        link_mib_s={"type": "integer", "minimum": 1},
    ),
    ("/v2.1/orbit-hosts/{name}/drain", "post"): _obj(
        to={"type": ["array", "null"], "items": _NAME},
        post_copy=_BOOL,
        plan_only=_BOOL,
        max_parallel={"type": "integer", "minimum": 1},
        deadline_s={"type": ["number", "null"], "exclusiveMinimum": 0},
    ),
    ("/v2.1/os-services/{action}", "put"): _obj(
        host=_NAME,
        binary={"enum": ["nova-compute"]},
        status={"enum": ["enabled", "disabled"]},
        disabled_reason={"type": "string", "maxLength": 255},
        forced_down=_BOOL,
    ),
    ("/identity/v3/auth/tokens", "post"): PASSWORD_AUTH,
    ("/identity/v3/projects", "post"): _obj(
        ["project"],
        project={
            "type": "object",
            "required": ["name"],
            "properties": {
                "name": _NAME,
                "domain_id": {"enum": ["default"]},
                "description": _STR,
                "enabled": _BOOL,
            },
        },
    ),
    ("/identity/v3/users", "post"): _obj(
        ["user"],
        user={"type": "object", "required": ["name", "password"], "properties": USER_FIELDS},
    ),
    ("/identity/v3/users/{user_id}", "patch"): _obj(
        ["user"], user={"type": "object", "properties": USER_FIELDS}
    ),
    ("/identity/v3/users/{user_id}/password", "post"): _obj(
        ["user"],
        user=_obj(["password", "original_password"], password=_STR, original_password=_STR),
    ),
}

ERROR = {
    "type": "object",
    "description": 'Nova\'s {"badRequest": {...}} or Keystone\'s {"error": {...}}',
    "additionalProperties": {
        "type": "object",
        "required": ["code", "message"],
        "properties": {"code": {"type": "integer"}, "message": _STR, "title": _STR},
    },
}
ERRORS = {
    "400": "bad input: the message says which field and why",
    "401": "no valid token (or, at log-in, wrong credentials)",
    "403": "the token's roles do not allow it",
    "404": "not found, or not the caller's project's",
    "409": "conflicts with the current state (e.g. aborting a post-copy)",
    "413": "the request body is over the limit",
    "503": "the database is busy or unreachable: retry after Retry-After",
}
#: operations that need no token
PUBLIC = {("/", "get"), ("/v2.1/", "get"), ("/v2/", "get"), ("/identity/", "get"),
          ("/identity/v3/", "get"), ("/identity/v3/auth/tokens", "post")}  # fmt: skip


def _rewrite(doc: dict[str, Any]) -> None:
    doc.setdefault("components", {}).setdefault("schemas", {})["Error"] = ERROR
    ref = {"content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    for path, operations in doc.get("paths", {}).items():
        for method, op in operations.items():
            responses = op.setdefault("responses", {})
            responses.pop("422", None)
            for code, text in ERRORS.items():
                if (
                    code == "401"
                    and (path, method) in PUBLIC
                    and path != "/identity/v3/auth/tokens"
                ):
                    continue
                responses.setdefault(code, {"description": text, **ref})
            if (path, method) == ("/identity/v3/auth/tokens", "post"):
                responses.setdefault("429", {"description": "too many failed log-ins", **ref})
            body = BODIES.get((path, method))
            if body is not None:
                op["requestBody"] = {
                    "required": True,
                    "content": {"application/json": {"schema": body}},
                }
    components = doc["components"]["schemas"]
    for name in ("HTTPValidationError", "ValidationError"):
        components.pop(name, None)


def install(app: FastAPI) -> None:
    """Make ``app.openapi`` return the rewritten document (built once)."""
    original: Callable[[], dict[str, Any]] = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            _rewrite(original())
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
