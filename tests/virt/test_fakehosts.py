"""Fake hosts in a process of their own (``python -m orbit.virt.fakehosts``), reached by
:class:`RemoteFakeDriver`: what several orbit-server instances share in the benchmark."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from orbit.errors import DomainNotFound, HostUnreachable, HypervisorError
from orbit.virt.driver import DomainState, HypervisorDriver, MigrationParams
from orbit.virt.fakehosts import RemoteFakeDriver


@pytest.fixture(scope="module")
def remote(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RemoteFakeDriver]:
    sock = tmp_path_factory.mktemp("fakehosts") / "fake.sock"
    proc = subprocess.Popen(
        [sys.executable, "-m", "orbit.virt.fakehosts", "--socket", str(sock),
         "--hosts", "2", "--vms", "1", "--host-mib", "2048"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().decode().startswith("listening"), "did not start"
        yield RemoteFakeDriver(sock)
    finally:
        proc.terminate()
        proc.wait(10)


def test_errors_keep_their_kind(remote: RemoteFakeDriver, tmp_path: Path) -> None:
    driver: HypervisorDriver = remote
    assert [d.name for d in driver.list_domains("fake://h1")] == ["vm-h1-1"]
    assert driver.host_info("fake://h1").memory_total_mib == 2048
    with pytest.raises(DomainNotFound):
        remote.domain_info("fake://h1", "nope")
    with pytest.raises(HostUnreachable):
        remote.ping("fake://h9")
    with pytest.raises(HypervisorError, match="no events"):
        remote.watch("fake://h1", "vm-h1-1", lambda _e, _s: None)
    with pytest.raises(HostUnreachable, match="do not answer"):
        RemoteFakeDriver(tmp_path / "nothing.sock").ping("fake://h1")


def test_a_migration_blocks_only_its_own_connection(remote: RemoteFakeDriver) -> None:
    """migrate() holds its thread's connection for the whole migration (as libvirt's
    migrateToURI3 does); other threads' calls answer meanwhile; the VM then runs on the
    destination, migrated once."""
    t = threading.Thread(
        target=remote.migrate,
        args=("fake://h1", "vm-h1-1", MigrationParams(dst_uri="fake://h2")),
    )
    t.start()
    began = time.monotonic()
    while remote.job_stats("fake://h1", "vm-h1-1").memory_processed_bytes == 0:
        assert time.monotonic() - began < 10
        time.sleep(0.05)
    assert remote.domain_info("fake://h2", "vm-h2-1").name == "vm-h2-1"
    t.join(30)
    assert remote.list_domains("fake://h1") == []
    assert remote.domain_info("fake://h2", "vm-h1-1").state is DomainState.RUNNING
    assert remote.migrate_calls() == {"vm-h1-1": 1}


def test_a_benchmark_can_slow_the_link_down(remote: RemoteFakeDriver) -> None:
    """set_bandwidth changes what every later tick of every migration sends."""
    before = remote.set_bandwidth(1024 * 1024)
    try:
        assert before > 1024 * 1024
        assert remote.set_bandwidth(2 * 1024 * 1024) == 1024 * 1024
    finally:
        remote.set_bandwidth(before)


def test_messages_of_any_size_cross_whole_and_in_order() -> None:
    """The channel's framing: a message larger than one receive (64 KiB), an empty one,
    and several sent before any is read arrive whole, each once, in order; a closed peer
    is an EOFError, not a hang."""
    import socket

    from orbit.virt.fakehosts import _Channel

    left, right = socket.socketpair()
    a, b = _Channel(left), _Channel(right)
    big = {"domains": ["x" * 1000] * 300}  # ~300 KB: several receives
    sent: list[object] = [("ok", big), (), ("job_stats", ("fake://h1", "vm"), {}), "z" * 70_000]

    def send_all() -> None:
        for message in sent:
            a.send(message)

    writer = threading.Thread(target=send_all)
    writer.start()
    assert [b.recv() for _ in sent] == sent
    writer.join()
    a.close()
    with pytest.raises(EOFError):
        b.recv()
    b.close()
