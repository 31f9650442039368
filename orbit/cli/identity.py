"""``orbit user-create``, ``project-create``, ``role-add`` and friends: users, projects and
role assignments through orbit-server's identity API (admins; ``password-change`` is for
oneself).

A password is never an argument (``ps`` would show it): it is read from the terminal
(asked twice), or as the first line of standard input (``printf '%s\\n' "$PW" | orbit
user-create ...``).
"""

from __future__ import annotations

import argparse
import getpass
import sys
from typing import Any
from urllib.parse import quote, urlencode

from orbit.cli.client import Client
from orbit.cli.compute import make_client, output
from orbit.errors import ClientError


def register(sub: Any) -> None:
    def cmd(name: str, help_text: str, func: Any) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, help=help_text)
        p.add_argument("--format", choices=("table", "json"), default="table")
        p.set_defaults(func=func)
        return p

    p = cmd("project-create", "create a project", cmd_project_create)
    p.add_argument("name")
    cmd("project-list", "list projects", cmd_project_list)
    p = cmd("project-delete", "delete a project (it must own no server)", cmd_project_delete)
    p.add_argument("project", help="project id or name")

    p = cmd("user-create", "create a user; the password is read as the help says",
            cmd_user_create)  # fmt: skip
    p.add_argument("name")
    p.add_argument("--project", required=True, help="its default project (id or name)")
    p.add_argument("--role", choices=("member", "admin"), default="member",
                   help="its role on that project (default member)")  # fmt: skip
    cmd("user-list", "list users", cmd_user_list)
    p = cmd("user-set", "enable, disable or reset the password of a user", cmd_user_set)
    p.add_argument("user", help="user id or name")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--enable", action="store_true")
    group.add_argument("--disable", action="store_true", help="also ends its tokens")
    p.add_argument(
        "--password", action="store_true", help="set a new password (read as for user-create)"
    )
    p = cmd("user-delete", "delete a user", cmd_user_delete)
    p.add_argument("user", help="user id or name")
    cmd("password-change", "change your own password (asks for the current one)",
        cmd_password_change)  # fmt: skip

    for name, func, what in (("role-add", cmd_role_add, "give a user a role on a project"),
                             ("role-remove", cmd_role_remove, "take a role away")):  # fmt: skip
        p = cmd(name, what, func)
        p.add_argument("user", help="user id or name")
        p.add_argument("project", help="project id or name")
        p.add_argument("role", choices=("member", "admin"))
    p = cmd("role-assignment-list", "who holds which role where", cmd_role_assignment_list)
    p.add_argument("--user", help="only this user's (id or name)")
    p.add_argument("--project", help="only on this project (id or name)")


def _client() -> Client:
    return make_client()


def read_password(prompt: str = "New password") -> str:
    """From the terminal (twice), or the first line of standard input."""
    if sys.stdin.isatty():
        first = getpass.getpass(f"{prompt}: ")
        if getpass.getpass(f"{prompt} (again): ") != first:
            raise ClientError("the two passwords differ")
        return first
    line = sys.stdin.readline().rstrip("\n")
    if not line:
        raise ClientError("no password: type it, or give it as the first line of stdin")
    return line


def _find(client: Client, kind: str, ref: str) -> dict[str, Any]:
    """A user or project by id or name (one request each way at most)."""
    try:
        found: dict[str, Any] = client.identity("GET", f"/{kind}s/{quote(ref, safe='')}")[kind]
        return found
    except ClientError as err:
        if err.status != 404:
            raise
    rows = client.identity("GET", f"/{kind}s?{urlencode({'name': ref})}")[f"{kind}s"]
    if not rows:
        raise ClientError(f"no {kind} with id or name {ref!r}")
    row: dict[str, Any] = rows[0]
    return row


def cmd_project_create(args: argparse.Namespace) -> int:
    project = _client().identity("POST", "/projects", {"project": {"name": args.name}})
    return output(args, project, [project["project"]], ["id", "name"])


def cmd_project_list(args: argparse.Namespace) -> int:
    projects = _client().identity("GET", "/projects")["projects"]
    return output(args, projects, projects, ["id", "name"])


def cmd_project_delete(args: argparse.Namespace) -> int:
    client = _client()
    project = _find(client, "project", args.project)
    client.identity("DELETE", f"/projects/{project['id']}")
    return 0


def cmd_user_create(args: argparse.Namespace) -> int:
    client = _client()
    project = _find(client, "project", args.project)
    password = read_password()
    body = {"user": {"name": args.name, "password": password,
                     "default_project_id": project["id"]}}  # fmt: skip
    user = client.identity("POST", "/users", body)["user"]
    client.identity("PUT", f"/projects/{project['id']}/users/{user['id']}/roles/{args.role}")
    row = {"id": user["id"], "name": user["name"], "project": project["name"], "role": args.role}
    return output(args, user, [row], ["id", "name", "project", "role"])


def cmd_user_list(args: argparse.Namespace) -> int:
    users = _client().identity("GET", "/users")["users"]
    return output(args, users, users, ["id", "name", "enabled", "default_project_id"])


def cmd_user_set(args: argparse.Namespace) -> int:
    client = _client()
    user = _find(client, "user", args.user)
    changes: dict[str, Any] = {}
    if args.enable or args.disable:
        changes["enabled"] = bool(args.enable)
    if args.password:
        changes["password"] = read_password()
    if not changes:
        raise ClientError("nothing to change: give --enable, --disable or --password")
    shown = client.identity("PATCH", f"/users/{user['id']}", {"user": changes})["user"]
    return output(args, shown, [shown], ["id", "name", "enabled"])


def cmd_user_delete(args: argparse.Namespace) -> int:
    client = _client()
    user = _find(client, "user", args.user)
    client.identity("DELETE", f"/users/{user['id']}")
    return 0


def cmd_password_change(args: argparse.Namespace) -> int:
    """The current password, then the new one (from the terminal, or two lines of stdin)."""
    client = _client()
    me = client.creds.username
    if not me:
        raise ClientError("password-change needs a log-in by user name (OS_USERNAME)")
    user = _find(client, "user", me)
    if sys.stdin.isatty():
        original = getpass.getpass("Current password: ")
    else:
        original = sys.stdin.readline().rstrip("\n")
    new = read_password()
    body = {"user": {"original_password": original, "password": new}}
    client.identity("POST", f"/users/{user['id']}/password", body)
    print("password changed: log in again with the new one", file=sys.stderr)
    return 0


def _role_path(client: Client, args: argparse.Namespace) -> str:
    user = _find(client, "user", args.user)
    project = _find(client, "project", args.project)
    return f"/projects/{project['id']}/users/{user['id']}/roles/{args.role}"


def cmd_role_add(args: argparse.Namespace) -> int:
    client = _client()
    client.identity("PUT", _role_path(client, args))
    return 0


def cmd_role_remove(args: argparse.Namespace) -> int:
    client = _client()
    client.identity("DELETE", _role_path(client, args))
    return 0


def cmd_role_assignment_list(args: argparse.Namespace) -> int:
    client = _client()
    query = ["include_names=true"]
    if args.user:
        query.append(f"user.id={_find(client, 'user', args.user)['id']}")
    if args.project:
        query.append(f"scope.project.id={_find(client, 'project', args.project)['id']}")
    rows = client.identity("GET", f"/role_assignments?{'&'.join(query)}")["role_assignments"]
    table = [{"user": a["user"]["name"], "project": a["scope"]["project"]["name"],
              "role": a["role"]["name"]} for a in rows]  # fmt: skip
    return output(args, rows, table, ["user", "project", "role"])
