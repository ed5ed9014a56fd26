"""Limits per client address, counted in the limit store, consulted only where one applies.

Built on the `limits` library (the one Flask-Limiter is built on, so `memory://` and
`redis://` stores work as before) rather than on Flask-Limiter, whose hooks evaluate every
request of the app and cost more than Flask itself. A route declares its limit with
@limit_per_address (throttles.py); the key check keeps its own count of failures
(Keyring.refuse, in apikeys/keyring.py). Nothing here knows about requests.

A store that fails or does not answer within STORE_TIMEOUT_SECONDS lets requests through
(fail-open): it is then left alone for STORE_RETRY_SECONDS, one warning is logged for the
whole episode, and every failure is counted in livekit_auth_limit_store_errors_total.
"""

import fcntl
import hashlib
import ipaddress
import logging
import math
import mmap
import os
import re
import struct
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, NamedTuple

from limits import RateLimitItem, parse_many
from limits.errors import ConfigurationError, StorageError
from limits.storage import RedisClusterStorage, RedisStorage, Storage, storage_from_string

from .config import SettingError
from .metrics import LIMIT_STORE_ERRORS

logger = logging.getLogger(__name__)
STORE_TIMEOUT_SECONDS = 0.1
STORE_RETRY_SECONDS = 5.0
# memory://'s table (ServerMemoryStorage): 8,192 buckets of 16 windows, 24 bytes each (3 MiB).
LIMIT_FILE_VARIABLE = "LIVEKIT_AUTH_LIMIT_FILE"
MEMORY_BUCKETS = 8192
SLOTS = 16
WINDOW = struct.Struct("=Qqd")  # the store key's hash, the count, when the window ends
BUCKET_BYTES = SLOTS * WINDOW.size
LIMIT_SETTINGS = (
    "RATELIMIT_CREATE_KEY", "RATELIMIT_FAILED_AUTH", "RATELIMIT_ADMIN_LOGIN", "RATELIMIT_KEY_ISSUE",
    "RATELIMIT_LEAK_REPORT",
)


class Window(NamedTuple):
    """A fixed window a request is counted in: its store key, how many fit, how long one opened now lasts.

    A seeded window opens with a count its caller reads elsewhere (a quota's, from its record).
    """

    key: str
    amount: int
    seconds: int
    seeded: bool = False


class Counted(NamedTuple):
    """A window's count after a request was counted (or the count that refused it), and when it ends."""

    count: int
    ends_at: float  # epoch seconds


# Counting one request in every window or in none, in one round trip to Redis. KEYS are the
# windows; ARGV holds three values per window: how many fit, how many seconds a window opened
# now lasts, and the count it opens with ("" for 0, "?" when the caller has to read it first).
# The answer is {1, count, milliseconds left, ...} per window when every window had room;
# {0, window, count, milliseconds left} for the first that had none; {-1} for an opening count.
COUNT_IN_EVERY_WINDOW = """
local opening = {}
for i = 1, #KEYS do
    local count = redis.call('GET', KEYS[i])
    if count then
        count = tonumber(count)
    else
        if ARGV[3 * i] == '?' then return {-1} end
        count = tonumber(ARGV[3 * i]) or 0
        opening[i] = count
    end
    if count >= tonumber(ARGV[3 * i - 2]) then
        local left = redis.call('PTTL', KEYS[i])
        if left < 0 then left = tonumber(ARGV[3 * i - 1]) * 1000 end
        return {0, i, count, left}
    end
end
local answer = {1}
for i = 1, #KEYS do
    if opening[i] then redis.call('SET', KEYS[i], opening[i], 'EX', ARGV[3 * i - 1]) end
    answer[#answer + 1] = redis.call('INCR', KEYS[i])
    answer[#answer + 1] = redis.call('PTTL', KEYS[i])
end
return answer
"""


class RateLimited(Exception):
    """A client out of room under a limit, with the seconds until the window ends."""

    def __init__(self, limit: RateLimitItem, retry_after: int) -> None:
        super().__init__(str(limit))
        self.limit = limit
        self.retry_after = retry_after


# A window of zero units, which limits would read as one unit ("10 per 0 hour" as "10 per 1 hour").
ZERO_WINDOW = re.compile(r"(/|\bper)\s*0+\s*[a-z]", re.IGNORECASE)


def parse_limit(setting: str, value: str) -> RateLimitItem:
    """One limit in the `limits` notation, or a SettingError that names the setting.

    limits reads only the first of several ("10 per hour; 5 per minute") and a window of zero
    units as one unit; both are refused rather than served as something else.
    """
    try:
        every = parse_many(value)
    except ValueError as error:
        raise SettingError(
            f"{setting}={value!r} is not a rate limit; write it as '10 per hour' or '60/minute'"
        ) from error
    if len(every) != 1:
        raise SettingError(f"{setting}={value!r} names {len(every)} limits; it takes one, such as '10 per hour'")
    if ZERO_WINDOW.search(value):
        raise SettingError(f"{setting}={value!r} has a window of no time; write it as '10 per hour' or '60/minute'")
    return every[0]


def parsed_address(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """An address as the ipaddress module reads it (an IPv4-mapped IPv6 one as IPv4), or None for text that is none."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return None
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return parsed.ipv4_mapped
    return parsed


def canonical_address(address: str) -> str:
    """An address in its one canonical spelling (2001:DB8:0::7 as 2001:db8::7); text that is none, as it is."""
    parsed = parsed_address(address)
    return address if parsed is None else str(parsed)


@lru_cache(maxsize=4096)
def counted_address(address: str, ipv6_prefix: int) -> str:
    """An address as limits count it (RateLimits.address); text that is no address, as it is."""
    parsed = parsed_address(address)
    if parsed is None:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        return str(ipaddress.ip_network((parsed, ipv6_prefix), strict=False))
    return str(parsed)


@lru_cache(maxsize=4096)
def store_key(limit: RateLimitItem, prefix: str, scope: tuple[str, ...]) -> str:
    """The store's key for a scope's window under a limit, as limits names it; the busiest are kept."""
    return limit.key_for(prefix, *scope)


class ServerMemoryStorage(Storage):
    """memory://: fixed windows' counts in memory that the workers of one server share.

    gunicorn.conf.py makes an empty file before it forks the workers and names it in
    LIVEKIT_AUTH_LIMIT_FILE; each worker maps it, so every worker counts one address alike, and
    a worker that gunicorn replaces (timeout, crash, max_requests) takes no count with it. A
    process without the file (the flask CLI, a test) counts in a file of its own.

    The memory is a table of BUCKETS buckets of SLOTS windows, a window's store key hashed to a
    bucket; a bucket is locked (a POSIX record lock, which the kernel drops with a process that
    dies holding it) while a window in it is read or counted. A window that ended frees its
    slot; in a full bucket the window that ends soonest gives way. So however many clients
    come, a server holds at most BUCKETS * SLOTS windows, in 3 MiB.
    """

    base_exceptions = ValueError

    def __init__(self, path: str | None = None, buckets: int = MEMORY_BUCKETS) -> None:
        super().__init__(wrap_exceptions=True)
        self.buckets = buckets
        size = buckets * BUCKET_BYTES
        # Held until close(): closing any descriptor of the file drops this process's record locks on it.
        if path:
            self.descriptor = os.open(path, os.O_RDWR)
        else:
            self.descriptor, own_path = tempfile.mkstemp(prefix="livekit-auth-limits-")
            os.unlink(own_path)
        if os.fstat(self.descriptor).st_size < size:
            os.ftruncate(self.descriptor, size)  # zeros: every slot empty
        self.memory = mmap.mmap(self.descriptor, size)
        self.lock = threading.Lock()  # record locks are per process; this orders its threads

    def close(self) -> None:
        """Unmap the table and close the file (once): the counts stay for the server's other workers."""
        if self.memory.closed:
            return
        self.memory.close()
        os.close(self.descriptor)

    def bucket(self, key: str) -> tuple[int, int]:
        """The hash under which a store key is kept (never 0, an empty slot), and its bucket's offset."""
        hashed = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "little") or 1
        return hashed, (hashed % self.buckets) * BUCKET_BYTES

    @contextmanager
    def locked(self, offset: int) -> Iterator[list[tuple[int, int, float]]]:
        """A bucket's windows (hash, count, when its window ends), held against every other process."""
        with self.lock:
            fcntl.lockf(self.descriptor, fcntl.LOCK_EX, BUCKET_BYTES, offset)
            try:
                yield list(WINDOW.iter_unpack(self.memory[offset:offset + BUCKET_BYTES]))
            finally:
                fcntl.lockf(self.descriptor, fcntl.LOCK_UN, BUCKET_BYTES, offset)

    def window(self, key: str) -> tuple[int, float]:
        """A key's count and when its window ends; (0, 0.0) when none is running."""
        hashed, offset = self.bucket(key)
        now = time.time()
        with self.locked(offset) as windows:
            for slot_hash, count, window_ends in windows:
                if slot_hash == hashed and window_ends > now:
                    return count, window_ends
        return 0, 0.0

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        """Add to a key's count, opening a window of `expiry` seconds when none is running."""
        return self.counted(key, expiry, amount).count

    def counted(self, key: str, expiry: int, amount: int = 1) -> Counted:
        """Add to a key's count as incr does; the count and when its window ends."""
        hashed, offset = self.bucket(key)
        now = time.time()
        with self.locked(offset) as windows:
            slot = next((n for n, (slot_hash, _, _) in enumerate(windows) if slot_hash == hashed), None)
            if slot is None:  # an empty slot or an ended window ends soonest of all
                slot = min(range(SLOTS), key=lambda n: windows[n][2])
            slot_hash, count, window_ends = windows[slot]
            if slot_hash != hashed or window_ends <= now:
                count, window_ends = 0, now + expiry
            WINDOW.pack_into(self.memory, offset + slot * WINDOW.size, hashed, count + amount, window_ends)
        return Counted(count + amount, window_ends)

    def get(self, key: str) -> int:
        """A key's count in its running window; 0 when none is running."""
        return self.window(key)[0]

    def get_expiry(self, key: str) -> float:
        """When a key's window ends (now, when none is running)."""
        return self.window(key)[1] or time.time()

    def check(self) -> bool:
        """Memory always answers."""
        return True

    def reset(self) -> int:
        """Forget every count; how many windows were running."""
        now, running = time.time(), 0
        for offset in range(0, self.buckets * BUCKET_BYTES, BUCKET_BYTES):
            with self.locked(offset) as windows:
                running += sum(1 for slot_hash, _, window_ends in windows if slot_hash and window_ends > now)
                self.memory[offset:offset + BUCKET_BYTES] = bytes(BUCKET_BYTES)
        return running

    def clear(self, key: str) -> None:
        """Forget a key's count."""
        hashed, offset = self.bucket(key)
        with self.locked(offset) as windows:
            for slot, (slot_hash, _, _) in enumerate(windows):
                if slot_hash == hashed:
                    WINDOW.pack_into(self.memory, offset + slot * WINDOW.size, 0, 0, 0.0)


def open_store(uri: str) -> Storage:
    """The limit store a URI names; a Redis one gives up on any call after STORE_TIMEOUT_SECONDS."""
    if uri.partition("//")[0] == "memory:":
        return ServerMemoryStorage(os.environ.get(LIMIT_FILE_VARIABLE))
    options: dict[str, Any] = {"wrap_exceptions": True}
    if uri.startswith(("redis://", "rediss://", "redis+unix://")):
        options.update(socket_timeout=STORE_TIMEOUT_SECONDS, socket_connect_timeout=STORE_TIMEOUT_SECONDS)
    try:
        return storage_from_string(uri, **options)
    except (ConfigurationError, ValueError) as error:  # ValueError: a port that is no port
        raise SettingError(
            f"RATELIMIT_STORAGE_URI={uri!r} names no limit store; use memory:// or redis://host:6379/0"
        ) from error


class RateLimits:
    """The app's limits, parsed once, counted in fixed windows in the limit store.

    A window is counted as limits' FixedWindowRateLimiter counts it (a request fits while the
    window's count is below the limit), on the store directly, with each scope's store key
    built once: a refused key asks and counts under the same one.
    """

    def __init__(self, config: Mapping[str, Any]) -> None:
        self.enabled = bool(config["RATELIMIT_ENABLED"])
        self.prefix = config["RATELIMIT_KEY_PREFIX"]
        self.ipv6_prefix = config["RATELIMIT_IPV6_PREFIX"]
        if not 1 <= self.ipv6_prefix <= 128:
            raise SettingError(f"RATELIMIT_IPV6_PREFIX={str(self.ipv6_prefix)!r} is not a prefix length from 1 to 128")
        self.limits = {name: parse_limit(name, config[name]) for name in LIMIT_SETTINGS}
        self.store = open_store(config["RATELIMIT_STORAGE_URI"])
        # One server's workers share memory://; every server shares Redis.
        self.shared = not isinstance(self.store, ServerMemoryStorage)
        self.count_script = None
        if isinstance(self.store, RedisStorage) and not isinstance(self.store, RedisClusterStorage):
            self.count_script = self.store.storage.register_script(COUNT_IN_EVERY_WINDOW)
        self.resting_until = float("-inf")
        self.failing = False

    def close(self) -> None:
        """Let go of the limit store's memory or connections."""
        close = getattr(self.store, "close", None)
        if close is not None:
            close()

    def address(self, address: str) -> str:
        """What a client address is counted as: its canonical text, an IPv6 one by its network.

        2001:DB8::7 and 2001:db8:0:0:0:0:0:7 are one address, and every address of one IPv6 /64
        (RATELIMIT_IPV6_PREFIX) one client, who could otherwise take a new address per request.
        """
        return counted_address(address, self.ipv6_prefix)

    def check(self, setting: str, *scope: str) -> None:
        """Raise RateLimited when the scope has no room left under a limit; count nothing."""
        limit = self.limits[setting]
        if not self.enabled:
            return
        key = store_key(limit, self.prefix, scope)
        if not self.ask(lambda: self.store.get(key) < limit.amount, True):
            raise self.refusal(limit, scope)

    def take(self, setting: str, *scope: str) -> None:
        """Count one request under a limit; raise RateLimited when it went past the limit."""
        if not self.count(setting, *scope):
            raise self.refusal(self.limits[setting], scope)

    def count(self, setting: str, *scope: str) -> bool:
        """Count one request under a limit, whatever the room left; whether it was within it."""
        limit = self.limits[setting]
        if not self.enabled:
            return True
        key = store_key(limit, self.prefix, scope)
        return self.ask(lambda: self.store.incr(key, limit.get_expiry()) <= limit.amount, True)

    def count_failure(self, setting: str, *scope: str) -> None:
        """Count one failure under a limit; raise RateLimited, counting nothing, when the scope is past it already.

        So failures go on being refused, not counted, once the limit is reached (failed key checks,
        wrong metrics tokens).
        """
        self.check(setting, *scope)
        self.count(setting, *scope)

    def count_all(
        self, windows: Sequence[Window], seed: Callable[[int], int | None]
    ) -> tuple[int | None, list[Counted]] | None:
        """Count one request in every window, or, when one has no room, in none (whatever RATELIMIT_ENABLED says).

        The answer is (None, each window's count) when all had room, and (the first without
        room, [its count]) when one had none. A seeded window opens with the count seed(index)
        gives it (a quota's, read from its record); None from seed, or a store that fails,
        counts nothing and answers None.
        """
        if self.count_script is not None:
            return self.ask(lambda: self.count_in_redis(windows, seed), None)
        return self.ask(lambda: self.count_each(windows, seed), None)

    def count_in_redis(
        self, windows: Sequence[Window], seed: Callable[[int], int | None]
    ) -> tuple[int | None, list[Counted]] | None:
        """count_all in Redis: one round trip, and a second when a seeded window has to be opened."""
        assert isinstance(self.store, RedisStorage) and self.count_script is not None
        keys = [self.store.prefixed_key(window.key) for window in windows]
        openings: list[Any] = ["?" if window.seeded else "" for window in windows]
        for attempt in range(2):
            arguments = [value for window, opening in zip(windows, openings)
                         for value in (window.amount, window.seconds, opening)]
            try:
                answer = self.count_script(keys=keys, args=arguments)
            except self.store.base_exceptions as error:
                raise StorageError(error) from error
            if answer[0] != -1:
                break
            if attempt:
                return None
            openings = [seed(index) if window.seeded else "" for index, window in enumerate(windows)]
            if None in openings:
                return None
        now = time.time()
        if answer[0] == 0:
            return answer[1] - 1, [Counted(answer[2], now + answer[3] / 1000)]
        return None, [Counted(answer[n], now + answer[n + 1] / 1000) for n in range(1, len(answer), 2)]

    def count_each(
        self, windows: Sequence[Window], seed: Callable[[int], int | None]
    ) -> tuple[int | None, list[Counted]] | None:
        """count_all in any other store: each window counted, and taken back when one went past its limit."""
        counted: list[Counted] = []
        for index, window in enumerate(windows):
            count, ends_at = self.counted(window, 1)
            if count == 1 and window.seeded:
                opening = seed(index)
                if opening is None:
                    self.take_back(windows[: index + 1])
                    return None
                if opening:
                    count, ends_at = self.counted(window, opening)
            if count > window.amount:
                self.take_back(windows[: index + 1])
                return index, [Counted(count - 1, ends_at)]
            counted.append(Counted(count, ends_at))
        return None, counted

    def counted(self, window: Window, amount: int) -> Counted:
        """Add to a window's count: the count, and when the window ends."""
        if isinstance(self.store, ServerMemoryStorage):
            return self.store.counted(window.key, window.seconds, amount)
        return Counted(self.store.incr(window.key, window.seconds, amount), self.store.get_expiry(window.key))

    def take_back(self, windows: Sequence[Window]) -> None:
        """Take back one request counted in each of these windows."""
        for window in windows:
            self.counted(window, -1)

    def refusal(self, limit: RateLimitItem, scope: tuple[str, ...]) -> RateLimited:
        """The refusal of a scope out of room, with the seconds until its window ends."""
        key = store_key(limit, self.prefix, scope)
        window_ends = self.ask(lambda: self.store.get_expiry(key), time.time() + limit.get_expiry())
        return RateLimited(limit, max(1, math.ceil(window_ends - time.time())))

    def ask(self, call: Callable[[], Any], otherwise: Any) -> Any:
        """The store's answer to a call; `otherwise` when it fails, or rests after failing."""
        if time.monotonic() < self.resting_until:
            return otherwise
        try:
            answer = call()
        except StorageError as error:
            LIMIT_STORE_ERRORS.inc()
            self.resting_until = time.monotonic() + STORE_RETRY_SECONDS
            if not self.failing:
                self.failing = True
                logger.warning(
                    "rate limit store failed (%s); limits are not enforced until it answers again",
                    type(error.storage_error).__name__,
                )
            return otherwise
        self.failing = False
        return answer
