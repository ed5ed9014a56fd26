"""The rate limits and quotas of keys and of users, counted at every check a key passes.

A key may carry its own limits and its user's (counted across all the user's keys together).
Rate limits are fixed windows in the limit store, as the per-address limits are. A quota is a
number of passed checks per UTC day or month: its record is the database (the daily request
counts the usage writer adds up), and the limit store counts it between reads of that record,
so that no check writes to the database. A window of a quota opens with the count the record
holds (its seed); in a store that one server's workers share (memory://) it is opened again
from the record every QUOTA_SYNC_SECONDS, so that several servers see each other's checks.
"""

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from typing import Any, NamedTuple

from limits import RateLimitItem, parse_many
from sqlalchemy import bindparam, func, or_, select

from ..config import SettingError
from ..rate_limits import ZERO_WINDOW, Window, store_key
from .models import ApiKey, KeyRequestCount

PERIODS = ("day", "month")
MAX_RATE_LIMITS = 8
RATE_LIMIT_MAX_LENGTH = 200
MAX_QUOTA = 10**15
# How long a server-local store counts a quota before it reads the record again.
QUOTA_SYNC_SECONDS = 10
QUOTA_NOTATION = re.compile(r"\s*([0-9]{1,16})\s*(?:per|/)\s*(day|month)\s*", re.IGNORECASE)
RATE_LIMIT_EXAMPLE = "'100 per minute' or '100 per minute; 5000 per day'"


def parse_rate_limit(text: str) -> tuple[RateLimitItem, ...]:
    """One to MAX_RATE_LIMITS limits in the limits notation, or ValueError saying what is wrong."""
    if len(text) > RATE_LIMIT_MAX_LENGTH:
        raise ValueError(f"a rate limit is at most {RATE_LIMIT_MAX_LENGTH} characters")
    try:
        every = tuple(parse_many(text))
    except ValueError:
        every = ()
    if not every or ZERO_WINDOW.search(text):
        raise ValueError(f"{text!r} is not a rate limit; write it as {RATE_LIMIT_EXAMPLE}")
    if len(every) > MAX_RATE_LIMITS:
        raise ValueError(f"a key or user has at most {MAX_RATE_LIMITS} rate limits")
    if any(limit.amount < 1 for limit in every):
        raise ValueError("a rate limit lets at least 1 request through")
    return every


def rate_limit_text(text: str | None) -> str | None:
    """A rate limit as stored: checked, trimmed, its parts joined by '; '; None or blank is no limit."""
    if text is None or not text.strip():
        return None
    parse_rate_limit(text.strip())
    return "; ".join(part.strip() for part in re.split(r"[,;|]", text) if part.strip())


class Quota(NamedTuple):
    """A number of passed checks per UTC day or month."""

    limit: int
    period: str


def quota(limit: int | None, period: str | None) -> Quota | None:
    """A quota from its two columns, or ValueError; no limit is no quota."""
    if limit is None:
        return None
    if not 1 <= limit <= MAX_QUOTA:
        raise ValueError(f"a quota is from 1 to {MAX_QUOTA:,} checks")
    if period not in PERIODS:
        raise ValueError("a quota's period is day or month")
    return Quota(limit, period)


def parse_quota(text: str) -> Quota:
    """A quota written as '10000 per month' (or per day), or ValueError."""
    match = QUOTA_NOTATION.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a quota; write it as '10000 per month' or '500 per day'")
    parsed = quota(int(match[1]), match[2].lower())
    assert parsed is not None
    return parsed


def period_start(period: str, at: datetime) -> date:
    """The first day of the UTC day or month a moment falls in."""
    day = at.astimezone(timezone.utc).date()
    return day if period == "day" else day.replace(day=1)


def period_end(period: str, at: datetime) -> datetime:
    """When the day or month a moment falls in ends: when its quota is refilled."""
    start = period_start(period, at)
    if period == "day":
        following = start + timedelta(days=1)
    else:
        following = (start + timedelta(days=32)).replace(day=1)
    return datetime.combine(following, time.min, timezone.utc)


class Limits(NamedTuple):
    """One subject's limits: a key's own, or its user's."""

    subject: str  # "key" or "user"
    id: int
    rates: tuple[RateLimitItem, ...]
    quota: Quota | None


def limits_of(subject: str, subject_id: int, rate: str | None, quota_limit: int | None,
              quota_period: str | None) -> Limits | None:
    """A subject's limits from its stored columns; None when it has none."""
    if rate is None and quota_limit is None:
        return None
    rates = parse_rate_limit(rate) if rate is not None else ()
    return Limits(subject, subject_id, rates, quota(quota_limit, quota_period))


@dataclass(frozen=True, slots=True)
class Seed:
    """Where a quota window's opening count is read: a subject's passed checks since a day."""

    subject: str
    id: int
    since: date


class Metered(NamedTuple):
    """A window to count a check in, and what it answers to: its seed (quotas) and its refill."""

    window: Window
    seed: Seed | None
    refills_at: float | None  # a quota's: when its period ends (epoch seconds)


def windows(every: tuple[Limits, ...], prefix: str, shared_store: bool, now: datetime) -> list[Metered]:
    """The windows one check of a key is counted in, for its own and its user's limits."""
    metered = []
    for limits in every:
        scope = (limits.subject, str(limits.id))
        for rate in limits.rates:
            metered.append(Metered(Window(store_key(rate, prefix, scope), rate.amount, rate.get_expiry()), None, None))
        if limits.quota is not None:
            since = period_start(limits.quota.period, now)
            refills_at = period_end(limits.quota.period, now).timestamp()
            seconds = math.ceil(refills_at - now.timestamp())
            if not shared_store:
                seconds = min(seconds, QUOTA_SYNC_SECONDS)
            key = f"{prefix}/quota/{limits.subject}/{limits.id}/{since.isoformat()}"
            window = Window(key, limits.quota.limit, max(seconds, 1), seeded=True)
            metered.append(Metered(window, Seed(limits.subject, limits.id, since), refills_at))
    return metered


class LimitSettings(NamedTuple):
    """What an operator sets on a key or a user: its rate limit (as stored) and its quota."""

    rate_limit: str | None = None
    quota: Quota | None = None

    def describe(self) -> str:
        """The settings as the audit log and the CLI say them."""
        rate = self.rate_limit or "none"
        quota = f"{self.quota.limit} per {self.quota.period}" if self.quota else "none"
        return f"rate limit {rate}, quota {quota}"


NO_LIMITS = LimitSettings()


def settings_of(row: Any) -> LimitSettings:
    """The limits a key's or a user's row carries (or a cached key's own)."""
    return LimitSettings(row.rate_limit, quota(row.quota_limit, row.quota_period))


def set_on(row: Any, settings: LimitSettings) -> None:
    """Write limits onto a key's or a user's row."""
    row.rate_limit = settings.rate_limit
    row.quota_limit = settings.quota.limit if settings.quota else None
    row.quota_period = settings.quota.period if settings.quota else None


def default_limits(config: Mapping[str, Any]) -> LimitSettings:
    """The limits a new key gets unless told otherwise (KEY_RATE_LIMIT_DEFAULT, KEY_QUOTA_DEFAULT)."""
    rate, quota_text = config["KEY_RATE_LIMIT_DEFAULT"], config["KEY_QUOTA_DEFAULT"]
    try:
        rate_limit = rate_limit_text(rate)
    except ValueError as error:
        raise SettingError(f"KEY_RATE_LIMIT_DEFAULT={rate!r}: {error}") from None
    try:
        default_quota = parse_quota(quota_text) if quota_text else None
    except ValueError as error:
        raise SettingError(f"KEY_QUOTA_DEFAULT={quota_text!r}: {error}") from None
    return LimitSettings(rate_limit, default_quota)


def settings_from(rate: str | None, quota_limit: int | None, period: str | None) -> LimitSettings:
    """Limits as an operator writes them (a rate limit's text, a quota and its period), or ValueError.

    Blank text and no quota are no limit; a quota without a period is per month.
    """
    if quota_limit is None and period is not None:
        raise ValueError("a period needs a quota")
    return LimitSettings(rate_limit_text(rate), quota(quota_limit, period or "month"))


# A quota's record: the checks the keys of a limit group (ApiKey.limit_group), or all of a
# user's keys, passed since a day.
QUOTA_USED = {
    subject: select(func.coalesce(func.sum(KeyRequestCount.requests), 0))
    .join(ApiKey, ApiKey.id == KeyRequestCount.key_id)
    .where(whose, KeyRequestCount.day >= bindparam("since"))
    for subject, whose in (
        ("key", or_(ApiKey.id == bindparam("subject"), ApiKey.limit_group == bindparam("subject"))),
        ("user", ApiKey.user_id == bindparam("subject")),
    )
}
