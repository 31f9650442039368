"""The dispatcher's pace: a pass after requests stop arriving, at most every 0.5 s in a
burst; a pass that can start nothing costs one read."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
from sqlalchemy import event, update

from orbit.conductor.conductor import DISPATCH_MAX_WAIT_S, DISPATCH_MIN_GAP_S, Conductor
from orbit.config import ServerConfig
from orbit.db.database import Database
from orbit.db.models import Host, Migration, Server
from orbit.virt.fake import FakeDriver


def _conductor() -> Conductor:
    return Conductor(Database("sqlite://"), FakeDriver(), ServerConfig(driver="fake"))


def test_one_request_is_dispatched_after_one_gap() -> None:
    conductor = _conductor()
    conductor.kick()
    began = time.monotonic()
    assert conductor._settle() is False
    assert DISPATCH_MIN_GAP_S <= time.monotonic() - began < DISPATCH_MAX_WAIT_S


def test_a_burst_of_requests_waits_for_its_end_but_no_longer_than_the_cap() -> None:
    conductor = _conductor()
    done = threading.Event()

    def requests() -> None:  # a kick every 20 ms, as a burst of requests does
        while not done.wait(0.02):
            conductor.kick()

    kicker = threading.Thread(target=requests)
    kicker.start()
    try:
        began = time.monotonic()
        assert conductor._settle() is False
        waited_s = time.monotonic() - began
    finally:
        done.set()
        kicker.join()
    assert DISPATCH_MAX_WAIT_S <= waited_s < DISPATCH_MAX_WAIT_S + DISPATCH_MIN_GAP_S + 0.5
    assert conductor._wake.is_set()  # the requests of the last gap get the next pass


def test_a_stop_ends_the_wait() -> None:
    conductor = _conductor()
    conductor._stop.set()
    assert conductor._settle() is True


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_a_queue_behind_busy_sources_costs_a_pass_one_read(db: Database) -> None:
    """While every queued migration's source is at its outgoing limit (or its named
    destination at the incoming one), a pass reads once and starts nothing; once a source
    is free, the same pass claims its queued migration."""
    with db.session() as s:
        h1, h2, h3 = (Host(name=f"h{i}", uri=f"fake://h{i}", memory_free_mib=8192,
                           memory_total_mib=8192, state="up") for i in (1, 2, 3))  # fmt: skip
        vms = [Server(id=str(uuid.uuid4()), name=f"vm{i}", host=h1, status="ACTIVE",
                      memory_mib=512) for i in range(4)]  # fmt: skip
        s.add_all([h1, h2, h3, *vms])
        s.flush()
        running = Migration(server_id=vms[0].id, source_host_id=h1.id, dest_host_id=h2.id,
                            status="running-precopy")  # fmt: skip
        into_h3 = Migration(server_id=vms[3].id, source_host_id=h2.id, dest_host_id=h3.id,
                            status="running-precopy")  # fmt: skip
        queued = [
            Migration(server_id=vms[1].id, source_host_id=h1.id, dest_host_id=None),
            Migration(server_id=vms[2].id, source_host_id=h1.id, dest_host_id=h3.id),
        ]
        s.add_all([running, into_h3, *queued])
    config = ServerConfig(driver="fake", max_outgoing_per_host=1, max_incoming_per_host=1)
    conductor = Conductor(db, FakeDriver(), config)
    started: list[int] = []

    def start(mid: int, target: Callable[[int], None]) -> None:
        started.append(mid)  # the migration's thread is not started

    conductor._start_thread = start  # type: ignore[method-assign]
    statements: list[str] = []

    def seen(*args: Any) -> None:
        statements.append(str(args[2]))

    event.listen(db.engine, "before_cursor_execute", seen)
    try:
        conductor.dispatch()
        assert (len(statements), started) == (1, [])
        with db.session() as s:  # h1's migration ends; h3 still takes one at a time
            s.execute(
                update(Migration).where(Migration.id == running.id).values(status="completed")
            )
        conductor.dispatch()
    finally:
        event.remove(db.engine, "before_cursor_execute", seen)
    assert started == [queued[0].id]
    assert len(statements) > 2
