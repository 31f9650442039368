"""Host maintenance: ``orbit host-disable``, ``host-enable``, ``host-drain`` and the drains.

``orbit host-drain HOST [--to H2,H3] [--post-copy] [--max-parallel N] [--deadline S]
[--plan] [--wait]`` disables HOST and moves every VM off it by a plan (``--plan`` shows
the plan and changes nothing; ``--wait`` follows it to the end, one line per VM as its
state changes, and exits 1 unless every VM moved).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from orbit.cli.client import Compute
from orbit.cli.compute import make_client, output, table
from orbit.errors import ClientError

WAIT_POLL_INTERVAL_S = 1.0
FINAL = {"completed", "incomplete", "cancelled"}
ITEM_COLS = ["name", "memory_mib", "dest", "strategy", "predicted_s", "state", "outcome"]
DRAIN_COLS = ["id", "host", "status", "moved", "failed", "stuck", "predicted_s", "elapsed_s"]


def register(sub: Any) -> None:
    def cmd(name: str, help_text: str, func: Any) -> argparse.ArgumentParser:
        p: argparse.ArgumentParser = sub.add_parser(name, help=help_text)
        p.add_argument("--format", choices=("table", "json"), default="table")
        p.set_defaults(func=func)
        return p

    p = cmd("host-disable", "take a host out of scheduling (maintenance)", cmd_host_disable)
    p.add_argument("host")
    p.add_argument("--reason", help="why, shown beside the host")
    p = cmd("host-enable", "let the scheduler use a host again", cmd_host_enable)
    p.add_argument("host")
    p = cmd("host-drain", "move every VM off a host, planned", cmd_host_drain)
    p.add_argument("host")
    p.add_argument("--to", metavar="H2,H3", help="only these destinations (default: any)")
    p.add_argument("--post-copy", action="store_true", help="permit post-copy (policy auto)")
    p.add_argument("--max-parallel", type=int, metavar="N",
                   help="migrations at once (default: the host's outgoing limit)")  # fmt: skip
    p.add_argument("--deadline", type=float, metavar="S", help="start nothing after S seconds")
    p.add_argument("--plan", action="store_true", help="print the plan; change nothing")
    p.add_argument("--wait", action="store_true", help="follow the drain until it ends")
    cmd("drain-list", "host drains, newest first", cmd_drain_list)
    p = cmd("drain-show", "one drain: the plan and each VM's outcome", cmd_drain_show)
    p.add_argument("drain", type=int)
    p = cmd("drain-cancel", "start nothing more (migrations under way finish)", cmd_drain_cancel)
    p.add_argument("drain", type=int)


def _service_id(client: Compute, host: str) -> str:
    services = client.get(f"/os-services?host={host}")["services"]
    if not services:
        raise ClientError(f"no host named {host!r}")
    return str(services[0]["id"])


def _set_status(host: str, body: dict[str, Any], args: argparse.Namespace) -> int:
    client = make_client()
    service = client.request("PUT", f"/os-services/{_service_id(client, host)}", body)["service"]
    cols = ["host", "status", "disabled_reason", "state"]
    return output(args, service, [service], cols)


def cmd_host_disable(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"status": "disabled"}
    if args.reason:
        body["disabled_reason"] = args.reason
    return _set_status(args.host, body, args)


def cmd_host_enable(args: argparse.Namespace) -> int:
    return _set_status(args.host, {"status": "enabled"}, args)


def _print_drain(d: dict[str, Any]) -> None:
    head = f"drain {d['id']}" if d["id"] is not None else "plan"
    c = d["counts"]
    print(
        f"{head} of {d['host']}: {d['status']}; {d['parallel']} at a time, predicted "
        f"{d['predicted_s']:.1f} s"
        + (f", {d['elapsed_s']:.1f} s so far" if d.get("elapsed_s") is not None else "")
        + f"; moved {c['moved']}, migrating {c['migrating']}, pending {c['pending']}, "
        f"failed {c['failed']}, stuck {c['stuck']}"
    )
    for note in d["notes"]:
        print(f"note: {note}")
    print(table([item_row(i) for i in d["items"]], ITEM_COLS))


def item_row(i: dict[str, Any]) -> dict[str, Any]:
    return {
        **i,
        "predicted_s": round(float(i.get("predicted_s") or 0.0), 1),
        "outcome": i.get("outcome") or i.get("reason") or "",
    }


def _show(args: argparse.Namespace, d: dict[str, Any]) -> int:
    if args.format == "json":
        print(json.dumps(d, indent=2))
    else:
        _print_drain(d)
    return 0


def cmd_host_drain(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {"post_copy": args.post_copy, "plan_only": args.plan}
    if args.to:
        body["to"] = [t.strip() for t in args.to.split(",") if t.strip()]
    if args.max_parallel is not None:
        body["max_parallel"] = args.max_parallel
    if args.deadline is not None:
        body["deadline_s"] = args.deadline
    client = make_client()
    drain: dict[str, Any] = client.post(f"/orbit-hosts/{args.host}/drain", body)["drain"]
    if args.plan or not args.wait:
        return _show(args, drain)
    drain = follow(client, drain, quiet=args.format == "json")
    _show(args, drain)
    return 0 if drain["status"] == "completed" else 1


def follow(client: Compute, drain: dict[str, Any], *, quiet: bool) -> dict[str, Any]:
    """Poll until the drain ends; one line on stderr per VM whose state changed."""
    seen: dict[str, str] = {}
    while True:
        for i in drain["items"]:
            if seen.get(i["server_id"]) != i["state"]:
                seen[i["server_id"]] = i["state"]
                if not quiet:
                    print(_change_line(i), file=sys.stderr, flush=True)
        if drain["status"] in FINAL:
            return drain
        time.sleep(WAIT_POLL_INTERVAL_S)
        drain = client.get(f"/orbit-drains/{drain['id']}")["drain"]


def _change_line(i: dict[str, Any]) -> str:
    """'hot: moved to h2 in 7.1 s, ...' or 'hot: stuck: no target has 512 MiB free ...'."""
    outcome = i.get("outcome")
    if i["state"] == "moved" and outcome:
        return f"{i['name']}: {outcome}"
    return f"{i['name']}: {i['state']}" + (f": {outcome}" if outcome else "")


def cmd_drain_list(args: argparse.Namespace) -> int:
    drains = make_client().get("/orbit-drains")["drains"]
    rows = [{**d, **d["counts"]} for d in drains]
    return output(args, drains, rows, DRAIN_COLS)


def cmd_drain_show(args: argparse.Namespace) -> int:
    return _show(args, make_client().get(f"/orbit-drains/{args.drain}")["drain"])


def cmd_drain_cancel(args: argparse.Namespace) -> int:
    return _show(args, make_client().delete(f"/orbit-drains/{args.drain}")["drain"])
