"""The life of keys, apart from HTTP: register users, issue, rotate, find, suspend, limit and revoke keys.

A KeyService works in the session it is given, with the settings it is given, and raises only
the domain's errors (errors.py). Its methods stage changes in the session; the caller commits
once. Every change of a key is announced to the key check's workers through the changes feed
it is given (Keyring.stage_change), in the same transaction.
"""

from dataclasses import dataclass
from collections.abc import Collection
from datetime import datetime, timedelta
from typing import Any, Protocol, TypeVar

from sqlalchemy import ColumnElement, and_, delete, func, or_, select, update
from sqlalchemy.orm import Session, joinedload

from .. import clock
from . import audit, keys
from .errors import REFUSALS, KeyNotFound, ScopeNotHeld, TooManyKeys
from .meter import NO_LIMITS, QUOTA_USED, LimitSettings, period_end, period_start, set_on, settings_of
from .models import ApiKey, KeyStatus, User, canonical_email, live_condition, status_condition

EMAIL_TAKEN = "An API key has already been issued for this email address"
MAX_ID = 2**31 - 1  # the largest id an INTEGER column of PostgreSQL stores
Row = TypeVar("Row", ApiKey, User)


@dataclass(frozen=True)
class KeySettings:
    """The settings the life of keys follows."""

    max_active_keys: int  # per user: MAX_ACTIVE_KEYS_PER_USER
    default_limits: LimitSettings  # of a key nobody gives limits: KEY_RATE_LIMIT_DEFAULT, KEY_QUOTA_DEFAULT


class ChangesFeed(Protocol):
    """Where a change of keys is announced, so that every worker's key cache forgets them."""

    def stage_change(self, session: Session, digests: Collection[str]) -> None:
        """Stage, in the session's transaction, the news that the keys with these digests changed."""


def expiry(now: datetime, days: int | None) -> datetime | None:
    """When a key made now for so many days expires; never, without days."""
    return None if days is None else now + timedelta(days=days)


def inherited_limits(parent: Any) -> tuple[LimitSettings, int | None]:
    """The limits a key added or rotated from a key starts with: the parent's, counted with the parent's.

    So a holder never gains room by adding or rotating keys. A parent without limits of its
    own hands on none.
    """
    limits = settings_of(parent)
    return limits, (parent.limit_group or parent.id) if limits != NO_LIMITS else None


def scopes_for_new_key(calling: str | None, asked: list[str] | None) -> str | None:
    """The scopes (as stored) of a key a key asks to issue: never wider than the calling key's own.

    A key with full access may issue any; a restricted one only keys within its scopes, and
    never one with full access (asked None).
    """
    if calling is None:
        return keys.scopes_text(asked)
    if asked is None:
        raise ScopeNotHeld("A restricted API key cannot issue a key with full access")
    for scope in sorted(set(asked)):
        if not keys.allows(calling, scope):
            raise ScopeNotHeld(f"API key lacks the scope {scope}")
    return keys.scopes_text(asked)


def whose(key: ApiKey) -> str:
    """A key as the audit log details it: its id and its holder's email."""
    return f"key {key.id} of {key.user.email}"


class KeyService:
    """The key domain's operations, in one session, for one actor's address."""

    def __init__(self, session: Session, settings: KeySettings, changes: ChangesFeed, address: str) -> None:
        self.session = session
        self.settings = settings
        self.changes = changes
        self.address = address  # where the actor is: a client's address, or audit.COMMAND_LINE

    def record(self, action: str, actor: str, target: str | None = None, detail: str | None = None) -> None:
        """Stage the audit row of something done through this service."""
        audit.record(self.session, action, actor, self.address, target, detail)

    def issue_key(
        self, user: User, now: datetime, actor: str, name: str | None = None, expires_at: datetime | None = None,
        scopes: str | None = None, limits: LimitSettings = NO_LIMITS, limit_group: int | None = None,
    ) -> tuple[ApiKey, str]:
        """Stage a new key for a user (restricted to scopes, as stored, or with full access), and its audit row.

        Its limits count in a limit group's windows when one is given. Return it and the secret,
        never stored.
        """
        issued = keys.generate()
        # Set from the key's side: appending to user.keys would load every key the user ever held.
        key = ApiKey(
            user=user,
            digest=issued.digest,
            display_prefix=issued.display_prefix,
            name=name,
            created_at=now,
            expires_at=expires_at,
            scopes=scopes,
        )
        set_on(key, limits)
        key.limit_group = limit_group
        self.session.add(key)
        restricted = f"; scopes {scopes}" if scopes is not None else ""
        limited = f"; {limits.describe()}" if limits != NO_LIMITS else ""
        self.record(audit.KEY_CREATED, actor=actor, target=key.display_prefix,
                    detail=f"for {user.email}{restricted}{limited}")
        return key, issued.secret

    def register_user(self, name: str, email: str, org_name: str | None) -> User:
        """Stage a new user; committing fails with IntegrityError if the email is taken."""
        user = User(name=name, email=email, org_name=org_name or None, created_at=clock.now())
        self.session.add(user)
        return user

    def user_by_email(self, email: str) -> User | None:
        """The user registered with an email, compared as the API compares it (case aside)."""
        return self.session.scalar(select(User).where(User.email_canonical == canonical_email(email)))

    def issue_for_email(
        self, email: str, holder: dict[str, Any], name: str | None, expires_in_days: int | None, actor: str,
        scopes: list[str] | None = None, limits: LimitSettings | None = None,
    ) -> tuple[ApiKey, str]:
        """Stage a key for the user with an email, registering them from holder first if need be.

        An operator's key (the admin, the CLI): restricted to any scopes, or with full access (None),
        with any limits, or (None) the defaults.

        holder has the user_name and org_name a new user gets. Committing fails with
        IntegrityError if another request registered the email meanwhile.
        """
        user = self.user_by_email(email)
        if user is None:
            user = self.register_user(holder["user_name"], email, holder["org_name"])
            self.session.flush()
        return self.add_key(user, name, expires_in_days, actor, keys.scopes_text(scopes),
                            self.settings.default_limits if limits is None else limits)

    def live_keys(self, user_id: int, now: datetime) -> list[ApiKey]:
        """A user's keys that are neither revoked nor expired (active or suspended), oldest first."""
        return list(self.session.scalars(
            select(ApiKey).where(ApiKey.user_id == user_id, live_condition(now))
            .order_by(ApiKey.id)
        ))

    def revoke_all(self, user_id: int, actor: str, now: datetime) -> int:
        """Stage the revocation of every live key of a user, one audit row each; return how many."""
        return sum(self.revoke(key, actor) for key in self.live_keys(user_id, now))

    def announce_key_change(self, *changed: ApiKey) -> None:
        """Stage the news that these keys changed, for every worker's cache."""
        self.changes.stage_change(self.session, [key.digest for key in changed])

    def lock_user(self, user_id: int) -> None:
        """Serialise key changes for one user until the transaction ends.

        A write to the user's row takes PostgreSQL's row lock and SQLite's write lock, so two
        requests cannot both count 19 active keys and both add a 20th and a 21st.
        """
        self.session.execute(update(User).where(User.id == user_id).values(id=User.id))

    def count_active(self, user_id: int, now: datetime, excluding: int | None = None) -> int:
        """How many of a user's keys are neither revoked nor expired (a suspended one counts: it may be resumed)."""
        query = (
            select(func.count())
            .select_from(ApiKey)
            .where(ApiKey.user_id == user_id, live_condition(now))
        )
        if excluding is not None:
            query = query.where(ApiKey.id != excluding)
        return self.session.scalar(query) or 0

    def ensure_room_for_key(self, user_id: int, now: datetime, excluding: int | None = None) -> None:
        """Refuse a new key when the user already holds the most active keys allowed (MAX_ACTIVE_KEYS_PER_USER)."""
        limit = self.settings.max_active_keys
        if self.count_active(user_id, now, excluding) >= limit:
            raise TooManyKeys(limit)

    def add_key(
        self, user: User, name: str | None, expires_in_days: int | None, actor: str, scopes: str | None = None,
        limits: LimitSettings = NO_LIMITS, limit_group: int | None = None,
    ) -> tuple[ApiKey, str]:
        """Stage another key for a user, within the cap on active keys."""
        now = clock.now()
        self.lock_user(user.id)
        self.ensure_room_for_key(user.id, now)
        return self.issue_key(user, now, actor, name, expiry(now, expires_in_days), scopes, limits, limit_group)

    def rotate_key(
        self, old: ApiKey, grace_hours: int, expires_in_days: int | None, actor: str
    ) -> tuple[ApiKey, str]:
        """Stage a replacement for a key; the old one expires when the grace ends, or earlier."""
        now = clock.now()
        self.lock_user(old.user_id)
        self.session.refresh(old)
        status = old.status(now)
        if status is not KeyStatus.ACTIVE:
            raise REFUSALS[status]()
        self.ensure_room_for_key(old.user_id, now, excluding=old.id)
        grace_end = now + timedelta(hours=grace_hours)
        if old.expires_at is None or grace_end < old.expires_at:
            old.expires_at = grace_end
            self.announce_key_change(old)
        old.rotated_at = now
        new, secret = self.issue_key(old.user, now, actor, old.name, expiry(now, expires_in_days), old.scopes,
                                     *inherited_limits(old))
        self.record(audit.KEY_ROTATED, actor=actor, target=old.display_prefix,
                    detail=f"replaced by {new.display_prefix}; expires {old.expires_at.isoformat()}")
        return new, secret

    def stored(self, model: type[Row], row_id: int) -> Row | None:
        """A row by id; an id past the column's range names no row rather than failing."""
        if not 0 < row_id <= MAX_ID:
            return None
        return self.session.get(model, row_id)

    def key_by_id(self, key_id: int) -> ApiKey | None:
        """A key by id, or None."""
        return self.stored(ApiKey, key_id)

    def user_by_id(self, user_id: int) -> User | None:
        """A user by id, or None."""
        return self.stored(User, user_id)

    def own_key(self, user_id: int, key_id: int) -> ApiKey:
        """One of the user's keys by id; another user's key is as missing as no key at all."""
        key = self.key_by_id(key_id)
        if key is None or key.user_id != user_id:
            raise KeyNotFound()
        return key

    def change_once(self, key: ApiKey, actor: str, action: str, where: ColumnElement[bool], **values: Any) -> bool:
        """Stage a change of a key's row where it still meets a condition, and its audit row; whether it changed.

        The first change wins: the row is written only where the condition holds, so of two changes
        racing (two admins, an admin and the API) one changes it and is audited, and the other finds
        it done, even before the first commits (it waits for the row's lock). Every worker and proxy
        hears of it as of any key change.
        """
        changed = self.session.execute(
            update(ApiKey).where(ApiKey.id == key.id, where).values(**values)
            .execution_options(synchronize_session=False)
        ).rowcount
        self.session.refresh(key)
        if changed:
            self.announce_key_change(key)
            self.record(action, actor=actor, target=key.display_prefix, detail=whose(key))
        return bool(changed)

    def revoke(self, key: ApiKey, actor: str, action: str = audit.REVOKE) -> bool:
        """Stage a key's revocation and its audit row; False if it was revoked already."""
        return self.change_once(key, actor, action, ApiKey.revoked_at.is_(None),
                                revoked_at=clock.now(), revoked_by=actor)

    def suspend(self, key: ApiKey, actor: str) -> bool:
        """Stage a key's suspension and its audit row; False if it is suspended already, revoked or expired."""
        now = clock.now()
        return self.change_once(key, actor, audit.KEY_SUSPENDED,
                                and_(ApiKey.suspended_at.is_(None), live_condition(now)),
                                suspended_at=now, suspended_by=actor)

    def resume(self, key: ApiKey, actor: str) -> bool:
        """Stage the end of a key's suspension and its audit row; False if it is not suspended, or dead."""
        return self.change_once(key, actor, audit.KEY_RESUMED,
                                and_(ApiKey.suspended_at.is_not(None), live_condition(clock.now())),
                                suspended_at=None, suspended_by=None)

    def set_key_limits(self, key: ApiKey, limits: LimitSettings, actor: str) -> bool:
        """Stage a key's new limits, audited with before and after; False when they are its limits already.

        From then on they count in the key's own windows, no longer in those of the key it came from.
        """
        before = settings_of(key)
        if before == limits:
            return False
        set_on(key, limits)
        key.limit_group = None
        self.announce_key_change(key)
        self.record(audit.KEY_LIMITS_CHANGED, actor=actor, target=key.display_prefix,
                    detail=f"{whose(key)}: {before.describe()} -> {limits.describe()}")
        return True

    def set_user_limits(self, user: User, limits: LimitSettings, actor: str) -> bool:
        """Stage a user's new limits (across all their keys), audited with before and after; False when unchanged.

        Every one of the user's keys is announced as changed: each worker and proxy reads them again.
        """
        before = settings_of(user)
        if before == limits:
            return False
        set_on(user, limits)
        digests = self.session.scalars(select(ApiKey.digest).where(ApiKey.user_id == user.id))
        self.changes.stage_change(self.session, list(digests))
        self.record(audit.USER_LIMITS_CHANGED, actor=actor, target=user.email,
                    detail=f"user {user.id}: {before.describe()} -> {limits.describe()}")
        return True

    def quota_use(self, subject: ApiKey | User, now: datetime) -> dict[str, Any] | None:
        """A key's or a user's quota and its use in the current period, as the API shows it; None without one.

        The use is the record (the daily request counts of the key's limit group, or of all the
        user's keys), exact up to LAST_USED_FLUSH_SECONDS.
        """
        quota = settings_of(subject).quota
        if quota is None:
            return None
        is_key = isinstance(subject, ApiKey)
        kind, counted_as = ("key", subject.limit_group or subject.id) if is_key else ("user", subject.id)
        used = self.session.scalar(QUOTA_USED[kind], {"subject": counted_as, "since": period_start(quota.period, now)})
        return {"limit": quota.limit, "period": quota.period, "used": int(used or 0),
                "resets_at": period_end(quota.period, now).isoformat()}

    def keys_by_prefix(self, display_prefix: str) -> list[ApiKey]:
        """The keys that show this display prefix (almost always one)."""
        return list(self.session.scalars(select(ApiKey).where(ApiKey.display_prefix == display_prefix)))

    def key_by_secret(self, secret: str) -> ApiKey | None:
        """The key a whole secret names, found by its digest; None for anything that is not a key."""
        if not keys.is_well_formed(secret):
            return None
        return self.session.scalar(select(ApiKey).where(ApiKey.digest == keys.digest(secret)))

    def revoke_leaked(self, secrets: list[str], now: datetime) -> int:
        """Revoke every live key (active or suspended) among strings reported as leaked; return how many.

        Strings that are not keys, or name no key, are passed over: scanners send false positives.
        """
        digests = {keys.digest(secret) for secret in secrets if keys.is_well_formed(secret)}
        if not digests:
            return 0
        found = self.session.scalars(
            select(ApiKey).where(ApiKey.digest.in_(digests), live_condition(now))
            .order_by(ApiKey.id)
        )
        return sum(self.revoke(key, audit.LEAK_REPORT, audit.REVOKE_LEAKED) for key in found)

    def prune(self, cutoff: datetime, actor: str, dry_run: bool = False) -> list[ApiKey]:
        """Stage the deletion of keys revoked or expired before cutoff, one audit row each.

        With dry_run, nothing is staged: the keys are only returned.
        """
        # A key revoked or expiring from now on lies after any cutoff in the past, so the delete
        # removes exactly the keys listed, without an IN list that could outgrow a statement.
        ended_long_ago = or_(ApiKey.revoked_at < cutoff, ApiKey.expires_at < cutoff)
        doomed = list(self.session.scalars(
            select(ApiKey).where(ended_long_ago).options(joinedload(ApiKey.user)).order_by(ApiKey.id)
        ))
        if dry_run or not doomed:
            return doomed
        for key in doomed:
            self.record(audit.KEY_DELETED, actor=actor, target=key.display_prefix, detail=whose(key))
        self.announce_key_change(*doomed)
        self.session.execute(delete(ApiKey).where(ended_long_ago))
        return doomed

    def keys_with_users(self, email: str | None, status: KeyStatus | None, now: datetime) -> list[ApiKey]:
        """Every key with its user loaded, oldest first: of one user (by email), in one status, or all."""
        query = select(ApiKey).join(ApiKey.user).options(joinedload(ApiKey.user)).order_by(ApiKey.id)
        if email is not None:
            query = query.where(User.email_canonical == canonical_email(email))
        if status is not None:
            query = query.where(status_condition(status, now))
        return list(self.session.scalars(query))

    def user_keys(self, user_id: int, limit: int, before: int | None = None) -> list[ApiKey]:
        """Up to limit of a user's keys, newest first; with before, only keys older than that id."""
        query = select(ApiKey).where(ApiKey.user_id == user_id).order_by(ApiKey.id.desc()).limit(limit)
        if before is not None:
            query = query.where(ApiKey.id < before)
        return list(self.session.scalars(query))
