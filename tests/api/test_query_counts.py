"""The read endpoints cost a fixed number of queries, however long their lists (a query per
row made a page of 50 migrations cost 51 queries)."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import event, select

from orbit.db.models import Host, Migration, Server
from orbit.identity.service import forget_tokens
from tests.api.conftest import Api

#: the reads the dashboard and clients page through; with their token's check, at most
#: this many queries each
PATHS = {
    "/v2.1/servers/detail?limit=50": 2,
    "/v2.1/servers?limit=50": 2,
    "/v2.1/os-migrations?limit=50": 2,
    "/v2.1/os-hypervisors/detail": 2,
    "/v2.1/os-services": 2,
}
MORE = 20


def _queries(api: Api, path: str) -> int:
    """How many statements one request for ``path`` sends to the database, its token's
    check included (the validation the API would reuse for a moment is forgotten)."""
    statements: list[str] = []
    forget_tokens()

    def seen(*args: Any) -> None:
        statements.append(str(args[2]))

    event.listen(api.db.engine, "before_cursor_execute", seen)
    try:
        r = api.get(path, headers=api.headers(version="2.80"))
    finally:
        event.remove(api.db.engine, "before_cursor_execute", seen)
    assert r.status_code == 200, r.text
    return len(statements)


def _add_rows(api: Api, n: int, tag: str) -> None:
    """``n`` more hosts, each with a server that has a finished and an unfinished migration."""
    with api.db.session() as s:
        source = s.scalar(select(Host).where(Host.name == "h1"))
        assert source is not None
        for i in range(n):
            host = Host(name=f"{tag}{i}", uri=f"fake://{tag}{i}")
            server = Server(id=str(uuid.uuid4()), name=f"{tag}-vm{i}", host=host, status="ACTIVE")
            s.add_all([host, server])
            s.flush()
            for status in ("completed", "running-precopy"):
                s.add(Migration(server_id=server.id, source_host_id=source.id,
                                dest_host_id=host.id, status=status))  # fmt: skip


def test_lists_cost_the_same_queries_for_one_row_and_for_many(api: Api) -> None:
    api.wait_for(lambda: len(api.get("/v2.1/servers").json()["servers"]) == 2, "discovery")
    api.conductor.stop()  # nothing else queries the database meanwhile
    _add_rows(api, 1, "one")
    few = {path: _queries(api, path) for path in PATHS}
    _add_rows(api, MORE, "more")
    many = {path: _queries(api, path) for path in PATHS}
    assert many == few
    for path, most in PATHS.items():
        assert few[path] <= most, (path, few[path])
