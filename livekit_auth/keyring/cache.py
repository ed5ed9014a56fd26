"""A per-worker cache of authenticated keys, emptied whenever any key changes.

Every change that can make a key unusable (revocation, rotation, pruning) bumps one version
number in the database in the same transaction. Each worker reads that number at most every
KEY_CACHE_POLL_SECONDS, and at once when its server's key signal moved, and drops its whole
cache when the number moved: a key revoked through a worker is refused by every worker of the
server on the next request, and by every other process within the poll. Expiry needs no
signal: it is checked on every request.
"""

import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import NamedTuple

from .signal import KeySignal
from ..models import KeyStatus, key_status


class Holder(NamedTuple):
    """The user a key belongs to."""

    id: int
    name: str
    email: str
    org_name: str | None


@dataclass(slots=True)
class KnownKey:
    """What authenticating a key needs to know, and what the API shows of its holder."""

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
    # What GET /auth/check-key answers for this key, rendered once by that view: a key's holder
    # and creation time never change, and the entry goes with the key when it leaves the cache.
    answer: bytes | None = None

    def status(self, at: datetime) -> KeyStatus:
        """The key's status at a moment."""
        return key_status(self.revoked_at, self.expires_at, at)

    @property
    def holder(self) -> Holder:
        """The key's user."""
        return Holder(self.user_id, self.user_name, self.user_email, self.org_name)


class KeyCache:
    """A least-recently-used map from digest to KnownKey, bounded in size."""

    def __init__(self, capacity: int, poll_seconds: float, signal: KeySignal | None = None) -> None:
        self.capacity = capacity
        self.poll_seconds = poll_seconds
        self.signal = signal
        self.entries: OrderedDict[str, KnownKey] = OrderedDict()
        self.version: int | None = None
        self.polled_at = float("-inf")
        self.heard: int | None = None

    def sync(self, read_version: Callable[[], int]) -> None:
        """Drop everything if the keys' version moved; ask every poll_seconds, or when signalled."""
        # Read before the version: a change is committed before its signal is sent.
        heard = None if self.signal is None else self.signal.read()
        now = time.monotonic()
        if heard == self.heard and now - self.polled_at < self.poll_seconds:
            return
        version = read_version()
        self.heard = heard
        self.polled_at = now
        if version != self.version:
            self.entries.clear()
            self.version = version

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

    def clear(self) -> None:
        """Forget every key, and ask for the version on the next look-up."""
        self.entries.clear()
        self.polled_at = float("-inf")
