"""The Live Migrate and Drain host forms: what the browser sent, as typed, and what it asks.

The form only turns text into values (a checkbox into a bool, "3" into 3). Every rule about
what may be combined is :meth:`MigrationSettings.resolve`'s and the conductor's, the same
code the API calls, so the dashboard cannot accept what the API refuses or the reverse.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from starlette.datastructures import FormData

from orbit.conductor.drains import DrainRequest
from orbit.errors import (
    ConfigError,
    InvalidMigration,
    InvalidState,
    MigrationInProgress,
    NoValidHost,
)
from orbit.migration.model import MigrationSettings, Policy

#: errors shown in the form (with its values kept), not as an error page
FORM_ERRORS = (ConfigError, InvalidMigration, InvalidState, MigrationInProgress, NoValidHost)

#: what a checked checkbox sends (an unchecked one sends nothing)
CHECKED = "on"

POST_COPY_HELP = (
    "Move the VM at once and copy its remaining memory on demand; "
    "guarantees the migration finishes."
)
POLICY_CHOICES: tuple[tuple[str, str], ...] = (
    ("", "Default (auto with post-copy, else pre-copy)"),
    (Policy.PRECOPY.value, "precopy: never switch to post-copy"),
    (Policy.POSTCOPY.value, "postcopy: switch after N iterations"),
    (Policy.AUTO.value, "auto: switch when pre-copy will not converge"),
)


def _text(data: Mapping[str, object], key: str) -> str:
    value = data.get(key)
    return value.strip() if isinstance(value, str) else ""


@dataclass(frozen=True)
class LiveMigrateForm:
    """The form's fields as the browser sent them (re-filled into the form on an error)."""

    #: a host name, or "" to let the scheduler choose
    host: str = ""
    block_migration: bool = False
    disk_over_commit: bool = False
    post_copy: bool = False
    #: "" = not given
    post_copy_after_iterations: str = ""
    #: "" = not given (MigrationSettings.resolve picks it)
    migration_policy: str = ""

    @classmethod
    def from_form(cls, data: Mapping[str, object]) -> LiveMigrateForm:
        return cls(
            host=_text(data, "host"),
            block_migration=_text(data, "block_migration") == CHECKED,
            disk_over_commit=_text(data, "disk_over_commit") == CHECKED,
            post_copy=_text(data, "post_copy") == CHECKED,
            post_copy_after_iterations=_text(data, "post_copy_after_iterations"),
            migration_policy=_text(data, "migration_policy"),
        )

    @property
    def dest_host_name(self) -> str | None:
        return self.host or None

    def settings(self) -> MigrationSettings:
        """The migration's settings; ConfigError (shown in the form) if they are not valid."""
        after: int | None = None
        if self.post_copy_after_iterations:
            try:
                after = int(self.post_copy_after_iterations)
            except ValueError as err:
                raise ConfigError(
                    "switch to post-copy after N iterations: "
                    f"{self.post_copy_after_iterations!r} is not a whole number"
                ) from err
        return MigrationSettings.resolve(
            post_copy=self.post_copy,
            policy=self.migration_policy or None,
            post_copy_after_iterations=after,
            block_migration=self.block_migration,
        )


@dataclass(frozen=True)
class DrainForm:
    """The drain form's fields as the browser sent them."""

    #: the checked destinations; none = any enabled host
    to: tuple[str, ...] = ()
    post_copy: bool = False
    max_parallel: str = "1"
    #: "" = no deadline
    deadline_s: str = ""

    @classmethod
    def from_form(cls, data: FormData) -> DrainForm:
        return cls(
            to=tuple(v for v in data.getlist("to") if isinstance(v, str) and v),
            post_copy=_text(data, "post_copy") == CHECKED,
            max_parallel=_text(data, "max_parallel") or "1",
            deadline_s=_text(data, "deadline_s"),
        )

    def request(self, host: str) -> DrainRequest:
        """The drain request; ConfigError (shown in the form) for a number that is not one."""
        try:
            parallel = int(self.max_parallel)
        except ValueError as err:
            raise ConfigError(
                f"migrations at once: {self.max_parallel!r} is not a whole number"
            ) from err
        deadline: float | None = None
        if self.deadline_s:
            try:
                deadline = float(self.deadline_s)
            except ValueError as err:
                raise ConfigError(
                    f"deadline: {self.deadline_s!r} is not a number of seconds"
                ) from err
        return DrainRequest(host, list(self.to) or None, self.post_copy, parallel, deadline)
