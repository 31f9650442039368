"""Dependencies shared by the routes: the services, a database session, the caller.

The ones that only read the request are ``async``: FastAPI runs a plain function in a
worker thread, and each hop to a thread and back costs more than they do. Those that wait
for the database stay plain functions (in a worker thread: the event loop never waits).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Annotated, Any

import anyio
import anyio.to_thread
from fastapi import Depends, Header, Request
from sqlalchemy.orm import Session

from orbit.api.errors import ApiError
from orbit.api.metrics import ApiLatency, MigrationMetrics
from orbit.conductor.conductor import Conductor
from orbit.config import ServerConfig
from orbit.db.database import Database, InstanceLock
from orbit.identity.service import AuthContext, recently_validated, validate_token
from orbit.identity.throttle import LoginThrottle


@dataclass
class Services:
    """What the routes need; built once by orbit-server (or a test)."""

    config: ServerConfig
    db: Database
    conductor: Conductor
    #: failed log-ins (the API's and the dashboard's), for throttling
    throttle: LoginThrottle = field(default_factory=LoginThrottle)
    #: /metrics: finished migrations read once, and this process's API latencies
    metrics: MigrationMetrics = field(default_factory=MigrationMetrics)
    latency: ApiLatency = field(default_factory=ApiLatency)
    #: SQLite's one-instance lock (orbit-server holds it while it runs)
    instance_lock: InstanceLock | None = None


async def get_services(request: Request) -> Services:
    services: Services = request.app.state.services
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


async def get_session(services: ServicesDep) -> AsyncIterator[Session]:
    """A session for the request, committed (or rolled back) and closed at its end, as
    :meth:`Database.session` does. Opening one does not touch the database (done here);
    the end commits and gives the connection back, in a worker thread of its own (not
    counted against the request threads, and not cancelled half-way, as FastAPI does it).
    A session that did not touch the database, or whose transaction only read
    (:func:`reads_only`), ends here: no connection, or one in autocommit, so the commit
    and the pool's reset send nothing to the database, and the hop to a thread and back
    cost more (~1 ms of a page's 8-10)."""
    unit = services.db.session()
    session = unit.__enter__()
    try:
        yield session
    except BaseException as err:
        with anyio.CancelScope(shield=True):
            swallowed = await anyio.to_thread.run_sync(
                unit.__exit__, type(err), err, err.__traceback__, limiter=anyio.CapacityLimiter(1)
            )
        if not swallowed:
            raise
    else:
        current = session.get_transaction()
        untouched = current is None and not (session.new or session.dirty or session.deleted)
        if untouched or (current is not None and session.info.get(_READS_ONLY) is current):
            unit.__exit__(None, None, None)  # nothing to send: see above
            return
        with anyio.CancelScope(shield=True):
            await anyio.to_thread.run_sync(
                unit.__exit__, None, None, None, limiter=anyio.CapacityLimiter(1)
            )


SessionDep = Annotated[Session, Depends(get_session)]


def reads_only(session: Session) -> None:
    """For a route that only reads, called before its first statement: its statements run
    without a transaction around them (autocommit: no BEGIN and COMMIT sent to the
    database). Each statement still sees the committed data of its own start, as in a
    READ COMMITTED transaction; the connection's isolation level is put back when it
    returns to the pool."""
    connection = session.connection(execution_options={"isolation_level": "AUTOCOMMIT"})
    # this transaction only (the token's check reads only, rolls back, and its route may
    # then write in a new one), and only if it really is in autocommit (the option is
    # ignored when the transaction has its connection already)
    if connection.get_execution_options().get("isolation_level") == "AUTOCOMMIT":
        session.info[_READS_ONLY] = session.get_transaction()


#: the session's transaction that only reads (autocommit: nothing to commit at its end)
_READS_ONLY = "orbit_reads_only"


async def get_auth(
    session: SessionDep, x_auth_token: Annotated[str | None, Header()] = None
) -> AuthContext:
    """The caller. A token this process validated less than
    :data:`~orbit.identity.service.TOKEN_CACHE_S` ago is not read again: no worker thread,
    no connection (a third of a paged read's processor time)."""
    if x_auth_token:
        known = recently_validated(x_auth_token)
        if known is not None:
            return known
    return await anyio.to_thread.run_sync(_read_auth, session, x_auth_token)


def _read_auth(session: Session, x_auth_token: str | None) -> AuthContext:
    try:
        if x_auth_token:
            reads_only(session)  # one read, nothing written
        return validate_token(session, token=x_auth_token)
    finally:
        # Nothing was written: give the connection back. The request may now wait for a
        # worker thread (or read its body); holding a connection meanwhile starved the
        # pool in a burst (503) while the connections sat idle in their transactions.
        session.rollback()


AuthDep = Annotated[AuthContext, Depends(get_auth)]


async def url_project(request: Request, auth: AuthDep) -> None:
    """The project in a /v2.1/{project_id}/... URL must be the token's (400, as Nova)."""
    project = request.path_params.get("project_id")
    if project is not None and project != auth.project_id:
        raise ApiError(
            400,
            f"malformed request URL: the URL's project_id {project[:60]!r} does not match "
            f"the token's project {auth.project_id}",
        )


async def json_body(request: Request) -> dict[str, Any]:
    """The request body as a JSON object; 400 with a clear message otherwise."""
    raw = await request.body()
    if not raw:
        raise ApiError(400, "the request body is empty: a JSON object is required")
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError) as err:  # JSONDecodeError, bad UTF-8, huge numbers
        raise ApiError(400, f"malformed request body: not JSON ({err})") from err
    if not isinstance(body, dict):
        raise ApiError(400, "malformed request body: a JSON object is required")
    return body


BodyDep = Annotated[dict[str, Any], Depends(json_body)]
