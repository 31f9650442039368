"""``openstack orbit ...``: ORBIT's own verbs as a plugin of the OpenStack CLI.

``openstack`` (python-openstackclient) finds plugins through the entry-point group
``openstack.cli.extension`` (ours: ``orbit = orbit.cli.openstack``) and their commands in
``openstack.orbit.v1`` (see pyproject.toml), as python-ironicclient and
python-octaviaclient do. The commands reuse the ``openstack`` command's log-in (clouds.yaml,
``OS_*`` variables, ``--os-cloud``): requests travel on its keystoneauth session to the
compute endpoint of its service catalog. Output follows every ``openstack`` command:
``-f table|json|yaml|value|shell``, ``-c COLUMN``.

- ``openstack orbit live-migrate [--post-copy] [--post-copy-after N] [--policy P]
  [--postcopy-weight W] [--block-migration] [--wait] SERVER [HOST]``
- ``openstack orbit migration list [--server SERVER] [--host HOST] [--status STATUS]``
- ``openstack orbit migration show SERVER MIGRATION``
- ``openstack orbit migration resume SERVER MIGRATION``
- ``openstack orbit host drain [--to H2,H3] [--post-copy] [--max-parallel N]
  [--deadline S] [--plan] [--wait] HOST``: one row per VM (destination, strategy, state,
  outcome)
"""

from __future__ import annotations

import argparse
from typing import Any

from keystoneauth1 import exceptions as ks_exceptions
from osc_lib import exceptions as osc_exceptions
from osc_lib.command import command

from orbit.cli import compute, maintenance
from orbit.cli.client import MICROVERSION, Compute, error_message
from orbit.errors import ClientError
from orbit.migration.model import MAX_POSTCOPY_WEIGHT

# -- what python-openstackclient asks of a plugin module -----------------------------------
API_NAME = "orbit"
API_VERSION_OPTION = "os_orbit_api_version"
DEFAULT_API_VERSION = "1"
API_VERSIONS = {"1": "orbit.cli.openstack.SessionCompute"}


def make_client(instance: Any) -> SessionCompute:
    """The client for ``self.app.client_manager.orbit``: the compute endpoint of the
    catalog, on ``openstack``'s own session."""
    endpoint = instance.get_endpoint_for_service_type(
        "compute", region_name=instance.region_name, interface=instance.interface
    )
    return SessionCompute(instance.session, endpoint)


def build_option_parser(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument(
        "--os-orbit-api-version",
        metavar="<orbit-api-version>",
        default=DEFAULT_API_VERSION,
        help=f"ORBIT plugin API version, default={DEFAULT_API_VERSION}",
    )
    return parser


class SessionCompute(Compute):
    """The compute API over a keystoneauth session (the one ``openstack`` logged in with)."""

    def __init__(self, session: Any, endpoint: str) -> None:
        self.session = session
        self.endpoint = endpoint.rstrip("/")

    def request(self, method: str, path: str, body: Any = None) -> Any:
        try:
            response = self.session.request(
                f"{self.endpoint}{path}",
                method,
                json=body,
                microversion=MICROVERSION,
                microversion_service_type="compute",
                raise_exc=False,
            )
        except ks_exceptions.ClientException as err:
            raise ClientError(f"cannot reach {self.endpoint}: {err}") from err
        if response.status_code >= 400:
            raise ClientError(
                f"{error_message(response.text, response.reason)} (HTTP {response.status_code})",
                response.status_code,
            )
        return response.json() if response.content else None


# -- commands --------------------------------------------------------------------------------

#: the fields ``migration show`` and ``live-migrate`` print, in order
RECORD_COLUMNS = (
    "id", "server", "source", "dest", "status", "error", "policy", "post_copy",
    "post_copy_after_iterations", "prediction", "switch_at_s", "total_s", "downtime_ms",
    "memory_total_mib", "memory_sent_mib", "iterations", "postcopy_requests",
    "resume_attempts", "decisions",
)  # fmt: skip
LIST_COLUMNS = ("id", "server", "source", "dest", "status", "policy", "total_s", "switch_at_s")


def _record(m: dict[str, Any]) -> dict[str, Any]:
    o = m["orbit"]
    s = o["settings"]
    return {
        "id": m["id"],
        "server": o["server_name"],
        "source": m["source_compute"],
        "dest": m["dest_compute"],
        "status": m["status"],
        "error": o["error"],
        "policy": s["migration_policy"],
        "post_copy": s["post_copy"],
        "post_copy_after_iterations": s["post_copy_after_iterations"],
        "prediction": compute.prediction_line(m),
        "switch_at_s": o["switch_at_s"],
        "total_s": o["total_s"],
        "downtime_ms": o["downtime_ms"],
        # os-migrations has no counters (Nova's shape); a server's migrations have them
        "memory_total_mib": round((m.get("memory_total_bytes") or 0) / compute.MIB, 1),
        "memory_sent_mib": round((m.get("memory_processed_bytes") or 0) / compute.MIB, 1),
        "iterations": o["iterations"],
        "postcopy_requests": o["postcopy_requests"],
        "resume_attempts": o["resume_attempts"],
        "decisions": "\n".join(
            f"t={d['at_s']:.2f} s {d['source']}: {d['action']}: {d['reason']}"
            for d in o["decisions"]
            if d["action"] != "continue"
        ),
    }


def _show(m: dict[str, Any]) -> tuple[tuple[str, ...], tuple[Any, ...]]:
    row = _record(m)
    return RECORD_COLUMNS, tuple(row[c] for c in RECORD_COLUMNS)


def _client(cmd: Any) -> Compute:
    client: Compute = cmd.app.client_manager.orbit
    return client


def _run(action: Any) -> Any:
    """Run ``action()``; ORBIT's ClientError becomes the CLI's one-line CommandError."""
    try:
        return action()
    except ClientError as err:
        raise osc_exceptions.CommandError(str(err)) from err


class LiveMigrate(command.ShowOne):
    """Live-migrate a server, with post-copy if permitted (ORBIT's os-migrateLive)."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = super().get_parser(prog_name)
        parser.add_argument("server", metavar="<server>", help="server (name or ID)")
        parser.add_argument(
            "host", metavar="<host>", nargs="?", help="destination host (default: the scheduler's)"
        )
        parser.add_argument(
            "--post-copy", action="store_true", help="permit post-copy (policy auto by default)"
        )
        parser.add_argument(
            "--post-copy-after",
            type=int,
            metavar="<n>",
            help="switch to post-copy after N memory iterations (policy postcopy)",
        )
        parser.add_argument("--policy", choices=("precopy", "postcopy", "auto"))
        parser.add_argument(
            "--postcopy-weight",
            type=float,
            metavar="<w>",
            help="policy auto's objective: total time + W x seconds in post-copy "
            f"(0..{MAX_POSTCOPY_WEIGHT:.0f}; default 1); needs --post-copy",
        )
        parser.add_argument(
            "--block-migration",
            dest="block_migrate",
            action="store_true",
            help="copy the server's local disks too",
        )
        parser.add_argument(
            "--wait", action="store_true", help="show progress on stderr until it ends"
        )
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> Any:
        def act() -> Any:
            body = compute.live_migration_body(parsed_args)
            client = _client(self)
            server = client.find_server(parsed_args.server)
            m = compute.start_live_migration(client, server["id"], body)
            if parsed_args.wait:
                m = compute.follow(client, server["id"], m["id"], json_mode=False)
                if m["status"] != "completed":
                    raise ClientError(
                        f"migration {m['id']} {m['status']}: {m['orbit']['error'] or 'no reason'}"
                    )
            return _show(m)

        return _run(act)


class _MigrationCommand(command.ShowOne):
    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = super().get_parser(prog_name)
        parser.add_argument("server", metavar="<server>", help="server (name or ID)")
        parser.add_argument("migration", metavar="<migration>", type=int, help="migration ID")
        return parser

    def _migration(self, parsed_args: argparse.Namespace, client: Compute) -> tuple[str, Any]:
        server = client.find_server(parsed_args.server)
        path = f"/servers/{server['id']}/migrations/{parsed_args.migration}"
        return path, client.get(path)["migration"]


class MigrationShow(_MigrationCommand):
    """Show a live migration with ORBIT's record: policy, plan, decisions, times."""

    def take_action(self, parsed_args: argparse.Namespace) -> Any:
        return _run(lambda: _show(self._migration(parsed_args, _client(self))[1]))


class MigrationResume(_MigrationCommand):
    """Retry a paused post-copy now (instead of at the next back-off step)."""

    def take_action(self, parsed_args: argparse.Namespace) -> Any:
        def act() -> Any:
            client = _client(self)
            path, _m = self._migration(parsed_args, client)
            client.post(f"{path}/action", {"resume": None})
            return _show(client.get(path)["migration"])

        return _run(act)


class MigrationList(command.Lister):
    """List live migrations with ORBIT's figures (all servers, or one)."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = super().get_parser(prog_name)
        parser.add_argument("--server", metavar="<server>", help="only this server's")
        parser.add_argument("--host", metavar="<host>", help="from or to this host")
        parser.add_argument("--status", metavar="<status>", help="e.g. running-postcopy")
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> Any:
        def act() -> Any:
            client = _client(self)
            if parsed_args.server:
                server = client.find_server(parsed_args.server)
                ms = client.get(f"/servers/{server['id']}/migrations")["migrations"]
            else:
                ms = client.get("/os-migrations")["migrations"]
            rows = [_record(m) for m in ms]
            rows = [
                r
                for r in rows
                if parsed_args.host in (None, r["source"], r["dest"])
                and parsed_args.status in (None, r["status"])
            ]
            return LIST_COLUMNS, [tuple(r[c] for c in LIST_COLUMNS) for r in rows]

        return _run(act)


DRAIN_COLUMNS = ("name", "memory_mib", "dest", "strategy", "predicted_s", "state", "outcome")


class HostDrain(command.Lister):
    """Disable a host and move every VM off it by a plan (ORBIT's drain)."""

    def get_parser(self, prog_name: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = super().get_parser(prog_name)
        parser.add_argument("host", metavar="<host>", help="the host to empty")
        parser.add_argument("--to", metavar="<h2,h3>", help="only these destinations")
        parser.add_argument("--post-copy", action="store_true", help="permit post-copy")
        parser.add_argument("--max-parallel", type=int, metavar="<n>",
                            help="migrations at once (default: the host's limit)")  # fmt: skip
        parser.add_argument("--deadline", type=float, metavar="<s>",
                            help="start nothing after S seconds")  # fmt: skip
        parser.add_argument("--plan", action="store_true", help="show the plan; change nothing")
        parser.add_argument("--wait", action="store_true", help="follow it until it ends")
        return parser

    def take_action(self, parsed_args: argparse.Namespace) -> Any:
        def act() -> Any:
            body: dict[str, Any] = {"post_copy": parsed_args.post_copy,
                                    "plan_only": parsed_args.plan}  # fmt: skip
            if parsed_args.to:
                body["to"] = [t.strip() for t in parsed_args.to.split(",") if t.strip()]
            if parsed_args.max_parallel is not None:
                body["max_parallel"] = parsed_args.max_parallel
            if parsed_args.deadline is not None:
                body["deadline_s"] = parsed_args.deadline
            client = _client(self)
            drain = client.post(f"/orbit-hosts/{parsed_args.host}/drain", body)["drain"]
            if parsed_args.wait and not parsed_args.plan:
                drain = maintenance.follow(client, drain, quiet=False)
            rows = [maintenance.item_row(i) for i in drain["items"]]
            if parsed_args.wait and drain["status"] != "completed":
                left = [f"{r['name']}: {r['outcome']}" for r in rows if r["state"] != "moved"]
                raise ClientError(f"drain {drain['id']} {drain['status']}: " + "; ".join(left))
            return DRAIN_COLUMNS, [tuple(r.get(c) for c in DRAIN_COLUMNS) for r in rows]

        return _run(act)
