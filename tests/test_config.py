"""orbit-server's settings: defaults < file < environment < command line."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest

from orbit.config import ServerConfig, load_config
from orbit.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[1] / "deploy" / "systemd" / "orbit.toml.example"


def test_defaults_are_the_embedded_setup() -> None:
    c = load_config(env={})
    assert c.bind == "127.0.0.1:8774" and c.database_url.startswith("sqlite:////")
    assert c.base_url == "http://127.0.0.1:8774"


def test_precedence(tmp_path: Path) -> None:
    f = tmp_path / "orbit.toml"
    f.write_text('bind = "127.0.0.1:9000"\ntoken_ttl_s = 60\nsync_interval_s = 3\n')
    c = load_config(f, env={"ORBIT_TOKEN_TTL_S": "120"}, overrides={"bind": "127.0.0.1:9100"})
    assert (c.bind, c.token_ttl_s, c.sync_interval_s) == ("127.0.0.1:9100", 120, 3.0)


def test_example_file_is_valid() -> None:
    assert set(tomllib.loads(EXAMPLE.read_text())) <= set(ServerConfig.__dataclass_fields__)
    assert load_config(EXAMPLE, env={}).bind == "127.0.0.1:8774"


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("bind = 'nonsense'", "--bind must be HOST:PORT"),
        ("token_ttl_s = 0", "token_ttl_s must be >= 1"),
        ("colour = 'blue'", "unknown setting 'colour'"),
        ("driver = 'xen'", "driver must be"),
        ("token_ttl_s = 'soon'", "must be a number"),
        ("bind = ", "not valid TOML"),
        ("tls_cert_file = '/etc/hostname'", "both tls_cert_file and tls_key_file"),
        ("tls_cert_file = '/nonexistent.pem'\ntls_key_file = '/etc/hostname'", "cannot be read"),
    ],
)
def test_bad_settings_are_one_clear_error(tmp_path: Path, text: str, needle: str) -> None:
    f = tmp_path / "orbit.toml"
    f.write_text(text + "\n")
    with pytest.raises(ConfigError, match=needle):
        load_config(f, env={})


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "nope.toml", env={})
