"""Where auto's plan gets the link's rate: history between the two hosts, then configuration."""

from __future__ import annotations

import pytest

from orbit.conductor.conductor import LINK_HISTORY, link_between, previous_pass1
from orbit.db.database import Database
from orbit.db.models import Migration
from orbit.migration.model import MIB
from orbit.migration.predict import LINK_PAYLOAD_SHARE, Facts, make_plan
from tests.conductor.test_recorder import claimed_recorder
from tests.db.test_models import add_migration, add_world


def test_no_history_and_nothing_configured_leaves_it_to_the_engine(db: Database) -> None:
    with db.session() as s:
        _p, _u, h1, h2, _server = add_world(s)
        assert link_between(s, h1, h2) is None


def test_the_destinations_configured_rate_without_history(db: Database) -> None:
    with db.session() as s:
        _p, _u, h1, h2, _server = add_world(s)
        h2.link_mib_s = 100
        link = link_between(s, h1, h2)
        assert link is not None and link.bytes_s == 100 * MIB * LINK_PAYLOAD_SHARE
        assert link.source == "configured for h2"


def test_history_wins_over_configuration_either_way_round(db: Database) -> None:
    with db.session() as s:
        _p, _u, h1, h2, server = add_world(s)
        h2.link_mib_s = 100
        # oldest first: the first two fall out of the last LINK_HISTORY
        rates = [1, 2, 40, 50, 45, 48, 46]
        assert len(rates) == LINK_HISTORY + 2
        for i, rate in enumerate(rates):
            src, dst = (h1, h2) if i % 2 else (h2, h1)
            add_migration(
                s, server, source_host=src, dest_host=dst, transfer_rate_bytes_s=rate * MIB
            )
        add_migration(s, server, source_host=h1, dest_host=h2)  # no rate: not counted
        link = link_between(s, h1, h2)
        assert link is not None and link.bytes_s == pytest.approx(46 * MIB)
        assert link.source == "median of 5 past migration(s) h1 <-> h2"


def test_the_plan_is_recorded_as_soon_as_it_is_made(db: Database) -> None:
    with db.session() as s:
        *_, server = add_world(s)
        mid = add_migration(s, server, status="preparing").id
    facts = Facts(
        ram_bytes=512 * MIB,
        dirty_rate_bytes_s=3000 * MIB,
        bandwidth_bytes_s=50 * MIB,
        downtime_limit_ms=300,
    )
    plan = make_plan(facts, link_source="test", dirty_rate_mode="dirty-bitmap", timeout_s=300)
    recorder = claimed_recorder(db, mid)
    recorder.on_plan(plan)
    recorder.flush()  # written by the recorder's own thread, at once
    with db.session() as s:
        m = s.get_one(Migration, mid)
        assert m.prediction is not None
        assert m.prediction["strategy"] == "postcopy-after-0"
        assert m.prediction["total_s"] == pytest.approx(10.24)
        assert m.prediction["dirty_rate_mode"] == "dirty-bitmap"


def test_the_next_plan_learns_the_servers_last_first_pass(db: Database) -> None:
    with db.session() as s:
        _p, _u, h1, h2, server = add_world(s)
        assert previous_pass1(s, server.id) is None
        add_migration(s, server, source_host=h1, dest_host=h2, pass1_dirtied_bytes=8 * MIB,
                      pass1_s=4.0)  # fmt: skip
        add_migration(s, server, source_host=h2, dest_host=h1, pass1_dirtied_bytes=32 * MIB,
                      pass1_s=10.5)  # fmt: skip
        add_migration(s, server, source_host=h1, dest_host=h2)  # no second pass: skipped
        assert previous_pass1(s, server.id) == (32 * MIB, 10.5)
