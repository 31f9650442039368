"""``make demo`` as a user runs it: a real migration, then stopped the way a service is."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

from orbit.lab import network
from orbit.lab.lab import Lab
from orbit.migration.model import MIB

DEMO_TIMEOUT_S = 300.0
EXIT_TIMEOUT_S = 60.0
SERVING = "Ctrl-C stops the server"
DEMO_PORT = 8774


def test_demo_migrates_and_sigterm_removes_everything(no_lab: Lab) -> None:
    """SIGTERM, as a service manager or ``kill`` sends it (SIGHUP takes the same path)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "orbit.cli.main", "lab", "demo", "--memory-mib", "128"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    out: list[str] = []
    # a thread reads every line as it comes (select() on a buffered pipe can miss lines)
    reader = threading.Thread(target=lambda: out.extend(proc.stdout or []), daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + DEMO_TIMEOUT_S
        while not any(SERVING in line for line in out):
            assert proc.poll() is None, "".join(out)
            assert time.monotonic() < deadline, "".join(out)
            time.sleep(0.2)
        assert "demo OK\n" in out, "".join(out)
        hosts = no_lab.hosts()
        pids = [h.libvirtd_pid for h in hosts if h.libvirtd_pid]
        proc.send_signal(signal.SIGTERM)
        proc.wait(EXIT_TIMEOUT_S)
        reader.join(EXIT_TIMEOUT_S)
    finally:
        if proc.poll() is None:  # the test failed early: let the demo clean up as it should
            proc.terminate()
            try:
                proc.wait(EXIT_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
            no_lab.down()
    output = "".join(out)
    assert proc.returncode == 0, output
    assert "Traceback" not in output
    # auto's plan, with its prediction, printed before the first pass would have ended
    # (128 MiB at 400 mbit/s: 2.7 s), then the prediction against the outcome
    plan = re.search(r"t=\s*([\d.]+) s  plan: plan postcopy-after-0: [\d.]+ s", output)
    assert plan is not None and float(plan.group(1)) < 128 * MIB * 8 / 400e6, output
    assert re.search(r"prediction +: postcopy-after-0, predicted [\d.]+ s .* took", output), output
    assert not no_lab.is_up(), "the demo left its lab state behind"
    assert not network.link_exists(network.BRIDGE)
    for h in hosts:
        assert not network.netns_exists(h.netns)
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists(), f"libvirtd {pid} survived the demo"
    with socket.socket() as sock:  # and its orbit-server is gone
        assert sock.connect_ex(("127.0.0.1", DEMO_PORT)) != 0, "orbit-server survived the demo"
