"""The database tables, as typed SQLAlchemy 2.0 models."""

import unicodedata
from datetime import date, datetime, timezone
from collections.abc import Callable
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    BigInteger, ColumnElement, Date, DateTime, ForeignKey, Index, Integer, MetaData, String, and_, or_,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship
from sqlalchemy.types import TypeDecorator

from . import keys

# Named constraints, so that migrations can alter them on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base for every model; Flask-SQLAlchemy binds its metadata to the app."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp stored in UTC and always read back timezone-aware.

    SQLite has no time zones and hands back naive values; PostgreSQL keeps them.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Convert an aware datetime to UTC before storing it."""
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; use clock.now()")
        return value.astimezone(timezone.utc)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Mark a value read back as UTC."""
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=timezone.utc)
        return value.astimezone(timezone.utc)


def canonical_email(email: str) -> str:
    """An email as compared: trimmed, NFKC-folded (ｄｕｐｅ is dupe) and lower-cased: one address, one form."""
    return unicodedata.normalize("NFKC", email.strip()).lower()


def lower_copy(source: str, rule: Callable[[str], str] = str.lower) -> Callable[[Any], str | None]:
    """A column default that fills a column with a rule applied to another column of the row.

    As a default it serves every insert, through the ORM or not (the bench inserts in bulk);
    users' names, emails and organisations are not changed after registration.
    """

    def copy(context: Any) -> str | None:
        value = context.get_current_parameters().get(source)
        return None if value is None else rule(value)

    return copy


class User(Base):
    """Someone who holds API keys; one per email address."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    email: Mapped[str] = mapped_column(String(254))
    # The address as compared (canonical_email): what makes two addresses the same user.
    email_canonical: Mapped[str] = mapped_column(
        String(320), unique=True, default=lower_copy("email", canonical_email)
    )
    org_name: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # Lower-cased copies, so the admin's case-insensitive prefix search uses an index; twice
    # as wide as their source, since lower-casing can double a text's length (İ becomes i̇).
    name_lower: Mapped[str] = mapped_column(String(200), index=True, default=lower_copy("name"))
    org_name_lower: Mapped[str | None] = mapped_column(String(200), index=True, default=lower_copy("org_name"))
    # Limits counted across all the user's keys together, as a key's own are (Limited).
    rate_limit: Mapped[str | None] = mapped_column(String(200))
    quota_limit: Mapped[int | None] = mapped_column(BigInteger)
    quota_period: Mapped[str | None] = mapped_column(String(5))

    keys: Mapped[list["ApiKey"]] = relationship(back_populates="user")


class KeyStatus(StrEnum):
    """Where a key is in its life: only an active key opens the API.

    A suspended key is refused until an operator resumes it; revoked and expired are for good.
    """

    ACTIVE = "active"
    SUSPENDED = "suspended"
    EXPIRED = "expired"
    REVOKED = "revoked"


def key_status(
    revoked_at: datetime | None, expires_at: datetime | None, at: datetime, suspended_at: datetime | None = None
) -> KeyStatus:
    """A key's status at a moment; a key expires at the instant expires_at names."""
    if revoked_at is not None:
        return KeyStatus.REVOKED
    if expires_at is not None and expires_at <= at:
        return KeyStatus.EXPIRED
    if suspended_at is not None:
        return KeyStatus.SUSPENDED
    return KeyStatus.ACTIVE


class ApiKey(Base):
    """An issued key, known only by its SHA-256 digest and a display prefix."""

    __tablename__ = "api_keys"
    # The admin list's two orders, id breaking ties, walked backwards from the newest.
    __table_args__ = (
        Index("ix_api_keys_created_at_id", "created_at", "id"),
        Index("ix_api_keys_last_used_at_id", "last_used_at", "id"),
        Index("ix_api_keys_expires_at", "expires_at"),  # the admin's keys about to expire
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("users.id"), index=True)
    digest: Mapped[str] = mapped_column(String(64), unique=True)
    display_prefix: Mapped[str] = mapped_column(String(16), index=True)
    name: Mapped[str | None] = mapped_column(String(100))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # Who revoked it: "api" for the key's own user, an admin's email for an operator.
    revoked_by: Mapped[str | None] = mapped_column(String(254))
    # When a rotation replaced it: until it expires, it is in its grace period.
    rotated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When an operator suspended it, and who: None while it is not suspended.
    suspended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    suspended_by: Mapped[str | None] = mapped_column(String(254))
    # The scopes a restricted key may act in, space-separated (keys.scopes_text); None: full access.
    scopes: Mapped[str | None] = mapped_column(String(keys.MAX_SCOPES * 65))
    # Its own rate limits, in the limits notation ("100 per minute; 5000 per day"), and its
    # quota of checks per day or month (UTC); None: no limit of that kind.
    rate_limit: Mapped[str | None] = mapped_column(String(200))
    quota_limit: Mapped[int | None] = mapped_column(BigInteger)
    quota_period: Mapped[str | None] = mapped_column(String(5))
    # The key whose windows and quota record its own limits count in: the one it was added or
    # rotated from (so that a holder gains nothing by adding or rotating keys); None: its own.
    limit_group: Mapped[int | None] = mapped_column(index=True)

    user: Mapped[User] = relationship(back_populates="keys")

    def status(self, at: datetime) -> KeyStatus:
        """The key's status at a moment."""
        return key_status(self.revoked_at, self.expires_at, at, self.suspended_at)

    def state(self, at: datetime) -> str:
        """The status an operator sees: an active key a rotation replaced is in its grace period."""
        status = self.status(at)
        if status is KeyStatus.ACTIVE and self.rotated_at is not None:
            return GRACE_PERIOD
        return status.value


GRACE_PERIOD = "grace period"


def live_condition(now: datetime) -> ColumnElement[bool]:
    """SQL for keys neither revoked nor expired at a moment: active or suspended.

    A suspended key still holds its place under MAX_ACTIVE_KEYS_PER_USER (it may be resumed),
    and revoking all of a user's keys, or a leaked one, revokes it too.
    """
    return and_(ApiKey.revoked_at.is_(None), or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > now))


def status_condition(status: KeyStatus, now: datetime) -> ColumnElement[bool]:
    """SQL for keys in a state at a moment, matching key_status."""
    if status is KeyStatus.REVOKED:
        return ApiKey.revoked_at.is_not(None)
    if status is KeyStatus.EXPIRED:
        return and_(ApiKey.revoked_at.is_(None), ApiKey.expires_at <= now)
    if status is KeyStatus.SUSPENDED:
        return and_(live_condition(now), ApiKey.suspended_at.is_not(None))
    return and_(live_condition(now), ApiKey.suspended_at.is_(None))


class KeyChanges(Base):
    """One row whose version moves with every change that can make a key unusable.

    A change updates the row, whose lock it then holds until it commits: so versions are
    handed out in the order the changes commit, with no gaps, and a worker that has read
    version N has seen every change up to N.
    """

    __tablename__ = "key_changes"

    id: Mapped[int] = mapped_column(primary_key=True)
    version: Mapped[int] = mapped_column(BigInteger)


class KeyChange(Base):
    """A key one change touched, under the version it moved the keys to: the changes feed.

    Workers read the feed from the last version they saw and evict just those keys. A digest
    of ALL_KEYS stands for every key (a prune); only the last versions are kept, and a worker
    further behind forgets its whole cache.
    """

    __tablename__ = "key_change_feed"

    version: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    digest: Mapped[str] = mapped_column(String(64), primary_key=True)


ALL_KEYS = "*"  # no digest: digests are hexadecimal


class KeyShard(Base):
    """The version at which a key of one shard (keys.shard) last changed.

    A proxy that keeps the service's verify answers (deploy/nginx) reads all 256 versions at
    once and keeps an answer only while its shard's version stands still: a change of one key
    makes the proxy ask again about the keys of that shard, and of no other.
    """

    __tablename__ = "key_shards"

    shard: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    version: Mapped[int] = mapped_column(BigInteger)


class KeyUseCount(Base):
    """How many keys were used on a day: what the admin chart of keys used per day shows.

    The usage writer adds the keys whose first use of the day it records; the update that
    records a first use matches a key only once a day, so two workers never count it twice.
    """

    __tablename__ = "key_use_counts"

    day: Mapped[date] = mapped_column(Date, primary_key=True)
    keys_used: Mapped[int] = mapped_column(Integer)


class KeyRequestCount(Base):
    """How many checks a key passed on a day: what its 30-day figures and chart show.

    Each worker counts in memory and adds its counts in the batched writes that record last
    use, so the figures are exact up to LAST_USED_FLUSH_SECONDS.
    """

    __tablename__ = "key_request_counts"

    key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    requests: Mapped[int] = mapped_column(BigInteger)


class KeyRefusalCount(Base):
    """How many checks of a valid key were refused on a day, by outcome: what its chart shows beside those passed.

    The outcomes are rate_limited_key, quota_exhausted, missing_scope and suspended; counted
    and written as KeyRequestCount is.
    """

    __tablename__ = "key_refusal_counts"

    key_id: Mapped[int] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"), primary_key=True)
    day: Mapped[date] = mapped_column(Date, primary_key=True)
    outcome: Mapped[str] = mapped_column(String(16), primary_key=True)
    refusals: Mapped[int] = mapped_column(BigInteger)


class AuditEvent(Base):
    """Something an admin did, or tried: never a secret."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_action_at", "action", "at"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    actor: Mapped[str] = mapped_column(String(254))
    action: Mapped[str] = mapped_column(String(32))
    target: Mapped[str | None] = mapped_column(String(254), index=True)
    address: Mapped[str | None] = mapped_column(String(64), index=True)
    detail: Mapped[str | None] = mapped_column(String(500))
