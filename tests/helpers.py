"""Helpers for tests: run the ``orbit`` CLI as a user would; start an orbit-server process."""

from __future__ import annotations

import atexit
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

#: The ``orbit`` CLI's helper: imports the CLI once, then forks once per command. Each
#: command runs in a fresh child with its own argv, environment, stdin, stdout and stderr,
#: and exits with the CLI's exit code, exactly as ``python -m orbit.cli.main ARGS`` would,
#: minus the ~0.6 s of interpreter start and imports that the fork inherits.
_ORBIT_HELPER = r"""
import json, os, sys, traceback
from orbit.cli.main import build_parser, main
build_parser()  # imports every command's module (and httpx, yaml, libvirt) once, here
import httpx, ssl
httpx.create_ssl_context()  # loads the CA bundle once too

for line in sys.stdin:
    req = json.loads(line)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.setpgid(0, 0)  # its own group: a timeout ends it and what it started
            out = os.open(req["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            err = os.open(req["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(out, 1)
            os.dup2(err, 2)
            sys.stdin = open(req["stdin"], encoding="utf-8")
            os.dup2(sys.stdin.fileno(), 0)
            os.environ.clear()
            os.environ.update(req["env"])
            sys.argv = ["orbit", *req["args"]]
            try:
                code = main(req["args"])
            except SystemExit as exit:
                code = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code or 0)
    print(json.dumps({"pid": pid}), flush=True)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"rc": os.waitstatus_to_exitcode(status)}), flush=True)
"""


class _OrbitForks:
    """One helper process per test session (started on first use, ended at exit)."""

    def __init__(self) -> None:
        self._dir = Path(tempfile.mkdtemp(prefix="orbit-cli-"))
        self._helper = subprocess.Popen(
            [sys.executable, "-c", _ORBIT_HELPER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.lock = threading.Lock()
        atexit.register(self.close)

    def close(self) -> None:
        if self._helper.poll() is None:
            assert self._helper.stdin is not None
            self._helper.stdin.close()
            try:
                self._helper.wait(10)
            except subprocess.TimeoutExpired:
                self._helper.kill()
                self._helper.wait()
        shutil.rmtree(self._dir, ignore_errors=True)

    def run(
        self, args: list[str], env: dict[str, str], stdin: str, timeout_s: float
    ) -> subprocess.CompletedProcess[str]:
        """Call with :attr:`lock` held."""
        out, err, inp = self._dir / "stdout", self._dir / "stderr", self._dir / "stdin"
        inp.write_text(stdin, encoding="utf-8")
        req = {"args": args, "env": env, "stdin": str(inp), "stdout": str(out),
               "stderr": str(err)}  # fmt: skip
        assert self._helper.stdin is not None and self._helper.stdout is not None
        self._helper.stdin.write(json.dumps(req) + "\n")
        self._helper.stdin.flush()
        pid = int(json.loads(self._helper.stdout.readline())["pid"])
        answer = _readline(self._helper.stdout, timeout_s)
        if answer is None:  # as subprocess.run(timeout=...): end it, then say so
            os.killpg(pid, signal.SIGKILL)
            self._helper.stdout.readline()
            raise subprocess.TimeoutExpired(["orbit", *args], timeout_s)
        rc = int(json.loads(answer)["rc"])
        return subprocess.CompletedProcess(
            ["orbit", *args], rc, out.read_text(encoding="utf-8"), err.read_text(encoding="utf-8")
        )


_forks: _OrbitForks | None = None
_forks_guard = threading.Lock()


def _readline(stream: Any, timeout_s: float) -> str | None:
    """One line from the helper, or None after ``timeout_s``."""
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout_s)
    return got[0] if got and got[0] else None


def run_orbit(
    *args: str,
    timeout_s: float = 120.0,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``orbit ARGS…`` as a process of its own (``stdin`` as its input) and return it
    finished. Forked from a helper that has the CLI imported; a call made while another
    runs (a test's background command) starts the interpreter as usual."""
    global _forks
    full_env = {**os.environ, **(env or {})}
    with _forks_guard:
        if _forks is None:
            _forks = _OrbitForks()
        forks = _forks
    if forks.lock.acquire(blocking=False):
        try:
            return forks.run(list(args), full_env, stdin or "", timeout_s)
        finally:
            forks.lock.release()
    return subprocess.run(
        [sys.executable, "-m", "orbit.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
        input=stdin if stdin is not None else "",
        env=full_env,
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    """The CLI failed the way an operator expects: non-zero exit, one line on stderr."""
    assert proc.returncode != 0, proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got: {proc.stderr!r}"
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def free_port() -> int:
    """A free TCP port on 127.0.0.1 (for a server this test starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class ServerProcess:
    """An ``orbit-server`` process a test started (ended only by its PID), on 127.0.0.1."""

    START_TIMEOUT_S = 30.0

    def __init__(
        self, workdir: Path, *args: str, env: dict[str, str], https_ca: Path | None = None
    ) -> None:
        self.port = free_port()
        self.url = f"{'https' if https_ca else 'http'}://127.0.0.1:{self.port}"
        self.log = workdir / f"orbit-server-{self.port}.log"
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "orbit.server.main", "--bind",
                 f"127.0.0.1:{self.port}", *args],
                stdout=out, stderr=subprocess.STDOUT, env={**os.environ, **env},
            )  # fmt: skip
        self._verify: str | bool = str(https_ca) if https_ca else True

    def wait_ready(self) -> None:
        deadline = time.monotonic() + self.START_TIMEOUT_S
        while True:
            assert self.proc.poll() is None, self.log.read_text()
            try:
                if httpx.get(f"{self.url}/", verify=self._verify, timeout=1.0).is_success:
                    return
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, self.log.read_text()
            time.sleep(0.1)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
