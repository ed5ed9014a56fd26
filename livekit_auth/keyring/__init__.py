"""The key check's one home: from the x-api-key header to the key it names, or a refusal.

A worker's Keyring owns everything a check touches: the cache of keys seen lately, the held
connection that reads a key not in it, the signal that tells the workers of a server that a
key changed, the changes feed that says which, the notes of last use, and the throttle on
failed checks per address. The gate hands it the header; it answers a KnownKey or raises one
of the refusals below, which the error handlers turn into statuses.
"""

import hmac
from collections.abc import Collection
from datetime import datetime
from typing import NoReturn

from sqlalchemy import Engine, bindparam, delete, insert, select, update
from sqlalchemy.orm import Session

from .. import clock, keys
from ..metrics import count_key_cache, count_key_check
from ..models import ALL_KEYS, ApiKey, KeyChange, KeyChanges, KeyShard, KeyStatus, User
from ..rate_limits import RateLimited, RateLimits
from .cache import Changes, KeyCache, KnownKey
from .reader import KeyReader
from .signal import send_after_commit
from .usage import UsageRecorder


class KeyRefused(Exception):
    """A presented key that opens nothing; outcome names it in the key-check metrics."""

    outcome = "invalid"


class MissingKey(KeyRefused):
    """No x-api-key header at all."""


class InvalidKey(KeyRefused):
    """A key of the wrong shape or checksum, or one no user holds."""


class RevokedKey(KeyRefused):
    """A key its holder or an admin revoked."""

    outcome = "revoked"


class ExpiredKey(KeyRefused):
    """A key past its expiry."""

    outcome = "expired"


class SuspendedKey(KeyRefused):
    """A key an operator suspended, refused until it is resumed."""

    outcome = "suspended"


class MissingScope(Exception):
    """A valid restricted key asked to act in a scope it does not carry: 403, not a failed check."""

    def __init__(self, scope: str) -> None:
        super().__init__(scope)
        self.scope = scope


# The refusal of a key in each status but active.
REFUSALS: dict[KeyStatus, type[KeyRefused]] = {
    KeyStatus.REVOKED: RevokedKey, KeyStatus.EXPIRED: ExpiredKey, KeyStatus.SUSPENDED: SuspendedKey,
}

# Built once: a key check runs in front of every API call, and building a statement costs
# more than running it.
LOOK_UP = (
    select(
        ApiKey.id, ApiKey.user_id, ApiKey.digest, ApiKey.display_prefix, ApiKey.created_at,
        ApiKey.expires_at, ApiKey.revoked_at, ApiKey.last_used_at,
        User.name, User.email, User.org_name, ApiKey.suspended_at, ApiKey.scopes,
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
    ) -> KnownKey:
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
                self.refuse(refusal, self.rate_limits.address(address))
        if scope is not None and not keys.allows(known.scopes, scope):
            count_key_check("missing_scope")
            raise MissingScope(scope)
        self.usage.note(known, now)
        count_key_check("valid")
        return known

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
            raise REFUSALS[status]()
        return known

    def look_up(self, digest: str) -> KnownKey | None:
        """Read a key and its holder by digest: one indexed query of the columns needed.

        It runs on the worker's held connection, not in the ORM session, which would triple
        the cost of the query.
        """
        row = self.reader.first(LOOK_UP, {"digest": digest})
        return None if row is None else KnownKey(*row)

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

