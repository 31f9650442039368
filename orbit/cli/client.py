"""The CLI's HTTP client for orbit-server (or any Nova-compatible endpoint).

Credentials, first match wins:

1. ``ORBIT_URL`` and ``ORBIT_TOKEN``: the compute root (e.g. http://127.0.0.1:8774) and a
   token (``ORBIT_URL`` alone with ``OS_USERNAME``/``OS_PASSWORD`` logs in there);
2. ``OS_CLOUD``: that entry of ``clouds.yaml`` (./, ~/.config/openstack/, /etc/openstack/);
3. ``OS_AUTH_URL``, ``OS_USERNAME``, ``OS_PASSWORD`` [, ``OS_PROJECT_NAME``].

``OS_CACERT`` names a CA bundle to verify an HTTPS orbit-server with (as OpenStack's).

With a password, the client logs in at the identity endpoint and takes the compute URL
from the service catalog, as OpenStack clients do. Every failure is a
:class:`~orbit.errors.ClientError` with one readable line.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import httpx
import yaml  # type: ignore[import-untyped]

from orbit.errors import ClientError

#: 2.65: a queued migration can be aborted; before 2.88: hypervisors carry memory figures
MICROVERSION = "2.65"
TIMEOUT_S = 30.0
CLOUDS_YAML_DIRS = (Path.cwd(), Path.home() / ".config" / "openstack", Path("/etc/openstack"))


@dataclass(frozen=True)
class Credentials:
    auth_url: str | None = None
    username: str | None = None
    password: str | None = None
    project_name: str | None = None
    compute_url: str | None = None
    token: str | None = None
    #: a CA bundle to verify an HTTPS endpoint with (``$OS_CACERT``); None: the system's
    cacert: str | None = None


def _from_clouds_yaml(cloud: str) -> Credentials:
    for directory in CLOUDS_YAML_DIRS:
        path = directory / "clouds.yaml"
        if not path.exists():
            continue
        try:
            doc = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError) as err:
            raise ClientError(f"cannot read {path}: {err}") from err
        entry = (doc.get("clouds") or {}).get(cloud)
        if entry is None:
            continue
        auth = entry.get("auth") or {}
        return Credentials(
            auth_url=auth.get("auth_url"),
            username=auth.get("username"),
            password=auth.get("password"),
            project_name=auth.get("project_name"),
        )
    raise ClientError(f"cloud {cloud!r} not found in any clouds.yaml")


def credentials_from_env(env: dict[str, str] | None = None) -> Credentials:
    env = dict(os.environ) if env is None else env
    return replace(_credentials(env), cacert=env.get("OS_CACERT") or None)


def _credentials(env: dict[str, str]) -> Credentials:
    if env.get("ORBIT_URL"):
        return Credentials(
            auth_url=f"{env['ORBIT_URL'].rstrip('/')}/identity/v3",
            username=env.get("OS_USERNAME"),
            password=env.get("OS_PASSWORD"),
            project_name=env.get("OS_PROJECT_NAME"),
            compute_url=f"{env['ORBIT_URL'].rstrip('/')}/v2.1",
            token=env.get("ORBIT_TOKEN"),
        )
    if env.get("OS_CLOUD"):
        return _from_clouds_yaml(env["OS_CLOUD"])
    if env.get("OS_AUTH_URL"):
        return Credentials(
            auth_url=env["OS_AUTH_URL"],
            username=env.get("OS_USERNAME"),
            password=env.get("OS_PASSWORD"),
            project_name=env.get("OS_PROJECT_NAME"),
        )
    raise ClientError(
        "no credentials: set ORBIT_URL and ORBIT_TOKEN, or OS_CLOUD, or OS_AUTH_URL, "
        "OS_USERNAME and OS_PASSWORD"
    )


def error_message(text: str, reason: str) -> str:
    """The message of an error answer: Nova's or Keystone's body, else its text."""
    try:
        body = json.loads(text)
    except ValueError:
        return text.strip()[:200] or reason
    if isinstance(body, dict) and len(body) == 1:
        inner = next(iter(body.values()))
        if isinstance(inner, dict) and "message" in inner:
            return str(inner["message"])
    return str(body)[:200]


class Compute:
    """What the commands need of the compute API; a subclass says how a request travels
    (:class:`Client` with httpx and its own log-in; the ``openstack`` plugin with the
    keystoneauth session of ``openstack`` itself)."""

    def request(self, method: str, path: str, body: Any = None) -> Any:
        """Send ``method path`` (under the compute root) and return the JSON answer (None
        when empty); raise ClientError with the server's message for a 4xx or 5xx."""
        raise NotImplementedError

    def get(self, path: str) -> Any:
        return self.request("GET", path)

    def post(self, path: str, body: Any) -> Any:
        return self.request("POST", path, body)

    def delete(self, path: str) -> Any:
        return self.request("DELETE", path)

    def find_server(self, ref: str) -> dict[str, Any]:
        """A server by id or by (unique) name."""
        servers: list[dict[str, Any]] = self.get("/servers/detail")["servers"]
        for s in servers:
            if s["id"] == ref:
                return s
        named = [s for s in servers if s["name"] == ref]
        if len(named) == 1:
            return named[0]
        if named:
            raise ClientError(f"{len(named)} servers are named {ref!r}: use the id")
        raise ClientError(f"no server with id or name {ref!r}")


class Client(Compute):
    """A logged-in session against the compute API."""

    def __init__(self, creds: Credentials, *, transport: httpx.BaseTransport | None = None):
        self._http = httpx.Client(
            timeout=TIMEOUT_S, transport=transport, verify=creds.cacert or True
        )
        self.creds = creds
        self.token = creds.token
        self.compute_url = creds.compute_url
        if self.token is None:
            self._login()
        if self.compute_url is None:
            raise ClientError("no compute endpoint: the service catalog has none")

    def _login(self) -> None:
        c = self.creds
        if not (c.auth_url and c.username and c.password):
            raise ClientError("no token and no user name/password to log in with")
        body: dict[str, Any] = {
            "auth": {
                "identity": {
                    "methods": ["password"],
                    "password": {
                        "user": {"name": c.username, "password": c.password,
                                 "domain": {"name": "Default"}}
                    },
                }
            }
        }  # fmt: skip
        if c.project_name:
            body["auth"]["scope"] = {
                "project": {"name": c.project_name, "domain": {"name": "Default"}}
            }
        url = c.auth_url.rstrip("/")
        if not url.endswith("/v3"):
            url += "/v3"
        response = self._send("POST", f"{url}/auth/tokens", json=body, auth=False)
        self.token = response.headers.get("X-Subject-Token")
        if self.compute_url is None:
            for service in response.json()["token"].get("catalog", []):
                if service.get("type") == "compute":
                    for ep in service.get("endpoints", []):
                        if ep.get("interface") == "public":
                            self.compute_url = ep["url"].rstrip("/")

    def _send(
        self, method: str, url: str, *, json: Any = None, auth: bool = True
    ) -> httpx.Response:
        headers = {"OpenStack-API-Version": f"compute {MICROVERSION}"}
        if auth and self.token:
            headers["X-Auth-Token"] = self.token
        try:
            response = self._http.request(method, url, json=json, headers=headers)
        except httpx.HTTPError as err:
            raise ClientError(f"cannot reach {url.split('/v2')[0]}: {err}") from err
        if response.status_code >= 400:
            raise ClientError(
                f"{error_message(response.text, response.reason_phrase)} "
                f"(HTTP {response.status_code})",
                response.status_code,
            )
        return response

    def request(self, method: str, path: str, body: Any = None) -> Any:
        response = self._send(method, f"{self.compute_url}{path}", json=body)
        return response.json() if response.content else None

    @property
    def identity_url(self) -> str:
        """The identity v3 root (e.g. http://127.0.0.1:8774/identity/v3)."""
        url = (self.creds.auth_url or "").rstrip("/")
        if not url:
            raise ClientError("no identity endpoint: set ORBIT_URL or OS_AUTH_URL")
        return url if url.endswith("/v3") else f"{url}/v3"

    def identity(self, method: str, path: str, body: Any = None) -> Any:
        """Send ``method path`` under the identity v3 root; the JSON answer or None."""
        response = self._send(method, f"{self.identity_url}{path}", json=body)
        return response.json() if response.content else None
