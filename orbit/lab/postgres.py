"""A private PostgreSQL server for tests and benchmarks.

Started from the Debian package's binaries (``/usr/lib/postgresql/<highest>/bin``) in a
temporary directory, on 127.0.0.1 and a free port, with fsync off (its data is thrown
away); always stopped and removed at the end. The system's PostgreSQL service is never
used.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import create_engine, text

from orbit.errors import LabError

#: Where Debian's postgresql-NN packages put initdb and pg_ctl.
PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"
PG_SYSTEM_USER = "postgres"
PG_START_TIMEOUT_S = 60
PG_COMMAND_TIMEOUT_S = 120


def find_pg_bin() -> Path:
    """The bin directory of the highest installed PostgreSQL (LabError if there is none)."""
    candidates = [p for p in Path("/").glob(PG_BIN_GLOB.lstrip("/")) if (p / "initdb").exists()]
    if not candidates:
        raise LabError(
            f"PostgreSQL is not installed (no initdb under {PG_BIN_GLOB}); "
            "run 'make bootstrap' (Debian package postgresql)"
        )

    def version(p: Path) -> tuple[int, ...]:
        return tuple(int(x) for x in re.findall(r"\d+", p.parent.name))

    return max(candidates, key=version)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _as_pg_user(argv: list[str]) -> list[str]:
    """Run as the postgres system user when root (initdb and postgres refuse root)."""
    if os.geteuid() == 0:
        return ["runuser", "-u", PG_SYSTEM_USER, "--", *argv]
    return argv


def _run(argv: list[str], what: str, log: Path | None = None) -> None:
    proc = subprocess.run(
        _as_pg_user(argv),
        capture_output=True,
        text=True,
        timeout=PG_COMMAND_TIMEOUT_S,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    if proc.returncode != 0:
        log_tail = ""
        if log is not None and log.exists():
            log_tail = "\n--- server log ---\n" + "\n".join(log.read_text().splitlines()[-20:])
        raise LabError(
            f"{what} failed (exit {proc.returncode}): {' '.join(argv)}\n"
            f"{proc.stdout}{proc.stderr}{log_tail}"
        )


@contextmanager
def private_postgres(database: str, *, timezone: str = "UTC") -> Iterator[str]:
    """Start a PostgreSQL server of its own, create ``database``, yield its URL."""
    pg_bin = find_pg_bin()
    port = free_port()
    base = Path(tempfile.mkdtemp(prefix="orbit-pg-"))
    data = base / "data"
    log = base / "server.log"
    started = False
    try:
        if os.geteuid() == 0:
            shutil.chown(base, user=PG_SYSTEM_USER, group=PG_SYSTEM_USER)
        _run(
            [str(pg_bin / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
             "-E", "UTF8", "--locale=C", "--no-sync"],
            "initdb",
        )  # fmt: skip
        options = (
            f"-c listen_addresses=127.0.0.1 -c port={port} "
            f"-c unix_socket_directories={data} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off "
            f"-c TimeZone={timezone}"
        )
        started = True  # from here on, stop it whatever happens
        _run(
            [str(pg_bin / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options,
             "-t", str(PG_START_TIMEOUT_S), "-w", "start"],
            "starting PostgreSQL",
            log,
        )  # fmt: skip
        server = f"postgresql+psycopg://postgres@127.0.0.1:{port}"
        admin = create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.execute(text(f"CREATE DATABASE {database}"))
        finally:
            admin.dispose()
        yield f"{server}/{database}"
    finally:
        if started:
            subprocess.run(
                _as_pg_user([str(pg_bin / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"]),
                capture_output=True,
                timeout=PG_COMMAND_TIMEOUT_S,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        shutil.rmtree(base, ignore_errors=True)
