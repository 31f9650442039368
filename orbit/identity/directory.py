"""Users, projects and role assignments: Keystone v3's model, as data functions.

They take a SQLAlchemy session and keyword arguments and raise ORBIT's errors:
:class:`~orbit.errors.ConfigError` (400) for bad input, :class:`~orbit.errors.NotFound`
(404), :class:`~orbit.errors.Conflict` (409) for a name taken or a change that would leave
ORBIT without an admin or a project that still owns servers. Who may call them is the
caller's business (the API: admin, except reading and changing oneself).
"""

from __future__ import annotations

import re

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from orbit.db.models import NAME_LEN, Project, Role, RoleAssignment, Server, Token, User
from orbit.errors import AuthError, ConfigError, Conflict, NotFound
from orbit.identity.security import hash_password, verify_password
from orbit.identity.service import ADMIN_PROJECT, check_password, forget_tokens

#: a user or project name: printable, no leading or trailing space, no control characters
NAME_RE = re.compile(r"^[^\x00-\x1f\x7f\s](?:[^\x00-\x1f\x7f]{0,253}[^\x00-\x1f\x7f\s])?$")
ROLES = tuple(r.value for r in Role)


def _name(value: object, what: str) -> str:
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise ConfigError(
            f"{what} name must be 1 to {NAME_LEN} printable characters, without leading or "
            "trailing spaces"
        )
    return value


def _role(role: str) -> str:
    if role not in ROLES:
        raise NotFound(f"role {role[:40]!r} does not exist: ORBIT's roles are admin and member")
    return role


# -- projects -----------------------------------------------------------------------------


def find_project(session: Session, ref: str) -> Project:
    """A project by id, else by name; NotFound if neither."""
    project = session.get(Project, ref) or session.scalar(
        select(Project).where(Project.name == ref)
    )
    if project is None:
        raise NotFound(f"project {ref[:60]!r} could not be found")
    return project


def create_project(session: Session, *, name: object) -> Project:
    name = _name(name, "project")
    if session.scalar(select(Project.id).where(Project.name == name)) is not None:
        raise Conflict(f"project {name!r} already exists")
    project = Project(name=name)
    session.add(project)
    session.flush()
    return project


def delete_project(session: Session, project: Project) -> None:
    """Delete a project with its role assignments and tokens; refused while servers belong
    to it (give them to another project first) or when it holds the last admin."""
    forget_tokens(session)
    servers = session.scalar(select(func.count(Server.id)).where(Server.project_id == project.id))
    if servers:
        raise Conflict(
            f"project {project.name} owns {servers} servers: assign them to another project first"
        )
    if project.name == ADMIN_PROJECT:
        raise Conflict(f"project {ADMIN_PROJECT} is where orbit-server's first admin lives")
    _keep_an_admin(session, without=select(RoleAssignment).where(
        RoleAssignment.project_id == project.id))  # fmt: skip
    session.execute(delete(Token).where(Token.project_id == project.id))
    session.execute(delete(RoleAssignment).where(RoleAssignment.project_id == project.id))
    session.delete(project)
    session.flush()


# -- users --------------------------------------------------------------------------------


def find_user(session: Session, ref: str) -> User:
    """A user by id, else by name; NotFound if neither."""
    user = session.get(User, ref) or session.scalar(select(User).where(User.name == ref))
    if user is None:
        raise NotFound(f"user {ref[:60]!r} could not be found")
    return user


def add_user(
    session: Session,
    *,
    name: object,
    password: object,
    default_project: Project | None,
    enabled: bool = True,
) -> User:
    """A new user with no role yet (Keystone's create-user; then assign roles)."""
    name = _name(name, "user")
    if not isinstance(password, str):
        raise ConfigError("a user needs a password (a string)")
    check_password(password, user_name=name)
    if session.scalar(select(User.id).where(User.name == name)) is not None:
        raise Conflict(f"user {name!r} already exists")
    user = User(
        name=name, password_hash=hash_password(password), project=default_project, enabled=enabled
    )
    session.add(user)
    session.flush()
    return user


def update_user(
    session: Session,
    user: User,
    *,
    name: object = None,
    password: object = None,
    default_project: Project | None = None,
    enabled: object = None,
) -> None:
    """Change what is given (None: unchanged). A new password ends the user's tokens;
    disabling the last admin is refused."""
    forget_tokens(session)
    if name is not None:
        name = _name(name, "user")
        taken = session.scalar(select(User.id).where(User.name == name, User.id != user.id))
        if taken is not None:
            raise Conflict(f"user {name!r} already exists")
        user.name = name
    if password is not None:
        set_password(session, user, password)
    if default_project is not None:
        user.project = default_project
    if enabled is not None:
        if not isinstance(enabled, bool):
            raise ConfigError("'enabled' must be true or false")
        if not enabled and user.enabled:
            _keep_an_admin(session, without_user=user.id)
            session.execute(delete(Token).where(Token.user_id == user.id))
        user.enabled = enabled
    session.flush()


def set_password(session: Session, user: User, password: object) -> None:
    """Set a new password (policy-checked) and end every token of the user."""
    forget_tokens(session)
    if not isinstance(password, str):
        raise ConfigError("the password must be a string")
    check_password(password, user_name=user.name)
    user.password_hash = hash_password(password)
    session.execute(delete(Token).where(Token.user_id == user.id))


def change_own_password(
    session: Session, user: User, *, original: object, password: object
) -> None:
    """Keystone's self-service change: the current password proves it is the user."""
    if not isinstance(original, str) or not verify_password(original, user.password_hash):
        raise AuthError("the original password is incorrect")
    if original == password:
        raise ConfigError("the new password must differ from the original")
    set_password(session, user, password)


def delete_user(session: Session, user: User) -> None:
    forget_tokens(session)
    _keep_an_admin(session, without_user=user.id)
    session.delete(user)
    session.flush()


# -- role assignments ---------------------------------------------------------------------


def assign_role(session: Session, *, user: User, project: Project, role: str) -> bool:
    """Grant ``role`` on ``project``; False if the user held it already."""
    forget_tokens(session)
    role = _role(role)
    if session.get(RoleAssignment, (user.id, project.id, role)) is not None:
        return False
    session.add(RoleAssignment(user_id=user.id, project_id=project.id, role=role))
    session.flush()
    return True


def has_role(session: Session, *, user: User, project: Project, role: str) -> bool:
    return session.get(RoleAssignment, (user.id, project.id, _role(role))) is not None


def unassign_role(session: Session, *, user: User, project: Project, role: str) -> None:
    """Revoke ``role`` on ``project`` (NotFound if not held; the last admin's is kept)."""
    forget_tokens(session)
    row = session.get(RoleAssignment, (user.id, project.id, _role(role)))
    if row is None:
        raise NotFound(f"user {user.name} has no role {role} on project {project.name}")
    if role == Role.ADMIN.value:
        _keep_an_admin(session, without=select(RoleAssignment).where(
            RoleAssignment.user_id == user.id, RoleAssignment.project_id == project.id,
            RoleAssignment.role == role))  # fmt: skip
    session.delete(row)
    session.flush()


def assignments(
    session: Session, *, user_id: str | None = None, project_id: str | None = None
) -> list[RoleAssignment]:
    query = select(RoleAssignment).order_by(RoleAssignment.created_at, RoleAssignment.user_id)
    if user_id is not None:
        query = query.where(RoleAssignment.user_id == user_id)
    if project_id is not None:
        query = query.where(RoleAssignment.project_id == project_id)
    return list(session.scalars(query))


def _keep_an_admin(
    session: Session, *, without: object = None, without_user: str | None = None
) -> None:
    """Conflict if no enabled user would hold the admin role after removing the assignments
    selected by ``without`` (a select of RoleAssignment) or every role of ``without_user``:
    nobody could then manage ORBIT."""
    admins = {
        (a.user_id, a.project_id)
        for a in session.scalars(
            select(RoleAssignment)
            .join(User, User.id == RoleAssignment.user_id)
            .where(RoleAssignment.role == Role.ADMIN.value, User.enabled.is_(True))
        )
    }
    if without is not None:
        gone = {(a.user_id, a.project_id) for a in session.scalars(without)}  # type: ignore[call-overload]
        admins -= gone
    if without_user is not None:
        admins = {(u, p) for u, p in admins if u != without_user}
    if not admins:
        raise Conflict("that would leave no enabled user with the admin role")
