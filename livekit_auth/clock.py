"""The one source of the current time, so that tests can replace it."""

from datetime import datetime, timezone


def now() -> datetime:
    """Return the current time, timezone-aware, in UTC."""
    return datetime.now(timezone.utc)


def to_the_minute(moment: datetime) -> str:
    """A UTC time to the minute, as people read times here (the admin pages, the CLI's tables)."""
    return moment.strftime("%Y-%m-%d %H:%M")
