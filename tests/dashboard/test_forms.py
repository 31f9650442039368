"""The Live Migrate form: text to values; the rules are MigrationSettings.resolve's."""

from __future__ import annotations

import pytest

from orbit.dashboard.forms import LiveMigrateForm
from orbit.errors import ConfigError
from orbit.migration.model import Policy


def test_checkboxes_and_fields_are_read_as_the_browser_sends_them() -> None:
    form = LiveMigrateForm.from_form(
        {"host": " h2 ", "post_copy": "on", "block_migration": "on", "csrf_token": "x"}
    )
    assert form == LiveMigrateForm(host="h2", post_copy=True, block_migration=True)
    assert LiveMigrateForm.from_form({"host": ""}).dest_host_name is None  # automatic
    assert LiveMigrateForm.from_form({}) == LiveMigrateForm()


@pytest.mark.parametrize(
    ("fields", "policy", "after"),
    [
        ({}, Policy.PRECOPY, 1),
        ({"post_copy": "on"}, Policy.AUTO, 1),
        ({"post_copy": "on", "post_copy_after_iterations": "0"}, Policy.POSTCOPY, 0),
        ({"post_copy": "on", "migration_policy": "postcopy"}, Policy.POSTCOPY, 1),
        ({"migration_policy": "precopy"}, Policy.PRECOPY, 1),
    ],
)
def test_settings_come_from_migration_settings_resolve(
    fields: dict[str, str], policy: Policy, after: int
) -> None:
    settings = LiveMigrateForm.from_form(fields).settings()
    assert (settings.policy, settings.post_copy_after_iterations) == (policy, after)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"post_copy": "on", "post_copy_after_iterations": "two"}, "'two' is not a whole number"),
        ({"post_copy": "on", "post_copy_after_iterations": "1.5"}, "is not a whole number"),
        ({"post_copy_after_iterations": "3"}, "needs post_copy=true"),
        ({"post_copy": "on", "post_copy_after_iterations": "-1"}, "must be 0..100"),
        ({"migration_policy": "auto"}, "needs post_copy=true"),
        ({"post_copy": "on", "migration_policy": "fastest"}, "must be one of"),
    ],
)
def test_bad_input_is_a_config_error_with_a_readable_message(
    fields: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        LiveMigrateForm.from_form(fields).settings()
