"""The CLI against orbit-server over real HTTP: the API tests' ``live_server`` (fake driver)."""

from __future__ import annotations

from tests.api.conftest import live_server  # noqa: F401
