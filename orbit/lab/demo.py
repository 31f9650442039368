"""``make demo``: ORBIT end to end on the local lab.

1. a two-host lab (h1, h2), the link from h1 shaped to 400 mbit/s;
2. ``orbit-server`` on 127.0.0.1:8774 with a fresh SQLite database, both hosts registered
   with the link's rate (``--link-mib-s``);
3. a guest on h1 dirtying its whole working set as fast as it can;
4. ``orbit live-migration --post-copy --wait demo-vm h2``: policy ``auto`` measures the
   guest, predicts each strategy and prints its plan (here: post-copy at once, since the
   guest dirties memory faster than the link sends it), then live progress, the record;
5. the guest's own check on h2 (heartbeat continuity, 0 verification errors);
6. the server keeps running, with the login printed, until Ctrl-C, SIGTERM or SIGHUP (a
   service manager stopping it, a terminal closing); then everything the demo started is
   removed (server, guest, lab).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from orbit.errors import LabError
from orbit.identity.security import generate_password
from orbit.lab.guest import Guests, GuestSpec
from orbit.lab.lab import Lab
from orbit.lab.network import Shaping, rate_bits_s
from orbit.migration.model import MIB

GUEST = "demo-vm"
DEMO_DB_DIR = Path("/var/lib/orbit")
DEMO_DB = DEMO_DB_DIR / "demo.db"
BIND = "127.0.0.1:8774"
SERVER_START_TIMEOUT_S = 30.0
LIST_TIMEOUT_S = 30.0
POST_MIGRATION_BEATS = 10


def _orbit(args: list[str], env: dict[str, str], *, capture: bool = True) -> str:
    proc = subprocess.run(
        [sys.executable, "-m", "orbit.cli.main", *args],
        env={**os.environ, **env},
        capture_output=capture,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise LabError(f"'orbit {' '.join(args)}' failed: {(proc.stderr or '').strip()}")
    return proc.stdout or ""


def _listed_active(env: dict[str, str]) -> bool:
    servers = json.loads(_orbit(["list", "--format", "json"], env))
    return any(s.get("name") == GUEST and s.get("status") == "ACTIVE" for s in servers)


def _start_server(password: str, log_path: Path) -> subprocess.Popen[bytes]:
    DEMO_DB_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    for suffix in ("", "-wal", "-shm"):
        Path(f"{DEMO_DB}{suffix}").unlink(missing_ok=True)
    env = {**os.environ, "ORBIT_ADMIN_PASSWORD": password, "ORBIT_SYNC_INTERVAL_S": "2"}
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "orbit.server.main", "--bind", BIND,
             "--database-url", f"sqlite:///{DEMO_DB}"],
            stdout=log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    deadline = time.monotonic() + SERVER_START_TIMEOUT_S
    while True:
        if proc.poll() is not None:
            raise LabError(f"orbit-server exited at start; see {log_path}")
        try:
            if httpx.get(f"http://{BIND}/", timeout=1.0).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            proc.terminate()
            raise LabError(f"orbit-server did not answer within {SERVER_START_TIMEOUT_S:.0f} s")
        time.sleep(0.2)


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _print_login(password: str) -> None:
    print()
    print(f"orbit-server keeps running at http://{BIND}; log in as admin with:")
    print(f"  export ORBIT_URL=http://{BIND} OS_USERNAME=admin OS_PASSWORD={password}")
    print(f"  orbit list; orbit migration-list; orbit live-migration --post-copy --wait {GUEST} h1")
    print(f"  (OpenStack clients: auth_url http://{BIND}/identity, project admin)")
    print(f"  dashboard: http://{BIND}/dashboard/ (user admin, the password above)")
    print("Ctrl-C stops the server and removes the lab.", flush=True)


def _interrupt(signum: int, _frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signal.Signals(signum).name}")


def run_demo(*, memory_mib: int = 512, rate: str = "400mbit", stay: bool = True) -> int:
    """Run the demo; SIGTERM and SIGHUP end it as Ctrl-C does, removing what it made."""
    previous = {sig: signal.signal(sig, _interrupt) for sig in (signal.SIGTERM, signal.SIGHUP)}
    try:
        return _run_demo(memory_mib=memory_mib, rate=rate, stay=stay)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _run_demo(*, memory_mib: int, rate: str, stay: bool) -> int:
    lab = Lab.from_env()
    password = os.environ.get("ORBIT_ADMIN_PASSWORD") or generate_password()
    env = {"ORBIT_URL": f"http://{BIND}", "OS_USERNAME": "admin", "OS_PASSWORD": password}
    print(f"== ORBIT demo: a {memory_mib} MiB guest dirtying all its memory, link {rate}")
    with lab.session(2) as (h1, h2):
        print(f"lab up: {h1.name} {h1.uri}, {h2.name} {h2.uri}")
        lab.shape(h1.name, Shaping(rate=rate))
        log_path = lab.lab_dir / "orbit-server-demo.log"
        server = _start_server(password, log_path)
        try:
            print(f"orbit-server up at http://{BIND} (log {log_path})")
            link_mib_s = str(max(1, round(rate_bits_s(rate) / 8 / MIB)))  # what auto plans with
            for h in (h1, h2):
                _orbit(
                    ["host-add", h.name, h.uri, "--migration-address", h.migration_uri,
                     "--link-mib-s", link_mib_s],
                    env,
                )  # fmt: skip
            print(_orbit(["hypervisor-list"], env))
            guests = Guests(lab)
            wss = memory_mib - 32
            guests.start(h1.name, GuestSpec(GUEST, memory_mib=memory_mib, wss_mib=wss))
            deadline = time.monotonic() + LIST_TIMEOUT_S
            # running, as orbit-server sees it: its inventory may still hold the state of
            # the guest's first instants (libvirt starts a domain paused)
            while not _listed_active(env):
                if time.monotonic() > deadline:
                    raise LabError(f"orbit-server never listed {GUEST} as ACTIVE")
                time.sleep(0.5)
            print(_orbit(["list"], env))
            print(f"$ orbit live-migration --post-copy --wait {GUEST} {h2.name}")
            proc = subprocess.run(
                [sys.executable, "-m", "orbit.cli.main", "live-migration", "--post-copy",
                 "--wait", GUEST, h2.name],
                env={**os.environ, **env}, check=False,
            )  # fmt: skip
            src = guests.heartbeats(h1.name, GUEST)
            first = guests.wait_heartbeat(h2.name, GUEST)
            verified = guests.wait_verified(h2.name, GUEST)
            dst = guests.heartbeats(h2.name, GUEST)
            continuous = bool(src) and 1 <= dst[0].seq - src[-1].seq <= 2
            print("== the guest's own view")
            print(f"  heartbeat : last on {h1.name} seq={src[-1].seq if src else '?'}, first on "
                  f"{h2.name} seq={dst[0].seq} (continuous: {continuous})")  # fmt: skip
            print(f"  memory    : {verified.errors} verification errors after "
                  f"{verified.passes - first.passes} full pass(es) on {h2.name}")  # fmt: skip
            ok = proc.returncode == 0 and verified.errors == 0 and continuous
            print("demo " + ("OK" if ok else "FAILED"))
            if stay:
                try:  # from the first line on: a signal may come as soon as it is read
                    _print_login(password)
                    signal.pause()
                except KeyboardInterrupt:
                    print()
        finally:
            _stop(server)
    print("lab down: server stopped, every namespace, libvirtd and QEMU removed")
    return 0 if ok else 1
