"""The Nova-compatible compute API (microversions 2.1 to 2.96) and ORBIT's host registry.

What each microversion changes is named in :mod:`orbit.api.microversion`; the routes here
branch on those names, the views in :mod:`orbit.api.views` shape the bodies.
"""

from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Protocol, cast
from urllib.parse import urlencode, urlsplit

import orjson
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import Select, and_, bindparam, func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased, joinedload
from starlette.datastructures import MutableHeaders

from orbit.api import microversion as mv
from orbit.api.deps import AuthDep, BodyDep, Services, ServicesDep, SessionDep, reads_only
from orbit.api.errors import ApiError
from orbit.api.microversion import VersionDep
from orbit.api.views import (
    HostRecord,
    MigrationListing,
    ServerListing,
    host_view,
    hypervisor_id,
    hypervisor_view,
    os_migration_view,
    sample_view,
    server_detail,
    server_migration_view,
    server_summary,
    service_view,
)
from orbit.conductor.inventory import ACTIVE_PHASES
from orbit.db.models import (
    REASON_LEN,
    Drain,
    DrainState,
    Host,
    Migration,
    MigrationSample,
    Project,
    Server,
)
from orbit.db.rows import plain_rows
from orbit.errors import ComputeHostNotFound, ConfigError, MigrationNotFound, ServerNotFound
from orbit.identity.policy import sees_server, visible_servers
from orbit.identity.service import AuthContext
from orbit.migration.model import DEFAULT_POSTCOPY_WEIGHT, MigrationSettings
from orbit.migration.phase import Phase

#: a drain that has not ended
ACTIVE_DRAINS = [s.value for s in DrainState if not s.is_final]
#: the most rows one page of a paginated list holds
MAX_PAGE = 1000
#: migration ids are 64-bit integers; a larger number in a URL is simply not found
MAX_ID = 2**63
MIN_VERSION = str(mv.MIN)
MAX_VERSION = str(mv.MAX)
#: what os-migrateLive takes at every microversion: Nova's two, then ORBIT's extension
LIVE_MIGRATE_KEYS = {
    "host",
    "block_migration",
    "post_copy",
    "post_copy_after_iterations",
    "migration_policy",
    "postcopy_weight",
}
URI_RE = re.compile(r"^(qemu|qemu\+tcp|qemu\+tls|qemu\+ssh|qemu\+unix|test|fake)://[^\s]*$")
HOST_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$")
#: A migration address: a URI QEMU listens on, e.g. tcp://198.18.0.1 or tcp://[fd00::1]:49152.
MIGRATION_URI_RE = re.compile(
    r"^(tcp|rdma)://([A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]+\])(:\d{1,5})?$"
)
#: A bare host, as Nova's ``live_migration_inbound_addr`` takes it: 198.18.0.1, h1.example.
BARE_HOST_RE = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9.-]{0,252})$")


def migration_uri(address: str) -> str:
    """The migration URI for ``address``: a URI as it is, a bare address or name as tcp://.

    Raise ConfigError for anything else.
    """
    value = address.strip()
    if "://" not in value:
        try:
            ip = ipaddress.ip_address(value)
        except ValueError:
            ip = None
        if ip is not None and ip.version == 6:
            value = f"tcp://[{ip.compressed}]"
        elif BARE_HOST_RE.match(value):
            value = f"tcp://{value}"
    if not MIGRATION_URI_RE.match(value):
        raise ConfigError(
            f"migration address {address[:200]!r} is not valid: give an address or host name "
            "(198.18.0.1) or a URI (tcp://198.18.0.1)"
        )
    return value


versions = APIRouter(tags=["versions"])
router = APIRouter(tags=["compute"])


def _version_doc(base: str, vid: str) -> dict[str, Any]:
    current = vid == "v2.1"
    return {
        "id": vid,
        "status": "CURRENT" if current else "SUPPORTED",
        "version": MAX_VERSION if current else "",
        "min_version": MIN_VERSION if current else "",
        "updated": "2013-07-23T11:33:21Z" if current else "2011-01-21T11:33:21Z",
        "links": [{"rel": "self", "href": f"{base}/{vid[:4] if current else 'v2'}/"}],
        "media-types": [
            {"base": "application/json", "type": "application/vnd.openstack.compute+json;version=2"}
        ],
    }


@versions.get("/")
def root_versions(services: ServicesDep) -> dict[str, Any]:
    """Compute API versions with the microversion range."""
    base = services.config.base_url
    return {"versions": [_version_doc(base, "v2.0"), _version_doc(base, "v2.1")]}


@versions.get("/v2.1", include_in_schema=False)
@versions.get("/v2.1/")
def v21(services: ServicesDep) -> dict[str, Any]:
    """The v2.1 version document."""
    return {"version": _version_doc(services.config.base_url, "v2.1")}


@versions.get("/v2", include_in_schema=False)
@versions.get("/v2/")
def v2(services: ServicesDep) -> dict[str, Any]:
    """The v2.0 version document."""
    return {"version": _version_doc(services.config.base_url, "v2.0")}


# -- helpers -------------------------------------------------------------------------------


def _uri_parses(uri: str) -> bool:
    try:
        parts = urlsplit(uri)
        _port = parts.port  # raises on a bad port
    except ValueError:
        return False
    return not parts.scheme.endswith(("+tcp", "+tls", "+ssh")) or bool(parts.hostname)


def _server(
    session: Session, server_id: str, auth: AuthContext, *, with_host: bool = False
) -> Server:
    """The server, if the caller may see it (another project's is not found, as Nova);
    ``with_host``: its host loaded in the same query."""
    server = session.get(Server, server_id, options=[joinedload(Server.host)] if with_host else ())
    if server is None or not sees_server(auth, server):
        raise ServerNotFound(f"server {server_id[:60]} could not be found")
    return server


def _active_migration(session: Session, server_id: str) -> Migration | None:
    return session.scalar(
        select(Migration)
        .where(Migration.server_id == server_id, Migration.status.in_(ACTIVE_PHASES))
        .order_by(Migration.id.desc())
    )


def _migration(session: Session, server_id: str, migration_id: int) -> Migration:
    m = session.get(Migration, migration_id) if 0 < migration_id < MAX_ID else None
    if m is None or m.server_id != server_id:
        raise MigrationNotFound(
            f"migration {migration_id} for server {server_id} could not be found"
        )
    return m


def _bool(body: dict[str, Any], key: str, default: bool) -> bool:
    value = body.get(key, default)
    if not isinstance(value, bool):
        raise ApiError(400, f"invalid input for field '{key}': {value!r} is not a boolean")
    return value


# -- servers -------------------------------------------------------------------------------


class ServerRow(ServerListing, Protocol):
    """A row of the servers' lists: a :class:`ServerListing` with the id of the server's
    unfinished migration (None: there is none)."""

    @property
    def active_migration_id(self) -> int | None: ...


#: the servers with their hosts' names and states and the id of their unfinished
#: migration (at most one each: the database enforces it), in the lists' order (built once)
_SERVER_ROWS = (
    select(
        *Server.__table__.c,
        Host.name.label("host_name"),
        Host.state.label("host_state"),
        Host.disabled.label("host_disabled"),
        Migration.id.label("active_migration_id"),
    )
    .outerjoin(Host, Server.host_id == Host.id)
    .outerjoin(
        Migration,
        and_(Migration.server_id == Server.id, Migration.status.in_(ACTIVE_PHASES)),
    )
    .order_by(Server.name, Server.id)
)


def _servers(session: Session, request: Request, auth: AuthContext) -> list[ServerRow]:
    """The servers the query asks for and the caller may see, with their hosts' names and
    states (one query; Core rows on the session's connection, not ORM objects nor the ORM's
    result machinery: those cost more than the views). An
    admin may narrow the list to one project (project_id or tenant_id)."""
    q = request.query_params
    params: dict[str, Any] = {}
    if not auth.is_admin:
        params["viewer"] = auth.project_id
    project = q.get("project_id") or q.get("tenant_id")
    if project and auth.is_admin:
        params["project"] = project
    if q.get("name"):
        params["name"] = q["name"]
    if q.get("status"):
        params["status"] = q["status"].upper()
    if q.get("host"):
        params["host"] = q["host"]
    marker = q.get("marker")
    if marker:  # Nova's paging: the servers after this one, in the list's order
        at = session.execute(
            visible_servers(select(Server.name, Server.id), auth).where(Server.id == marker)  # type: ignore[type-var]
        ).first()
        if at is None:
            raise ApiError(400, f"marker {marker[:40]!r} could not be found")
        params["marker"], params["marker_id"] = at
    limit = _limit(q)
    if limit is not None:
        params["limit"] = limit
    query = _servers_query(frozenset(params))
    # each row has the servers table's columns, the host's and the active migration's id
    return cast("list[ServerRow]", plain_rows(session.connection().execute(query, params)))


#: each filter of the servers' lists, its value bound by the filter's name; "viewer" is
#: :func:`~orbit.identity.policy.visible_servers`'s rule (a caller who is not an admin
#: sees their project's servers only), bound to the caller's project
_SERVER_FILTERS = {
    "viewer": Server.project_id == bindparam("viewer"),
    "project": Server.project_id == bindparam("project"),
    "name": Server.name.contains(bindparam("name")),
    "status": Server.status == bindparam("status"),
    "host": Host.name == bindparam("host"),
    "marker": or_(
        Server.name > bindparam("marker"),
        and_(Server.name == bindparam("marker"), Server.id > bindparam("marker_id")),
    ),
}


@functools.cache
def _servers_query(given: frozenset[str]) -> Select[Any]:
    """The servers query with the filters whose values ``given`` names (and a ``limit``),
    built once for each combination (as :func:`_migrations_query`)."""
    query = _SERVER_ROWS
    for key in sorted(given & _SERVER_FILTERS.keys()):
        query = query.where(_SERVER_FILTERS[key])
    if "limit" in given:
        query = query.limit(bindparam("limit"))
    return query


def _servers_page(
    body: dict[str, Any], servers: Sequence[ServerListing], request: Request, base: str
) -> dict[str, Any]:
    """Nova's ``servers_links`` when a ``limit`` filled the page."""
    limit = _limit(request.query_params)
    if limit and len(servers) == limit:
        body["servers_links"] = _next_link(request, base, servers[-1].id)
    return body


def _json(body: dict[str, Any]) -> Response:
    """``body`` as a JSON answer, serialized by orjson in the handler's worker thread.

    For the lists, which are read most: a handler that returns a dict has FastAPI check it
    against the return annotation in a second worker thread, then serialize it with
    pydantic-core on the event loop. For a page of 50 servers that is 0.2-0.4 ms more
    (py-spy at 200 requests/s), and orjson writes it in 53 µs instead of 225 µs.
    """
    return Response(
        orjson.dumps(body, option=orjson.OPT_NON_STR_KEYS), media_type="application/json"
    )


@router.get("/servers")
def list_servers(
    request: Request, auth: AuthDep, session: SessionDep, services: ServicesDep
) -> Response:
    """List servers (filters: name, status, host; an admin's: project_id)."""
    reads_only(session)
    base = services.config.base_url
    servers = _servers(session, request, auth)
    body = {"servers": [server_summary(s, base) for s in servers]}
    return _json(_servers_page(body, servers, request, base))


@router.get("/servers/detail")
def list_servers_detail(
    request: Request, v: VersionDep, auth: AuthDep, session: SessionDep, services: ServicesDep
) -> Response:
    """List servers with details."""
    reads_only(session)
    base, admin = services.config.base_url, auth.is_admin
    servers = _servers(session, request, auth)
    body = {
        "servers": [server_detail(s, base, s.active_migration_id, v, admin=admin) for s in servers]
    }
    return _json(_servers_page(body, servers, request, base))


@router.get("/servers/{server_id}")
def show_server(
    server_id: str, v: VersionDep, auth: AuthDep, session: SessionDep, services: ServicesDep
) -> dict[str, Any]:
    """Show one server."""
    server = _server(session, server_id, auth)
    active = _active_migration(session, server.id)
    active_id = active.id if active is not None else None
    return {
        "server": server_detail(server, services.config.base_url, active_id, v, admin=auth.is_admin)
    }


def _live_migrate_keys(v: mv.Version) -> set[str]:
    """The keys os-migrateLive accepts at ``v`` (Nova's schema, plus ORBIT's extension)."""
    keys = set(LIVE_MIGRATE_KEYS)
    if v < mv.BLOCK_MIGRATION_AUTO:
        keys.add("disk_over_commit")
    if mv.LIVE_MIGRATE_FORCE <= v < mv.LIVE_MIGRATE_NO_FORCE:
        keys.add("force")
    return keys


#: why a key is refused at this version, for the 400's message
_KEY_VERSIONS = {
    "disk_over_commit": f"was removed in microversion {mv.BLOCK_MIGRATION_AUTO}",
    "force": f"is accepted at microversions {mv.LIVE_MIGRATE_FORCE} to "
    f"{mv.Version(2, mv.LIVE_MIGRATE_NO_FORCE.minor - 1)}",
}


def _check_live_migrate_keys(args: dict[str, Any], v: mv.Version) -> None:
    unknown = set(args) - _live_migrate_keys(v)
    if unknown:
        why = "".join(f"; {k} {_KEY_VERSIONS[k]}" for k in sorted(unknown) if k in _KEY_VERSIONS)
        raise ApiError(
            400,
            f"additional properties are not allowed ({', '.join(sorted(unknown))} unexpected "
            f"at microversion {v}){why}",
        )
    if v >= mv.BLOCK_MIGRATION_AUTO:
        for key in ("block_migration", "host"):
            if key not in args:
                raise ApiError(
                    400, f"'{key}' is a required property of os-migrateLive at microversion {v}"
                )


@router.post("/servers/{server_id}/action", status_code=202)
def server_action(
    server_id: str,
    v: VersionDep,
    body: BodyDep,
    auth: AuthDep,
    session: SessionDep,
    services: ServicesDep,
) -> Response:
    """Server actions: os-migrateLive (with post_copy); ORBIT's orbit-assignProject."""
    if list(body) == ["orbit-assignProject"]:
        return _assign_project(server_id, body["orbit-assignProject"], auth, session, services)
    if list(body) != ["os-migrateLive"]:
        raise ApiError(400, f"unsupported server action {', '.join(body) or '(none)'}: "
                       "ORBIT implements os-migrateLive and orbit-assignProject")  # fmt: skip
    auth.require_admin("os-migrateLive")
    args = body["os-migrateLive"]
    if not isinstance(args, dict):
        raise ApiError(400, "os-migrateLive must be an object")
    _check_live_migrate_keys(args, v)
    host = args.get("host")
    if host is not None and (not isinstance(host, str) or not host):
        raise ApiError(400, f"invalid input for field 'host': {host!r} is not a host name")
    block = args.get("block_migration", False)
    # 'auto': ORBIT's hosts share no storage, so 'auto' means copying the disks
    auto_block = False
    if block == "auto":
        if v < mv.BLOCK_MIGRATION_AUTO:
            raise ApiError(
                400, f"block_migration 'auto' needs microversion {mv.BLOCK_MIGRATION_AUTO}"
            )
        block, auto_block = False, True
    elif not isinstance(block, bool):
        raise ApiError(
            400, f"invalid input for field 'block_migration': {block!r} is not a boolean or 'auto'"
        )
    disk_over_commit = _bool(args, "disk_over_commit", False)
    force = _bool(args, "force", False)
    post_copy = _bool(args, "post_copy", False)
    after = args.get("post_copy_after_iterations")
    if after is not None and (isinstance(after, bool) or not isinstance(after, int)):
        raise ApiError(
            400,
            f"invalid input for field 'post_copy_after_iterations': {after!r} is not an integer",
        )
    policy = args.get("migration_policy")
    if policy is not None and not isinstance(policy, str):
        raise ApiError(400, f"invalid input for field 'migration_policy': {policy!r}")
    weight = args.get("postcopy_weight", DEFAULT_POSTCOPY_WEIGHT)
    if isinstance(weight, bool) or not isinstance(weight, int | float):
        raise ApiError(
            400, f"invalid input for field 'postcopy_weight': {weight!r} is not a number"
        )
    settings = MigrationSettings.resolve(
        post_copy=post_copy,
        policy=policy,
        post_copy_after_iterations=after,
        block_migration=block,
        postcopy_weight=float(weight),
    )
    server = _server(session, server_id, auth, with_host=True)
    services.conductor.request_migration(
        session,
        server=server,
        dest_host_name=host,
        settings=settings,
        block_migration_auto=auto_block,
        disk_over_commit=disk_over_commit,
        user_id=auth.user_id,
        project_id=auth.project_id,
        force=force and host is not None,
    )
    session.commit()
    services.conductor.kick()
    return Response(status_code=202)


def _assign_project(
    server_id: str, args: Any, auth: AuthContext, session: Session, services: Services
) -> Response:
    """Give a server to a project (by id or name; null: to none). Admin only."""
    auth.require_admin("assigning a server to a project")
    if not isinstance(args, dict) or set(args) != {"project"}:
        raise ApiError(400, 'expected {"orbit-assignProject": {"project": "<id or name>"}}')
    wanted = args["project"]
    project = None
    if wanted is not None:
        if not isinstance(wanted, str) or not wanted:
            raise ApiError(400, f"invalid input for field 'project': {wanted!r}")
        project = session.scalar(
            select(Project).where(or_(Project.id == wanted, Project.name == wanted))
        )
        if project is None:
            raise ApiError(400, f"project {wanted[:60]!r} does not exist")
    server = _server(session, server_id, auth)
    services.conductor.assign_project(session, server, project)
    return Response(status_code=202)


# -- server migrations ---------------------------------------------------------------------


@router.get("/servers/{server_id}/migrations")
def list_server_migrations(
    server_id: str, v: VersionDep, auth: AuthDep, session: SessionDep
) -> dict[str, Any]:
    """Live migrations of a server, newest first (ORBIT keeps finished ones too)."""
    _server(session, server_id, auth)
    rows = session.scalars(
        select(Migration).where(Migration.server_id == server_id).order_by(Migration.id.desc())
    )
    admin = auth.is_admin
    return {"migrations": [server_migration_view(m, v, admin=admin) for m in rows]}


@router.get("/servers/{server_id}/migrations/{migration_id}")
def show_server_migration(
    server_id: str, migration_id: int, v: VersionDep, auth: AuthDep, session: SessionDep
) -> dict[str, Any]:
    """One migration with memory and disk counters and ORBIT's record."""
    _server(session, server_id, auth)
    m = _migration(session, server_id, migration_id)
    return {"migration": server_migration_view(m, v, admin=auth.is_admin)}


@router.get("/servers/{server_id}/migrations/{migration_id}/samples")
def migration_samples(
    server_id: str,
    migration_id: int,
    auth: AuthDep,
    session: SessionDep,
    after_s: float = -1.0,
) -> dict[str, Any]:
    """ORBIT extension: the progress samples of a migration (after ``after_s``)."""
    _server(session, server_id, auth)
    m = _migration(session, server_id, migration_id)
    rows = session.scalars(
        select(MigrationSample)
        .where(MigrationSample.migration_id == m.id, MigrationSample.elapsed_s > after_s)
        .order_by(MigrationSample.elapsed_s)
    )
    return {"samples": [sample_view(s) for s in rows], "status": m.status}


@router.post("/servers/{server_id}/migrations/{migration_id}/action", status_code=202)
def migration_action(
    server_id: str,
    migration_id: int,
    body: BodyDep,
    auth: AuthDep,
    session: SessionDep,
    services: ServicesDep,
) -> Response:
    """force_complete (switch to post-copy now, or pause the VM so pre-copy completes);
    ORBIT's resume (retry a paused post-copy now)."""
    if list(body) not in (["force_complete"], ["resume"]):
        raise ApiError(400, 'expected {"force_complete": null} or {"resume": null}')
    action = next(iter(body))
    auth.require_admin(action)
    _server(session, server_id, auth)
    m = _migration(session, server_id, migration_id)
    if action == "resume":
        services.conductor.resume_now(session, m)
    else:
        services.conductor.force_complete(session, m)
    return Response(status_code=202)


@router.delete("/servers/{server_id}/migrations/{migration_id}", status_code=202)
def abort_migration(
    server_id: str,
    migration_id: int,
    v: VersionDep,
    auth: AuthDep,
    session: SessionDep,
    services: ServicesDep,
) -> Response:
    """Abort a migration in pre-copy, or a queued one (2.65+); 409 in post-copy."""
    auth.require_admin("aborting a live migration")
    _server(session, server_id, auth)
    m = _migration(session, server_id, migration_id)
    if m.phase in (Phase.QUEUED, Phase.PREPARING) and v < mv.ABORT_QUEUED:
        raise ApiError(
            400,
            f"migration {m.id} is {m.status}: aborting a migration that has not started "
            f"needs microversion {mv.ABORT_QUEUED}",
        )
    services.conductor.abort(session, m)
    session.commit()
    return Response(status_code=202)


# -- all migrations ------------------------------------------------------------------------


def _timestamp(q: Mapping[str, str], key: str) -> datetime | None:
    text = q.get(key)
    if not text:
        return None
    try:
        ts = datetime.fromisoformat(text.replace(" ", "+"))
    except ValueError as err:
        raise ApiError(400, f"invalid input for query parameter {key}: {text[:40]!r} "
                       "is not an ISO 8601 time, e.g. 2026-11-30T12:00:00Z") from err  # fmt: skip
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)


def _limit(q: Mapping[str, str]) -> int | None:
    text = q.get("limit")
    if text is None:
        return None
    if not text.isdigit():
        raise ApiError(400, f"invalid input for query parameter limit: {text[:40]!r} "
                       "is not a whole number >= 0")  # fmt: skip
    return min(int(text), MAX_PAGE)


def _next_link(request: Request, base: str, marker: str | int) -> list[dict[str, str]]:
    query = {**request.query_params, "marker": str(marker)}
    path = request.scope["path"]  # what request.url.path says, without parsing a whole URL
    return [{"rel": "next", "href": f"{base}{path}?{urlencode(query)}"}]


_SOURCE, _DEST = aliased(Host), aliased(Host)
#: the migrations as rows (not ORM objects: building those cost more than the views), with
#: the names of their server and hosts, newest first (built once)
_MIGRATION_ROWS = (
    select(
        *Migration.__table__.c,
        Server.name.label("server_name"),
        _SOURCE.name.label("source_name"),
        _DEST.name.label("dest_name"),
        _DEST.migration_address.label("dest_address"),
    )
    .join(Server, Server.id == Migration.server_id)
    .outerjoin(_SOURCE, _SOURCE.id == Migration.source_host_id)
    .outerjoin(_DEST, _DEST.id == Migration.dest_host_id)
    .order_by(Migration.created_at.desc(), Migration.id.desc())
)

#: each filter of os-migrations, its value bound by the filter's name
_MIGRATION_FILTERS = {
    "status": Migration.status == bindparam("status"),
    "instance_uuid": Migration.server_id == bindparam("instance_uuid"),
    "migration_type": Migration.migration_type == bindparam("migration_type"),
    "host": or_(Migration.source_host_id == bindparam("host"),
                Migration.dest_host_id == bindparam("host")),
    "source_compute": Migration.source_host_id == bindparam("source_compute"),
    "user_id": Migration.user_id == bindparam("user_id"),
    "project_id": Migration.project_id == bindparam("project_id"),
    "changes-since": Migration.updated_at >= bindparam("changes-since"),
    "changes-before": Migration.updated_at <= bindparam("changes-before"),
    "marker": or_(  # the migrations after the marker's, in the list's order
        Migration.created_at < bindparam("marker"),
        and_(Migration.created_at == bindparam("marker"), Migration.id < bindparam("marker_id")),
    ),
}  # fmt: skip


@functools.cache
def _migrations_query(given: frozenset[str]) -> Select[Any]:
    """The os-migrations query with the filters whose values ``given`` names (and a
    ``limit``), built once for each combination: building a statement of 40 columns and
    its cache key at every request cost more than running it. Values are bound at
    execution, under the names of :data:`_MIGRATION_FILTERS`."""
    query = _MIGRATION_ROWS
    for key in sorted(given & _MIGRATION_FILTERS.keys()):
        query = query.where(_MIGRATION_FILTERS[key])
    if "limit" in given:
        query = query.limit(bindparam("limit"))
    return query


@router.get("/os-migrations")
def list_migrations(
    request: Request, v: VersionDep, auth: AuthDep, session: SessionDep, services: ServicesDep
) -> Response:
    """All migrations (filters: host, source_compute, status, instance_uuid, migration_type;
    2.59: limit, marker, changes-since; 2.66: changes-before; 2.80: user_id, project_id)."""
    auth.require_admin("listing all migrations")
    reads_only(session)
    q = request.query_params
    params: dict[str, Any] = {}
    for key in ("status", "instance_uuid", "migration_type"):
        if q.get(key):
            params[key] = q[key]
    for key in ("host", "source_compute"):
        if q.get(key):
            host_id = session.scalar(select(Host.id).where(Host.name == q[key]))
            params[key] = host_id or "-"
    if v >= mv.MIGRATION_OWNER:
        for key in ("user_id", "project_id"):
            if q.get(key):
                params[key] = q[key]
    limit = None
    if v >= mv.MIGRATION_PAGINATION:
        since = _timestamp(q, "changes-since")
        if since is not None:
            params["changes-since"] = since
        before = _timestamp(q, "changes-before") if v >= mv.MIGRATION_CHANGES_BEFORE else None
        if before is not None:
            params["changes-before"] = before
        marker = q.get("marker")
        if marker:
            at = session.execute(
                select(Migration.created_at, Migration.id).where(Migration.uuid == marker)
            ).first()
            if at is None:
                raise ApiError(400, f"marker {marker[:40]!r} could not be found")
            params["marker"], params["marker_id"] = at
        limit = _limit(q)
        if limit is not None:
            params["limit"] = limit
    query = _migrations_query(frozenset(params))
    base = services.config.base_url
    # each row has the migrations table's columns and the names: a MigrationListing
    rows = cast("list[MigrationListing]", plain_rows(session.connection().execute(query, params)))
    body: dict[str, Any] = {"migrations": [os_migration_view(m, base, v) for m in rows]}
    if limit and len(rows) == limit:
        body["migrations_links"] = _next_link(request, base, rows[-1].uuid)
    return _json(body)


# -- hypervisors and services ----------------------------------------------------------------


_SERVERS_PER_HOST = (
    select(Server.host_id, func.count(Server.id).label("servers"))
    .group_by(Server.host_id)
    .subquery()
)
#: every host with its number of servers (built once: building a statement and its cache
#: key costs more than running it)
_HOSTS = (
    select(*Host.__table__.c, func.coalesce(_SERVERS_PER_HOST.c.servers, 0).label("n_servers"))
    .outerjoin(_SERVERS_PER_HOST, _SERVERS_PER_HOST.c.host_id == Host.id)
    .order_by(Host.created_at, Host.name)
)


def _hosts(session: Session) -> list[tuple[int, HostRecord, int]]:
    """Every host with its index (a hypervisor's id before 2.53) and its number of servers,
    in one query (Core rows, not ORM objects: the views only read them)."""
    rows = plain_rows(session.connection().execute(_HOSTS))
    # each row has the hosts table's columns: a HostRecord
    return [(i, cast("HostRecord", h), int(h.n_servers)) for i, h in enumerate(rows, start=1)]


def _query_bool(q: Mapping[str, str], key: str) -> bool:
    text = q.get(key, "false").strip().lower()
    if text in ("1", "true", "yes", "on", "y", "t"):
        return True
    if text in ("0", "false", "no", "off", "n", "f", ""):
        return False
    raise ApiError(400, f"invalid input for query parameter {key}: {text[:20]!r} is not a boolean")


def _servers_on(session: Session, hosts: list[HostRecord]) -> dict[str, list[Server]]:
    rows = session.scalars(
        select(Server).where(Server.host_id.in_([h.id for h in hosts])).order_by(Server.name)
    )
    on: dict[str, list[Server]] = {}
    for s in rows:
        on.setdefault(str(s.host_id), []).append(s)
    return on


def _matching(
    hosts: list[tuple[int, HostRecord, int]], pattern: str
) -> list[tuple[int, HostRecord, int]]:
    """The hosts whose name contains ``pattern`` (Nova's LIKE %pattern%); 404 if none."""
    found = [(i, h, n) for i, h, n in hosts if pattern in h.name]
    if not found:
        raise ComputeHostNotFound(f"no hypervisor matching {pattern[:60]!r} was found")
    return found


def _hypervisors(
    request: Request, v: mv.Version, session: Session, base: str, *, detail: bool
) -> dict[str, Any]:
    q = request.query_params
    hosts = _hosts(session)
    with_servers = False
    if v >= mv.UUID_IDS:
        with_servers = _query_bool(q, "with_servers")
        pattern = q.get("hypervisor_hostname_pattern")
        if pattern is not None:
            hosts = _matching(hosts, pattern)
            if "limit" in q or "marker" in q:
                raise ApiError(400, "paging is not supported with hypervisor_hostname_pattern")
    limit = None
    if v >= mv.HYPERVISOR_PAGINATION:
        marker = q.get("marker")
        if marker:
            ids = [str(hypervisor_id(h, i, v)) for i, h, _n in hosts]
            if marker not in ids:
                raise ApiError(400, f"marker {marker[:40]!r} could not be found")
            hosts = hosts[ids.index(marker) + 1 :]
        limit = _limit(q)
        if limit is not None:
            hosts = hosts[:limit]
    on = _servers_on(session, [h for _i, h, _n in hosts]) if with_servers else {}
    body: dict[str, Any] = {
        "hypervisors": [
            hypervisor_view(h, i, detail=detail, running_vms=n, v=v, servers=on.get(h.id))
            for i, h, n in hosts
        ]
    }
    if limit and len(hosts) == limit:
        last_i, last_h, _n = hosts[-1]
        body["hypervisors_links"] = _next_link(request, base, hypervisor_id(last_h, last_i, v))
    return body


@router.get("/os-hypervisors")
def list_hypervisors(
    request: Request, v: VersionDep, auth: AuthDep, session: SessionDep, services: ServicesDep
) -> Response:
    """Hypervisors (one per registered host); 2.53: hypervisor_hostname_pattern, with_servers."""
    auth.require_admin("listing hypervisors")
    reads_only(session)
    return _json(_hypervisors(request, v, session, services.config.base_url, detail=False))


@router.get("/os-hypervisors/detail")
def list_hypervisors_detail(
    request: Request, v: VersionDep, auth: AuthDep, session: SessionDep, services: ServicesDep
) -> Response:
    """Hypervisors with details (before 2.88: memory and VM counts)."""
    auth.require_admin("listing hypervisors")
    reads_only(session)
    return _json(_hypervisors(request, v, session, services.config.base_url, detail=True))


@router.get("/os-hypervisors/statistics")
def hypervisor_statistics(v: VersionDep, auth: AuthDep, session: SessionDep) -> dict[str, Any]:
    """Totals over all hypervisors (removed in 2.88)."""
    auth.require_admin("reading hypervisor statistics")
    if v >= mv.HYPERVISOR_SLIM:
        raise ApiError(
            404, f"hypervisor statistics were removed in microversion {mv.HYPERVISOR_SLIM}"
        )
    hosts = [h for _i, h, _n in _hosts(session)]
    total = sum(h.memory_total_mib for h in hosts)
    free = sum(h.memory_free_mib for h in hosts)
    return {
        "hypervisor_statistics": {
            "count": len(hosts),
            "vcpus": sum(h.vcpus for h in hosts),
            "vcpus_used": 0,
            "memory_mb": total,
            "free_ram_mb": free,
            "memory_mb_used": max(0, total - free),
            "running_vms": int(session.scalar(select(func.count(Server.id))) or 0),
            "local_gb": 0,
            "local_gb_used": 0,
            "free_disk_gb": 0,
            "disk_available_least": 0,
            "current_workload": 0,
        }
    }


def _old_hypervisor_route(v: mv.Version, what: str) -> None:
    if v >= mv.UUID_IDS:
        raise ApiError(
            404,
            f"/os-hypervisors/{{pattern}}/{what} was removed in microversion {mv.UUID_IDS}: "
            f"use /os-hypervisors?hypervisor_hostname_pattern=...",
        )


@router.get("/os-hypervisors/{pattern}/search")
def search_hypervisors(
    pattern: str, v: VersionDep, auth: AuthDep, session: SessionDep
) -> dict[str, Any]:
    """Hypervisors whose name contains ``pattern`` (before 2.53)."""
    auth.require_admin("searching hypervisors")
    _old_hypervisor_route(v, "search")
    found = _matching(_hosts(session), pattern)
    return {"hypervisors": [hypervisor_view(h, i, detail=False, running_vms=n, v=v)
                            for i, h, n in found]}  # fmt: skip


@router.get("/os-hypervisors/{pattern}/servers")
def hypervisor_servers(
    pattern: str, v: VersionDep, auth: AuthDep, session: SessionDep
) -> dict[str, Any]:
    """Hypervisors whose name contains ``pattern``, with their servers (before 2.53)."""
    auth.require_admin("listing a hypervisor's servers")
    _old_hypervisor_route(v, "servers")
    found = _matching(_hosts(session), pattern)
    on = _servers_on(session, [h for _i, h, _n in found])
    return {"hypervisors": [hypervisor_view(h, i, detail=False, running_vms=n, v=v,
                                            servers=on.get(h.id))
                            for i, h, n in found]}  # fmt: skip


def _hypervisor(
    session: Session, hypervisor_id_or_name: str, v: mv.Version
) -> tuple[int, HostRecord, int]:
    for i, h, n in _hosts(session):
        if hypervisor_id_or_name in (str(hypervisor_id(h, i, v)), h.name):
            return i, h, n
    raise ComputeHostNotFound(f"hypervisor {hypervisor_id_or_name[:60]} could not be found")


@router.get("/os-hypervisors/{hypervisor_id_or_name}/uptime")
def hypervisor_uptime(
    hypervisor_id_or_name: str, v: VersionDep, auth: AuthDep, session: SessionDep
) -> dict[str, Any]:
    """A hypervisor's uptime (before 2.88; ORBIT does not know it: null)."""
    auth.require_admin("reading a hypervisor's uptime")
    if v >= mv.HYPERVISOR_SLIM:
        raise ApiError(
            404, f"uptime is part of the hypervisor itself since microversion {mv.HYPERVISOR_SLIM}"
        )
    i, h, n = _hypervisor(session, hypervisor_id_or_name, v)
    view = hypervisor_view(h, i, detail=False, running_vms=n, v=v)
    return {"hypervisor": {**view, "uptime": None}}


@router.get("/os-hypervisors/{hypervisor_id_or_name}")
def show_hypervisor(
    hypervisor_id_or_name: str,
    request: Request,
    v: VersionDep,
    auth: AuthDep,
    session: SessionDep,
) -> dict[str, Any]:
    """One hypervisor, by id (a UUID since 2.53) or host name; 2.53: with_servers."""
    auth.require_admin("showing a hypervisor")
    i, h, n = _hypervisor(session, hypervisor_id_or_name, v)
    with_servers = v >= mv.UUID_IDS and _query_bool(request.query_params, "with_servers")
    servers = _servers_on(session, [h]).get(h.id) if with_servers else None
    return {"hypervisor": hypervisor_view(h, i, detail=True, running_vms=n, v=v, servers=servers)}


@router.get("/os-aggregates")
def list_aggregates(auth: AuthDep) -> dict[str, Any]:
    """Host aggregates: ORBIT has none (``openstack hypervisor show`` asks for them)."""
    auth.require_admin("listing host aggregates")
    return {"aggregates": []}


@router.get("/os-services")
def list_services(
    request: Request, v: VersionDep, auth: AuthDep, session: SessionDep
) -> dict[str, Any]:
    """Compute services (one per registered host; filters: host, binary)."""
    auth.require_admin("listing compute services")
    q = request.query_params
    rows = [
        service_view(h, i, v)
        for i, h, _n in _hosts(session)
        if q.get("host") in (None, h.name) and q.get("binary") in (None, "nova-compute")
    ]
    return {"services": rows}


def _set_enabled(session: Session, host: Host, *, disabled: bool, reason: str | None) -> None:
    if reason is not None and (not isinstance(reason, str) or len(reason) > REASON_LEN):
        raise ApiError(400, f"invalid input for field 'disabled_reason': a string of at most "
                       f"{REASON_LEN} characters")  # fmt: skip
    host.disabled = disabled
    host.disabled_reason = reason if disabled else None
    session.commit()


def _forced_down(body: dict[str, Any]) -> None:
    if body.get("forced_down") not in (None, False):
        raise ApiError(
            400,
            "forced_down is not supported: ORBIT watches its hosts itself (a host that does "
            "not answer is down)",
        )


def _host_by_name(session: Session, body: dict[str, Any]) -> Host:
    name, binary = body.get("host"), body.get("binary")
    if not isinstance(name, str) or not isinstance(binary, str):
        raise ApiError(400, "'host' and 'binary' are required (strings)")
    host = session.scalar(select(Host).where(Host.name == name))
    if host is None or binary != "nova-compute":
        raise ComputeHostNotFound(f"service {binary} on host {name} could not be found")
    return host


@router.put("/os-services/{action}")
def update_service(
    action: str,
    body: BodyDep,
    v: VersionDep,
    auth: AuthDep,
    session: SessionDep,
) -> dict[str, Any]:
    """Enable or disable a host as Nova's compute service: before 2.53 PUT
    /os-services/{enable,disable,disable-log-reason} by host and binary; since 2.53 PUT
    /os-services/{service_id} with status and disabled_reason."""
    auth.require_admin("changing a compute service")
    if v < mv.UUID_IDS:
        if action not in ("enable", "disable", "disable-log-reason", "force-down"):
            raise ApiError(404, f"unknown service action {action[:40]!r}")
        host = _host_by_name(session, body)
        if action == "force-down":
            if v < mv.SERVICE_FORCED_DOWN:
                raise ApiError(404, f"force-down needs microversion {mv.SERVICE_FORCED_DOWN}")
            _forced_down(body)
            return {"service": {"host": host.name, "binary": "nova-compute", "forced_down": False}}
        reason = body.get("disabled_reason") if action == "disable-log-reason" else None
        if action == "disable-log-reason" and not reason:
            raise ApiError(400, "'disabled_reason' is required")
        _set_enabled(session, host, disabled=action != "enable", reason=reason)
        view: dict[str, Any] = {"host": host.name, "binary": "nova-compute",
                                "status": "disabled" if host.disabled else "enabled"}  # fmt: skip
        if action == "disable-log-reason":
            view["disabled_reason"] = host.disabled_reason
        return {"service": view}
    unknown = set(body) - {"status", "disabled_reason", "forced_down"}
    if unknown:
        raise ApiError(
            400, f"additional properties are not allowed ({', '.join(sorted(unknown))} unexpected)"
        )
    found = [(i, h) for i, h, _n in _hosts(session) if h.id == action]
    if not found:
        raise ComputeHostNotFound(f"service {action[:60]} could not be found")
    index, row = found[0]
    target = session.get(Host, row.id)  # the host itself, to change it
    if target is None:
        raise ComputeHostNotFound(f"service {action[:60]} could not be found")
    _forced_down(body)
    status, reason = body.get("status"), body.get("disabled_reason")
    if status not in (None, "enabled", "disabled"):
        raise ApiError(
            400, f"invalid input for field 'status': {status!r} is not one of 'enabled', 'disabled'"
        )
    if reason is not None and status != "disabled":
        raise ApiError(400, "'disabled_reason' is only accepted with status 'disabled'")
    if status is None and "forced_down" not in body:
        raise ApiError(400, "give 'status' ('enabled' or 'disabled') and/or 'forced_down'")
    if status is not None:
        _set_enabled(session, target, disabled=status == "disabled", reason=reason)
    return {"service": service_view(target, index, v)}


# -- ORBIT's host registry -----------------------------------------------------------------


@router.get("/orbit-hosts")
def list_hosts(auth: AuthDep, session: SessionDep) -> dict[str, Any]:
    """ORBIT extension: registered hosts."""
    auth.require_admin("listing hosts")
    return {"hosts": [host_view(h, n) for _i, h, n in _hosts(session)]}


@router.post("/orbit-hosts", status_code=201)
def add_host(
    body: BodyDep, auth: AuthDep, session: SessionDep, services: ServicesDep
) -> JSONResponse:
    """ORBIT extension: register a host by name and libvirt URI (admin)."""
    auth.require_admin("adding a host")
    unknown = set(body) - {"name", "uri", "migration_address", "link_mib_s"}
    if unknown:
        raise ApiError(400, f"unexpected fields: {', '.join(sorted(unknown))}")
    name, uri = body.get("name"), body.get("uri")
    address = body.get("migration_address")
    if not isinstance(name, str) or not HOST_NAME_RE.match(name):
        raise ConfigError(f"host name {name!r} is not valid (letters, digits, ._-)")
    if not isinstance(uri, str) or not URI_RE.match(uri) or not _uri_parses(uri):
        raise ConfigError(f"libvirt URI {uri!r} is not valid, e.g. qemu+tcp://198.18.0.1/system")
    if address is not None:
        if not isinstance(address, str):
            raise ConfigError("migration address must be a string, e.g. 198.18.0.1")
        address = migration_uri(address)
    link = body.get("link_mib_s")
    if link is not None and (isinstance(link, bool) or not isinstance(link, int) or link < 1):
        raise ConfigError(f"link rate must be a whole number of MiB/s >= 1, got {link!r}")
    if session.scalar(select(Host).where(Host.name == name)) is not None:
        raise ApiError(409, f"host {name} is already registered")
    host = Host(name=name, uri=uri, migration_address=address, link_mib_s=link)
    session.add(host)
    try:
        session.commit()
    except IntegrityError as err:
        raise ApiError(409, f"host {name} is already registered") from err
    services.conductor.sync()
    session.refresh(host)
    return JSONResponse({"host": host_view(host, 0)}, status_code=201)


@router.delete("/orbit-hosts/{name}", status_code=204)
def remove_host(name: str, auth: AuthDep, session: SessionDep) -> Response:
    """ORBIT extension: unregister a host (refused while a migration uses it)."""
    auth.require_admin("removing a host")
    host = session.scalar(select(Host).where(Host.name == name))
    if host is None:
        raise ComputeHostNotFound(f"host {name} is not registered")
    busy = session.scalar(
        select(Migration.id).where(
            Migration.status.in_(ACTIVE_PHASES),
            or_(Migration.source_host_id == host.id, Migration.dest_host_id == host.id),
        )
    )
    if busy is not None:
        raise ApiError(409, f"host {name} has migration {busy} in progress")
    draining = session.scalar(
        select(Drain.id).where(Drain.host_id == host.id, Drain.status.in_(ACTIVE_DRAINS))
    )
    if draining is not None:
        raise ApiError(409, f"host {name} is being drained (drain {draining}): cancel it first")
    session.delete(host)
    session.commit()
    return Response(status_code=204)


def microversion_headers(headers: MutableHeaders, version: str) -> None:
    headers["OpenStack-API-Version"] = f"compute {version}"
    headers["X-OpenStack-Nova-API-Version"] = version
    headers["Vary"] = "OpenStack-API-Version, X-OpenStack-Nova-API-Version"
