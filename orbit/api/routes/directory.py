"""Keystone-v3-shaped users, projects, roles and role assignments (admin), and what a user
may do to itself (read itself and its projects, change its password).

The bodies are Keystone's, so stock clients work: ``openstack user create``,
``openstack role add``, openstacksdk's ``conn.identity.create_user(...)``. There is one
domain, ``default``. Errors answer in Keystone's shape (``{"error": {...}}``).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import select
from sqlalchemy.orm import Session

from orbit.api.deps import AuthDep, BodyDep, ServicesDep, SessionDep
from orbit.api.errors import ApiError
from orbit.db.models import Project, Role, RoleAssignment, User
from orbit.errors import NotFound
from orbit.identity import directory
from orbit.identity.service import AuthContext

router = APIRouter(prefix="/identity/v3", tags=["identity"])

DOMAIN_ID = "default"
ROLE_TEXT = {
    Role.ADMIN.value: "manages ORBIT: hosts, migrations, users; sees every project",
    Role.MEMBER.value: "sees its project's servers and their migrations",
}


def _base(services: Any) -> str:
    return f"{services.config.base_url}/identity/v3"


def project_view(p: Project, base: str) -> dict[str, Any]:
    return {
        "id": p.id,
        "name": p.name,
        "domain_id": DOMAIN_ID,
        "parent_id": DOMAIN_ID,
        "is_domain": False,
        "enabled": True,
        "description": "",
        "tags": [],
        "options": {},
        "links": {"self": f"{base}/projects/{p.id}"},
    }


def user_view(u: User, base: str) -> dict[str, Any]:
    return {
        "id": u.id,
        "name": u.name,
        "domain_id": DOMAIN_ID,
        "enabled": u.enabled,
        "default_project_id": u.project_id,
        "password_expires_at": None,
        "options": {},
        "links": {"self": f"{base}/users/{u.id}"},
    }


def role_view(role: str, base: str) -> dict[str, Any]:
    return {
        "id": role,
        "name": role,
        "domain_id": None,
        "description": ROLE_TEXT[role],
        "options": {},
        "links": {"self": f"{base}/roles/{role}"},
    }


def assignment_view(a: RoleAssignment, base: str, *, names: bool) -> dict[str, Any]:
    role: dict[str, Any] = {"id": a.role}
    user: dict[str, Any] = {"id": a.user_id}
    project: dict[str, Any] = {"id": a.project_id}
    if names:
        role["name"] = a.role
        user.update(name=a.user.name, domain={"id": DOMAIN_ID, "name": "Default"})
        project.update(name=a.project.name, domain={"id": DOMAIN_ID, "name": "Default"})
    path = f"projects/{a.project_id}/users/{a.user_id}/roles/{a.role}"
    return {
        "role": role,
        "user": user,
        "scope": {"project": project},
        "links": {"assignment": f"{base}/{path}"},
    }


def _listing(key: str, rows: list[dict[str, Any]], request: Request) -> dict[str, Any]:
    return {key: rows, "links": {"self": str(request.url), "previous": None, "next": None}}


def _object(body: dict[str, Any], key: str, allowed: set[str]) -> dict[str, Any]:
    """``body[key]``, an object with only ``allowed`` keys (400 otherwise)."""
    inner = body.get(key)
    if list(body) != [key] or not isinstance(inner, dict):
        raise ApiError(400, f"expected {{'{key}': {{...}}}}")
    unknown = set(inner) - allowed
    if unknown:
        raise ApiError(400, f"unexpected fields in {key}: {', '.join(sorted(unknown))}")
    domain = inner.get("domain_id")
    if domain not in (None, DOMAIN_ID):
        raise ApiError(400, f"ORBIT has one domain, {DOMAIN_ID!r}")
    return inner


def _self_or_admin(auth: AuthContext, user_ref: str, action: str) -> None:
    """Go on if ``user_ref`` (an id, or for oneself also the name) is the caller, or the
    caller is an admin; 403 otherwise."""
    if user_ref not in (auth.user_id, auth.user_name):
        auth.require_admin(action)


# -- projects -------------------------------------------------------------------------------


@router.get("/projects")
def list_projects(
    request: Request, auth: AuthDep, session: SessionDep, services: ServicesDep
) -> dict[str, Any]:
    """Projects (filter: name). Admin."""
    auth.require_admin("listing projects")
    name = request.query_params.get("name")
    query = select(Project).order_by(Project.name)
    if name is not None:
        query = query.where(Project.name == name)
    rows = [project_view(p, _base(services)) for p in session.scalars(query)]
    return _listing("projects", rows, request)


@router.post("/projects", status_code=201)
def create_project(
    body: BodyDep, auth: AuthDep, session: SessionDep, services: ServicesDep
) -> JSONResponse:
    """Create a project. Admin."""
    auth.require_admin("creating a project")
    fields = _object(body, "project", {"name", "domain_id", "description", "enabled",
                                       "is_domain", "parent_id", "tags"})  # fmt: skip
    if fields.get("is_domain"):
        raise ApiError(400, "ORBIT has one domain: a project cannot be a domain")
    project = directory.create_project(session, name=fields.get("name"))
    session.commit()
    return JSONResponse({"project": project_view(project, _base(services))}, status_code=201)


@router.get("/projects/{project_id}")
def show_project(
    project_id: str, auth: AuthDep, session: SessionDep, services: ServicesDep
) -> dict[str, Any]:
    """One project: admin, or a member of it."""
    if auth.project_id != project_id:
        auth.require_admin("showing another project")
    project = directory.find_project(session, project_id)
    return {"project": project_view(project, _base(services))}


@router.delete("/projects/{project_id}", status_code=204)
def delete_project(project_id: str, auth: AuthDep, session: SessionDep) -> Response:
    """Delete a project and its role assignments (refused while it owns servers). Admin."""
    auth.require_admin("deleting a project")
    directory.delete_project(session, directory.find_project(session, project_id))
    session.commit()
    return Response(status_code=204)


@router.get("/auth/projects")
def my_projects(
    request: Request, auth: AuthDep, session: SessionDep, services: ServicesDep
) -> dict[str, Any]:
    """The projects the token's user holds a role on (what it may scope a token to)."""
    return _projects_of(request, auth.user_id, session, services)


def _projects_of(request: Request, user_id: str, session: Session, services: Any) -> dict[str, Any]:
    seen: dict[str, Project] = {}
    for a in directory.assignments(session, user_id=user_id):
        seen.setdefault(a.project_id, a.project)
    rows = [project_view(p, _base(services)) for p in sorted(seen.values(), key=lambda p: p.name)]
    return _listing("projects", rows, request)


# -- users ----------------------------------------------------------------------------------


@router.get("/users")
def list_users(
    request: Request, auth: AuthDep, session: SessionDep, services: ServicesDep
) -> dict[str, Any]:
    """Users (filters: name, enabled). Admin."""
    auth.require_admin("listing users")
    query = select(User).order_by(User.name)
    name = request.query_params.get("name")
    if name is not None:
        query = query.where(User.name == name)
    rows = [user_view(u, _base(services)) for u in session.scalars(query)]
    enabled = request.query_params.get("enabled")
    if enabled is not None:
        wanted = enabled.lower() in ("1", "true", "yes")
        rows = [r for r in rows if r["enabled"] is wanted]
    return _listing("users", rows, request)


@router.post("/users", status_code=201)
def create_user(
    body: BodyDep, auth: AuthDep, session: SessionDep, services: ServicesDep
) -> JSONResponse:
    """Create a user (no role yet: assign one). The password must pass the policy. Admin."""
    auth.require_admin("creating a user")
    fields = _object(body, "user", {"name", "password", "default_project_id", "domain_id",
                                    "enabled", "description", "email", "options"})  # fmt: skip
    project = None
    if fields.get("default_project_id") is not None:
        project = _project_ref(session, fields["default_project_id"])
    enabled = fields.get("enabled", True)
    if not isinstance(enabled, bool):
        raise ApiError(400, "'enabled' must be true or false")
    user = directory.add_user(
        session,
        name=fields.get("name"),
        password=fields.get("password"),
        default_project=project,
        enabled=enabled,
    )
    session.commit()
    return JSONResponse({"user": user_view(user, _base(services))}, status_code=201)


def _project_ref(session: Session, ref: object) -> Project:
    if not isinstance(ref, str):
        raise ApiError(400, "a project is named by its id (a string)")
    try:
        return directory.find_project(session, ref)
    except NotFound as err:
        raise ApiError(400, str(err)) from err


@router.get("/users/{user_id}")
def show_user(
    user_id: str, auth: AuthDep, session: SessionDep, services: ServicesDep
) -> dict[str, Any]:
    """One user: admin, or the user itself."""
    _self_or_admin(auth, user_id, "showing another user")
    user = directory.find_user(session, user_id)
    return {"user": user_view(user, _base(services))}


@router.patch("/users/{user_id}")
def update_user(
    user_id: str, body: BodyDep, auth: AuthDep, session: SessionDep, services: ServicesDep
) -> dict[str, Any]:
    """Rename, enable or disable, set the password or the default project. Admin. A new
    password or disabling ends the user's tokens."""
    auth.require_admin("changing a user")
    fields = _object(body, "user", {"name", "password", "default_project_id", "enabled",
                                    "domain_id", "description", "email", "options"})  # fmt: skip
    user = directory.find_user(session, user_id)
    project = None
    if fields.get("default_project_id") is not None:
        project = _project_ref(session, fields["default_project_id"])
    directory.update_user(
        session,
        user,
        name=fields.get("name"),
        password=fields.get("password"),
        default_project=project,
        enabled=fields.get("enabled"),
    )
    session.commit()
    return {"user": user_view(user, _base(services))}


@router.delete("/users/{user_id}", status_code=204)
def delete_user(user_id: str, auth: AuthDep, session: SessionDep) -> Response:
    """Delete a user, its tokens and assignments (never the last admin). Admin."""
    auth.require_admin("deleting a user")
    directory.delete_user(session, directory.find_user(session, user_id))
    session.commit()
    return Response(status_code=204)


@router.post("/users/{user_id}/password", status_code=204)
def change_password(user_id: str, body: BodyDep, auth: AuthDep, session: SessionDep) -> Response:
    """Change one's own password with the original one (Keystone's self-service call); every
    token of the user ends, this one too."""
    if auth.user_id != user_id:
        raise ApiError(403, "a user can change only its own password (admins: PATCH the user)")
    fields = _object(body, "user", {"password", "original_password"})
    user = directory.find_user(session, user_id)
    directory.change_own_password(
        session, user, original=fields.get("original_password"), password=fields.get("password")
    )
    session.commit()
    return Response(status_code=204)


@router.get("/users/{user_id}/projects")
def user_projects(
    user_id: str, request: Request, auth: AuthDep, session: SessionDep, services: ServicesDep
) -> dict[str, Any]:
    """The projects a user holds a role on: admin, or the user itself."""
    _self_or_admin(auth, user_id, "listing another user's projects")
    user = directory.find_user(session, user_id)
    return _projects_of(request, user.id, session, services)


# -- roles and assignments ------------------------------------------------------------------


@router.get("/roles")
def list_roles(request: Request, auth: AuthDep, services: ServicesDep) -> dict[str, Any]:
    """ORBIT's two roles (filter: name)."""
    name = request.query_params.get("name")
    roles = [r for r in directory.ROLES if name in (None, r)]
    return _listing("roles", [role_view(r, _base(services)) for r in roles], request)


@router.get("/roles/{role_id}")
def show_role(role_id: str, auth: AuthDep, services: ServicesDep) -> dict[str, Any]:
    if role_id not in directory.ROLES:
        raise NotFound(f"role {role_id[:40]!r} could not be found")
    return {"role": role_view(role_id, _base(services))}


def _grant_target(session: Session, project_id: str, user_id: str) -> tuple[Project, User]:
    return directory.find_project(session, project_id), directory.find_user(session, user_id)


@router.put("/projects/{project_id}/users/{user_id}/roles/{role_id}", status_code=204)
def grant_role(
    project_id: str, user_id: str, role_id: str, auth: AuthDep, session: SessionDep
) -> Response:
    """Give a user a role on a project. Admin."""
    auth.require_admin("assigning a role")
    project, user = _grant_target(session, project_id, user_id)
    directory.assign_role(session, user=user, project=project, role=role_id)
    session.commit()
    return Response(status_code=204)


@router.head("/projects/{project_id}/users/{user_id}/roles/{role_id}", status_code=204)
@router.get("/projects/{project_id}/users/{user_id}/roles/{role_id}", status_code=204)
def check_role(
    project_id: str, user_id: str, role_id: str, auth: AuthDep, session: SessionDep
) -> Response:
    """204 if the user holds the role on the project, else 404: admin, or the user."""
    _self_or_admin(auth, user_id, "checking another user's roles")
    project, user = _grant_target(session, project_id, user_id)
    if not directory.has_role(session, user=user, project=project, role=role_id):
        raise NotFound(f"user {user.name} has no role {role_id} on {project.name}")
    return Response(status_code=204)


@router.delete("/projects/{project_id}/users/{user_id}/roles/{role_id}", status_code=204)
def revoke_role(
    project_id: str, user_id: str, role_id: str, auth: AuthDep, session: SessionDep
) -> Response:
    """Take a role away (the user's tokens on that project lose it at once). Admin."""
    auth.require_admin("revoking a role")
    project, user = _grant_target(session, project_id, user_id)
    directory.unassign_role(session, user=user, project=project, role=role_id)
    session.commit()
    return Response(status_code=204)


@router.get("/projects/{project_id}/users/{user_id}/roles")
def list_user_roles(
    project_id: str, user_id: str, auth: AuthDep, session: SessionDep, services: ServicesDep
) -> dict[str, Any]:
    """The roles a user holds on a project: admin, or the user itself."""
    _self_or_admin(auth, user_id, "listing another user's roles")
    project, user = _grant_target(session, project_id, user_id)
    rows = directory.assignments(session, user_id=user.id, project_id=project.id)
    return {"roles": [role_view(a.role, _base(services)) for a in rows]}


@router.get("/role_assignments")
def list_assignments(
    request: Request, auth: AuthDep, session: SessionDep, services: ServicesDep
) -> dict[str, Any]:
    """Role assignments (filters: user.id, scope.project.id, role.id; include_names).
    Admin, or a user asking for its own (user.id = itself)."""
    q = request.query_params
    user_id, project_id, role = q.get("user.id"), q.get("scope.project.id"), q.get("role.id")
    if user_id is None or user_id != auth.user_id:
        auth.require_admin("listing role assignments")
    names = q.get("include_names", "false").lower() in ("1", "true", "yes", "")
    rows = [
        assignment_view(a, _base(services), names=names)
        for a in directory.assignments(session, user_id=user_id, project_id=project_id)
        if role in (None, a.role)
    ]
    return _listing("role_assignments", rows, request)
