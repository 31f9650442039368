"""``orbit live-migration …`` and friends: the operator's commands against orbit-server.

The seed's contract: ``orbit live-migration [--block-migrate] [--post-copy] VM [DST_HOST]``.
Every command takes ``--format table|json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

from orbit.cli.client import Client, Compute, credentials_from_env
from orbit.errors import ClientError
from orbit.migration.model import MAX_POSTCOPY_WEIGHT

MIB = 1024 * 1024
WAIT_POLL_INTERVAL_S = 0.5
WAIT_FOR_RECORD_S = 10.0
FINAL = {"completed", "failed", "cancelled", "error"}
BAR_WIDTH = 30


def register(sub: Any) -> None:
    def cmd(name: str, help_text: str, func: Any) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, help=help_text)
        p.add_argument("--format", choices=("table", "json"), default="table")
        p.set_defaults(func=func)
        return p

    cmd("list", "list servers", cmd_list)
    p = cmd("show", "show a server", cmd_show)
    p.add_argument("server", help="server id or name")
    p = cmd(
        "server-assign-project",
        "give a server to a project (written in its domain's metadata; admin)",
        cmd_assign_project,
    )
    p.add_argument("server", help="server id or name")
    p.add_argument("project", nargs="?", help="project id or name")
    p.add_argument("--none", action="store_true", help="to no project (only admins see it)")
    cmd("hypervisor-list", "list hypervisors", cmd_hypervisor_list)
    p = cmd("host-add", "register a libvirt host", cmd_host_add)
    p.add_argument("name")
    p.add_argument("uri", help="libvirt URI, e.g. qemu+tcp://198.18.0.1/system")
    p.add_argument(
        "--migration-address",
        help="where migration streams go: an address (198.18.0.1, as Nova's "
        "live_migration_inbound_addr) or a URI (tcp://198.18.0.1)",
    )
    p.add_argument(
        "--link-mib-s",
        type=int,
        metavar="N",
        help="the link rate into this host in MiB/s; policy auto plans with it until "
        "migrations to the host have measured the link",
    )
    cmd("host-list", "list registered hosts", cmd_host_list)
    p = cmd("host-remove", "unregister a host", cmd_host_remove)
    p.add_argument("name")

    p = cmd("live-migration", "live-migrate a server", cmd_live_migration)
    p.add_argument("--block-migrate", action="store_true", help="copy local disks too")
    p.add_argument("--post-copy", action="store_true", help="permit post-copy")
    p.add_argument("--post-copy-after", type=int, metavar="N",
                   help="switch after N memory iterations (implies policy postcopy)")  # fmt: skip
    p.add_argument("--policy", choices=("precopy", "postcopy", "auto"))
    p.add_argument(
        "--postcopy-weight",
        type=float,
        metavar="W",
        help="policy auto's objective: score = total time + W x seconds in post-copy "
        f"(0..{MAX_POSTCOPY_WEIGHT:.0f}; default 1). 0 picks the fastest to finish; a large W "
        "switches to post-copy only when pre-copy cannot finish. Needs --post-copy",
    )
    p.add_argument("--wait", action="store_true", help="follow progress until it ends")
    p.add_argument("server", help="server id or name")
    p.add_argument("host", nargs="?", help="destination host (default: scheduler's choice)")

    p = cmd("server-migration-list", "migrations of a server", cmd_server_migration_list)
    p.add_argument("server")
    p = cmd("server-migration-show", "one migration of a server", cmd_server_migration_show)
    p.add_argument("server")
    p.add_argument("migration", type=int)
    p = cmd("migration-list", "all migrations", cmd_migration_list)
    p.add_argument("--host")
    p.add_argument("--status")
    p = cmd("live-migration-force-complete", "switch to post-copy now", cmd_force_complete)
    p.add_argument("server")
    p.add_argument("migration", type=int)
    p = cmd("live-migration-resume", "retry a paused post-copy now", cmd_resume)
    p.add_argument("server")
    p.add_argument("migration", type=int)
    p = cmd("live-migration-abort", "abort a migration in pre-copy", cmd_abort)
    p.add_argument("server")
    p.add_argument("migration", type=int)


def make_client() -> Client:
    return Client(credentials_from_env())


def table(rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> str:
    cells = [[("" if r.get(c) is None else str(r.get(c))) for c in columns] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    return "\n".join(lines)


def output(
    args: argparse.Namespace, data: Any, rows: Sequence[dict[str, Any]], cols: list[str]
) -> int:
    if args.format == "json":
        print(json.dumps(data, indent=2))
    else:
        print(table(rows, cols))
    return 0


def _server_row(s: dict[str, Any]) -> dict[str, Any]:
    return {
        "id": s["id"],
        "name": s["name"],
        "status": s["status"],
        "project": s.get("tenant_id") or None,
        "host": s.get("OS-EXT-SRV-ATTR:host"),
        "memory_mib": s.get("orbit:memory_mib"),
        "vcpus": s.get("orbit:vcpus"),
        "migration": s.get("orbit:migration_id"),
    }


def cmd_list(args: argparse.Namespace) -> int:
    servers = make_client().get("/servers/detail")["servers"]
    rows = [_server_row(s) for s in servers]
    return output(args, servers, rows, ["id", "name", "status", "host", "memory_mib", "migration"])


def cmd_show(args: argparse.Namespace) -> int:
    server = make_client().find_server(args.server)
    row = _server_row(server)
    return output(
        args, server, [{"field": k, "value": v} for k, v in row.items()], ["field", "value"]
    )


def cmd_assign_project(args: argparse.Namespace) -> int:
    if (args.project is None) == (not args.none):
        raise ClientError("give a PROJECT, or --none to take the server out of every project")
    client = make_client()
    server = client.find_server(args.server)
    body = {"orbit-assignProject": {"project": None if args.none else args.project}}
    client.post(f"/servers/{server['id']}/action", body)
    shown = client.find_server(server["id"])
    row = _server_row(shown)
    return output(args, shown, [row], ["id", "name", "project"])


def cmd_hypervisor_list(args: argparse.Namespace) -> int:
    hvs = make_client().get("/os-hypervisors/detail")["hypervisors"]
    cols = ["id", "hypervisor_hostname", "state", "status", "memory_mb", "free_ram_mb",
            "running_vms"]  # fmt: skip
    return output(args, hvs, hvs, cols)


def cmd_host_add(args: argparse.Namespace) -> int:
    if args.link_mib_s is not None and args.link_mib_s < 1:
        raise ClientError(f"--link-mib-s must be >= 1 MiB/s, got {args.link_mib_s}")
    body: dict[str, Any] = {"name": args.name, "uri": args.uri}
    if args.migration_address:
        body["migration_address"] = args.migration_address
    if args.link_mib_s is not None:
        body["link_mib_s"] = args.link_mib_s
    host = make_client().post("/orbit-hosts", body)["host"]
    return output(args, host, [host], ["name", "uri", "migration_address", "link_mib_s", "state"])


def cmd_host_list(args: argparse.Namespace) -> int:
    hosts = make_client().get("/orbit-hosts")["hosts"]
    cols = ["name", "uri", "state", "link_mib_s", "memory_free_mib", "servers"]
    return output(args, hosts, hosts, cols)


def cmd_host_remove(args: argparse.Namespace) -> int:
    make_client().delete(f"/orbit-hosts/{args.name}")
    return 0


def _migration_row(m: dict[str, Any]) -> dict[str, Any]:
    o = m.get("orbit", {})
    return {
        "id": m["id"],
        "server": o.get("server_name", m.get("server_uuid")),
        "source": m.get("source_compute"),
        "dest": m.get("dest_compute"),
        "status": m["status"],
        "policy": o.get("settings", {}).get("migration_policy"),
        "remaining_mib": round(m.get("memory_remaining_bytes", 0) / MIB, 1),
        "total_s": o.get("total_s"),
        "switch_at_s": o.get("switch_at_s"),
    }


MIGRATION_COLS = ["id", "server", "source", "dest", "status", "policy", "remaining_mib",
                  "total_s", "switch_at_s"]  # fmt: skip


def _check_postcopy_weight(args: argparse.Namespace) -> None:
    """``--postcopy-weight`` is a number in range and only applies to post-copy's policy auto."""
    weight = args.postcopy_weight
    if weight is None:
        return
    if not 0 <= weight <= MAX_POSTCOPY_WEIGHT:  # also refuses nan and inf
        raise ClientError(f"--postcopy-weight must be 0..{MAX_POSTCOPY_WEIGHT:.0f}, got {weight}")
    if not args.post_copy:
        raise ClientError("--postcopy-weight needs --post-copy")
    if args.post_copy_after is not None or args.policy not in (None, "auto"):
        policy = args.policy or "postcopy"
        raise ClientError(f"--postcopy-weight applies to policy auto, not {policy!r}")


def live_migration_body(args: argparse.Namespace) -> dict[str, Any]:
    """os-migrateLive's body from the flags (raise ClientError for a bad combination)."""
    if args.post_copy_after is not None and args.post_copy_after < 0:
        raise ClientError(f"--post-copy-after must be >= 0, got {args.post_copy_after}")
    _check_postcopy_weight(args)
    body: dict[str, Any] = {
        "host": args.host,
        "block_migration": args.block_migrate,
        "post_copy": args.post_copy,
    }
    if args.post_copy_after is not None:
        body["post_copy_after_iterations"] = args.post_copy_after
    if args.policy:
        body["migration_policy"] = args.policy
    if args.postcopy_weight is not None:
        body["postcopy_weight"] = args.postcopy_weight
    return body


def start_live_migration(client: Compute, server_id: str, body: dict[str, Any]) -> dict[str, Any]:
    """Ask for the migration and return its new record."""
    before = {m["id"] for m in client.get(f"/servers/{server_id}/migrations")["migrations"]}
    client.post(f"/servers/{server_id}/action", {"os-migrateLive": body})
    return _new_migration(client, server_id, before)


def cmd_live_migration(args: argparse.Namespace) -> int:
    body = live_migration_body(args)
    client = make_client()
    server = client.find_server(args.server)
    record = start_live_migration(client, server["id"], body)
    if not args.wait:
        return output(args, record, [_migration_row(record)], MIGRATION_COLS)
    final = follow(client, server["id"], record["id"], json_mode=args.format == "json")
    if args.format == "json":
        print(json.dumps(final, indent=2))
    else:
        _print_record(final)
    return 0 if final["status"] == "completed" else 1


def _new_migration(client: Compute, server_id: str, before: set[int]) -> dict[str, Any]:
    deadline = time.monotonic() + WAIT_FOR_RECORD_S
    while True:
        for m in client.get(f"/servers/{server_id}/migrations")["migrations"]:
            if m["id"] not in before:
                return dict(m)
        if time.monotonic() > deadline:
            raise ClientError("the migration was accepted but no record appeared")
        time.sleep(WAIT_POLL_INTERVAL_S)


def _bar(done: float) -> str:
    filled = round(max(0.0, min(1.0, done)) * BAR_WIDTH)
    return "[" + "#" * filled + "." * (BAR_WIDTH - filled) + "]"


def follow(client: Compute, server_id: str, mid: int, *, json_mode: bool) -> dict[str, Any]:
    """Poll the record until it is final, drawing a progress line on stderr, and a line
    for each decision other than 'continue' as it is made (auto's plan, the switch)."""
    last_samples = -1.0
    rate = dirty = 0
    shown = 0  # decisions printed so far
    tty = sys.stderr.isatty()
    while True:
        m: dict[str, Any] = client.get(f"/servers/{server_id}/migrations/{mid}")["migration"]
        decisions = m["orbit"]["decisions"]
        if not json_mode:
            for d in decisions[shown:]:
                if d["action"] != "continue":
                    print(
                        f"{chr(13) if tty else ''}t={d['at_s']:6.2f} s  {d['action']}: "
                        f"{d['reason']}",
                        file=sys.stderr,
                        flush=True,
                    )
        shown = len(decisions)
        samples = client.get(
            f"/servers/{server_id}/migrations/{mid}/samples?after_s={last_samples}"
        )
        if samples["samples"]:
            s = samples["samples"][-1]
            last_samples = s["elapsed_s"]
            rate, dirty = s["bandwidth_bytes_s"], s["dirty_rate_bytes_s"]
        total = m["memory_total_bytes"] or 1
        remaining = m["memory_remaining_bytes"]
        line = (
            f"{m['status']:<17} {_bar(1 - remaining / total)} iter {m['orbit']['iterations']:>2}  "
            f"remaining {remaining / MIB:7.1f} MiB  rate {rate / MIB:6.1f} MiB/s  "
            f"dirty {dirty / MIB:6.1f} MiB/s  pc-req {m['orbit']['postcopy_requests']}"
        )
        if not json_mode:
            print(
                ("\r" + line) if tty else line, end="" if tty else "\n", file=sys.stderr, flush=True
            )
        if m["status"] in FINAL:
            if tty and not json_mode:
                print(file=sys.stderr)
            return m
        time.sleep(WAIT_POLL_INTERVAL_S)


def _mib_s(bytes_s: float | None) -> str:
    return "-" if bytes_s is None else f"{bytes_s / MIB:.1f} MiB/s"


def prediction_line(m: dict[str, Any]) -> str:
    """``postcopy-after-0, predicted 10.2 s (10.2 s in post-copy), planned 1.1 s in, took
    9.8 s``."""
    o = m["orbit"]
    plan = o.get("prediction")
    if not plan:
        if o["settings"]["migration_policy"] != "auto":
            return f"- (policy {o['settings']['migration_policy']} makes no plan)"
        return "- (not measured)" if m["status"] in FINAL else "- (not measured yet)"
    in_postcopy = f" ({plan['postcopy_s']:.1f} s in post-copy)" if plan["postcopy_s"] else ""
    took = "-" if o.get("total_s") is None else f"{o['total_s']:.1f} s"
    if o.get("total_s") is not None and m["status"] != "completed":
        took += f" ({m['status']})"
    made = f", planned {plan['made_at_s']:.1f} s in" if plan.get("made_at_s") else ""
    return f"{plan['strategy']}, predicted {plan['total_s']:.1f} s{in_postcopy}{made}, took {took}"


def _plan_reason(o: dict[str, Any]) -> str | None:
    return next((str(d["reason"]) for d in o["decisions"] if d["action"] == "plan"), None)


def _link_line(o: dict[str, Any]) -> str:
    achieved = o.get("transfer_rate_bytes_s")
    line = "not measured in pre-copy" if achieved is None else f"{_mib_s(achieved)} achieved"
    plan = o.get("prediction")
    if plan:
        line += f" (planned with {_mib_s(plan['link_bytes_s'])}, {plan['link_source']})"
    return line


def _print_record(m: dict[str, Any]) -> None:
    o = m["orbit"]
    print(f"migration {m['id']}: {o['server_name']} {m['source_compute']} -> {m['dest_compute']}")
    print(f"  status            : {m['status']}" + (f" ({o['error']})" if o["error"] else ""))
    if o.get("paused_for_s") is not None:
        print(
            f"  paused for        : {o['paused_for_s']} s ({o['resume_attempts']} resume attempts)"
        )
    s = o["settings"]
    after = (f", after {s['post_copy_after_iterations']} iteration(s)"
             if s["migration_policy"] == "postcopy" else "")  # fmt: skip
    weight = (f", post-copy weight {s['postcopy_weight']:g}"
              if s["migration_policy"] == "auto" and s.get("postcopy_weight") is not None
              else "")  # fmt: skip
    print(f"  policy            : {s['migration_policy']} "
          f"(post_copy={s['post_copy']}{after}{weight})")  # fmt: skip
    print(f"  prediction        : {prediction_line(m)}")
    reason = _plan_reason(o)
    if reason is not None:
        print(f"  plan reason       : {reason}")
    print(f"  link rate         : {_link_line(o)}")
    print(f"  total time        : {o['total_s']} s; switch to post-copy at {o['switch_at_s']} s")
    print(f"  downtime          : {o['downtime_ms']} ms")
    print(f"  memory sent       : {m['memory_processed_bytes'] / MIB:.1f} MiB of "
          f"{m['memory_total_bytes'] / MIB:.1f} MiB")  # fmt: skip
    print(f"  iterations        : {o['iterations']}; post-copy requests {o['postcopy_requests']}")
    for d in o["decisions"]:
        if d["action"] not in ("continue", "plan"):  # the plan is shown above
            print(f"  t={d['at_s']:6.2f} s     : {d['source']}: {d['action']}: {d['reason']}")


def cmd_server_migration_list(args: argparse.Namespace) -> int:
    client = make_client()
    server = client.find_server(args.server)
    ms = client.get(f"/servers/{server['id']}/migrations")["migrations"]
    return output(args, ms, [_migration_row(m) for m in ms], MIGRATION_COLS)


def cmd_server_migration_show(args: argparse.Namespace) -> int:
    client = make_client()
    server = client.find_server(args.server)
    m = client.get(f"/servers/{server['id']}/migrations/{args.migration}")["migration"]
    if args.format == "json":
        print(json.dumps(m, indent=2))
    else:
        _print_record(m)
    return 0


def cmd_migration_list(args: argparse.Namespace) -> int:
    query = "&".join(f"{k}={v}" for k, v in (("host", args.host), ("status", args.status)) if v)
    ms = make_client().get("/os-migrations" + (f"?{query}" if query else ""))["migrations"]
    return output(args, ms, [_migration_row(m) for m in ms], MIGRATION_COLS)


def cmd_force_complete(args: argparse.Namespace) -> int:
    client = make_client()
    server = client.find_server(args.server)
    client.post(f"/servers/{server['id']}/migrations/{args.migration}/action",
                {"force_complete": None})  # fmt: skip
    return 0


def cmd_abort(args: argparse.Namespace) -> int:
    client = make_client()
    server = client.find_server(args.server)
    client.delete(f"/servers/{server['id']}/migrations/{args.migration}")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    client = make_client()
    server = client.find_server(args.server)
    client.post(f"/servers/{server['id']}/migrations/{args.migration}/action", {"resume": None})
    print(f"migration {args.migration} of {server['name']}: resuming post-copy now")
    return 0
