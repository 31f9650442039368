"""The Nova-compatible compute API (microversions 2.1 to 2.25) and ORBIT's host registry."""

from __future__ import annotations

import ipaddress
import re
from typing import Any
from urllib.parse import urlsplit

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, joinedload

from orbit.api.deps import AuthDep, BodyDep, ServicesDep, SessionDep
from orbit.api.errors import ApiError
from orbit.api.views import (
    host_view,
    hypervisor_view,
    migration_view,
    sample_view,
    server_detail,
    server_summary,
    service_view,
)
from orbit.conductor.inventory import ACTIVE_PHASES
from orbit.db.models import Host, Migration, MigrationSample, Server
from orbit.errors import ComputeHostNotFound, ConfigError, MigrationNotFound, ServerNotFound
from orbit.migration.model import DEFAULT_POSTCOPY_WEIGHT, MigrationSettings

#: migration ids are 64-bit integers; a larger number in a URL is simply not found
MAX_ID = 2**63
MIN_VERSION = "2.1"
MAX_VERSION = "2.25"
LIVE_MIGRATE_KEYS = {
    "host",
    "block_migration",
    "disk_over_commit",
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


def _parse_version(text: str) -> tuple[int, int]:
    major, _, minor = text.partition(".")
    return int(major), int(minor)


def requested_version(request: Request) -> str:
    """The microversion the client asked for (Nova's headers), validated against our range."""
    header = request.headers.get("OpenStack-API-Version", "")
    wanted = None
    for part in header.split(","):
        service, _, value = part.strip().partition(" ")
        if service == "compute":
            wanted = value.strip()
    wanted = wanted or request.headers.get("X-OpenStack-Nova-API-Version")
    if not wanted:
        return MIN_VERSION
    if wanted == "latest":
        return MAX_VERSION
    try:
        v = _parse_version(wanted)
    except ValueError as err:
        raise ApiError(400, f"invalid microversion {wanted!r}: expected e.g. 2.25") from err
    if not _parse_version(MIN_VERSION) <= v <= _parse_version(MAX_VERSION):
        raise ApiError(
            406, f"version {wanted} is not supported by the API: {MIN_VERSION} to {MAX_VERSION}"
        )
    return wanted


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


def _server(session: Session, server_id: str) -> Server:
    server = session.get(Server, server_id)
    if server is None:
        raise ServerNotFound(f"server {server_id} could not be found")
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


def _active_migrations(session: Session, servers: list[Server]) -> dict[str, Migration]:
    """Each listed server's unfinished migration (at most one each), in one query."""
    if not servers:
        return {}
    rows = session.scalars(
        select(Migration).where(
            Migration.server_id.in_([s.id for s in servers]),
            Migration.status.in_(ACTIVE_PHASES),
        )
    )
    return {m.server_id: m for m in rows}


def _servers(session: Session, request: Request) -> list[Server]:
    """The servers the query asks for, their hosts loaded with them (one query)."""
    query = select(Server).options(joinedload(Server.host)).order_by(Server.name, Server.id)
    name = request.query_params.get("name")
    if name:
        query = query.where(Server.name.contains(name))
    status = request.query_params.get("status")
    if status:
        query = query.where(Server.status == status.upper())
    host = request.query_params.get("host")
    if host:
        query = query.join(Host, Server.host_id == Host.id).where(Host.name == host)
    return list(session.scalars(query))


@router.get("/servers")
def list_servers(
    request: Request, auth: AuthDep, session: SessionDep, services: ServicesDep
) -> dict[str, Any]:
    """List servers (filters: name, status, host)."""
    base = services.config.base_url
    return {"servers": [server_summary(s, base) for s in _servers(session, request)]}


@router.get("/servers/detail")
def list_servers_detail(
    request: Request, auth: AuthDep, session: SessionDep, services: ServicesDep
) -> dict[str, Any]:
    """List servers with details."""
    base = services.config.base_url
    servers = _servers(session, request)
    active = _active_migrations(session, servers)
    return {"servers": [server_detail(s, base, active.get(s.id)) for s in servers]}


@router.get("/servers/{server_id}")
def show_server(
    server_id: str, auth: AuthDep, session: SessionDep, services: ServicesDep
) -> dict[str, Any]:
    """Show one server."""
    server = _server(session, server_id)
    return {
        "server": server_detail(
            server, services.config.base_url, _active_migration(session, server.id)
        )
    }


@router.post("/servers/{server_id}/action", status_code=202)
def server_action(
    server_id: str,
    request: Request,
    body: BodyDep,
    auth: AuthDep,
    session: SessionDep,
    services: ServicesDep,
) -> Response:
    """Server actions; ORBIT implements os-migrateLive (with post_copy)."""
    version = requested_version(request)
    if list(body) != ["os-migrateLive"]:
        raise ApiError(400, f"unsupported server action {', '.join(body) or '(none)'}: "
                       "ORBIT implements os-migrateLive")  # fmt: skip
    auth.require_admin("os-migrateLive")
    args = body["os-migrateLive"]
    if not isinstance(args, dict):
        raise ApiError(400, "os-migrateLive must be an object")
    unknown = set(args) - LIVE_MIGRATE_KEYS
    if unknown:
        raise ApiError(
            400, f"additional properties are not allowed ({', '.join(sorted(unknown))} unexpected)"
        )
    host = args.get("host")
    if host is not None and (not isinstance(host, str) or not host):
        raise ApiError(400, f"invalid input for field 'host': {host!r} is not a host name")
    block = args.get("block_migration", False)
    # 'auto': ORBIT's hosts share no storage, so 'auto' means copying the disks
    auto_block = False
    if block == "auto":
        if _parse_version(version) < (2, 25):
            raise ApiError(400, "block_migration 'auto' needs microversion 2.25")
        block, auto_block = False, True
    elif not isinstance(block, bool):
        raise ApiError(
            400, f"invalid input for field 'block_migration': {block!r} is not a boolean or 'auto'"
        )
    disk_over_commit = _bool(args, "disk_over_commit", False)
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
    server = _server(session, server_id)
    services.conductor.request_migration(
        session,
        server=server,
        dest_host_name=host,
        settings=settings,
        block_migration_auto=auto_block,
        disk_over_commit=disk_over_commit,
        user_id=auth.user_id,
        project_id=auth.project_id,
    )
    session.commit()
    services.conductor.kick()
    return Response(status_code=202)


# -- server migrations ---------------------------------------------------------------------


@router.get("/servers/{server_id}/migrations")
def list_server_migrations(
    server_id: str, auth: AuthDep, session: SessionDep, services: ServicesDep
) -> dict[str, Any]:
    """Live migrations of a server, newest first (ORBIT keeps finished ones too)."""
    _server(session, server_id)
    rows = session.scalars(
        select(Migration).where(Migration.server_id == server_id).order_by(Migration.id.desc())
    )
    return {"migrations": [migration_view(m, services.config.base_url) for m in rows]}


@router.get("/servers/{server_id}/migrations/{migration_id}")
def show_server_migration(
    server_id: str, migration_id: int, auth: AuthDep, session: SessionDep, services: ServicesDep
) -> dict[str, Any]:
    """One migration with memory and disk counters and ORBIT's record."""
    _server(session, server_id)
    return {
        "migration": migration_view(
            _migration(session, server_id, migration_id), services.config.base_url
        )
    }


@router.get("/servers/{server_id}/migrations/{migration_id}/samples")
def migration_samples(
    server_id: str,
    migration_id: int,
    auth: AuthDep,
    session: SessionDep,
    after_s: float = -1.0,
) -> dict[str, Any]:
    """ORBIT extension: the progress samples of a migration (after ``after_s``)."""
    _server(session, server_id)
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
    _server(session, server_id)
    m = _migration(session, server_id, migration_id)
    if action == "resume":
        services.conductor.resume_now(session, m)
    else:
        services.conductor.force_complete(session, m)
    return Response(status_code=202)


@router.delete("/servers/{server_id}/migrations/{migration_id}", status_code=202)
def abort_migration(
    server_id: str, migration_id: int, auth: AuthDep, session: SessionDep, services: ServicesDep
) -> Response:
    """Abort a migration in pre-copy (409 in post-copy: the VM's memory is split)."""
    auth.require_admin("aborting a live migration")
    _server(session, server_id)
    m = _migration(session, server_id, migration_id)
    services.conductor.abort(session, m)
    session.commit()
    return Response(status_code=202)


@router.get("/os-migrations")
def list_migrations(
    request: Request, auth: AuthDep, session: SessionDep, services: ServicesDep
) -> dict[str, Any]:
    """All migrations (filters: host, source_compute, status, instance_uuid, migration_type)."""
    auth.require_admin("listing all migrations")
    query = select(Migration).order_by(Migration.id.desc())
    q = request.query_params
    if q.get("status"):
        query = query.where(Migration.status == q["status"])
    if q.get("instance_uuid"):
        query = query.where(Migration.server_id == q["instance_uuid"])
    if q.get("migration_type"):
        query = query.where(Migration.migration_type == q["migration_type"])
    for key in ("host", "source_compute"):
        if q.get(key):
            host = session.scalar(select(Host).where(Host.name == q[key]))
            host_id = host.id if host else "-"
            if key == "host":
                query = query.where(
                    or_(Migration.source_host_id == host_id, Migration.dest_host_id == host_id)
                )
            else:
                query = query.where(Migration.source_host_id == host_id)
    base = services.config.base_url
    return {"migrations": [migration_view(m, base) for m in session.scalars(query)]}


# -- hypervisors and services ----------------------------------------------------------------


def _hosts(session: Session) -> list[tuple[int, Host, int]]:
    rows = session.execute(select(Server.host_id, func.count(Server.id)).group_by(Server.host_id))
    counts: dict[str | None, int] = {host_id: int(n) for host_id, n in rows}
    hosts = session.scalars(select(Host).order_by(Host.created_at, Host.name))
    return [(i, h, counts.get(h.id, 0)) for i, h in enumerate(hosts, start=1)]


@router.get("/os-hypervisors")
def list_hypervisors(auth: AuthDep, session: SessionDep) -> dict[str, Any]:
    """Hypervisors (one per registered host)."""
    return {"hypervisors": [hypervisor_view(h, i, detail=False, running_vms=n)
                            for i, h, n in _hosts(session)]}  # fmt: skip


@router.get("/os-hypervisors/detail")
def list_hypervisors_detail(auth: AuthDep, session: SessionDep) -> dict[str, Any]:
    """Hypervisors with memory and VM counts."""
    return {"hypervisors": [hypervisor_view(h, i, detail=True, running_vms=n)
                            for i, h, n in _hosts(session)]}  # fmt: skip


@router.get("/os-hypervisors/{hypervisor_id}")
def show_hypervisor(hypervisor_id: str, auth: AuthDep, session: SessionDep) -> dict[str, Any]:
    """One hypervisor, by id or host name."""
    for i, h, n in _hosts(session):
        if hypervisor_id in (str(i), h.name):
            return {"hypervisor": hypervisor_view(h, i, detail=True, running_vms=n)}
    raise ComputeHostNotFound(f"hypervisor {hypervisor_id} could not be found")


@router.get("/os-services")
def list_services(auth: AuthDep, session: SessionDep) -> dict[str, Any]:
    """Compute services (one per registered host)."""
    return {"services": [service_view(h, i) for i, h, _n in _hosts(session)]}


# -- ORBIT's host registry -----------------------------------------------------------------


@router.get("/orbit-hosts")
def list_hosts(auth: AuthDep, session: SessionDep) -> dict[str, Any]:
    """ORBIT extension: registered hosts."""
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
    session.delete(host)
    session.commit()
    return Response(status_code=204)


def microversion_headers(response: Response, version: str) -> None:
    response.headers["OpenStack-API-Version"] = f"compute {version}"
    response.headers["X-OpenStack-Nova-API-Version"] = version
    response.headers["Vary"] = "OpenStack-API-Version, X-OpenStack-Nova-API-Version"
