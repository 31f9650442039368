"""``orbit-server``'s settings: defaults, then a TOML file, then ``ORBIT_*`` variables, then flags.

Every setting has a default that runs the embedded set-up (SQLite, 127.0.0.1:8774). The
file (``--config PATH`` or ``$ORBIT_CONFIG``) holds the same keys as :class:`ServerConfig`'s
fields, e.g.::

    bind = "127.0.0.1:8774"
    database_url = "sqlite:////var/lib/orbit/orbit.db"
    token_ttl_s = 3600

and ``ORBIT_<KEY>`` in the environment overrides the file (``ORBIT_DATABASE_URL=…``).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from orbit.db.database import DEFAULT_URL
from orbit.errors import ConfigError
from orbit.migration.model import DEFAULT_POSTCOPY_STALL_S, DEFAULT_STALL_TIMEOUT_S

DEFAULT_BIND = "127.0.0.1:8774"
DEFAULT_TOKEN_TTL_S = 3600
DEFAULT_SYNC_INTERVAL_S = 10.0
DEFAULT_MAX_OUTGOING = 1
DEFAULT_MAX_INCOMING = 1
MAX_TOKEN_TTL_S = 30 * 24 * 3600
DEFAULT_LEASE_S = 6.0


@dataclass(frozen=True)
class ServerConfig:
    bind: str = DEFAULT_BIND
    database_url: str = DEFAULT_URL
    #: the URL clients reach this server at (service catalog); derived from bind if empty
    public_url: str = ""
    token_ttl_s: int = DEFAULT_TOKEN_TTL_S
    #: how often hosts and their servers are re-read from libvirt
    sync_interval_s: float = DEFAULT_SYNC_INTERVAL_S
    #: concurrent migrations per host, leaving it / arriving at it (the rest queue)
    max_outgoing_per_host: int = DEFAULT_MAX_OUTGOING
    max_incoming_per_host: int = DEFAULT_MAX_INCOMING
    #: no bytes moved for this long: abort pre-copy (the VM stays on the source)
    stall_timeout_s: float = DEFAULT_STALL_TIMEOUT_S
    #: no bytes moved in post-copy for this long: pause it, resume when the link answers
    postcopy_stall_s: float = DEFAULT_POSTCOPY_STALL_S
    #: 'libvirt' (real hosts) or 'fake' (tests and demos without hypervisors)
    driver: str = "libvirt"
    log_level: str = "INFO"
    #: several instances on one PostgreSQL: a migration's claim lasts this long unless its
    #: instance renews it (every third of it); a dead instance's are taken over after it
    lease_s: float = DEFAULT_LEASE_S
    #: serve HTTPS with this certificate chain and key (PEM files); both or neither
    tls_cert_file: str = ""
    tls_key_file: str = ""

    @property
    def host_port(self) -> tuple[str, int]:
        host, sep, port = self.bind.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ConfigError(f"--bind must be HOST:PORT, e.g. {DEFAULT_BIND}, got {self.bind!r}")
        return host, int(port)

    @property
    def base_url(self) -> str:
        if self.public_url:
            return self.public_url.rstrip("/")
        host, port = self.host_port
        return f"{'https' if self.https else 'http'}://{host}:{port}"

    @property
    def https(self) -> bool:
        return bool(self.tls_cert_file)

    def validate(self) -> ServerConfig:
        self.host_port  # noqa: B018 - raises on a bad bind
        for name in ("token_ttl_s", "max_outgoing_per_host", "max_incoming_per_host"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.token_ttl_s > MAX_TOKEN_TTL_S:
            raise ConfigError(f"token_ttl_s must be <= {MAX_TOKEN_TTL_S} s, got {self.token_ttl_s}")
        if self.log_level.upper() not in ("DEBUG", "INFO", "WARNING", "ERROR"):
            raise ConfigError(
                f"log_level must be DEBUG, INFO, WARNING or ERROR, got {self.log_level!r}"
            )
        if self.stall_timeout_s <= 0:
            raise ConfigError(f"stall_timeout_s must be > 0 s, got {self.stall_timeout_s}")
        if self.postcopy_stall_s <= 0:
            raise ConfigError(f"postcopy_stall_s must be > 0 s, got {self.postcopy_stall_s}")
        if not 1.0 <= self.lease_s <= 300.0:
            raise ConfigError(f"lease_s must be 1..300 s, got {self.lease_s}")
        if self.sync_interval_s <= 0:
            raise ConfigError(f"sync_interval_s must be > 0 s, got {self.sync_interval_s}")
        if bool(self.tls_cert_file) != bool(self.tls_key_file):
            raise ConfigError("HTTPS needs both tls_cert_file and tls_key_file, or neither")
        for name in ("tls_cert_file", "tls_key_file"):
            path = getattr(self, name)
            if path and not os.access(path, os.R_OK):
                raise ConfigError(f"{name} {path} cannot be read")
        if self.driver not in ("libvirt", "fake"):
            raise ConfigError(f"driver must be 'libvirt' or 'fake', got {self.driver!r}")
        return self


def _coerce(name: str, raw: Any, default: Any) -> Any:
    try:
        if isinstance(default, bool):
            return str(raw).lower() in ("1", "true", "yes", "on")
        if isinstance(default, int):
            return int(raw)
        if isinstance(default, float):
            return float(raw)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"setting {name} must be a number, got {raw!r}") from err
    return str(raw)


def load_config(
    path: Path | None = None,
    *,
    env: dict[str, str] | None = None,
    overrides: dict[str, Any] | None = None,
) -> ServerConfig:
    """Defaults < file < ``ORBIT_*`` environment < ``overrides`` (the command line)."""
    env = dict(os.environ) if env is None else env
    config = ServerConfig()
    known = {f.name: getattr(config, f.name) for f in fields(ServerConfig)}
    values: dict[str, Any] = {}
    path = path or (Path(env["ORBIT_CONFIG"]) if env.get("ORBIT_CONFIG") else None)
    if path is not None:
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except OSError as err:
            raise ConfigError(f"cannot read config file {path}: {err.strerror}") from err
        except tomllib.TOMLDecodeError as err:
            raise ConfigError(f"config file {path} is not valid TOML: {err}") from err
        for key, raw in data.items():
            if key not in known:
                raise ConfigError(f"config file {path}: unknown setting {key!r}")
            values[key] = _coerce(key, raw, known[key])
    for key, default in known.items():
        raw = env.get(f"ORBIT_{key.upper()}")
        if raw:
            values[key] = _coerce(key, raw, default)
    for key, raw in (overrides or {}).items():
        if raw is not None:
            values[key] = _coerce(key, raw, known[key])
    return replace(config, **values).validate()
