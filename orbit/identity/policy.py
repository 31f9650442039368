"""Who may see what: Nova's policy defaults, in one place for the API and the dashboard.

- A member sees only its project's servers, and the migrations of those servers; another
  project's server is not found (404, as Nova), never forbidden (403 would confirm it
  exists).
- Migration actions (live-migrate, force-complete, resume, abort), the list of all
  migrations, hypervisors, hosts, services and drains need the admin role.
- An admin sees every project's servers (Nova's ``all_tenants``; ORBIT's servers are found
  on the hosts, many belong to no project) and may narrow the list to one project.
"""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import Select, select

from orbit.db.models import Migration, Server
from orbit.identity.service import AuthContext

_S = TypeVar("_S", bound=Select[Any])


def sees_project(auth: AuthContext, project_id: str | None) -> bool:
    """Whether the caller may see an object of ``project_id`` (None: no project)."""
    return auth.is_admin or (project_id is not None and project_id == auth.project_id)


def sees_server(auth: AuthContext, server: Server) -> bool:
    return sees_project(auth, server.project_id)


def visible_servers(query: _S, auth: AuthContext) -> _S:
    """``query`` (over servers) narrowed to what the caller may see."""
    if auth.is_admin:
        return query
    return query.where(Server.project_id == auth.project_id)


def visible_migrations(query: _S, auth: AuthContext) -> _S:
    """``query`` (over migrations) narrowed to the migrations of the caller's servers."""
    if auth.is_admin:
        return query
    mine = select(Server.id).where(Server.project_id == auth.project_id)
    return query.where(Migration.server_id.in_(mine))
