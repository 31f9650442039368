"""Fake hosts in a process of their own, shared by several orbit-server instances.

The in-memory :class:`~orbit.virt.fake.FakeDriver` lives and dies with its process, so it
cannot show what happens when one of two orbit-server instances is killed: the other must
find the migrations still running "on the hosts". This module serves one FakeDriver on a
Unix socket (``python -m orbit.virt.fakehosts``), as libvirtd serves real hosts;
:class:`RemoteFakeDriver` is the driver each orbit-server uses to reach it
(``--driver fake --fake-socket PATH``).

Each call is one request on the caller's own connection (a migration blocks its
connection, as ``migrateToURI3`` does). Domain events are not forwarded: the engine polls
job statistics anyway. Nothing leaves the machine: the socket is a file.
"""

from __future__ import annotations

import argparse
import os
import pickle
import signal
import socket
import struct
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orbit import errors
from orbit.errors import HostUnreachable, HypervisorError, OrbitError
from orbit.virt.driver import (
    DirtyRate,
    DomainInfo,
    EventCallback,
    HostInfo,
    JobStats,
    MigrationParams,
    Owner,
)
from orbit.virt.fake import FakeDriver

#: the methods of the driver interface that travel (``watch`` does not: no events)
CALLS = frozenset(
    {
        "ping",
        "host_info",
        "list_domains",
        "domain_info",
        "set_owner",
        "migrate",
        "job_stats",
        "measure_dirty_rate",
        "start_dirty_rate",
        "read_dirty_rate",
        "resident_bytes",
        "new_page_faults",
        "start_postcopy",
        "set_max_downtime",
        "abort_job",
        "resume_defect",
        "suspend",
        "resume",
        "make_persistent",
        "undefine_if_stopped",
    }
)


def serve(driver: FakeDriver, socket_path: Path, ready: Callable[[], None] = lambda: None) -> None:
    """Answer calls on ``socket_path`` until the process ends (one thread per connection)."""
    socket_path.unlink(missing_ok=True)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as listener:
        listener.bind(str(socket_path))
        os.chmod(socket_path, 0o600)  # only its owner may drive these hosts
        listener.listen(64)
        ready()
        while True:
            conn, _addr = listener.accept()
            threading.Thread(target=_answer, args=(driver, _Channel(conn)), daemon=True).start()


#: a message's length, before its pickle
_HEADER = struct.Struct("!I")
#: bytes asked of the socket at a time: a whole message, nearly always
_RECV_BYTES = 65536


class _Channel:
    """Pickled messages on a stream socket, each after its length: one ``send`` and
    (under 64 KiB) one ``recv`` a message, where ``multiprocessing.connection`` read the
    length and the message in two calls. Nearly all of a call's cost to its caller is
    system calls: ``job_stats``, 200 a second while 50 migrations are sampled, cost a
    median 0.089 ms of processor a call against 0.143 ms (20 alternating rounds of 1000
    on this machine). It stands in for libvirt's own client, in C, without the GIL."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock
        self._buffer = bytearray()

    def send(self, message: object) -> None:
        data = pickle.dumps(message, pickle.HIGHEST_PROTOCOL)
        self.sock.sendall(_HEADER.pack(len(data)) + data)

    def recv(self) -> Any:
        buffer = self._buffer
        while True:
            if len(buffer) >= _HEADER.size:
                (size,) = _HEADER.unpack_from(buffer)
                end = _HEADER.size + size
                if len(buffer) >= end:
                    message = pickle.loads(memoryview(buffer)[_HEADER.size : end])
                    del buffer[:end]
                    return message
            chunk = self.sock.recv(_RECV_BYTES)
            if not chunk:
                raise EOFError("the other end closed the connection")
            buffer += chunk

    def close(self) -> None:
        self.sock.close()


def _answer(driver: FakeDriver, conn: _Channel) -> None:
    try:
        while True:
            try:
                method, args, kwargs = conn.recv()
            except (EOFError, OSError):
                return
            if method == "migrate_calls":  # how often each VM was migrated (benchmarks)
                conn.send(("ok", _migrate_calls(driver)))
                continue
            if method == "set_bandwidth":  # the link of every later pass (benchmarks)
                conn.send(("ok", driver.set_bandwidth(*args)))
                continue
            if method not in CALLS:
                conn.send(("error", "HypervisorError", f"no such call: {method}"))
                continue
            try:
                result = getattr(driver, method)(*args, **kwargs)
            except OrbitError as err:
                conn.send(("error", type(err).__name__, str(err)))
            else:
                conn.send(("ok", result))
    finally:
        conn.close()


def _migrate_calls(driver: FakeDriver) -> dict[str, int]:
    counts: dict[str, int] = {}
    for call in list(driver.calls):
        if call.startswith("migrate "):
            name = call.split()[1]
            counts[name] = counts.get(name, 0) + 1
    return counts


class RemoteFakeDriver:
    """The driver interface, answered by a ``python -m orbit.virt.fakehosts`` process."""

    def __init__(self, socket_path: Path) -> None:
        self.socket_path = socket_path
        self._local = threading.local()  # one connection per thread

    def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        conn: _Channel | None = getattr(self._local, "conn", None)
        try:
            if conn is None:
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                try:
                    sock.connect(str(self.socket_path))
                except OSError:
                    sock.close()
                    raise
                conn = self._local.conn = _Channel(sock)
            conn.send((method, args, kwargs))
            reply = conn.recv()
        except (OSError, EOFError) as err:
            if conn is not None:
                conn.close()
            self._local.conn = None
            raise HostUnreachable(f"the fake hosts at {self.socket_path} do not answer") from err
        if reply[0] == "ok":
            return reply[1]
        _status, kind, message = reply
        error = getattr(errors, kind, None)
        if not (isinstance(error, type) and issubclass(error, OrbitError)):
            error = HypervisorError
        raise error(message)

    def ping(self, uri: str) -> None:
        self._call("ping", uri)

    def host_info(self, uri: str) -> HostInfo:
        result: HostInfo = self._call("host_info", uri)
        return result

    def list_domains(self, uri: str) -> list[DomainInfo]:
        result: list[DomainInfo] = self._call("list_domains", uri)
        return result

    def domain_info(self, uri: str, name: str) -> DomainInfo:
        result: DomainInfo = self._call("domain_info", uri, name)
        return result

    def set_owner(self, uri: str, name: str, owner: Owner | None) -> None:
        self._call("set_owner", uri, name, owner)

    def migrate(self, uri: str, name: str, params: MigrationParams) -> None:
        self._call("migrate", uri, name, params)

    def job_stats(self, uri: str, name: str, *, completed: bool = False) -> JobStats:
        result: JobStats = self._call("job_stats", uri, name, completed=completed)
        return result

    def measure_dirty_rate(self, uri: str, name: str, *, period_s: int = 1) -> DirtyRate:
        result: DirtyRate = self._call("measure_dirty_rate", uri, name, period_s=period_s)
        return result

    def start_dirty_rate(self, uri: str, name: str, *, period_s: int = 1) -> None:
        self._call("start_dirty_rate", uri, name, period_s=period_s)

    def read_dirty_rate(self, uri: str, name: str) -> DirtyRate | None:
        result: DirtyRate | None = self._call("read_dirty_rate", uri, name)
        return result

    def new_page_faults(self, uri: str, name: str) -> int | None:
        result: int | None = self._call("new_page_faults", uri, name)
        return result

    def resident_bytes(self, uri: str, name: str) -> int:
        return int(self._call("resident_bytes", uri, name))

    def start_postcopy(self, uri: str, name: str) -> None:
        self._call("start_postcopy", uri, name)

    def set_max_downtime(self, uri: str, name: str, downtime_ms: int) -> None:
        self._call("set_max_downtime", uri, name, downtime_ms)

    def abort_job(self, uri: str, name: str, *, postcopy: bool = False) -> None:
        self._call("abort_job", uri, name, postcopy=postcopy)

    def resume_defect(self, uri: str) -> str | None:
        result: str | None = self._call("resume_defect", uri)
        return result

    def suspend(self, uri: str, name: str) -> None:
        self._call("suspend", uri, name)

    def resume(self, uri: str, name: str) -> None:
        self._call("resume", uri, name)

    def make_persistent(self, uri: str, name: str) -> None:
        self._call("make_persistent", uri, name)

    def undefine_if_stopped(self, uri: str, name: str) -> bool:
        return bool(self._call("undefine_if_stopped", uri, name))

    def migrate_calls(self) -> dict[str, int]:
        """How many migrations (``migrate`` calls, resumes included) each VM has had."""
        result: dict[str, int] = self._call("migrate_calls")
        return result

    def set_bandwidth(self, bytes_per_tick: int) -> int:
        """Benchmarks: what every later pass of every migration sends per tick (the fake
        hosts' ``tick_s``); returns the previous figure."""
        result: int = self._call("set_bandwidth", bytes_per_tick)
        return result

    def watch(self, uri: str, name: str, callback: EventCallback) -> Callable[[], None]:
        raise HypervisorError("the fake hosts send no events: the engine polls")


def main(argv: list[str] | None = None) -> int:
    from orbit.server.main import make_driver

    p = argparse.ArgumentParser(
        prog="orbit-fake-hosts", description="Fake hosts for several orbit-server instances."
    )
    p.add_argument("--socket", type=Path, required=True, help="Unix socket to listen on")
    p.add_argument("--hosts", type=int, required=True, metavar="N", help="fake://h1...hN")
    p.add_argument("--vms", type=int, default=0, metavar="M", help="VMs per host (512 MiB)")
    p.add_argument("--host-mib", type=int, default=16384, metavar="MIB", help="memory per host")
    args = p.parse_args(argv)
    if args.hosts < 1 or args.vms < 0 or args.host_mib < 1:
        print("orbit-fake-hosts: --hosts and --host-mib must be >= 1, --vms >= 0", file=sys.stderr)
        return 2
    driver = make_driver("fake", fake_hosts=args.hosts, fake_vms=args.vms)
    assert isinstance(driver, FakeDriver)
    for host in driver.hosts.values():
        host.memory_total_mib = args.host_mib
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    try:
        serve(driver, args.socket, ready=lambda: print(f"listening {args.socket}", flush=True))
    except OSError as err:
        print(f"orbit-fake-hosts: cannot listen on {args.socket}: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
