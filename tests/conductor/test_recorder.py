"""The conductor's recorder: what a reader of the migration record may see mid-way."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.exc import TimeoutError as PoolTimeout

from orbit.conductor.conductor import (
    Claim,
    _Recorder,
    _RecordWriter,
    decision_entry,
    merged_decisions,
)
from orbit.db.database import Database
from orbit.db.models import Migration, Server
from orbit.migration.engine import DecisionRecord
from orbit.migration.model import MIB, Action, Sample
from orbit.migration.phase import Phase
from tests.db.test_models import add_migration, add_world


def claimed_recorder(
    db: Database, mid: int, owner: str = "test-instance", writer: _RecordWriter | None = None
) -> _Recorder:
    """A recorder holding the claim on migration ``mid`` (as the conductor's, after it
    claimed the migration), with a writer of its own unless ``writer`` is given."""
    with db.session() as s:
        m = s.get_one(Migration, mid)
        m.owner, m.fence = owner, m.fence + 1
        fence = m.fence
    return _Recorder(db, mid, Claim(owner, fence), writer)


def test_a_final_phase_waits_for_the_outcome_and_its_figures(db: Database) -> None:
    """'completed' never shows beside the last sample's memory remaining: the engine's
    phase event records the time; the outcome write sets status and figures together."""
    with db.session() as s:
        *_, server = add_world(s)
        mid = add_migration(s, server, status=Phase.RUNNING_POSTCOPY.value).id
    recorder = claimed_recorder(db, mid)
    recorder.on_sample(
        Sample(elapsed_s=4.0, memory_total_bytes=64 * MIB, memory_remaining_bytes=12 * MIB)
    )
    recorder.on_phase(Phase.COMPLETED, 5.0, "")
    recorder.flush()
    with db.session() as s:
        m = s.get_one(Migration, mid)
        assert m.status == Phase.RUNNING_POSTCOPY.value
        assert m.phase_times[Phase.COMPLETED.value] == 5.0
        assert m.memory_remaining_bytes == 12 * MIB
    recorder.on_phase(Phase.POSTCOPY_PAUSED, 6.0, "link gone")  # not final: shown at once
    recorder.flush()
    with db.session() as s:
        m = s.get_one(Migration, mid)
        assert m.status == Phase.POSTCOPY_PAUSED.value and m.error == "link gone"


def test_a_phase_write_that_failed_is_repaired_by_the_next_write(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The record follows the engine even after a lost write (a full pool, a locked
    database): the next sample brings the status up to date; a final one is never undone."""
    with db.session() as s:
        *_, server = add_world(s)
        mid = add_migration(s, server, status=Phase.RUNNING_PRECOPY.value).id
    recorder = claimed_recorder(db, mid)

    def no_connection() -> Any:
        raise PoolTimeout("QueuePool limit reached")

    monkeypatch.setattr(db.engine, "connect", no_connection)
    recorder.on_phase(Phase.RUNNING_POSTCOPY, 3.0, "switched")  # lost, and logged
    recorder.flush()
    monkeypatch.undo()
    with db.session() as s:
        assert s.get_one(Migration, mid).status == Phase.RUNNING_PRECOPY.value
    recorder.on_sample(Sample(elapsed_s=3.25, memory_total_bytes=64 * MIB, postcopy=True))
    recorder.flush()
    with db.session() as s:
        m = s.get_one(Migration, mid)
        assert m.status == Phase.RUNNING_POSTCOPY.value
        assert len(m.samples) == 1
        m.status = Phase.COMPLETED.value  # the outcome's write
    recorder.on_sample(Sample(elapsed_s=3.5, memory_total_bytes=64 * MIB, postcopy=True))
    recorder.close()
    with db.session() as s:
        assert s.get_one(Migration, mid).status == Phase.COMPLETED.value


def test_samples_taken_before_a_phase_change_do_not_repair_the_status(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """The engine changes phase while the writer writes samples it took before: those
    samples leave the status to the phase change's own write (no "repair", no log line
    saying a write was lost); samples taken after a phase write that was lost repair it."""
    with db.session() as s:
        *_, server = add_world(s)
        mid = add_migration(s, server, status=Phase.RUNNING_PRECOPY.value).id
    writer = _RecordWriter(db)
    recorder = claimed_recorder(db, mid, writer=writer)
    recorder.taken_phase = Phase.RUNNING_PRECOPY  # the batch was taken in pre-copy...
    recorder.latest_phase = Phase.RUNNING_POSTCOPY  # ...and the switch queued since
    caplog.set_level("INFO", logger="orbit.conductor.conductor")
    writer._write({recorder: [Sample(elapsed_s=1.0, memory_total_bytes=64 * MIB)]})
    with db.session() as s:
        assert s.get_one(Migration, mid).status == Phase.RUNNING_PRECOPY.value
    assert "record repaired" not in caplog.text
    recorder.taken_phase = Phase.RUNNING_POSTCOPY  # the switch's own write was lost
    writer._write({recorder: [Sample(elapsed_s=1.25, memory_total_bytes=64 * MIB)]})
    with db.session() as s:
        assert s.get_one(Migration, mid).status == Phase.RUNNING_POSTCOPY.value
    assert "record repaired" in caplog.text
    recorder.close()


def test_the_engine_never_waits_for_the_database(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write stuck on a locked database holds up the recorder's writer, not the engine's
    sampling loop: events return at once and land, in order, in one transaction."""
    with db.session() as s:
        *_, server = add_world(s)
        mid = add_migration(s, server, status=Phase.RUNNING_PRECOPY.value).id
    recorder = claimed_recorder(db, mid)
    gate = threading.Event()
    real_connect = db.engine.connect

    def slow_connect() -> Any:
        gate.wait(10)  # the database is locked until the test opens the gate
        return real_connect()

    monkeypatch.setattr(db.engine, "connect", slow_connect)
    started = time.monotonic()
    for i in range(40):
        recorder.on_sample(Sample(elapsed_s=i * 0.25, memory_total_bytes=64 * MIB))
    queued_in_s = time.monotonic() - started
    gate.set()
    recorder.close()
    assert queued_in_s < 1.0  # never near the 10 s the database was stuck
    with db.session() as s:
        m = s.get_one(Migration, mid)
        assert [smp.elapsed_s for smp in m.samples] == [i * 0.25 for i in range(40)]


def test_the_outcome_restores_decisions_whose_write_was_lost() -> None:
    engine = [
        DecisionRecord(1.0, Action.SWITCH_TO_POSTCOPY, "iteration 1 done", "policy", "after-n"),
        DecisionRecord(4.0, Action.PAUSE_POSTCOPY, "no bytes for 2.0 s", "policy", "stalled"),
        DecisionRecord(6.0, Action.RESUME_POSTCOPY, "attempt 1", "engine", ""),
    ]
    stored = [decision_entry(engine[0]), decision_entry(engine[2])]  # the pause was lost
    merged = merged_decisions(stored, engine)
    assert [d["action"] for d in merged] == [
        "switch-to-postcopy",
        "pause-postcopy",
        "resume-postcopy",
    ]
    assert merged_decisions(merged, engine) == merged  # nothing twice


def test_samples_land_with_the_latest_progress_and_only_under_the_claim(db: Database) -> None:
    """A batch of samples is stored in order, the record shows the latest one's progress;
    the samples of a claim another instance took over are not written at all."""
    with db.session() as s:
        *_, server = add_world(s)
        mid = add_migration(s, server, status=Phase.RUNNING_PRECOPY.value).id
    old = claimed_recorder(db, mid, owner="instance-a")
    new = claimed_recorder(db, mid, owner="instance-b")  # took it over
    old.on_sample(Sample(elapsed_s=0.25, memory_total_bytes=64 * MIB, iteration=9))
    old.close()
    for i in range(1, 4):
        new.on_sample(
            Sample(
                elapsed_s=i * 0.25,
                memory_total_bytes=64 * MIB,
                memory_processed_bytes=i * MIB,
                memory_remaining_bytes=(64 - i) * MIB,
                disk_total_bytes=8 * MIB,
                disk_processed_bytes=i,
                disk_remaining_bytes=8 * MIB - i,
                iteration=i,
                postcopy_requests=2 * i,
                dirty_rate_bytes_s=7,
                bandwidth_bytes_s=11,
            )
        )
    new.close()
    with db.session() as s:
        m = s.get_one(Migration, mid)
        assert [smp.to_sample().iteration for smp in m.samples] == [1, 2, 3]
        assert m.samples[-1].to_sample() == Sample(
            elapsed_s=0.75, memory_total_bytes=64 * MIB, memory_processed_bytes=3 * MIB,
            memory_remaining_bytes=61 * MIB, disk_total_bytes=8 * MIB, disk_processed_bytes=3,
            disk_remaining_bytes=8 * MIB - 3, iteration=3, postcopy_requests=6,
            dirty_rate_bytes_s=7, bandwidth_bytes_s=11,
        )  # fmt: skip
        progress = (m.memory_total_bytes, m.memory_processed_bytes, m.memory_remaining_bytes,
                    m.disk_total_bytes, m.disk_processed_bytes, m.disk_remaining_bytes,
                    m.iterations, m.postcopy_requests)  # fmt: skip
        assert progress == (64 * MIB, 3 * MIB, 61 * MIB, 8 * MIB, 3, 8 * MIB - 3, 3, 6)
        assert m.status == Phase.RUNNING_PRECOPY.value


def test_the_recorders_of_a_process_share_one_writer_that_runs_while_they_are_open(
    db: Database,
) -> None:
    """Each record gets its own changes, in order, from one writer thread; the thread
    ends with the last recorder and starts again with the next."""
    with db.session() as s:
        *_, h1, _h2, first = add_world(s)
        second = Server(id=str(uuid.uuid4()), name="vm2", host=h1, memory_mib=512)
        s.add(second)
        s.flush()
        mids = [add_migration(s, server, status=Phase.RUNNING_PRECOPY.value).id
                for server in (first, second)]  # fmt: skip
    writer = _RecordWriter(db)
    one, two = (claimed_recorder(db, mid, writer=writer) for mid in mids)
    for i in range(3):
        one.on_sample(Sample(elapsed_s=i * 0.25, memory_total_bytes=64 * MIB, iteration=1))
        two.on_sample(Sample(elapsed_s=i * 0.25, memory_total_bytes=64 * MIB, iteration=2))
    two.on_phase(Phase.RUNNING_POSTCOPY, 0.6, "switched")
    one.close()
    assert writer._thread is not None  # two is still open
    two.on_sample(Sample(elapsed_s=0.75, memory_total_bytes=64 * MIB, postcopy=True))
    two.close()
    assert writer._thread is None
    with db.session() as s:
        a, b = (s.get_one(Migration, mid) for mid in mids)
        assert [x.iteration for x in a.samples] == [1, 1, 1] and a.iterations == 1
        assert [x.elapsed_s for x in b.samples] == [0.0, 0.25, 0.5, 0.75]
        assert b.status == Phase.RUNNING_POSTCOPY.value and b.phase_times == {
            Phase.RUNNING_POSTCOPY.value: 0.6
        }
    three = claimed_recorder(db, mids[0], writer=writer)
    three.on_phase(Phase.POSTCOPY_PAUSED, 1.0, "link gone")
    three.flush()
    assert writer._thread is not None
    three.close()
    with db.session() as s:
        assert s.get_one(Migration, mids[0]).status == Phase.POSTCOPY_PAUSED.value


def test_a_phase_or_decision_write_is_two_statements_under_the_claim(db: Database) -> None:
    """A write of phases and decisions reads the three columns it changes, under the claim
    (locked on PostgreSQL), and writes what changed in one UPDATE that checks the claim
    again: no load of the whole record (one write, or two if the writer took the phase
    before the decision came)."""
    with db.session() as s:
        *_, server = add_world(s)
        mid = add_migration(s, server, status=Phase.PREPARING.value).id
    recorder = claimed_recorder(db, mid)
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(" ".join(statement.split()))

    event.listen(db.engine, "before_cursor_execute", seen)
    try:
        recorder.on_phase(Phase.RUNNING_PRECOPY, 0.5, "")
        recorder.on_decision(
            DecisionRecord(1.0, Action.SWITCH_TO_POSTCOPY, "iteration 1", "policy", "after-n")
        )
        recorder.flush()
    finally:
        event.remove(db.engine, "before_cursor_execute", seen)
    recorder.close()
    reads = [st for st in statements if st.startswith("SELECT")]
    writes = [st for st in statements if st.startswith("UPDATE")]
    assert len(reads) == len(writes) and 1 <= len(reads) <= 2, statements
    assert len(statements) == 2 * len(reads), statements
    for read, write in zip(reads, writes, strict=True):
        assert read.startswith(
            "SELECT migrations.status, migrations.phase_times, migrations.decisions FROM"
        )
        assert "migrations.owner =" in read and "migrations.fence =" in read
        assert "migrations.owner =" in write and "migrations.fence =" in write
        if db.url.get_backend_name() == "postgresql":
            assert read.endswith("FOR UPDATE")
    with db.session() as s:
        m = s.get_one(Migration, mid)
        assert m.status == Phase.RUNNING_PRECOPY.value
        assert m.phase_times == {Phase.RUNNING_PRECOPY.value: 0.5}
        assert [d["action"] for d in m.decisions] == ["switch-to-postcopy"]
        assert m.switch_at_s == 1.0


def test_samples_of_many_migrations_are_three_statements_and_keep_to_each_claim(
    db: Database,
) -> None:
    """The writer writes the samples of all its migrations together: one UPDATE of their
    progress (each under its claim), one read (PostgreSQL: the rows locked first; SQLite:
    the claims read after), one INSERT (PostgreSQL: a COPY, which SQLAlchemy does not
    see), in one transaction. A record another instance took over gets neither progress
    nor samples."""
    with db.session() as s:
        *_, h1, _h2, first = add_world(s)
        servers = [first] + [
            Server(id=str(uuid.uuid4()), name=f"vm{i}", host=h1, memory_mib=512) for i in (2, 3)
        ]
        s.add_all(servers[1:])
        s.flush()
        mids = [add_migration(s, x, status=Phase.RUNNING_PRECOPY.value).id for x in servers]
    writer = _RecordWriter(db)
    recorders = [claimed_recorder(db, mid, writer=writer) for mid in mids]
    claimed_recorder(db, mids[2], owner="instance-b")  # took the third over
    statements: list[str] = []

    def seen(_conn: Any, _cursor: Any, statement: str, *_args: Any) -> None:
        statements.append(" ".join(statement.split()).split(" ", 1)[0])

    batch: dict[_Recorder, list[Any]] = {
        r: [Sample(elapsed_s=t, memory_total_bytes=64 * MIB, iteration=k + 1) for t in (0.25, 0.5)]
        for k, r in enumerate(recorders)
    }
    with db.session() as s:
        updated_before = s.get_one(Migration, mids[0]).updated_at
    event.listen(db.engine, "before_cursor_execute", seen)
    try:
        writer._write(batch)
    finally:
        event.remove(db.engine, "before_cursor_execute", seen)
    # PostgreSQL: the rows locked in id order, then the progress of those still held
    # (read back by RETURNING), each statement taking arrays, then the samples' COPY;
    # SQLite: the UPDATE executed for each record, then their claims read, then the INSERT
    expected = (
        ["SELECT", "UPDATE"]
        if db.url.get_backend_name() == "postgresql"
        else ["UPDATE", "SELECT", "INSERT"]
    )
    assert [st for st in statements if st in ("SELECT", "UPDATE", "INSERT")] == expected, statements
    with db.session() as s:
        got = [s.get_one(Migration, mid) for mid in mids]
        assert [len(m.samples) for m in got] == [2, 2, 0]
        assert [m.iterations for m in got][:2] == [1, 2]
        assert got[2].iterations != 3
        assert [x.elapsed_s for x in got[1].samples] == [0.25, 0.5]
        assert got[0].updated_at > updated_before  # progress moves it (changes-since)
    for r in recorders:
        r.close()


def test_a_stale_recorder_beside_the_current_one_in_a_batch_writes_no_samples(
    db: Database,
) -> None:
    """The same instance took its own migration over (its lease ran out while the old
    engine thread still sampled): both recorders' samples reach one batch. Only those of
    the claim the record holds are kept, whichever comes first in the batch."""
    with db.session() as s:
        *_, server = add_world(s)
        mid = add_migration(s, server, status=Phase.RUNNING_PRECOPY.value).id
    writer = _RecordWriter(db)
    stale = claimed_recorder(db, mid, writer=writer)
    current = claimed_recorder(db, mid, writer=writer)  # the same owner, fence + 1
    for first, second in ((stale, current), (current, stale)):
        batch: dict[_Recorder, list[Any]] = {
            first: [Sample(elapsed_s=1.0 if first is current else 9.0, memory_total_bytes=MIB)],
            second: [Sample(elapsed_s=1.0 if second is current else 9.0, memory_total_bytes=MIB)],
        }
        writer._write(batch)
    with db.session() as s:
        assert [x.elapsed_s for x in s.get_one(Migration, mid).samples] == [1.0, 1.0]
    for r in (stale, current):
        r.close()
