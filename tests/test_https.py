"""orbit-server over HTTPS (``tls_cert_file``/``tls_key_file``): the API, the catalog's URLs,
the dashboard's Secure cookie and the CLI (``OS_CACERT``), on a certificate of a CA made for
the test. orbit-server runs as a process with the fake driver; nothing leaves 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from orbit.lab.pki import Authority
from tests.helpers import ServerProcess, run_orbit

PASSWORD = "https-root-pass-4"


@pytest.fixture
def https_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """orbit-server on https://127.0.0.1:PORT; yields its URL and the CA file."""
    ca = Authority()
    issued = ca.issue("orbit-server", addresses=("127.0.0.1",), server=True)
    (tmp_path / "ca.pem").write_bytes(ca.cert_pem)
    (tmp_path / "cert.pem").write_bytes(issued.cert_pem)
    (tmp_path / "key.pem").write_bytes(issued.key_pem)
    env = {"ORBIT_ADMIN_PASSWORD": PASSWORD,
           "ORBIT_TLS_CERT_FILE": str(tmp_path / "cert.pem"),
           "ORBIT_TLS_KEY_FILE": str(tmp_path / "key.pem")}  # fmt: skip
    server = ServerProcess(
        tmp_path, "--database-url", f"sqlite:///{tmp_path}/orbit.db", "--driver", "fake",
        env=env, https_ca=tmp_path / "ca.pem",
    )  # fmt: skip
    try:
        server.wait_ready()
        yield server.url, tmp_path / "ca.pem"
    finally:
        server.stop()


def test_orbit_server_serves_https_and_the_dashboard_cookie_is_secure(
    https_server: tuple[str, Path],
) -> None:
    url, ca = https_server
    with httpx.Client(base_url=url, verify=str(ca), timeout=10.0) as http:
        user = {"name": "admin", "password": PASSWORD}
        r = http.post("/identity/v3/auth/tokens", json={"auth": {"identity": {
            "methods": ["password"], "password": {"user": user}}}})  # fmt: skip
        assert r.status_code == 201, r.text
        catalog = r.json()["token"]["catalog"]
        urls = {ep["url"] for service in catalog for ep in service["endpoints"]}
        assert urls and all(u.startswith(f"{url}/") for u in urls), urls
        login = http.get("/dashboard/login")
        assert login.status_code == 200
        cookie = login.headers["set-cookie"].lower()
        assert "secure" in cookie and "httponly" in cookie, cookie
    # plain HTTP on the same port is not served; a client without the CA refuses the server
    with pytest.raises(httpx.HTTPError):
        httpx.get(url.replace("https", "http") + "/", timeout=5.0)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"{url}/", timeout=5.0)
    env = {"ORBIT_URL": url, "OS_USERNAME": "admin", "OS_PASSWORD": PASSWORD}
    listed = run_orbit("list", env={**env, "OS_CACERT": str(ca)})
    assert listed.returncode == 0, listed.stderr
    refused = run_orbit("list", env={**env, "OS_CACERT": ""})
    assert refused.returncode == 1 and "certificate" in refused.stderr.lower(), refused.stderr
