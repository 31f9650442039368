"""``orbit lab …``: bring the lab up and down, shape its links, run test guests."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from typing import Any

from orbit.lab.guest import Guests, GuestSpec
from orbit.lab.lab import Lab
from orbit.lab.network import Shaping


def register(sub: Any) -> None:
    lab = sub.add_parser("lab", help="the local test-bed of hypervisor hosts")
    cmds = lab.add_subparsers(dest="lab_command", required=True)

    p = cmds.add_parser("up", help="create N hosts h1…hN, each with its own libvirtd")
    p.add_argument("--hosts", type=int, default=2, help="number of hosts (default 2)")
    p.set_defaults(func=cmd_up)

    p = cmds.add_parser("down", help="remove everything the lab created")
    p.set_defaults(func=cmd_down)

    p = cmds.add_parser("status", help="hosts, URIs, links and domains")
    p.add_argument("--format", choices=("table", "json"), default="table")
    p.set_defaults(func=cmd_status)

    p = cmds.add_parser("link", help="shape a host's link (no option: remove shaping)")
    p.add_argument("host")
    p.add_argument("--rate", help="e.g. 400mbit")
    p.add_argument("--delay", help="e.g. 1ms")
    p.add_argument("--loss", help="e.g. 0.1%%")
    p.set_defaults(func=cmd_link)

    p = cmds.add_parser("cut", help="take a host's link down")
    p.add_argument("host")
    p.set_defaults(func=cmd_cut)

    p = cmds.add_parser("restore", help="bring a host's link back up")
    p.add_argument("host")
    p.set_defaults(func=cmd_restore)

    guest = cmds.add_parser("guest", help="the memory-dirtying test guest")
    gcmds = guest.add_subparsers(dest="guest_command", required=True)
    p = gcmds.add_parser("start", help="define and start a test guest on HOST")
    p.add_argument("host")
    p.add_argument("name")
    p.add_argument("--memory-mib", type=int, default=256)
    p.add_argument("--wss-mib", type=int, default=64, help="working set (MiB)")
    p.add_argument("--rate-mib-s", type=int, default=0, help="dirty rate, 0 = maximum")
    p.add_argument("--pattern", default="seq", help="seq or random")
    p.add_argument("--disk-mib", type=int, default=0, help="add a qcow2 disk of this size")
    p.add_argument(
        "--cold-mib",
        type=int,
        default=0,
        help="MiB filled once at boot and never rewritten, after the working set (default 0)",
    )
    p.add_argument(
        "--quiet-s",
        type=int,
        default=0,
        help="dirty only 1 MiB/s for the first N seconds, then --rate-mib-s (default 0)",
    )
    p.add_argument("--corrupt", action="store_true", help=argparse.SUPPRESS)  # tests only
    p.set_defaults(func=cmd_guest_start)
    p = gcmds.add_parser("heartbeat", help="latest heartbeat as JSON, wherever it runs")
    p.add_argument("name")
    p.set_defaults(func=cmd_guest_heartbeat)
    p = gcmds.add_parser("stop", help="destroy and undefine the guest")
    p.add_argument("name")
    p.set_defaults(func=cmd_guest_stop)

    p = cmds.add_parser("demo", help="two hosts, a dirtying guest, one post-copy migration")
    p.add_argument("--memory-mib", type=int, default=512)
    p.add_argument("--rate", default="400mbit", help="link rate between the hosts")
    p.add_argument("--exit", action="store_true", help="stop at once instead of serving on")
    p.set_defaults(func=cmd_demo)


def cmd_up(args: argparse.Namespace) -> int:
    lab = Lab.from_env()
    for h in lab.up(args.hosts):
        print(f"{h.name}  {h.address}  {h.uri}  libvirtd pid {h.libvirtd_pid}")
    return 0


def cmd_down(args: argparse.Namespace) -> int:
    removed = Lab.from_env().down()
    print("lab removed: " + "; ".join(removed) if removed else "no lab was up")
    return 0


def cmd_status(args: argparse.Namespace) -> int:
    lab = Lab.from_env()
    statuses = lab.status()
    accel, why = lab.accelerator()
    if args.format == "json":
        doc = {"accelerator": accel, "accelerator_why": why, "hosts": [asdict(s) for s in statuses]}
        print(json.dumps(doc, indent=2))
        return 0
    print(f"guests run on {accel} ({why})")
    print(f"{'HOST':<5} {'ADDRESS':<12} {'LIBVIRTD':<9} {'LINK':<5} {'SHAPING':<24} DOMAINS")
    for s in statuses:
        daemon = "up" if s.answers else "DOWN"
        link = "up" if s.link_up else "CUT"
        doms = ", ".join(f"{n} ({st})" for n, st in sorted(s.domains.items())) or "-"
        print(f"{s.name:<5} {s.address:<12} {daemon:<9} {link:<5} {s.shaping or '-':<24} {doms}")
    return 0


def cmd_link(args: argparse.Namespace) -> int:
    Lab.from_env().shape(args.host, Shaping(rate=args.rate, delay=args.delay, loss=args.loss))
    return 0


def cmd_cut(args: argparse.Namespace) -> int:
    Lab.from_env().cut(args.host)
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    Lab.from_env().restore(args.host)
    return 0


def cmd_guest_start(args: argparse.Namespace) -> int:
    spec = GuestSpec(
        name=args.name,
        memory_mib=args.memory_mib,
        wss_mib=args.wss_mib,
        rate_mib_s=args.rate_mib_s,
        pattern=args.pattern,
        disk_mib=args.disk_mib,
        corrupt=args.corrupt,
        cold_mib=args.cold_mib,
        quiet_s=args.quiet_s,
    )
    hb = Guests(Lab.from_env()).start(args.host, spec)
    print(
        json.dumps({"host": args.host, "name": args.name, "heartbeat": asdict(hb) if hb else None})
    )
    return 0


def cmd_guest_heartbeat(args: argparse.Namespace) -> int:
    host, hb = Guests(Lab.from_env()).latest(args.name)
    print(json.dumps({"host": host, "name": args.name, **asdict(hb)}))
    return 0


def cmd_guest_stop(args: argparse.Namespace) -> int:
    Guests(Lab.from_env()).destroy(args.name)
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from orbit.lab.demo import run_demo

    return run_demo(memory_mib=args.memory_mib, rate=args.rate, stay=not args.exit)
