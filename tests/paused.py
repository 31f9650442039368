"""A post-copy that is paused and whose automatic resume was refused, on the fake driver.

The operator's "resume now" (API ``{"resume": null}``, ``orbit live-migration-resume``, the
dashboard's Resume now) matters only while the engine backs off after a refused resume:
:func:`paused_after_a_refused_resume` gets a migration there with the back-off stretched
to :data:`LONG_BACKOFF_S` (``long_backoff``), so a test that sees it complete within
seconds has seen the operator's request do it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import pytest

from orbit.conductor.conductor import Conductor
from orbit.virt.fake import MIB, FakeDriver, FakeWorkload

#: the engine's automatic retry after a refused resume, in these tests
LONG_BACKOFF_S = 60.0
#: 256 MiB at 1 MiB per tick: post-copy lasts 256 ticks, long enough to cut the link in it
SLOW = FakeWorkload(memory_bytes=256 * MIB, bandwidth_bytes=1 * MIB, dirty_bytes=2 * MIB)
WAIT_S = 30.0


class Http(Protocol):
    """httpx.Client or FastAPI's TestClient."""

    def get(self, url: str, *, headers: dict[str, str]) -> Any: ...

    def post(self, url: str, *, json: Any, headers: dict[str, str]) -> Any: ...


@pytest.fixture
def long_backoff(monkeypatch: pytest.MonkeyPatch) -> None:
    """No automatic resume for a minute after a refused one; hosts probed every 50 ms."""
    import orbit.migration.engine as engine

    monkeypatch.setattr(engine, "RESUME_BACKOFF_FIRST_S", LONG_BACKOFF_S)
    monkeypatch.setattr(engine, "RESUME_BACKOFF_MAX_S", LONG_BACKOFF_S)
    monkeypatch.setattr(engine, "HOST_POLL_S", 0.05)


def wait_for(cond: Callable[[], bool], what: str, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def migration(http: Http, headers: dict[str, str], sid: str, mid: int) -> dict[str, Any]:
    r = http.get(f"/v2.1/servers/{sid}/migrations/{mid}", headers=headers)
    assert r.status_code == 200, r.text
    m: dict[str, Any] = r.json()["migration"]
    return m


def _refused_then_paused(m: dict[str, Any]) -> bool:
    """The engine's first resume was made and the record is postcopy-paused after it."""
    made = [
        d["at_s"]
        for d in m["orbit"]["decisions"]
        if d["action"] == "resume-postcopy" and "skipped" not in d["reason"]
    ]
    paused_at = m["orbit"]["phase_times"].get("postcopy-paused")
    return (
        m["status"] == "postcopy-paused"
        and len(made) == 1
        and paused_at is not None
        and paused_at >= made[0]
    )


@dataclass(frozen=True)
class Paused:
    """The paused migration: server and migration ids, when (monotonic s) the link was cut."""

    sid: str
    mid: int
    cut_at: float


def paused_after_a_refused_resume(
    http: Http,
    headers: dict[str, str],
    driver: FakeDriver,
    conductor: Conductor,
    *,
    src: str = "fake://h1",
    dst: str = "fake://h2",
    dst_name: str = "h2",
    workload: FakeWorkload = SLOW,
) -> Paused:
    """VM ``slow`` in post-copy from ``src`` to ``dst``; the link cut (paused after the
    post-copy stall timeout), back, and the engine's first resume refused: the migration is
    postcopy-paused with its next automatic attempt a minute away."""
    driver.add_domain(src, "slow", workload=workload)
    conductor.sync()
    servers = http.get("/v2.1/servers", headers=headers).json()["servers"]
    sid = str(next(s["id"] for s in servers if s["name"] == "slow"))
    body = {"os-migrateLive": {"host": dst_name, "block_migration": "auto", "post_copy": True,
                               "post_copy_after_iterations": 0}}  # fmt: skip
    r = http.post(f"/v2.1/servers/{sid}/action", json=body, headers=headers)
    assert r.status_code == 202, r.text
    listed = http.get(f"/v2.1/servers/{sid}/migrations", headers=headers).json()["migrations"]
    mid = int(listed[0]["id"])
    wait_for(lambda: migration(http, headers, sid, mid)["status"] == "running-postcopy",
             "running-postcopy")  # fmt: skip
    driver.resume_refusals = 1
    driver.hosts[dst].up = False  # no bytes move: paused after the post-copy stall timeout
    cut_at = time.monotonic()
    wait_for(lambda: migration(http, headers, sid, mid)["status"] == "postcopy-paused",
             "postcopy-paused")  # fmt: skip
    driver.hosts[dst].up = True
    wait_for(lambda: _refused_then_paused(migration(http, headers, sid, mid)),
             "the engine's resume refused and paused again")  # fmt: skip
    return Paused(sid, mid, cut_at)


def resumed_by_the_operator(m: dict[str, Any]) -> bool:
    """Completed, with a second resume made by the operator."""
    made = [
        d["source"]
        for d in m["orbit"]["decisions"]
        if d["action"] == "resume-postcopy" and "skipped" not in d["reason"]
    ]
    return m["status"] == "completed" and made == ["engine", "operator"]
