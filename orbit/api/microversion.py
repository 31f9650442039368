"""Nova's compute microversions: which one a request asked for, and what each one changes.

A client names the version in ``OpenStack-API-Version: compute 2.53`` (or the older
``X-OpenStack-Nova-API-Version: 2.53``); none means 2.1, ``latest`` means :data:`MAX`. A
version outside :data:`MIN`..:data:`MAX` is refused with 406, as Nova does. The middleware
in :mod:`orbit.api.app` parses it once per request and leaves it on ``request.state``;
routes and views ask ``version >= SOMETHING`` with the named constants below, each the
version at which Nova changed the behaviour it names (Nova's REST API version history).
"""

from __future__ import annotations

from typing import Annotated, NamedTuple

from fastapi import Depends, Request

from orbit.api.errors import ApiError


class Version(NamedTuple):
    """A compute microversion, ordered as Nova orders them (2.9 < 2.10)."""

    major: int
    minor: int

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"

    @classmethod
    def parse(cls, text: str) -> Version:
        """``"2.53"`` -> Version(2, 53); ValueError for anything else."""
        major, dot, minor = text.strip().partition(".")
        if not dot or not major.isdigit() or not minor.isdigit():
            raise ValueError(f"not a microversion: {text!r}")
        return cls(int(major), int(minor))


MIN = Version(2, 1)
#: Nova 2024.1's maximum; the newest that python-novaclient 18 speaks
MAX = Version(2, 96)

# -- what changed, and when (only what ORBIT serves) ---------------------------------------
#: server: OS-EXT-SRV-ATTR reservation_id, launch_index, hostname, ... (admin)
EXTENDED_SERVER_ATTRS = Version(2, 3)
#: server: ``locked``
SERVER_LOCKED = Version(2, 9)
#: service: ``forced_down``; PUT /os-services/force-down
SERVICE_FORCED_DOWN = Version(2, 11)
#: server: ``host_status``
SERVER_HOST_STATUS = Version(2, 16)
#: server: ``description``
SERVER_DESCRIPTION = Version(2, 19)
#: server migrations: force_complete
FORCE_COMPLETE = Version(2, 22)
#: os-migrations: ``migration_type`` and links; GET /servers/{id}/migrations
MIGRATION_TYPE = Version(2, 23)
#: os-migrateLive: ``block_migration`` required and may be "auto"; ``disk_over_commit`` gone
BLOCK_MIGRATION_AUTO = Version(2, 25)
#: server: ``tags``
SERVER_TAGS = Version(2, 26)
#: hypervisor: ``cpu_info`` is an object, not a string
CPU_INFO_OBJECT = Version(2, 28)
#: os-migrateLive: ``force`` (with ``host``: skip the scheduler's checks); host may be null
LIVE_MIGRATE_FORCE = Version(2, 30)
#: hypervisors: ``limit`` and ``marker``
HYPERVISOR_PAGINATION = Version(2, 33)
#: server: ``flavor`` embedded (ram, vcpus, original_name ...) instead of an id and links
EMBEDDED_FLAVOR = Version(2, 47)
#: services and hypervisors: UUID ids; PUT /os-services/{id}; hypervisors' search and
#: servers become ``?hypervisor_hostname_pattern=`` and ``?with_servers=``
UUID_IDS = Version(2, 53)
#: migrations: ``uuid``; os-migrations: ``limit``, ``marker``, ``changes-since``
MIGRATION_PAGINATION = Version(2, 59)
#: server: ``trusted_image_certificates``
SERVER_TRUSTED_CERTS = Version(2, 63)
#: a queued (or preparing) live migration can be aborted
ABORT_QUEUED = Version(2, 65)
#: os-migrations: ``changes-before``
MIGRATION_CHANGES_BEFORE = Version(2, 66)
#: os-migrateLive: ``force`` removed again
LIVE_MIGRATE_NO_FORCE = Version(2, 68)
#: server: ``server_groups``
SERVER_GROUPS = Version(2, 71)
#: server: ``locked_reason``
SERVER_LOCKED_REASON = Version(2, 73)
#: migrations: ``user_id`` and ``project_id``, and os-migrations filtered by them
MIGRATION_OWNER = Version(2, 80)
#: hypervisors: memory, vCPU, disk and workload fields removed, ``uptime`` added
HYPERVISOR_SLIM = Version(2, 88)
#: server: ``pinned_availability_zone``
SERVER_PINNED_AZ = Version(2, 96)


def requested(request: Request) -> Version:
    """The version a request asked for (Nova's headers), validated against MIN..MAX."""
    header = request.headers.get("OpenStack-API-Version", "")
    wanted = None
    for part in header.split(","):
        service, _, value = part.strip().partition(" ")
        if service.lower() == "compute":
            wanted = value.strip()
    wanted = wanted or request.headers.get("X-OpenStack-Nova-API-Version")
    if not wanted:
        return MIN
    if wanted.lower() == "latest":
        return MAX
    try:
        version = Version.parse(wanted)
    except ValueError as err:
        raise ApiError(400, f"invalid microversion {wanted[:40]!r}: expected e.g. 2.53") from err
    if not MIN <= version <= MAX:
        raise ApiError(
            406, f"version {version} is not supported by the API: minimum {MIN}, maximum {MAX}"
        )
    return version


async def of(request: Request) -> Version:
    """The version the middleware stored for this request (parsed again if it has not)."""
    version = getattr(request.state, "microversion", None)
    return version if isinstance(version, Version) else requested(request)


VersionDep = Annotated[Version, Depends(of)]
