"""What the key endpoints do, apart from HTTP: register users, issue, find and revoke keys.

Functions stage changes in the session; the caller commits once.
"""

import hmac
from datetime import datetime, timedelta

from flask import current_app
from sqlalchemy import bindparam, func, select, update

from .. import clock, keys
from ..errors import ApiError
from ..extensions import db
from ..key_cache import KeyCache, KnownKey
from ..key_reader import KeyReader
from ..key_signal import send_after_commit
from ..models import ApiKey, KeyChanges, KeyStatus, User, status_condition

INVALID_KEY = "Invalid API key"
MISSING_KEY = "Invalid API key: the x-api-key header is missing"
REVOKED_KEY = "API key has been revoked"
EXPIRED_KEY = "API key has expired"
KEY_NOT_FOUND = "API key not found"
EMAIL_TAKEN = "An API key has already been issued for this email address"
REVOKED_BY_USER = "api"
MAX_KEY_ID = 2**31 - 1  # the largest INTEGER PostgreSQL stores


def issue_key(
    user: User, now: datetime, name: str | None = None, expires_at: datetime | None = None
) -> tuple[ApiKey, str]:
    """Stage a new key for a user; return it and the secret, which is never stored."""
    issued = keys.generate()
    key = ApiKey(
        digest=issued.digest,
        display_prefix=issued.display_prefix,
        name=name,
        created_at=now,
        expires_at=expires_at,
    )
    user.keys.append(key)
    return key, issued.secret


def register_user(name: str, email: str, org_name: str | None) -> User:
    """Stage a new user; committing fails with IntegrityError if the email is taken."""
    user = User(
        name=name,
        name_lower=name.lower(),
        email=email,
        email_canonical=email.lower(),
        org_name=org_name or None,
        org_name_lower=org_name.lower() if org_name else None,
        created_at=clock.now(),
    )
    db.session.add(user)
    return user


def authenticate(presented: str) -> KnownKey:
    """Return the active key for a presented secret, or raise a 401.

    A key with the wrong shape or checksum is refused before any query; a key seen recently
    is answered from this worker's cache, which every key change empties.
    """
    if not keys.is_well_formed(presented):
        raise ApiError(401, INVALID_KEY)
    wanted = keys.digest(presented)
    cache = key_cache()
    cache.sync(read_key_changes)
    known = cache.get(wanted)
    if known is None:
        known = look_up(wanted)
        if known is None or not hmac.compare_digest(known.digest, wanted):
            raise ApiError(401, INVALID_KEY)
        cache.put(known)
    now = clock.now()
    status = known.status(now)
    if status is KeyStatus.REVOKED:
        raise ApiError(401, REVOKED_KEY)
    if status is KeyStatus.EXPIRED:
        raise ApiError(401, EXPIRED_KEY)
    current_app.extensions["usage"].note(known, now)
    return known


# Built once: a key check runs in front of every API call, and building a statement costs
# more than running it.
LOOK_UP = (
    select(
        ApiKey.id, ApiKey.user_id, ApiKey.digest, ApiKey.display_prefix, ApiKey.created_at,
        ApiKey.expires_at, ApiKey.revoked_at, ApiKey.last_used_at,
        User.name, User.email, User.org_name,
    )
    .join(User, ApiKey.user_id == User.id)
    .where(ApiKey.digest == bindparam("digest"))
)
KEY_VERSION = select(KeyChanges.version).where(KeyChanges.id == 1)


def look_up(digest: str) -> KnownKey | None:
    """Read a key and its holder by digest: one indexed query of the columns needed.

    It runs on the worker's held connection, not in the ORM session, which would triple the
    cost of the query.
    """
    row = key_reader().first(LOOK_UP, {"digest": digest})
    return None if row is None else KnownKey(*row)


def key_cache() -> KeyCache:
    """This worker's cache of keys for the current app."""
    return current_app.extensions["key_cache"]


def key_reader() -> KeyReader:
    """This worker's connection for key look-ups, for the current app."""
    return current_app.extensions["key_reader"]


def read_key_changes() -> int:
    """The current version of the keys, which moves with every change."""
    row = key_reader().first(KEY_VERSION)
    return 0 if row is None else row.version


def announce_key_change() -> None:
    """Stage a bump of the keys' version, so that every worker drops its cached keys."""
    bumped = db.session.execute(
        update(KeyChanges).where(KeyChanges.id == 1).values(version=KeyChanges.version + 1)
    )
    if bumped.rowcount == 0:
        db.session.add(KeyChanges(id=1, version=1))
    cache = key_cache()
    cache.clear()
    send_after_commit(db.session, cache.signal)


def lock_user(user_id: int) -> None:
    """Serialise key changes for one user until the transaction ends.

    A write to the user's row takes PostgreSQL's row lock and SQLite's write lock, so two
    requests cannot both count 19 active keys and both add a 20th and a 21st.
    """
    db.session.execute(update(User).where(User.id == user_id).values(id=User.id))


def count_active(user_id: int, now: datetime, excluding: int | None = None) -> int:
    """How many of a user's keys are neither revoked nor expired."""
    query = (
        select(func.count())
        .select_from(ApiKey)
        .where(ApiKey.user_id == user_id, status_condition(KeyStatus.ACTIVE, now))
    )
    if excluding is not None:
        query = query.where(ApiKey.id != excluding)
    return db.session.scalar(query) or 0


def ensure_room_for_key(user_id: int, now: datetime, excluding: int | None = None) -> None:
    """Refuse a new key with 409 when the user already has the most active keys allowed."""
    limit = current_app.config["MAX_ACTIVE_KEYS_PER_USER"]
    if count_active(user_id, now, excluding) >= limit:
        raise ApiError(409, f"A user may hold at most {limit} active keys; revoke one first")


def expiry(now: datetime, days: int | None) -> datetime | None:
    """When a key made now for so many days expires; never, without days."""
    return None if days is None else now + timedelta(days=days)


def add_key(user: User, name: str | None, expires_in_days: int | None) -> tuple[ApiKey, str]:
    """Stage another key for a user, within the cap on active keys."""
    now = clock.now()
    lock_user(user.id)
    ensure_room_for_key(user.id, now)
    return issue_key(user, now, name, expiry(now, expires_in_days))


def rotate_key(
    old: ApiKey, grace_hours: int, expires_in_days: int | None
) -> tuple[ApiKey, str]:
    """Stage a replacement for a key; the old one expires when the grace ends, or earlier."""
    now = clock.now()
    lock_user(old.user_id)
    db.session.refresh(old)
    if old.status(now) is not KeyStatus.ACTIVE:
        raise ApiError(401, REVOKED_KEY if old.revoked_at else EXPIRED_KEY)
    ensure_room_for_key(old.user_id, now, excluding=old.id)
    grace_end = now + timedelta(hours=grace_hours)
    if old.expires_at is None or grace_end < old.expires_at:
        old.expires_at = grace_end
        announce_key_change()
    return issue_key(old.user, now, old.name, expiry(now, expires_in_days))


def key_by_id(key_id: int) -> ApiKey | None:
    """A key by id; an id past the column's range names no key rather than failing."""
    if not 0 < key_id <= MAX_KEY_ID:
        return None
    return db.session.get(ApiKey, key_id)


def own_key(user_id: int, key_id: int) -> ApiKey:
    """One of the user's keys by id; another user's key is as missing as no key at all."""
    key = key_by_id(key_id)
    if key is None or key.user_id != user_id:
        raise ApiError(404, KEY_NOT_FOUND)
    return key


def revoke(key: ApiKey, revoked_by: str) -> None:
    """Stage a key's revocation; a key already revoked keeps its first revocation."""
    if key.revoked_at is None:
        key.revoked_at = clock.now()
        key.revoked_by = revoked_by
        announce_key_change()


def user_keys(user_id: int) -> list[ApiKey]:
    """A user's keys, newest first."""
    query = (
        select(ApiKey)
        .where(ApiKey.user_id == user_id)
        .order_by(ApiKey.created_at.desc(), ApiKey.id.desc())
    )
    return list(db.session.scalars(query))
