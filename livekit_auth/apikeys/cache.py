"""A per-worker cache of authenticated keys, from which a change evicts just the keys it touched.

Every change that can make a key unusable (revocation, rotation, pruning) moves one version
number in the database in the same transaction, and writes the digests it touched to the
changes feed under that version. Each worker asks for the version at most every
KEY_CACHE_POLL_SECONDS, and at once when its server's key signal moved; when it moved, the
worker reads the feed from the version it last saw and evicts those keys. A key revoked
through a worker is refused by every worker of the server on the next request, and by every
other process within the poll, while every other cached key stays. Expiry needs no signal:
it is checked on every request.
"""

import time
from collections import OrderedDict
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from .meter import Limits
from .models import KeyStatus, key_status
from .signal import KeySignal


class Holder(NamedTuple):
    """The user a key belongs to."""

    id: int
    name: str
    email: str
    org_name: str | None


@dataclass(slots=True, eq=False, weakref_slot=True)
class KnownKey:
    """What authenticating a key needs to know, and what the API shows of its holder.

    One is made each time a key is read, so it is compared by identity: whatever is kept about
    a key against its KnownKey (the web layer's rendered answers) goes with it.
    """

    id: int
    user_id: int
    digest: str
    display_prefix: str
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    last_used_at: datetime | None
    user_name: str
    user_email: str
    org_name: str | None
    suspended_at: datetime | None = None
    scopes: str | None = None  # as stored (keys.scopes_text); None: full access
    rate_limit: str | None = None
    quota_limit: int | None = None
    quota_period: str | None = None
    user_rate_limit: str | None = None
    user_quota_limit: int | None = None
    user_quota_period: str | None = None
    limit_group: int | None = None  # the key whose windows its own limits count in; None: its own
    # Its own limits and its user's, parsed as it is read; None for a key with none (most).
    limits: tuple[Limits, ...] | None = None

    def status(self, at: datetime) -> KeyStatus:
        """The key's status at a moment."""
        return key_status(self.revoked_at, self.expires_at, at, self.suspended_at)

    @property
    def holder(self) -> Holder:
        """The key's user."""
        return Holder(self.user_id, self.user_name, self.user_email, self.org_name)


class Changes(NamedTuple):
    """The keys' version now, and the digests changed since a version: None when unknown (all)."""

    version: int
    digests: Collection[str] | None


class KeyCache:
    """A least-recently-used map from digest to KnownKey, bounded in size."""

    def __init__(
        self, capacity: int, poll_seconds: float, signal: KeySignal | None = None,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capacity = capacity
        self.monotonic = monotonic
        self.poll_seconds = poll_seconds
        self.signal = signal
        self.entries: OrderedDict[str, KnownKey] = OrderedDict()
        self.version: int | None = None
        self.polled_at = float("-inf")
        self.heard: int | None = None

    def sync(self, read_changes: Callable[[int | None], Changes]) -> None:
        """Evict the keys changed since the version last seen; ask every poll_seconds, or when signalled."""
        # Read before the version: a change is committed before its signal is sent.
        heard = None if self.signal is None else self.signal.read()
        now = self.monotonic()
        if heard == self.heard and now - self.polled_at < self.poll_seconds:
            return
        changes = read_changes(self.version)
        self.heard = heard
        self.polled_at = now
        self.evict(changes.digests)
        self.version = changes.version

    def evict(self, digests: Collection[str] | None) -> None:
        """Forget the keys with these digests; None forgets every key."""
        if digests is None:
            self.entries.clear()
            return
        for digest in digests:
            self.entries.pop(digest, None)

    def get(self, digest: str) -> KnownKey | None:
        """The cached key for a digest, marked as recently used."""
        known = self.entries.get(digest)
        if known is not None:
            self.entries.move_to_end(digest)
        return known

    def put(self, known: KnownKey) -> None:
        """Remember a key, forgetting the least recently used past capacity."""
        if self.capacity <= 0:
            return
        self.entries[known.digest] = known
        self.entries.move_to_end(known.digest)
        while len(self.entries) > self.capacity:
            self.entries.popitem(last=False)

    def catch_up(self, version: int) -> None:
        """Ask for the version on the next look-up unless this cache has seen this one already."""
        if self.version is None or self.version < version:
            self.polled_at = float("-inf")

    def changed(self, digests: Collection[str] | None) -> None:
        """Forget keys this worker is changing, and ask for the version on the next look-up."""
        self.evict(digests)
        self.polled_at = float("-inf")
