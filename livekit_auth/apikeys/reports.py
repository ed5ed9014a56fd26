"""Reports on keys' use: checks passed and refused per day, over the last USAGE_DAYS days."""

from collections.abc import Collection
from datetime import date, timedelta

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from .models import KeyRefusalCount, KeyRequestCount

USAGE_DAYS = 30


def usage_days(today: date) -> list[date]:
    """The USAGE_DAYS days up to today, oldest first: the window of requests_30d and the charts."""
    return [today - timedelta(days=back) for back in range(USAGE_DAYS - 1, -1, -1)]


def recent_requests(session: Session, key_ids: Collection[int], today: date) -> dict[int, int]:
    """How many checks each key passed in the last USAGE_DAYS days (today included)."""
    if not key_ids:
        return {}
    rows = session.execute(
        select(KeyRequestCount.key_id, func.sum(KeyRequestCount.requests))
        .where(KeyRequestCount.key_id.in_(key_ids), KeyRequestCount.day >= usage_days(today)[0])
        .group_by(KeyRequestCount.key_id)
    )
    return {key_id: int(total) for key_id, total in rows}


def daily_requests(session: Session, key_id: int, today: date) -> list[int]:
    """How many checks a key passed on each of the last USAGE_DAYS days, oldest first."""
    days = usage_days(today)
    counted = dict(session.execute(
        select(KeyRequestCount.day, KeyRequestCount.requests)
        .where(KeyRequestCount.key_id == key_id, KeyRequestCount.day >= days[0])
    ).all())
    return [counted.get(day, 0) for day in days]


def daily_refusals(session: Session, key_id: int, today: date) -> dict[str, list[int]]:
    """How many checks of a key were refused for each outcome on each of the last USAGE_DAYS days."""
    days = usage_days(today)
    counted: dict[str, dict[date, int]] = {}
    for day, outcome, refusals in session.execute(
        select(KeyRefusalCount.day, KeyRefusalCount.outcome, KeyRefusalCount.refusals)
        .where(KeyRefusalCount.key_id == key_id, KeyRefusalCount.day >= days[0])
    ):
        counted.setdefault(outcome, {})[day] = refusals
    return {outcome: [by_day.get(day, 0) for day in days] for outcome, by_day in counted.items()}
