"""Helpers for tests: run the ``orbit`` CLI as a user would."""

from __future__ import annotations

import os
import subprocess
import sys


def run_orbit(
    *args: str,
    timeout_s: float = 120.0,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``orbit ARGS…`` in a subprocess (``stdin`` as its input) and return it finished."""
    return subprocess.run(
        [sys.executable, "-m", "orbit.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
        input=stdin if stdin is not None else "",
        env=None if env is None else {**os.environ, **env},
    )


def assert_one_line_error(proc: subprocess.CompletedProcess[str], *needles: str) -> None:
    """The CLI failed the way an operator expects: non-zero exit, one line on stderr."""
    assert proc.returncode != 0, proc.stdout
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got: {proc.stderr!r}"
    assert "Traceback" not in proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
