"""The control plane under load (issue 12): two orbit-server instances on one PostgreSQL,
fake hosts shared by both, many migrations at once, a fixed-rate API load, one instance
killed with SIGKILL in the middle.

Everything runs on this machine: a private PostgreSQL (:mod:`orbit.lab.postgres`), one
``python -m orbit.virt.fakehosts`` process holding 50 fake hosts of 4 GiB with 4 VMs of
512 MiB each (a migration takes ~3.6 s: 512 MiB at 160 MiB/s, 20 MiB/s dirtied), and two
``orbit-server --driver fake --fake-socket ...`` processes on 127.0.0.1. The fake hosts are
their own process, so the migrations of a killed instance run on, as they would on
libvirt hosts, and the other instance must take them over.

Phases:

1. **burst**: 200 ``os-migrateLive`` requests (``"host": null``) sent at the same instant,
   half to each instance. Every answer's status and time; every 202 must have a record;
   while they run, the VMs on each fake host are counted every 0.2 s: the most a host ever
   held against what fits (8 x 512 MiB in 4 GiB; each host starts with 4, and all 200 must
   move: the scheduler has to count the migrations already on their way).
2. **sampling**: 50 migrations at once, one from each host, on a link slowed down so that
   each runs ~15 s, and no other load: the gaps between a migration's samples (taken every
   250 ms), both instances' CPU use in a steady window while all run, and over the
   migrations' whole lives (per 50 running at once).
3. **API load**: 200 requests/s, then 50/s, at fixed times (a page of 50 of
   ``/servers/detail``, a page of 50 of ``/os-migrations``, all 50 ``/os-hypervisors/detail``
   in turn, both instances in turn) for 10 s each while 50 migrations run (in waves: 4 to
   a host, one out of each at a time), then 200/s with no migration; the time of each
   from its scheduled start (a late start counts), and errors.
4. **kill**: 100 migrations; once both instances drive some, one is SIGKILLed. The take-over
   time (from the kill until the other instance owns every unfinished migration; lease 6 s),
   every migration's outcome, and how often each VM's migration was started on the hosts
   (more than once: it ran twice).

Run: ``python -m benchmarks.control_plane [--quick] [--json FILE]`` (``--quick``: 3 s of API
load instead of 10). The figures depend on the machine: 2 cores run the two instances,
PostgreSQL, the fake hosts and this client together.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime
import itertools
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import bindparam, create_engine, text

from orbit.lab.postgres import free_port, private_postgres
from orbit.virt.fakehosts import RemoteFakeDriver

ADMIN_PASSWORD = "bench-root-pass-9"
HOSTS = 50
VMS_PER_HOST = 4
HOST_MIB = 4096
VM_MIB = 512
BURST = 200
SAMPLED = 50
#: the sampled migrations' link: 5 MiB a 100 ms tick (50 MiB/s; 20 MiB/s dirtied): ~17 s
SAMPLED_TICK_BYTES = 5 * 1024 * 1024
#: seconds of the sampled migrations' steady state whose processor time is measured
STEADY_S = 6.0
KILLED_RUN = 100
#: requests per second: the issue's figure, and one this 2-core machine can serve, each
#: while 50 migrations run; and the issue's figure with no migration running (the API's
#: own capacity, apart from what the migrations' starts and ends take from the same cores)
API_RATES_S = (200, 50)
API_ALONE_RATE_S = 200
API_WORKERS = 48
START_TIMEOUT_S = 60.0
SETTLE_TIMEOUT_S = 300.0
ACTIVE = ("queued", "preparing", "running-precopy", "running-postcopy", "completing",
          "postcopy-paused")  # fmt: skip


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used (``/proc/PID/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine_busy() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine so far (``/proc/stat``)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]
    total = sum(fields[:8])
    tick = os.sysconf("SC_CLK_TCK")
    return (total - idle) / tick, total / tick


class CpuWatch:
    """Where the processor went during a phase: each process's share of one core, the
    machine's busy share of all its cores."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self._t0 = time.monotonic()
        self._cpu0 = {name: _cpu_s(pid) for name, pid in pids.items()}
        self._self0 = sum(os.times()[:2])
        self._busy0, self._total0 = _machine_busy()

    def report(self) -> dict[str, float]:
        wall = time.monotonic() - self._t0
        out = {
            name: round((_cpu_s(pid) - self._cpu0[name]) / wall * 100, 1)
            for name, pid in self.pids.items()
        }
        out["this client"] = round((sum(os.times()[:2]) - self._self0) / wall * 100, 1)
        busy, total = _machine_busy()
        out["machine busy, all cores"] = round(
            (busy - self._busy0) / (total - self._total0) * 100, 1
        )
        return out


class Process:
    """A process this benchmark started; ended by its PID."""

    def __init__(self, argv: list[str], log: Path, env: dict[str, str] | None = None) -> None:
        self.log = log.open("ab")
        self.proc = subprocess.Popen(
            argv, stdout=self.log, stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_for(self, ready: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + START_TIMEOUT_S
        while not ready():
            if self.proc.poll() is not None:
                raise RuntimeError(f"{what} exited while starting (log: {self.log.name})")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not start within {START_TIMEOUT_S:.0f} s")
            time.sleep(0.1)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()
        self.log.close()


class Instance(Process):
    """orbit-server on the shared database and the shared fake hosts."""

    def __init__(self, workdir: Path, db_url: str, socket_path: Path, name: str) -> None:
        self.name = name
        self.url = f"http://127.0.0.1:{free_port()}"
        super().__init__(
            [sys.executable, "-m", "orbit.server.main", "--bind", self.url.removeprefix("http://"),
             "--database-url", db_url, "--driver", "fake", "--fake-socket", str(socket_path),
             "--fake-hosts", str(HOSTS), "--log-level", "WARNING"],
            workdir / f"orbit-server-{name}.log",
            env={"ORBIT_ADMIN_PASSWORD": ADMIN_PASSWORD},
        )  # fmt: skip
        self.wait_for(self._answers, f"orbit-server {name}")
        self.http = httpx.Client(base_url=self.url, timeout=30.0, trust_env=False)
        r = self.http.post(
            "/identity/v3/auth/tokens",
            json={"auth": {"identity": {"methods": ["password"], "password": {
                "user": {"name": "admin", "password": ADMIN_PASSWORD}}}}},
        )  # fmt: skip
        r.raise_for_status()
        self.token = r.headers["X-Subject-Token"]
        self.http.headers["X-Auth-Token"] = self.token

    def _answers(self) -> bool:
        try:
            return httpx.get(f"{self.url}/", timeout=1.0, trust_env=False).is_success
        except httpx.HTTPError:
            return False

    def servers(self) -> list[dict[str, Any]]:
        r = self.http.get("/v2.1/servers/detail")
        r.raise_for_status()
        return list(r.json()["servers"])

    def migrations(self, newest: int) -> list[dict[str, Any]]:
        """The ``newest`` migrations (a page: the benchmark's own polling stays light)."""
        r = self.http.get(
            f"/v2.1/os-migrations?limit={newest}",
            headers={"OpenStack-API-Version": "compute 2.80"},
        )
        r.raise_for_status()
        return list(r.json()["migrations"])

    def orbit_migrations(self, server_id: str) -> list[dict[str, Any]]:
        r = self.http.get(f"/v2.1/servers/{server_id}/migrations")
        r.raise_for_status()
        return list(r.json()["migrations"])

    def samples(self, server_id: str, migration_id: int) -> list[dict[str, Any]]:
        r = self.http.get(f"/v2.1/servers/{server_id}/migrations/{migration_id}/samples")
        r.raise_for_status()
        return list(r.json()["samples"])

    def close(self) -> None:
        self.http.close()
        self.stop()


def _send_at_once(instances: list[Instance], server_ids: list[str]) -> list[tuple[int, float, str]]:
    """One ``os-migrateLive`` per server, spread over the instances, each on a connection
    of its own opened beforehand, all sent together (asyncio: the client costs the 2
    cores little). Each answer's (status, seconds from the send, first 200 characters)."""

    async def run() -> list[tuple[int, float, str]]:
        clients = [RawHttp(i.url, {"X-Auth-Token": i.token}, len(server_ids)) for i in instances]
        conns = await asyncio.gather(
            *(clients[k % len(clients)].connect() for k in range(len(server_ids)))
        )

        async def one(k: int) -> tuple[int, float, str]:
            started = time.perf_counter()
            status, body = await clients[k % len(clients)].send(
                conns[k],
                "POST",
                f"/v2.1/servers/{server_ids[k]}/action",
                {"os-migrateLive": {"host": None, "block_migration": "auto"}},
                {"OpenStack-API-Version": "compute 2.30"},
            )
            return status, time.perf_counter() - started, body.decode()[:200]

        results = await asyncio.gather(*(one(k) for k in range(len(server_ids))))
        for c in clients:
            c.close()
        return list(results)

    return asyncio.run(run())


def _wait_settled(inst: Instance, since_id: int, count: int) -> list[dict[str, Any]]:
    """The migrations with an id above ``since_id`` (``count`` at most), once none of them
    is unfinished."""
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while True:
        ours = [m for m in inst.migrations(count) if m["id"] > since_id]
        if ours and not any(m["status"] in ACTIVE for m in ours):
            return ours
        if time.monotonic() > deadline:
            raise RuntimeError(f"migrations still unfinished after {SETTLE_TIMEOUT_S:.0f} s")
        time.sleep(0.5)


def _errors(settled: list[dict[str, Any]]) -> dict[str, int]:
    """The distinct errors of migrations that did not complete, with their counts."""
    seen: dict[str, int] = {}
    for m in settled:
        if m["status"] != "completed":
            why = str(m["orbit"].get("error") or m["status"])[:160]
            seen[why] = seen.get(why, 0) + 1
    return dict(sorted(seen.items(), key=lambda kv: -kv[1])[:5])


def _last_id(inst: Instance) -> int:
    return max((m["id"] for m in inst.migrations(1)), default=0)


class HostWatch:
    """Counts the VMs on every fake host every 0.2 s: the most any host held."""

    def __init__(self, fake: RemoteFakeDriver) -> None:
        self.fake = fake
        self.most = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            for i in range(1, HOSTS + 1):
                self.most = max(self.most, len(self.fake.list_domains(f"fake://h{i}")))

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.most


def burst(instances: list[Instance], fake: RemoteFakeDriver, ids: list[str]) -> dict[str, Any]:
    since = _last_id(instances[0])
    watch = HostWatch(fake)
    answers = _send_at_once(instances, ids[:BURST])
    settled = _wait_settled(instances[0], since, BURST)
    most = watch.stop()
    codes: dict[str, int] = {}
    for code, _s, _text in answers:
        codes[str(code)] = codes.get(str(code), 0) + 1
    refusals = sorted({text for code, _s, text in answers if code != 202})[:3]
    statuses: dict[str, int] = {}
    for m in settled:
        statuses[m["status"]] = statuses.get(m["status"], 0) + 1
    return {
        "requests": len(answers),
        "answers": codes,
        "server_errors": sum(1 for code, _s, _t in answers if code >= 500),
        "slowest_answer_s": round(max(s for _c, s, _t in answers), 3),
        "p50_answer_s": round(_pct([s for _c, s, _t in answers], 50), 3),
        "accepted": codes.get("202", 0),
        "records": len(settled),
        "outcomes": statuses,
        "errors": _errors(settled),
        "refusals": refusals,
        "most_vms_on_a_host": most,
        "vms_that_fit_on_a_host": HOST_MIB // VM_MIB,
    }


def one_per_host(instances: list[Instance]) -> list[str]:
    """A VM from each host: their migrations can all run at once (one out and one in per
    host is the default limit), where the first 50 VMs, 4 to a host, would queue."""
    seen: dict[str, str] = {}
    for s in instances[0].servers():
        seen.setdefault(s["OS-EXT-SRV-ATTR:host"], s["id"])
    return list(seen.values())


def sampling(instances: list[Instance], fake: RemoteFakeDriver, ids: list[str]) -> dict[str, Any]:
    """50 migrations, one from each host, sampled every 250 ms, on a link slowed down so
    that each runs ~15 s: the gaps between samples, and the instances' processor time
    (a) in a steady window of :data:`STEADY_S` while all run (sampling and recording only)
    and (b) over their whole lives from the last 202 on (dispatch, start and outcome
    included; the requests are the burst's to measure), given per 50 migrations running
    at once: divided by the migration-seconds the records hold over 50."""
    since = _last_id(instances[0])
    normal = fake.set_bandwidth(SAMPLED_TICK_BYTES)
    try:
        answers = _send_at_once(instances, ids[:SAMPLED])
        life0 = [_cpu_s(i.pid) for i in instances]
        t_life = time.monotonic()
        deadline = t_life + START_TIMEOUT_S
        while True:  # every migration dispatched and running
            ours = [m for m in instances[0].migrations(SAMPLED) if m["id"] > since]
            waiting = [m for m in ours if m["status"] in ("queued", "preparing")]
            if (ours and not waiting) or time.monotonic() > deadline:
                break
            time.sleep(0.1)
        running_before = sum(1 for m in ours if m["status"].startswith("running"))
        cpu0 = [_cpu_s(i.pid) for i in instances]
        t0 = time.monotonic()
        time.sleep(STEADY_S)  # the window measured, not a wait for a condition
        steady = [(_cpu_s(i.pid) - c) / (time.monotonic() - t0) * 100
                  for i, c in zip(instances, cpu0, strict=True)]  # fmt: skip
        ours = [m for m in instances[0].migrations(SAMPLED) if m["id"] > since]
        running_after = sum(1 for m in ours if m["status"].startswith("running"))
        settled = _wait_settled(instances[0], since, SAMPLED)
        wall = time.monotonic() - t_life
        life_s = sum(_cpu_s(i.pid) - c for i, c in zip(instances, life0, strict=True))
    finally:
        fake.set_bandwidth(normal)
    gaps: list[float] = []
    running_s = 0.0
    for m in settled:
        samples = instances[0].samples(m["instance_uuid"], m["id"])
        times = [s["elapsed_s"] for s in samples]
        gaps += [b - a for a, b in itertools.pairwise(times)]
        running_s += float(m["orbit"].get("total_s") or 0.0)
    at_once = min(running_before, running_after)
    return {
        "migrations": len(settled),
        "accepted": sum(1 for code, _s, _t in answers if code == 202),
        "completed": sum(1 for m in settled if m["status"] == "completed"),
        "errors": _errors(settled),
        "samples": len(gaps) + len(settled),
        "sample_gap_p50_ms": round(_pct(gaps, 50) * 1000),
        "sample_gap_p99_ms": round(_pct(gaps, 99) * 1000),
        "sample_gap_max_ms": round(max(gaps, default=0) * 1000),
        "wall_s": round(wall, 1),
        "migration_s": round(running_s, 1),
        "steady_window_s": STEADY_S,
        "running_in_the_window": at_once,
        "steady_cpu_percent_of_a_core": [round(c, 1) for c in steady],
        "steady_cpu_percent_per_50_running": (
            round(sum(steady) / at_once * SAMPLED, 1) if at_once else 0.0
        ),
        "life_cpu_percent_per_50_running": (
            round(life_s / (running_s / SAMPLED) * 100, 1) if running_s else 0.0
        ),
    }


class ClosedWhileIdle(ConnectionError):
    """The server closed a kept connection before answering the request sent on it."""


class RawHttp:
    """GETs over HTTP/1.1 keep-alive connections on asyncio streams, for the API load: a
    load generator that costs ~0.1-0.3 ms of processor a request. httpx in 48 threads cost
    5-14 ms (40-70 % of a core at 50 requests/s), as much as the server's own work on the
    2 cores they share. Up to ``connections`` connections to one instance, each carrying
    one request at a time (as the threads did)."""

    def __init__(self, url: str, headers: dict[str, str], connections: int) -> None:
        host_port = url.removeprefix("http://")
        self.host, port = host_port.rsplit(":", 1)
        self.port = int(port)
        fixed = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        self._head = f"Host: {host_port}\r\n{fixed}\r\n".encode()
        self._idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self._free = asyncio.Semaphore(connections)
        self.reconnects = 0

    async def get(self, path: str) -> int:
        """The answer's status (its body read and dropped). A kept connection that the
        server closed while it was idle (uvicorn's keep-alive timeout, 5 s), found closed or
        reset as the request reached it, is replaced and the GET sent again, as HTTP
        clients do (RFC 9112, 9.3.1); counted in ``reconnects``."""
        async with self._free:
            while self._idle:
                try:
                    status, _body = await self.send(self._idle.pop(), "GET", path)
                    return status
                except ClosedWhileIdle:
                    self.reconnects += 1
            status, _body = await self.send(await self.connect(), "GET", path)
            return status

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection(self.host, self.port)

    async def send(
        self,
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter],
        method: str,
        path: str,
        body: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, bytes]:
        """One request on ``conn`` (kept for the next unless the server closes it): the
        answer's status and body."""
        reader, writer = conn
        data = b"" if body is None else json.dumps(body).encode()
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
        if body is not None:
            extra += f"Content-Type: application/json\r\nContent-Length: {len(data)}\r\n"
        writer.write(f"{method} {path} HTTP/1.1\r\n{extra}".encode() + self._head + data)
        try:
            status_line = await reader.readline()
        except ConnectionResetError:  # closed as the request came: the kernel answers RST
            status_line = b""
        if not status_line:  # closed before any answer
            writer.close()
            raise ClosedWhileIdle
        status = int(status_line.split()[1])
        length, chunked, close = 0, False, False
        while (line := await reader.readline()) not in (b"\r\n", b""):
            key, _, value = line.partition(b":")
            key = key.strip().lower()
            if key == b"content-length":
                length = int(value)
            elif key == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif key == b"connection":
                close = b"close" in value.lower()
        parts: list[bytes] = []
        if chunked:
            while size := int((await reader.readline()).split(b";")[0], 16):
                parts.append((await reader.readexactly(size + 2))[:-2])
            await reader.readline()
        else:
            parts.append(await reader.readexactly(length))
        if close:
            writer.close()
        else:
            self._idle.append(conn)
        return status, b"".join(parts)

    def close(self) -> None:
        for _reader, writer in self._idle:
            writer.close()


def api_load(
    instances: list[Instance],
    ids: list[str],
    seconds: float,
    rate_s: int,
    pids: dict[str, int],
    *,
    migrations: bool = True,
) -> dict[str, Any]:
    """The API at ``rate_s`` requests/s for ``seconds``; ``migrations``: while 50 run (the
    first 50 VMs, 4 to a host: they start in waves as each host's one outgoing slot frees)."""
    since = _last_id(instances[0])
    cpu = CpuWatch(pids)
    if migrations:
        _send_at_once(instances, ids[:SAMPLED])
    paths = [  # a page of each, as a dashboard or a client pages them
        "/v2.1/servers/detail?limit=50",
        "/v2.1/os-migrations?limit=50",
        "/v2.1/os-hypervisors/detail",
    ]
    n = int(rate_s * seconds)
    latencies: list[float] = []
    service: list[float] = []
    errors: dict[str, int] = {}

    async def load() -> tuple[float, float]:
        clients = [
            RawHttp(i.url, {"X-Auth-Token": i.token, "OpenStack-API-Version": "compute 2.80"},
                    API_WORKERS // len(instances))
            for i in instances
        ]  # fmt: skip

        async def one(k: int, due: float) -> None:
            began = time.perf_counter()
            try:
                code = str(await clients[k % len(clients)].get(paths[k % len(paths)]))
            except (OSError, ValueError, IndexError, asyncio.IncompleteReadError) as err:
                code = type(err).__name__
            done = time.perf_counter()
            latencies.append(done - due)
            service.append(done - began)
            if code != "200":
                errors[code] = errors.get(code, 0) + 1

        start = time.perf_counter() + 0.2
        tasks = []
        for k in range(n):
            due = start + k / rate_s
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(k, due)))
        sent_s = time.perf_counter() - start
        await asyncio.gather(*tasks)
        for c in clients:
            c.close()
        reconnects.append(sum(c.reconnects for c in clients))
        return sent_s, time.perf_counter() - start

    reconnects: list[int] = []
    sent_s, answered_s = asyncio.run(load())
    cpu_percent = cpu.report()
    settled = _wait_settled(instances[0], since, SAMPLED) if migrations else []
    return {
        "rate_per_s": rate_s,
        "requests": n,
        "client": "asyncio streams, HTTP/1.1 keep-alive",
        "sent_per_s": round(n / sent_s, 1),
        "answered_per_s": round(n / answered_s, 1),
        "errors": errors,
        #: kept connections the servers had closed while idle, replaced (the GET resent)
        "reconnects": reconnects[0],
        "p50_ms": round(_pct(latencies, 50) * 1000, 1),
        "p99_ms": round(_pct(latencies, 99) * 1000, 1),
        "p99_service_ms": round(_pct(service, 99) * 1000, 1),
        "max_ms": round(max(latencies) * 1000, 1),
        "migrations_meanwhile": len(settled),
        "cpu_percent_of_a_core": cpu_percent,
    }


def kill_one(
    instances: list[Instance], fake: RemoteFakeDriver, ids: list[str], db_url: str
) -> dict[str, Any]:
    since = _last_id(instances[0])
    calls_before = fake.migrate_calls()
    _send_at_once(instances, ids[:KILLED_RUN])
    deadline = time.monotonic() + 30
    engine = create_engine(db_url)  # the owners, read where they are written (no API lag)

    def owners() -> dict[str, int]:
        count: dict[str, int] = {}
        query = text(
            "SELECT owner FROM migrations WHERE id > :since AND status IN :active"
        ).bindparams(bindparam("active", expanding=True))
        with engine.connect() as conn:
            for (owner,) in conn.execute(query, {"since": since, "active": list(ACTIVE)}):
                count[str(owner or "")] = count.get(str(owner or ""), 0) + 1
        return count

    while True:  # both instances drive some migrations
        by_owner = owners()
        killed = next((i for i in instances[1:] if any(f":{i.pid}:" in o for o in by_owner)), None)
        if killed is not None:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"the second instance drives no migration: {by_owner}")
        time.sleep(0.1)
    running = sum(n for o, n in by_owner.items() if f":{killed.pid}:" in o)
    killed.kill()
    killed_at = time.monotonic()
    survivor = instances[0]
    while any(f":{killed.pid}:" in o for o in owners()):
        if time.monotonic() - killed_at > 60:
            raise RuntimeError("no take-over within 60 s")
        time.sleep(0.1)
    takeover = time.monotonic() - killed_at
    engine.dispose()
    settled = _wait_settled(survivor, since, KILLED_RUN)
    calls = fake.migrate_calls()
    started = {name: calls.get(name, 0) - calls_before.get(name, 0) for name in calls}
    statuses: dict[str, int] = {}
    for m in settled:
        statuses[m["status"]] = statuses.get(m["status"], 0) + 1
    return {
        "migrations": len(settled),
        "driven_by_the_killed_instance": running,
        "takeover_s": round(takeover, 1),
        "outcomes": statuses,
        "errors": _errors(settled),
        "started_twice": sum(1 for n in started.values() if n > 1),
    }


def speed_check_s() -> float:
    """Seconds this process takes for a fixed pure-Python loop (10 million additions):
    the machine's speed at the time (on this virtual machine it varies by up to half
    from one minute to the next, and every figure here with it)."""
    started = time.perf_counter()
    total = 0
    for i in range(10_000_000):
        total += i
    return round(time.perf_counter() - started, 2)


def _commit() -> str:
    proc = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
    )
    return proc.stdout.strip() or "unknown"


def run(quick: bool) -> dict[str, Any]:
    speed_before = speed_check_s()
    with (
        tempfile.TemporaryDirectory(prefix="orbit-cp-") as tmp,
        private_postgres("orbit_bench") as db_url,
    ):
        workdir = Path(tmp)
        socket_path = workdir / "fake-hosts.sock"
        fake_proc = Process(
            [sys.executable, "-m", "orbit.virt.fakehosts", "--socket", str(socket_path),
             "--hosts", str(HOSTS), "--vms", str(VMS_PER_HOST), "--host-mib", str(HOST_MIB)],
            workdir / "fake-hosts.log",
        )  # fmt: skip
        instances: list[Instance] = []
        try:
            fake_proc.wait_for(socket_path.exists, "the fake hosts")
            fake = RemoteFakeDriver(socket_path)
            instances.append(Instance(workdir, db_url, socket_path, "a"))
            instances.append(Instance(workdir, db_url, socket_path, "b"))
            want = HOSTS * VMS_PER_HOST
            instances[0].wait_for(lambda: len(instances[0].servers()) >= want, "the inventory")
            ids = [s["id"] for s in instances[0].servers()]
            pids = {"instance a": instances[0].pid, "instance b": instances[1].pid,
                    "fake hosts": fake_proc.pid}  # fmt: skip
            result: dict[str, Any] = {
                "hosts": HOSTS,
                "vms": len(ids),
                "instances": len(instances),
                "burst": burst(instances, fake, ids),
                "sampling": sampling(instances, fake, one_per_host(instances)),
                "api_load": [
                    api_load(instances, ids, 3.0 if quick else 10.0, rate, pids)
                    for rate in API_RATES_S
                ],
                "api_load_alone": api_load(
                    instances,
                    ids,
                    3.0 if quick else 10.0,
                    API_ALONE_RATE_S,
                    pids,
                    migrations=False,
                ),
                "kill": kill_one(instances, fake, ids, db_url),
            }
        finally:
            for inst in instances:
                inst.close()
            fake_proc.stop()
    result["environment"] = {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "database": "PostgreSQL (private, fsync off)",
        "driver": "fake (own process, shared by both instances)",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "commit": _commit(),
        "quick": quick,
        "speed_check_s": [speed_before, speed_check_s()],
    }
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="3 s of API load instead of 10")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    r = run(args.quick)
    b, s, k = r["burst"], r["sampling"], r["kill"]
    rows = [
        ("burst: requests at once", str(b["requests"])),
        ("burst: answers", ", ".join(f"{c} x {n}" for c, n in sorted(b["answers"].items()))),
        ("burst: 5xx", str(b["server_errors"])),
        ("burst: slowest answer", f"{b['slowest_answer_s']} s"),
        ("burst: records for 202s", f"{b['records']} of {b['accepted']}"),
        ("burst: outcomes", ", ".join(f"{o} {n}" for o, n in sorted(b["outcomes"].items()))),
        (
            "burst: most VMs on a host",
            f"{b['most_vms_on_a_host']} (fit: {b['vms_that_fit_on_a_host']})",
        ),
        ("sampling: migrations", f"{s['completed']} of {s['migrations']} completed"),
        (
            "sampling: gap p50 / p99 / max",
            f"{s['sample_gap_p50_ms']} / {s['sample_gap_p99_ms']} / {s['sample_gap_max_ms']} ms",
        ),
        (
            f"sampling: CPU, {s['steady_window_s']:.0f} s, {s['running_in_the_window']} running",
            " + ".join(f"{c} %" for c in s["steady_cpu_percent_of_a_core"])
            + f" of a core = {s['steady_cpu_percent_per_50_running']} % per 50",
        ),
        ("sampling: CPU per 50, whole lives", f"{s['life_cpu_percent_per_50_running']} %"),
        *[
            row
            for a, name in [
                *((a, f"API {a['rate_per_s']}/s") for a in r["api_load"]),
                (r["api_load_alone"], f"API {API_ALONE_RATE_S}/s, no migr."),
            ]
            for row in (
                (f"{name}: answered", f"{a['answered_per_s']} per s"),
                (f"{name}: p50 / p99", f"{a['p50_ms']} / {a['p99_ms']} ms"),
                (f"{name}: p99 request alone", f"{a['p99_service_ms']} ms"),
                (f"{name}: errors", json.dumps(a["errors"])),
                (f"{name}: idle connections reopened", str(a["reconnects"])),
                (
                    f"{name}: CPU % of a core",
                    ", ".join(f"{k} {v}" for k, v in a["cpu_percent_of_a_core"].items()),
                ),
            )
        ],
        ("kill: migrations", str(k["migrations"])),
        ("kill: driven by the killed one", str(k["driven_by_the_killed_instance"])),
        ("kill: take-over", f"{k['takeover_s']} s"),
        ("kill: outcomes", ", ".join(f"{o} {n}" for o, n in sorted(k["outcomes"].items()))),
        ("kill: started twice", str(k["started_twice"])),
        (
            "machine: speed check, before / after",
            " / ".join(f"{x} s" for x in r["environment"]["speed_check_s"]),
        ),
    ]
    print(f"{'figure':<34}{'value':>40}")
    for name, value in rows:
        print(f"{name:<34}{value:>40}")
    if args.json:
        args.json.write_text(json.dumps(r, indent=2) + "\n", encoding="utf-8")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
