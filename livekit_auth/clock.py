"""The one source of the current time, so that tests can replace it."""

from datetime import datetime, timezone


def now() -> datetime:
    """Return the current time, timezone-aware, in UTC."""
    return datetime.now(timezone.utc)
