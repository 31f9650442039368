"""ORBIT's one exception tree.

Every error that ORBIT raises on purpose derives from :class:`OrbitError`, so a caller
(the CLI, later the API) can catch the root and show ``str(err)``: one readable line, never
a traceback. Lower-layer errors (a failed ``ip`` command, a libvirt error) are mapped to
the most specific class here with ``raise Mapped(...) from err``, so the root cause is kept.

::

    OrbitError
     +-- ConfigError            bad input from the user (a flag, an argument)
     +-- LabError               the lab test-bed could not do what was asked
     |    +-- LabStateError     the lab is (not) up, or its state is inconsistent
     |    +-- HostNotFound      no lab host of that name
     |    +-- CommandFailed     an external command (ip, tc, qemu-img) failed
     +-- GuestError             the test guest could not be defined, started or read
     +-- HypervisorError        a libvirt call failed (mapped in orbit/virt/libvirt_driver.py)
     |    +-- HostUnreachable   the host's libvirtd does not answer
     |    +-- DomainNotFound    no such domain on that host
     +-- MigrationError         a migration could not start, run or be controlled
     |    +-- InvalidMigration  refused before anything changed (same host, VM not running)
     |    +-- MigrationRefused  an action the current phase forbids (abort in post-copy)
     |    +-- InvalidTransition a phase change the state machine forbids (a bug if seen)
     |    +-- MigrationFailed   the migration ended without moving the VM
     |    +-- JobNeverStarted   an adopted migration had not reached the hypervisor yet
     |    +-- InvalidState      the VM's state does not allow it (not running)   409
     |    +-- MigrationInProgress  the VM is already migrating                   409
     +-- DatabaseError          the database is unreachable, or its schema could not be set up
     +-- NotFound               an object named in a request does not exist      404
     |    +-- ServerNotFound, ComputeHostNotFound, MigrationNotFound, DrainNotFound
     +-- Conflict               a name taken; the last admin; a project owning servers 409
 +-- NoValidHost            the scheduler found no destination               400
     +-- AuthError              no valid credentials or token                    401
     |    +-- Forbidden         authenticated, but the role does not allow it    403
     +-- ClientError            the CLI's request failed (unreachable API, HTTP error)

The numbers are the HTTP status the API answers with (orbit/api/errors.py maps the tree in
one place); ConfigError and InvalidMigration are 400, MigrationRefused 409,
HostUnreachable 400 (for a destination), other errors 500.
"""

from __future__ import annotations

import math


class OrbitError(Exception):
    """Root of every error ORBIT raises on purpose; ``str()`` is one readable line."""


class ConfigError(OrbitError):
    """Bad input from the user: an option out of range, a missing argument."""


class LabError(OrbitError):
    """The lab test-bed could not do what was asked."""


class LabStateError(LabError):
    """The lab is already up, not up, or its state file disagrees with the machine."""


class HostNotFound(LabError):
    """No lab host of that name."""


class CommandFailed(LabError):
    """An external command (ip, tc, qemu-img, ...) exited non-zero."""

    def __init__(self, argv: list[str], returncode: int, stderr: str) -> None:
        first_line = next((ln for ln in stderr.splitlines() if ln.strip()), "no output")
        super().__init__(f"command '{' '.join(argv)}' failed (exit {returncode}): {first_line}")
        self.argv = argv
        self.returncode = returncode
        self.stderr = stderr


class GuestError(OrbitError):
    """The test guest could not be defined, started, found or read."""


class HypervisorError(OrbitError):
    """A libvirt call failed; the message names the host and the call."""


class HostUnreachable(HypervisorError):
    """The host's libvirtd does not answer (down, link cut, wrong URI)."""


class DomainNotFound(HypervisorError):
    """No domain of that name or UUID on that host."""


class MigrationError(OrbitError):
    """A migration could not start, run or be controlled."""


class InvalidMigration(MigrationError):
    """The request was refused before anything changed: same host, VM not running, ..."""


class MigrationRefused(MigrationError):
    """The action is not allowed in the migration's current phase (e.g. abort in post-copy)."""


class InvalidTransition(MigrationError):
    """A phase change the state machine does not allow."""


class MigrationFailed(MigrationError):
    """The migration ended without moving the VM (it keeps running on the source)."""


class JobNeverStarted(MigrationError):
    """An adopted migration whose instance died before its job reached the hypervisor:
    nothing moved or runs, so it is started afresh (not failed, not run twice)."""


class DatabaseError(OrbitError):
    """The database is unreachable, locked or misconfigured, or its schema upgrade failed.

    Raised by :mod:`orbit.db.database`, which maps SQLAlchemy's and Alembic's errors here
    (``raise DatabaseError(...) from err``). Constraint violations (``IntegrityError``) are
    not mapped: the data function that caused one knows what it means.
    """


class InvalidState(MigrationError):
    """The VM is not in a state that allows the action (e.g. not running)."""


class MigrationInProgress(MigrationError):
    """The VM already has a migration that is not over."""


class NotFound(OrbitError):
    """An object named in a request does not exist."""


class ServerNotFound(NotFound):
    """No server (VM) with that id or name."""


class ComputeHostNotFound(NotFound):
    """No registered hypervisor host with that name."""


class MigrationNotFound(NotFound):
    """No migration with that id for that server."""


class DrainNotFound(NotFound):
    """No host drain with that id."""


class Conflict(OrbitError):
    """The request conflicts with what exists: a name taken, or a change that would leave
    ORBIT without an admin."""


class NoValidHost(OrbitError):
    """The scheduler found no host that can take the VM; the message says why."""


class AuthError(OrbitError):
    """No valid credentials or token."""


class Forbidden(AuthError):
    """Authenticated, but the user's role does not allow the action."""


class TooManyAttempts(OrbitError):
    """Log-in refused without a password check: too many failures; retry after ``wait_s``."""

    def __init__(self, wait_s: float) -> None:
        self.wait_s = wait_s
        super().__init__(f"too many failed log-ins: try again in {math.ceil(wait_s)} s")


class ClientError(OrbitError):
    """A request of the ``orbit`` CLI failed; ``status`` is the HTTP status, if any."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status
