"""Input that a careless server answers with a 500 or a lot of memory: every answer is a
4xx with a message, on SQLite and PostgreSQL, and nothing changes."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from orbit.api.limits import MAX_BODY_BYTES
from tests.api.conftest import Api, LiveServer


def _message(r: httpx.Response) -> str:
    (body,) = r.json().values()
    return str(body["message"])


NUL_PATHS = [
    "/v2.1/servers/%00",
    "/v2.1/servers?name=%00",
    "/v2.1/os-migrations?host=a%00b",
    "/v2.1/os-hypervisors/%00",
    "/identity/v3/users/%00",
]
LONG = "x" * 2000
LONG_PATHS = [
    f"/v2.1/servers/{LONG}",
    f"/v2.1/servers/{LONG}/migrations",
    f"/v2.1/os-hypervisors/{LONG}",
    f"/v2.1/os-hypervisors/detail?hypervisor_hostname_pattern={LONG}",
    f"/v2.1/os-migrations?host={LONG}",
    f"/v2.1/orbit-drains?host={LONG}",
    f"/v2.1/servers?name={LONG}",
]


def test_a_nul_character_in_the_url_is_400(api: Api) -> None:
    before = api.snapshot()
    for path in NUL_PATHS:
        r = api.get(path)
        assert r.status_code == 400, (path, r.status_code, r.text[:200])
        assert "NUL" in _message(r)
    assert api.snapshot() == before


def test_long_strings_are_answered_not_500(api: Api) -> None:
    """Longer than any column: not found, or nothing matches."""
    for path in LONG_PATHS:
        r = api.get(path)
        assert r.status_code in (200, 400, 404), (path[:80], r.status_code, r.text[:200])


def test_a_nul_in_a_body_or_a_user_name_is_4xx(api: Api) -> None:
    before = api.snapshot()
    r = api.post("/v2.1/orbit-hosts", {"name": "h\x009", "uri": "qemu+tcp://h9/system"})
    assert 400 <= r.status_code < 500, r.text
    body = {"auth": {"identity": {"methods": ["password"],
            "password": {"user": {"name": "ad\x00min", "password": "x"}}}}}  # fmt: skip
    r = api.client.post("/identity/v3/auth/tokens", json=body)
    assert r.status_code in (400, 401), r.text
    assert api.snapshot() == before


def test_a_body_over_the_limit_is_413_before_authentication(api: Api) -> None:
    """No token at all: the size is refused first, without reading the body."""
    big = b"x" * (MAX_BODY_BYTES + 1)
    for path in ("/v2.1/servers/any/action", "/identity/v3/auth/tokens", "/dashboard/login"):
        r = api.client.post(path, content=big, headers={"Content-Type": "application/json"})
        assert r.status_code == 413, (path, r.status_code)
        assert f"{MAX_BODY_BYTES:,} bytes" in r.text
    # within the limit it is parsed (and refused for what it is)
    r = api.client.post("/v2.1/servers/any/action", content=b"{}")
    assert r.status_code == 401


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_a_chunked_body_is_cut_off_at_the_limit(live_server: LiveServer) -> None:
    """Without a Content-Length the body is counted as it arrives."""
    sent: list[int] = []

    def chunks() -> Iterator[bytes]:
        for _ in range(64):  # 4 MiB offered in 64 KiB pieces
            sent.append(1)
            yield b"x" * 65_536

    with httpx.Client(base_url=live_server.url, timeout=10.0, trust_env=False) as http:
        r = http.post("/v2.1/servers/any/action", content=chunks())
    assert r.status_code == 413, r.text
    assert "bytes" in _message(r)


def test_a_wrong_method_is_405_with_allow(api: Api) -> None:
    r = api.client.delete("/v2.1/servers", headers=api.headers())
    assert r.status_code == 405
    assert "GET" in r.headers["Allow"]
    assert _message(r)


def test_no_page_loads_anything_from_another_site(api: Api) -> None:
    """Swagger UI (/docs) would load from a CDN: it is not served; the document is."""
    assert api.client.get("/docs").status_code == 404
    assert api.client.get("/openapi.json").status_code == 200
