"""The key check's one home: from the x-api-key header to the key it names, or a refusal.

A worker's Keyring owns everything a check touches: the cache of keys seen lately, the held
connection that reads a key not in it, the signal that tells the workers of a server that a
key changed, the changes feed that says which, the notes of last use, and the throttle on
failed checks per address. The gate hands it the header; it answers a KnownKey or raises one
of the refusals of errors.py, which the web layer turns into statuses.
"""

import hmac
import math
import time
from collections.abc import Collection
from datetime import datetime
from typing import NamedTuple, NoReturn

from sqlalchemy import Engine, bindparam, delete, insert, select, update
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from .. import clock
from ..metrics import count_key_cache, count_key_check
from ..rate_limits import Counted, RateLimited, RateLimits
from . import keys, meter
from .cache import Changes, KeyCache, KnownKey
from .errors import (
    REFUSALS, InvalidKey, KeyLimited, KeyRefused, MissingKey, MissingScope, QuotaExhausted, SuspendedKey,
)
from .meter import QUOTA_USED
from .models import ALL_KEYS, ApiKey, KeyChange, KeyChanges, KeyShard, KeyStatus, User
from .reader import KeyReader
from .signal import send_after_commit
from .usage import UsageRecorder


class Admission(NamedTuple):
    """A key the check let through, and the RateLimit headers its answer carries (None: unlimited)."""

    key: KnownKey
    limit_headers: list[tuple[str, str]] | None


# Built once: a key check runs in front of every API call, and building a statement costs
# more than running it.
LOOK_UP = (
    select(
        ApiKey.id, ApiKey.user_id, ApiKey.digest, ApiKey.display_prefix, ApiKey.created_at,
        ApiKey.expires_at, ApiKey.revoked_at, ApiKey.last_used_at,
        User.name, User.email, User.org_name, ApiKey.suspended_at, ApiKey.scopes,
        ApiKey.rate_limit, ApiKey.quota_limit, ApiKey.quota_period,
        User.rate_limit, User.quota_limit, User.quota_period, ApiKey.limit_group,
    )
    .join(User, ApiKey.user_id == User.id)
    .where(ApiKey.digest == bindparam("digest"))
)
KEY_VERSION = select(KeyChanges.version).where(KeyChanges.id == 1)
BUMP_KEY_VERSION = (
    update(KeyChanges).where(KeyChanges.id == 1).values(version=KeyChanges.version + 1)
    .returning(KeyChanges.version)
)
CHANGED_SINCE = select(KeyChange.version, KeyChange.digest).where(
    KeyChange.version > bindparam("since"), KeyChange.version <= bindparam("until")
)
SHARD_VERSIONS = select(KeyShard.shard, KeyShard.version)
MOVE_SHARDS = update(KeyShard).values(version=bindparam("moved_to"))
MOVE_SOME_SHARDS = MOVE_SHARDS.where(KeyShard.shard.in_(bindparam("shards", expanding=True)))
# How many versions of the feed are kept: a worker further behind than this (one that served
# nothing while they happened) forgets its whole cache instead.
FEED_VERSIONS = 1000
# A change of more keys than this (a large prune) is fed as one change of every key.
FEED_DIGESTS_PER_CHANGE = 100


def seconds_left(metered: meter.Metered, counted: Counted, now: datetime) -> float:
    """Until a window is refilled: a quota at its period's end (by the app's clock), a rate limit's window as the store ends it."""
    if metered.refills_at is not None:
        return metered.refills_at - now.timestamp()
    return min(counted.ends_at - time.time(), metered.window.seconds)


def tightness(metered: meter.Metered, counted: Counted, now: datetime) -> tuple[int, float]:
    """How near a window is to refusing: the room left, then the time until it is refilled."""
    return metered.window.amount - counted.count, seconds_left(metered, counted, now)


def limit_headers(pair: tuple[meter.Metered, Counted], now: datetime) -> list[tuple[str, str]]:
    """The RateLimit headers (IETF httpapi ratelimit-headers) of one window after a check."""
    metered, counted = pair
    return [
        ("RateLimit-Limit", str(metered.window.amount)),
        ("RateLimit-Remaining", str(max(metered.window.amount - counted.count, 0))),
        ("RateLimit-Reset", str(max(math.ceil(seconds_left(metered, counted, now)), 0))),
    ]


FAILED_AUTH = "RATELIMIT_FAILED_AUTH"
FAILED_AUTH_SCOPE = "failed-auth"


class Keyring:
    """One worker's key check, with the state it keeps between requests."""

    def __init__(
        self, engine: Engine, cache: KeyCache, usage: UsageRecorder, rate_limits: RateLimits
    ) -> None:
        self.cache = cache
        self.reader = KeyReader(engine)
        self.usage = usage
        self.rate_limits = rate_limits

    def authenticate(
        self, presented: str | None, address: str, seen_version: int | None = None, scope: str | None = None
    ) -> Admission:
        """The active key a presented secret names, allowed in a scope when one is asked; or a refusal.

        A restricted key asked for a scope it lacks is refused with MissingScope: no failed
        check of the address, since the key is valid, and no use of the key.

        A proxy that keeps answers says which version of the keys it has seen (seen_version):
        the answer then comes from a cache at least that current, so that the proxy never
        keeps, under a new version, what this worker knew before it.

        A key this worker already holds as active is answered from its cache, with no other
        work (only well-formed keys are ever cached); a key of the wrong shape or checksum is
        refused without a query. A valid key opens from any address: what a worker, a server or
        a proxy already holds then never decides the answer. A failed check counts against its
        address, and an address past RATELIMIT_FAILED_AUTH has its failed checks answered 429.

        A key with limits (its own or its user's) is counted against them, and past one is
        refused with KeyLimited or QuotaExhausted; only a check let through is used.
        """
        wanted = None if presented is None else keys.digest(presented)
        if seen_version is not None:
            self.cache.catch_up(seen_version)
        known = self.cached(wanted)
        if known is not None:
            count_key_cache("hit")
        now = clock.now()
        if known is None or known.status(now) is not KeyStatus.ACTIVE:
            try:
                known = self.verify(presented, wanted, known, now)
            except KeyRefused as refusal:
                if isinstance(refusal, SuspendedKey) and refusal.key_id is not None:
                    self.usage.note_refusal(refusal.key_id, refusal.outcome, now)
                self.refuse(refusal, self.rate_limits.address(address))
        if scope is not None and not keys.allows(known.scopes, scope):
            self.usage.note_refusal(known.id, "missing_scope", now)
            count_key_check("missing_scope")
            raise MissingScope(scope)
        headers = None if known.limits is None else self.count_against_limits(known, now)
        self.usage.note(known, now)
        count_key_check("valid")
        return Admission(known, headers)

    def count_against_limits(self, known: KnownKey, now: datetime) -> list[tuple[str, str]] | None:
        """Count a check in the key's limits: the RateLimit headers of its tightest, or a refusal.

        A limit store that fails, or a quota whose record cannot be read, lets the check through
        uncounted, as the per-address limits do.
        """
        assert known.limits is not None
        metered = meter.windows(known.limits, self.rate_limits.prefix, self.rate_limits.shared, now)
        counting = self.rate_limits.count_all(
            [each.window for each in metered], lambda index: self.quota_used(metered[index].seed)
        )
        if counting is None:
            return None
        refused, counted = counting
        if refused is None:
            return limit_headers(min(zip(metered, counted), key=lambda pair: tightness(*pair, now)), now)
        full = (metered[refused], counted[0])
        refusal = KeyLimited if metered[refused].seed is None else QuotaExhausted
        self.usage.note_refusal(known.id, refusal.outcome, now)
        count_key_check(refusal.outcome)
        raise refusal(max(1, math.ceil(seconds_left(*full, now))), limit_headers(full, now))

    def quota_used(self, seed: meter.Seed | None) -> int | None:
        """How many checks a quota's subject passed in its period, by its record; None when unread."""
        assert seed is not None
        try:
            row = self.reader.first(QUOTA_USED[seed.subject], {"subject": seed.id, "since": seed.since.isoformat()})
        except DBAPIError:
            return None
        return 0 if row is None else int(row[0])

    def cached(self, digest: str | None) -> KnownKey | None:
        """The cache's entry for a digest, once the cache is known to be current.

        The keys' version is asked only when there is an entry to trust, so a key that was
        never cached (malformed, unknown) costs no query here.
        """
        if digest is None or digest not in self.cache.entries:
            return None
        self.cache.sync(self.read_changes)
        return self.cache.get(digest)

    def refuse(self, refusal: KeyRefused, counted: str) -> NoReturn:
        """Answer a failed check from an address (as limits count it): counted, or 429 past the limit."""
        try:
            self.rate_limits.count_failure(FAILED_AUTH, FAILED_AUTH_SCOPE, counted)
        except RateLimited:
            count_key_check("rate_limited")
            raise
        count_key_check(refusal.outcome)
        raise refusal

    def verify(
        self, presented: str | None, wanted: str | None, cached: KnownKey | None, now: datetime
    ) -> KnownKey:
        """The active key for a secret not cached as active, reading it if need be; or a refusal."""
        if presented is None or wanted is None:  # one says the other; both, for the type checker
            raise MissingKey()
        if cached is None and not keys.is_well_formed(presented):
            raise InvalidKey()
        known = cached
        if known is None:
            self.cache.sync(self.read_changes)  # so that what is read now is not evicted as stale
            count_key_cache("miss")
            known = self.look_up(wanted)
            if known is None or not hmac.compare_digest(known.digest, wanted):
                raise InvalidKey()
            self.cache.put(known)
        status = known.status(now)
        if status is not KeyStatus.ACTIVE:
            refusal = REFUSALS[status]()
            refusal.key_id = known.id
            raise refusal
        return known

    def look_up(self, digest: str) -> KnownKey | None:
        """Read a key and its holder by digest: one indexed query of the columns needed.

        It runs on the worker's held connection, not in the ORM session, which would triple
        the cost of the query.
        """
        row = self.reader.first(LOOK_UP, {"digest": digest})
        if row is None:
            return None
        known = KnownKey(*row)
        own = meter.limits_of("key", known.limit_group or known.id, known.rate_limit, known.quota_limit, known.quota_period)
        users = meter.limits_of("user", known.user_id, known.user_rate_limit, known.user_quota_limit,
                                known.user_quota_period)
        known.limits = tuple(limits for limits in (own, users) if limits is not None) or None
        return known

    def read_version(self) -> int:
        """The current version of the keys, which moves with every change."""
        row = self.reader.first(KEY_VERSION)
        return 0 if row is None else row[0]

    def shard_versions(self) -> list[int]:
        """Every shard's version (keys.shard), read now; a shard with no row has the keys' version."""
        versions = [self.read_version()] * keys.SHARDS
        for shard, version in self.reader.all(SHARD_VERSIONS):
            versions[shard] = version
        return versions

    def read_changes(self, since: int | None) -> Changes:
        """The keys' version now, and the digests changed since a version.

        Only the version is read while it stands still. The digests are None (every key)
        for a worker that has seen no version yet, one further behind than the feed keeps,
        one whose versions no longer match the database's, and after a change of many keys.
        """
        version = self.read_version()
        if version == since:
            return Changes(version, ())
        if since is None or not since < version <= since + FEED_VERSIONS:
            return Changes(version, None)
        rows = self.reader.all(CHANGED_SINCE, {"since": since, "until": version})
        digests = {digest for _, digest in rows}
        if len({changed for changed, _ in rows}) != version - since or ALL_KEYS in digests:
            return Changes(version, None)
        return Changes(version, digests)

    def stage_change(self, session: Session, digests: Collection[str]) -> None:
        """Stage a change of some keys, so that every worker evicts them from its cache.

        The version moves, the feed records the digests and their shards take the new version,
        in the caller's transaction; the oldest versions of the feed go in the same breath.
        """
        if not digests:
            return
        changed = sorted(set(digests)) if len(digests) <= FEED_DIGESTS_PER_CHANGE else [ALL_KEYS]
        version = session.execute(BUMP_KEY_VERSION).scalar()
        if version is None:  # a database made without migrations, whose row is not there yet
            session.add(KeyChanges(id=1, version=1))
            version = 1
        session.execute(insert(KeyChange), [{"version": version, "digest": digest} for digest in changed])
        session.execute(delete(KeyChange).where(KeyChange.version <= version - FEED_VERSIONS))
        if changed == [ALL_KEYS]:
            session.execute(MOVE_SHARDS, {"moved_to": version})
        else:
            session.execute(MOVE_SOME_SHARDS, {"moved_to": version, "shards": sorted({keys.shard(d) for d in changed})})
        self.cache.changed(None if changed == [ALL_KEYS] else changed)
        send_after_commit(session, self.cache.signal)

    def close(self) -> None:
        """Write the last notes of use and give back the held connection, as the worker exits."""
        self.usage.stop()
        self.reader.close()

