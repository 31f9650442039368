"""The stock ``openstack`` command, run as an operator runs it, without paying ~1.7 s of
imports for every call.

:class:`Osc` starts one helper process that imports ``openstackclient.shell.main`` (what
the ``openstack`` console script calls) and then forks once per command: each command runs
in a fresh child process with its own argv, environment, stdin (/dev/null), stdout and
stderr, and exits with the CLI's exit code, exactly as ``openstack ARGS...`` would, minus
the interpreter start and the imports that the fork inherits.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

CLI_TIMEOUT_S = 60.0

_HELPER = r"""
import json, os, sys, traceback
from openstackclient.shell import main  # the console script's entry point, imported once

for line in sys.stdin:
    req = json.loads(line)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            null = os.open(os.devnull, os.O_RDONLY)
            out = os.open(req["stdout"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            err = os.open(req["stderr"], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(null, 0)
            os.dup2(out, 1)
            os.dup2(err, 2)
            os.environ.clear()
            os.environ.update(req["env"])
            sys.argv = ["openstack", *req["args"]]
            try:
                code = main()
            except SystemExit as exit:
                code = exit.code if isinstance(exit.code, int) else (0 if exit.code is None else 1)
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code or 0)
    _, status = os.waitpid(pid, 0)
    print(json.dumps({"rc": os.waitstatus_to_exitcode(status)}), flush=True)
"""


class Osc:
    """``openstack --os-cloud orbit ...`` with a clouds.yaml of its own."""

    def __init__(self, clouds_yaml: Path) -> None:
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith("OS_")},
            "OS_CLIENT_CONFIG_FILE": str(clouds_yaml),
            "OS_CLOUD": "orbit",
        }
        self._dir = Path(tempfile.mkdtemp(prefix="orbit-osc-", dir=clouds_yaml.parent))
        self._helper = subprocess.Popen(
            [sys.executable, "-c", _HELPER],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=self.env,
        )
        self._lock = threading.Lock()

    def close(self) -> None:
        """End the helper (its stdin closed, it exits; killed if it does not)."""
        if self._helper.stdin is not None:
            self._helper.stdin.close()
        try:
            self._helper.wait(10)
        except subprocess.TimeoutExpired:
            self._helper.kill()
            self._helper.wait()
        if self._helper.stdout is not None:
            self._helper.stdout.close()

    def __enter__(self) -> Osc:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, *args: str) -> subprocess.CompletedProcess[str]:
        """Run ``openstack ARGS...`` in a fresh child process and return it finished."""
        with self._lock:
            out, err = self._dir / "stdout", self._dir / "stderr"
            req = {"args": list(args), "env": self.env, "stdout": str(out), "stderr": str(err)}
            assert self._helper.stdin is not None and self._helper.stdout is not None
            self._helper.stdin.write(json.dumps(req) + "\n")
            self._helper.stdin.flush()
            answer = _readline(self._helper.stdout, CLI_TIMEOUT_S)
            rc = int(json.loads(answer)["rc"])
            return subprocess.CompletedProcess(
                ["openstack", *args], rc, out.read_text(), err.read_text()
            )

    def ok(self, *args: str) -> str:
        r = self.run(*args)
        assert r.returncode == 0, f"openstack {' '.join(args)}: {r.stderr}"
        return r.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "-f", "json"))

    def fails(self, *args: str) -> str:
        """Run a command that must fail: exit code 1 and one readable line, no traceback."""
        r = self.run(*args)
        assert r.returncode == 1, r
        assert "Traceback" not in r.stderr, r.stderr
        lines = [line for line in r.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, r.stderr
        return lines[0]


def _readline(stream: Any, timeout_s: float) -> str:
    """One line from the helper, or an AssertionError after ``timeout_s``."""
    got: list[str] = []
    reader = threading.Thread(target=lambda: got.append(stream.readline()), daemon=True)
    reader.start()
    reader.join(timeout_s)
    assert got and got[0], f"openstack did not finish within {timeout_s:.0f} s"
    return got[0]
