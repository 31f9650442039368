"""Log-in under attack (issue 13): what an attacker learns from timing, how far password
guessing gets, and what it costs other users.

orbit-server runs as its own process (fake driver, SQLite, production password hashing:
scrypt N=2^14) on 127.0.0.1; the clients connect from other loopback addresses
(127.0.1.x), one per "source", so that the per-source throttle sees distinct sources.

Figures:

- ``login_unknown_ms`` / ``login_wrong_password_ms``: median answer time of a log-in for a
  user that does not exist and for an existing user with a wrong password (each attempt from
  a fresh source and a fresh user, so no throttle is involved); ``timing_ratio`` is their
  ratio (1.0: nothing to learn).
- ``guesses``: 100 wrong passwords in a row for one user from one source: how many were
  checked (401) and how many refused at once (429, with Retry-After).
- ``api_p50_ms`` / ``api_p50_under_attack_ms`` / ``api_p50_attack_settled_ms``: median of
  another user's ``GET /v2.1/servers`` alone, while 8 threads (a process of their own, 8
  sources) guess passwords as fast as the answers come, and once more after 20 s of it.
  The attacker runs on the same 2-core machine as the server: its own CPU use is part of
  what the bystander feels.

Run: ``python -m benchmarks.security [--json FILE]``.
"""

from __future__ import annotations

import argparse
import datetime
import json
import multiprocessing
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

ADMIN_PASSWORD = "bench-root-pass-9"
MEMBER_PASSWORD = "bench-member-pass-9"
TIMING_SAMPLES = 40
GUESSES = 100
API_SAMPLES = 200
ATTACK_THREADS = 8
#: how long the attack goes on before the second measurement: its sources have then used
#: their free tries (20 each, one password check at a time: ~12 s) and wait 1..60 s
SETTLE_S = 20.0
START_TIMEOUT_S = 30.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _client(url: str, source: str) -> httpx.Client:
    transport = httpx.HTTPTransport(local_address=source)
    return httpx.Client(base_url=url, transport=transport, timeout=30.0, trust_env=False)


def _login_body(name: str, password: str) -> dict[str, Any]:
    user = {"name": name, "password": password}
    return {"auth": {"identity": {"methods": ["password"], "password": {"user": user}}}}


def _timed_login(http: httpx.Client, name: str, password: str) -> tuple[int, float]:
    started = time.perf_counter()
    r = http.post("/identity/v3/auth/tokens", json=_login_body(name, password))
    return r.status_code, (time.perf_counter() - started) * 1000


class Server:
    """orbit-server in a process of its own, ended by its PID."""

    def __init__(self, workdir: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = {**os.environ, "ORBIT_ADMIN_PASSWORD": ADMIN_PASSWORD}
        self.log = (workdir / "orbit-server.log").open("ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "orbit.server.main", "--bind", f"127.0.0.1:{self.port}",
             "--database-url", f"sqlite:///{workdir}/orbit.db", "--driver", "fake",
             "--log-level", "WARNING"],
            stdout=self.log, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError("orbit-server exited while starting")
            try:
                if httpx.get(f"{self.url}/", timeout=1.0).is_success:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("orbit-server did not start")
            time.sleep(0.1)

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def _setup(url: str, users: int) -> None:
    """The members the timing uses (one wrong attempt each) and bob, the bystander."""
    with _client(url, "127.0.0.1") as http:
        r = http.post("/identity/v3/auth/tokens", json=_login_body("admin", ADMIN_PASSWORD))
        r.raise_for_status()
        admin = {"X-Auth-Token": r.headers["X-Subject-Token"]}
        r = http.post("/identity/v3/projects", json={"project": {"name": "bench"}}, headers=admin)
        r.raise_for_status()
        project = r.json()["project"]["id"]
        for name in [f"known{i}" for i in range(users)] + ["bob", "victim"]:
            body = {"user": {"name": name, "password": MEMBER_PASSWORD,
                             "default_project_id": project}}  # fmt: skip
            r = http.post("/identity/v3/users", json=body, headers=admin)
            r.raise_for_status()
            uid = r.json()["user"]["id"]
            r = http.put(f"/identity/v3/projects/{project}/users/{uid}/roles/member",
                         headers=admin)  # fmt: skip
            r.raise_for_status()


def _api_p50(url: str, token: str, samples: int) -> float:
    times = []
    with _client(url, "127.0.2.1") as http:
        for _ in range(samples):
            started = time.perf_counter()
            r = http.get("/v2.1/servers", headers={"X-Auth-Token": token})
            r.raise_for_status()
            times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times)


def _attack(url: str, threads: int, sent: Any) -> None:
    """Guess passwords from ``threads`` sources as fast as the answers come (for ever),
    counting the requests in ``sent`` (a shared integer)."""

    def guess(n: int) -> None:
        with _client(url, f"127.0.4.{n + 1}") as http:
            i = 0
            while True:
                body = _login_body(f"user{n}-{i % 7}", "guess-guess-guess")
                http.post("/identity/v3/auth/tokens", json=body)
                with sent.get_lock():
                    sent.value += 1
                i += 1

    workers = [threading.Thread(target=guess, args=(n,), daemon=True) for n in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


def run() -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="orbit-bench-security-") as tmp:
        server = Server(Path(tmp))
        try:
            url = server.url
            _setup(url, TIMING_SAMPLES)
            unknown, wrong = [], []
            for i in range(TIMING_SAMPLES):  # alternate, each from a fresh source
                with _client(url, f"127.0.1.{2 * i + 1}") as http:
                    code, ms = _timed_login(http, f"nobody{i}", "not-it-at-all-1")
                    assert code == 401, code
                    unknown.append(ms)
                with _client(url, f"127.0.1.{2 * i + 2}") as http:
                    code, ms = _timed_login(http, f"known{i}", "not-it-at-all-1")
                    assert code == 401, code
                    wrong.append(ms)
            codes: dict[int, int] = {}
            with _client(url, "127.0.3.1") as http:
                started = time.perf_counter()
                for _ in range(GUESSES):
                    code, _ms = _timed_login(http, "victim", "guess-guess-guess")
                    codes[code] = codes.get(code, 0) + 1
                guessing_s = time.perf_counter() - started
            with _client(url, "127.0.2.1") as http:
                r = http.post("/identity/v3/auth/tokens", json=_login_body("bob", MEMBER_PASSWORD))
                r.raise_for_status()
                bob = r.headers["X-Subject-Token"]
            quiet = _api_p50(url, bob, API_SAMPLES)
            # the attackers in a process of their own: they must not share this process's
            # interpreter (and its lock) with the bystander being measured
            spawn = multiprocessing.get_context("spawn")
            sent = spawn.Value("q", 0)
            attacker = spawn.Process(target=_attack, args=(url, ATTACK_THREADS, sent), daemon=True)
            attacker.start()
            time.sleep(1.0)  # the attack's duration before measuring, not a condition
            before, started = sent.value, time.perf_counter()
            attacked = _api_p50(url, bob, API_SAMPLES)
            attack_rate = (sent.value - before) / (time.perf_counter() - started)
            time.sleep(SETTLE_S)  # by then every attacking source has used its free tries
            before, started = sent.value, time.perf_counter()
            settled = _api_p50(url, bob, API_SAMPLES)
            settled_rate = (sent.value - before) / (time.perf_counter() - started)
            attacker.terminate()
            attacker.join(30)
        finally:
            server.stop()
    u, w = statistics.median(unknown), statistics.median(wrong)
    return {
        "environment": {
            "kernel": platform.release(),
            "cpus": os.cpu_count() or 0,
            "python": platform.python_version(),
            "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "server": "orbit-server, fake driver, SQLite, scrypt N=2^14",
        },
        "login_unknown_ms": round(u, 1),
        "login_wrong_password_ms": round(w, 1),
        "timing_ratio": round(u / w, 3),
        "guesses": {
            "sent": GUESSES,
            "checked_401": codes.get(401, 0),
            "refused_429": codes.get(429, 0),
            "seconds": round(guessing_s, 2),
        },
        "api_p50_ms": round(quiet, 2),
        "api_p50_under_attack_ms": round(attacked, 2),
        "attack_threads": ATTACK_THREADS,
        "attack_requests_s": round(attack_rate),
        "api_p50_attack_settled_ms": round(settled, 2),
        "attack_settled_requests_s": round(settled_rate),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    result = run()
    print(f"{'figure':<34}{'value':>12}")
    rows = [
        ("log-in, unknown user (median)", f"{result['login_unknown_ms']} ms"),
        ("log-in, wrong password (median)", f"{result['login_wrong_password_ms']} ms"),
        ("unknown / wrong password", f"{result['timing_ratio']}"),
        ("100 guesses: checked (401)", str(result["guesses"]["checked_401"])),
        ("100 guesses: refused (429)", str(result["guesses"]["refused_429"])),
        ("other user's API p50, quiet", f"{result['api_p50_ms']} ms"),
        ("other user's API p50, attacked", f"{result['api_p50_under_attack_ms']} ms"),
        ("attacking threads (own process)", str(result["attack_threads"])),
        ("attack: log-ins per second", str(result["attack_requests_s"])),
        (f"p50 after {SETTLE_S:.0f} s more of it", f"{result['api_p50_attack_settled_ms']} ms"),
        ("attack: log-ins per second then", str(result["attack_settled_requests_s"])),
    ]
    for name, value in rows:
        print(f"{name:<34}{value:>12}")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
