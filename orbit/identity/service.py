"""Identity data functions: the first admin, password log-in, token validation.

A token is scoped to one project; what it may do is the user's roles on that project, read
from the database when the token is validated. The API reuses a validation for up to
:data:`TOKEN_CACHE_S` in the process that made it (:func:`recently_validated`), as
keystonemiddleware caches tokens (300 s by default): a token revoked, a user disabled or a
role changed through this process takes effect at once (:func:`forget_tokens`); through
another instance sharing the database, within that time.

They take a SQLAlchemy session and keyword arguments, know nothing of HTTP, and raise
:class:`~orbit.errors.AuthError` (401) or :class:`~orbit.errors.Forbidden` (403) with a
message that never contains a password or a token.
"""

from __future__ import annotations

import functools
import itertools
import time
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, bindparam, delete, event, select
from sqlalchemy.orm import Session

from orbit.db.models import Project, Role, RoleAssignment, Token, User
from orbit.db.types import utcnow
from orbit.errors import AuthError, ConfigError, Forbidden
from orbit.identity.security import (
    generate_password,
    hash_password,
    new_token,
    password_problem,
    token_hash,
    verify_password,
)
from orbit.identity.throttle import PASSWORD_CHECKS

ADMIN_USER = "admin"
ADMIN_PROJECT = "admin"
#: How long this process reuses a token's validation without reading the database again
TOKEN_CACHE_S = 2.0
#: validations kept at most (past that, all are forgotten and read again)
TOKEN_CACHE_ENTRIES = 10_000
#: the admin role's name (an Enum's .value is a property: ~1 µs a read, per row of a list)
_ADMIN = Role.ADMIN.value


@dataclass(frozen=True)
class AuthContext:
    """Who is calling: what a valid token stands for."""

    user_id: str
    user_name: str
    project_id: str
    project_name: str
    #: the roles the user holds on the token's project
    assigned: frozenset[str]
    issued_at: datetime
    expires_at: datetime

    @property
    def is_admin(self) -> bool:
        return _ADMIN in self.assigned

    @property
    def role(self) -> str:
        return Role.ADMIN.value if self.is_admin else Role.MEMBER.value

    @property
    def roles(self) -> list[str]:
        """Keystone-style role list: an admin also holds 'member' (an implied role)."""
        return [Role.ADMIN.value, Role.MEMBER.value] if self.is_admin else [Role.MEMBER.value]

    def require_admin(self, action: str) -> None:
        if not self.is_admin:
            raise Forbidden(f"{action} needs the admin role; user {self.user_name} has {self.role}")


def check_password(password: str, *, user_name: str) -> None:
    """ConfigError (400) if the password policy refuses ``password``."""
    problem = password_problem(password, user_name=user_name)
    if problem is not None:
        raise ConfigError(f"{problem} (user {user_name})")


def ensure_admin(session: Session, *, password: str | None) -> str | None:
    """Create user 'admin' (role admin on project 'admin') unless it exists; a password
    given (``$ORBIT_ADMIN_PASSWORD``) must pass the password policy.

    Returns the password when one was generated (to be shown once), else None.
    """
    if session.scalar(select(User).where(User.name == ADMIN_USER)) is not None:
        return None
    generated = None
    if not password:
        password = generated = generate_password()
    create_user(
        session,
        name=ADMIN_USER,
        password=password,
        project_name=ADMIN_PROJECT,
        role=Role.ADMIN.value,
    )
    return generated


def create_user(
    session: Session, *, name: str, password: str, project_name: str, role: str
) -> User:
    """Add a user with ``role`` on ``project_name`` (created if new), its default project;
    ConfigError for a bad role, a refused password or a taken name."""
    if role not in (r.value for r in Role):
        raise ConfigError(f"role must be admin or member, got {role!r}")
    check_password(password, user_name=name)
    if session.scalar(select(User).where(User.name == name)) is not None:
        raise ConfigError(f"user {name!r} already exists")
    project = session.scalar(select(Project).where(Project.name == project_name))
    if project is None:
        project = Project(name=project_name)
        session.add(project)
    user = User(name=name, password_hash=hash_password(password), project=project)
    session.add(user)
    user.assignments.append(RoleAssignment(project=project, role=role))
    session.flush()
    return user


def assigned_roles(session: Session, *, user_id: str, project_id: str) -> frozenset[str]:
    """The roles ``user_id`` holds on ``project_id``."""
    rows = session.scalars(
        select(RoleAssignment.role).where(
            RoleAssignment.user_id == user_id, RoleAssignment.project_id == project_id
        )
    )
    return frozenset(rows)


@functools.cache
def _unknown_user_hash() -> str:
    """Checked when the user does not exist, so that the answer takes as long as for a
    wrong password (the hash of a random password: nothing matches it)."""
    return hash_password(new_token())


def issue_token(
    session: Session,
    *,
    user_name: str,
    password: str,
    project_name: str | None,
    ttl_s: int,
    project_id: str | None = None,
) -> tuple[str, AuthContext]:
    """Check the password and issue a token scoped to the project asked for (by name or
    id), else to the user's default project; the user must hold a role on it.

    Ends ``session``'s transaction before the password check (nothing may be pending), and
    raises TooManyAttempts when too many checks are under way (:class:`CheckGate`)."""
    user = session.scalar(select(User).where(User.name == user_name))
    # the same message and the same work for an unknown user and a wrong password (a
    # hash is checked either way): no user enumeration by the answer or its timing
    stored = user.password_hash if user is not None else _unknown_user_hash()
    user_id = user.id if user is not None else None
    # no database connection held while the check waits for a slot and runs (CPU only)
    session.rollback()
    with PASSWORD_CHECKS.slot():
        matches = verify_password(password, stored)
    user = session.get(User, user_id or "")  # the same query either way
    if user is None or not user.enabled or not matches:
        raise AuthError("the user name or password is incorrect")
    project: Project | None = user.project
    if project_id is not None:
        project = session.get(Project, project_id)
    elif project_name is not None:
        project = session.scalar(select(Project).where(Project.name == project_name))
    wanted = project_name or project_id
    if project is None:
        if wanted is None:
            raise AuthError(f"user {user_name} has no default project: scope the log-in")
        raise AuthError(f"user {user_name} has no role on project {wanted[:60]!r}")
    roles = assigned_roles(session, user_id=user.id, project_id=project.id)
    if not roles:
        raise AuthError(f"user {user_name} has no role on project {project.name!r}")
    token = new_token()
    now = utcnow()
    row = Token(
        token_hash=token_hash(token),
        user_id=user.id,
        project_id=project.id,
        issued_at=now,
        expires_at=now + timedelta(seconds=ttl_s),
    )
    session.add(row)
    session.flush()
    return token, _context(user, row, project, roles)


def validate_token(session: Session, *, token: str | None) -> AuthContext:
    """The caller behind ``token``; AuthError if it is missing, unknown or expired. A valid
    one is remembered for :func:`recently_validated`."""
    if not token:
        raise AuthError("this request needs a token: send X-Auth-Token")
    key = token_hash(token)
    generation = _generation[0]
    context = _valid(session, key, by_id=False)
    if len(_validated) >= TOKEN_CACHE_ENTRIES:
        _validated.clear()
    if _generation[0] == generation:  # else a change was forgotten meanwhile: read before it
        _validated[key] = (time.monotonic() + TOKEN_CACHE_S, context)
    return context


#: token hash: (monotonic time until which it is reused, its context); the raw token is
#: never kept
_validated: dict[str, tuple[float, AuthContext]] = {}
#: how many times the validations were forgotten (from itertools.count: atomic): one read
#: before a change and stored after it would otherwise outlive the change
_forgets = itertools.count(1)
_generation = [0]


def recently_validated(token: str) -> AuthContext | None:
    """The context :func:`validate_token` found for ``token`` less than
    :data:`TOKEN_CACHE_S` ago, if the token has not expired since; else None (validate
    it again)."""
    key = token_hash(token)
    hit = _validated.get(key)
    if hit is None:
        return None
    until, context = hit
    if time.monotonic() >= until or context.expires_at <= utcnow():
        _validated.pop(key, None)
        return None
    return context


def forget_tokens(session: Session | None = None) -> None:
    """Forget every validation this process reuses: a token, user, role or project
    changed. With ``session``: again once it commits (a validation made meanwhile read the
    state before the change)."""
    _forget()
    if session is not None:
        event.listen(session, "after_commit", lambda _s: _forget(), once=True)


def _forget() -> None:
    _generation[0] = next(_forgets)
    _validated.clear()


def token_id_of(session: Session, *, token: str) -> str | None:
    """The id of the token row for ``token`` (None: no such token)."""
    return session.scalar(select(Token.id).where(Token.token_hash == token_hash(token)))


def validate_token_id(session: Session, *, token_id: str) -> AuthContext:
    """As :func:`validate_token`, for a token known by its row's id (a dashboard session
    keeps only that)."""
    return _valid(session, token_id, by_id=True)


#: A token with its user, its project and the user's roles on that project: one row per
#: role (one with a NULL role when there is none), read in one query at every request.
_TOKEN_ROWS = (
    select(
        Token.issued_at,
        Token.expires_at,
        Token.user_id,
        User.name,
        User.enabled,
        Token.project_id,
        Project.name,
        RoleAssignment.role,
    )
    .join(User, User.id == Token.user_id)
    .join(Project, Project.id == Token.project_id)
    .outerjoin(
        RoleAssignment,
        and_(
            RoleAssignment.user_id == Token.user_id,
            RoleAssignment.project_id == Token.project_id,
        ),
    )
)


#: built once (building a statement and its cache key costs more than running it)
_TOKEN_BY_HASH = _TOKEN_ROWS.where(Token.token_hash == bindparam("key"))
_TOKEN_BY_ID = _TOKEN_ROWS.where(Token.id == bindparam("key"))


def _valid(session: Session, key: str, *, by_id: bool) -> AuthContext:
    """The context of the token whose hash (or row id) is ``key``, checked: it exists and
    has not expired, its user is enabled and still holds a role on its project (all read
    now, in one query)."""
    # Core rows on the session's connection: the ORM's result machinery costs more than
    # the query, for columns only
    query = _TOKEN_BY_ID if by_id else _TOKEN_BY_HASH
    rows = session.connection().execute(query, {"key": key}).all()
    if not rows:
        raise AuthError("the token is not valid")
    issued_at, expires_at, user_id, user_name, enabled, project_id, project_name, _ = rows[0]
    if expires_at <= utcnow():
        raise AuthError(f"the token expired at {expires_at.isoformat()}")
    if not enabled:
        raise AuthError("the token's user is disabled")
    roles = frozenset(role for *_, role in rows if role is not None)
    if not roles:
        raise AuthError("the token's user no longer has a role on the token's project")
    return AuthContext(
        user_id=user_id,
        user_name=user_name,
        project_id=project_id,
        project_name=project_name,
        assigned=roles,
        issued_at=issued_at,
        expires_at=expires_at,
    )


def revoke_token(session: Session, *, token: str) -> None:
    session.execute(delete(Token).where(Token.token_hash == token_hash(token)))
    forget_tokens(session)


def revoke_token_id(session: Session, *, token_id: str) -> None:
    session.execute(delete(Token).where(Token.id == token_id))
    forget_tokens(session)


def purge_expired(session: Session) -> int:
    """Delete expired tokens; returns how many."""
    result = session.execute(delete(Token).where(Token.expires_at <= utcnow()))
    return int(getattr(result, "rowcount", 0) or 0)


def _context(user: User, row: Token, project: Project, roles: frozenset[str]) -> AuthContext:
    return AuthContext(
        user_id=user.id,
        user_name=user.name,
        project_id=project.id,
        project_name=project.name,
        assigned=roles,
        issued_at=row.issued_at,
        expires_at=row.expires_at,
    )
