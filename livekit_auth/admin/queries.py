"""What the admin pages read: pages of keys, the overview, the audit log.

Every query walks an index. Counts over the whole table are the one exception, so they are
kept for OVERVIEW_SECONDS per worker instead of being recomputed on each page view; and the
near-quota filter, which reads the current period's counts of each key with a quota.
"""

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from flask import current_app
from sqlalchemy import ColumnElement, Select, and_, func, or_, select
from sqlalchemy.orm import InstrumentedAttribute, aliased

from ..apikeys import reports
from ..apikeys.meter import PERIODS, period_start
from ..apikeys.models import (
    ApiKey, AuditEvent, KeyRequestCount, KeyStatus, KeyUseCount, User, live_condition, status_condition,
)
from ..extensions import db
from ..schemas import timestamp

PAGE_SIZE = 50
CHART_DAYS = 30
OVERVIEW_SECONDS = 60
SORTS = {"created": ApiKey.created_at, "last_used": ApiKey.last_used_at}
EXPIRING_DAYS = 7
# The list's status filters: the statuses, active keys that expire within EXPIRING_DAYS, and
# live keys that used NEAR_QUOTA_PERCENT of their quota this period.
STATUS_FILTERS = ("active", "expiring", "near_quota", "suspended", "revoked", "expired")
NEAR_QUOTA_PERCENT = 80


@dataclass
class Page:
    """One page of rows, and whether there are more after it."""

    rows: list[Any]
    number: int
    has_next: bool


@dataclass
class Overview:
    """Counts of keys by state, and keys created and used on each recent day."""

    active: int
    revoked: int
    stale: int
    days: list[date]
    created_per_day: list[int]
    used_per_day: list[int]


def starts_with(column: InstrumentedAttribute[Any], prefix: str) -> ColumnElement[bool]:
    """column LIKE 'prefix%', with a range the column's B-tree index can answer."""
    escaped = prefix.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return and_(column >= prefix, column < prefix + "\U0010ffff", column.like(escaped + "%", escape="\\"))


def search(query: Select[Any], text: str) -> Select[Any]:
    """Narrow to keys whose prefix, or whose owner's email, name or organisation, starts with text.

    A whole key is never searched for here: the search form opens its page (views.search).
    """
    if text.startswith("lvk_"):
        return query.where(starts_with(ApiKey.display_prefix, text))
    term = text.lower()
    return query.where(
        or_(
            starts_with(User.email_canonical, term),
            starts_with(User.name_lower, term),
            starts_with(User.org_name_lower, term),
        )
    )


def status_filter(name: str, now: datetime) -> ColumnElement[bool] | None:
    """The condition of one of STATUS_FILTERS; None for any other name (no filter)."""
    if name == "near_quota":
        return near_quota(now)
    if name == "expiring":
        return and_(status_condition(KeyStatus.ACTIVE, now), ApiKey.expires_at <= now + timedelta(days=EXPIRING_DAYS))
    if name in STATUS_FILTERS:
        return status_condition(KeyStatus(name), now)
    return None


def near_quota(now: datetime) -> ColumnElement[bool]:
    """SQL for live keys whose limit group used NEAR_QUOTA_PERCENT or more of their quota in its current period."""
    member = aliased(ApiKey)
    group = func.coalesce(ApiKey.limit_group, ApiKey.id)

    def used_since(since: date) -> ColumnElement[int]:
        return (
            select(func.coalesce(func.sum(KeyRequestCount.requests), 0))
            .join(member, member.id == KeyRequestCount.key_id)
            .where(or_(member.id == group, member.limit_group == group), KeyRequestCount.day >= since)
            .scalar_subquery()
        )

    return and_(live_condition(now), ApiKey.quota_limit.is_not(None), or_(*(
        and_(ApiKey.quota_period == period, used_since(period_start(period, now)) * 100
             >= ApiKey.quota_limit * NEAR_QUOTA_PERCENT)
        for period in PERIODS
    )))


def listed_keys(text: str, status: str, sort: str, now: datetime) -> Select[Any]:
    """Keys with their owners as the list shows them: searched, filtered, in the sort's order."""
    query = select(ApiKey, User).join(User, ApiKey.user_id == User.id)
    if text:
        query = search(query, text)
    condition = status_filter(status, now)
    if condition is not None:
        query = query.where(condition)
    column = SORTS.get(sort, ApiKey.created_at)
    if column is ApiKey.last_used_at:
        query = query.where(ApiKey.last_used_at.is_not(None))  # keys never used have no place in it
    return query.order_by(column.desc(), ApiKey.id.desc())


EXPORT_BATCH = 500


def export_batches(text: str, status: str, sort: str, now: datetime) -> Iterator[list[list[Any]]]:
    """Every key the list would show, as the rows of the CSV export, EXPORT_BATCH rows at a time."""
    result = db.session.execute(listed_keys(text, status, sort, now).execution_options(yield_per=EXPORT_BATCH))
    for batch in result.partitions():
        requests = reports.recent_requests(db.session, [key.id for key, _ in batch], now.date())
        yield [
            [
                key.id, key.display_prefix, key.name or "", key.state(now), user.name, user.email,
                user.org_name or "", *(timestamp(moment) if moment else "" for moment in (
                    key.created_at, key.expires_at, key.last_used_at, key.revoked_at)),
                requests.get(key.id, 0),
            ]
            for key, user in batch
        ]


def key_page(text: str, status: str, sort: str, number: int, now: datetime) -> Page:
    """A page of keys with their owners, newest (or most recently used) first."""
    query = listed_keys(text, status, sort, now)
    rows = db.session.execute(query.offset((number - 1) * PAGE_SIZE).limit(PAGE_SIZE + 1)).all()
    return Page(rows[:PAGE_SIZE], number, len(rows) > PAGE_SIZE)


def audit_page(number: int) -> Page:
    """A page of the audit log, newest first."""
    query = select(AuditEvent).order_by(AuditEvent.at.desc(), AuditEvent.id.desc())
    rows = list(db.session.scalars(query.offset((number - 1) * PAGE_SIZE).limit(PAGE_SIZE + 1)))
    return Page(rows[:PAGE_SIZE], number, len(rows) > PAGE_SIZE)


def count_keys(*conditions: ColumnElement[bool]) -> int:
    """How many keys meet every condition."""
    return db.session.scalar(select(func.count()).select_from(ApiKey).where(*conditions)) or 0


def compute_overview(now: datetime) -> Overview:
    """Count keys by state and by day; the costly part of the overview."""
    rotation_age = timedelta(days=current_app.config["ROTATION_AGE_DAYS"])
    active = status_condition(KeyStatus.ACTIVE, now)
    midnight = now.replace(hour=0, minute=0, second=0, microsecond=0)
    starts = [midnight - timedelta(days=back) for back in range(CHART_DAYS - 1, -1, -1)]
    created = [
        count_keys(ApiKey.created_at >= start, ApiKey.created_at < start + timedelta(days=1))
        for start in starts
    ]
    used = dict(db.session.execute(
        select(KeyUseCount.day, KeyUseCount.keys_used).where(KeyUseCount.day >= starts[0].date())
    ).all())
    # One pass over the table for all three counts.
    counts = db.session.execute(
        select(
            func.count().filter(active),
            func.count().filter(ApiKey.revoked_at.is_not(None)),
            func.count().filter(active, ApiKey.created_at < now - rotation_age),
        ).select_from(ApiKey)
    ).one()
    return Overview(
        active=counts[0],
        revoked=counts[1],
        stale=counts[2],
        days=[start.date() for start in starts],
        created_per_day=created,
        used_per_day=[used.get(start.date(), 0) for start in starts],
    )


OVERVIEW = "admin_overview"  # the app.extensions entry: (when computed, the overview)


def overview(now: datetime) -> Overview:
    """The overview, recomputed at most every OVERVIEW_SECONDS in each worker."""
    cached = current_app.extensions.get(OVERVIEW)
    if cached is not None and time.monotonic() - cached[0] < OVERVIEW_SECONDS:
        return cached[1]
    fresh = compute_overview(now)
    current_app.extensions[OVERVIEW] = (time.monotonic(), fresh)
    return fresh


def forget_overview() -> None:
    """Drop the cached overview, after a change an admin made should show at once."""
    current_app.extensions.pop(OVERVIEW, None)
