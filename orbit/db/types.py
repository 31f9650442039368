"""Column types and value factories shared by the models: UTC timestamps and uuid4 ids.

SQLite has no timestamp-with-time-zone type: SQLAlchemy stores the wall-clock digits and
drops the offset, so an aware datetime written there comes back naive (and a non-UTC one
comes back wrong). :class:`UTCDateTime` fixes both backends to one rule: store UTC, return
aware UTC datetimes, refuse naive ones on the way in.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import DateTime
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator

#: Length of a uuid4 string with dashes, e.g. '0b4f6c9e-3c0a-4d0e-9a43-2f3b9e1b7c55'.
UUID_LEN = 36


def new_id() -> str:
    """A fresh string id: a uuid4, hex with dashes."""
    return str(uuid.uuid4())


def utcnow() -> datetime:
    """The current time, timezone-aware, in UTC."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always returned timezone-aware (UTC), on every backend.

    PostgreSQL stores it as ``timestamp with time zone``; SQLite as text without an offset,
    which is why values are converted to UTC before they are written. A naive datetime is
    refused (``ValueError``, wrapped by SQLAlchemy in ``StatementError``): its zone would be
    a guess, and a wrong guess silently shifts every timestamp of a migration record.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValueError(f"naive datetime {value.isoformat()}: pass an aware one (UTC)")
        return value.astimezone(UTC)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if not isinstance(value, datetime):
            raise TypeError(f"expected a datetime from the database driver, got {value!r}")
        if value.tzinfo is None:  # SQLite: the stored digits are UTC (see process_bind_param)
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
