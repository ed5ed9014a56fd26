"""Limits per client address, counted in the limit store, consulted only where one applies.

Built on the `limits` library (the one Flask-Limiter is built on, so `memory://` and
`redis://` stores work as before) rather than on Flask-Limiter, whose hooks evaluate every
request of the app and cost more than Flask itself. A route declares its limit with
@limit_per_address; the key check keeps its own count of failures (Keyring.refuse, in keyring/).

A store that fails or does not answer within STORE_TIMEOUT_SECONDS lets requests through
(fail-open): it is then left alone for STORE_RETRY_SECONDS, one warning is logged for the
whole episode, and every failure is counted in livekit_auth_limit_store_errors_total.
"""

import heapq
import ipaddress
import logging
import math
import re
import threading
import time
from collections.abc import Callable, Collection, Mapping
from functools import lru_cache, wraps
from typing import Any, ParamSpec

from flask import current_app, g, request
from flask.typing import ResponseReturnValue
from limits import RateLimitItem, parse_many
from limits.errors import ConfigurationError, StorageError
from limits.storage import Storage, storage_from_string
from werkzeug.wrappers import Response

from .config import SettingError
from .metrics import LIMIT_STORE_ERRORS

logger = logging.getLogger(__name__)
STORE_TIMEOUT_SECONDS = 0.1
STORE_RETRY_SECONDS = 5.0
# How often a worker's memory:// store drops the counts of windows that have ended.
SWEEP_SECONDS = 60.0
# The most fixed windows a worker keeps in memory:// (about 150 bytes each), however many clients come.
MEMORY_WINDOWS = 100_000
LIMIT_SETTINGS = (
    "RATELIMIT_CREATE_KEY", "RATELIMIT_FAILED_AUTH", "RATELIMIT_ADMIN_LOGIN", "RATELIMIT_KEY_ISSUE",
    "RATELIMIT_LEAK_REPORT",
)
Params = ParamSpec("Params")


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


@lru_cache(maxsize=4096)
def counted_address(address: str, ipv6_prefix: int) -> str:
    """An address as limits count it (RateLimits.address); text that is no address, as it is."""
    try:
        parsed = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(parsed, ipaddress.IPv6Address):
        if parsed.ipv4_mapped is not None:
            return str(parsed.ipv4_mapped)
        return str(ipaddress.ip_network((parsed, ipv6_prefix), strict=False))
    return str(parsed)


@lru_cache(maxsize=4096)
def store_key(limit: RateLimitItem, prefix: str, scope: tuple[str, ...]) -> str:
    """The store's key for a scope's window under a limit, as limits names it; the busiest are kept."""
    return limit.key_for(prefix, *scope)


class WorkerMemoryStorage(Storage):
    """memory://: the fixed windows' counts in this worker's memory.

    limits' own MemoryStorage drops ended windows from a timer thread, which it starts again
    up to every 10 ms while counts are being added (every refused key, under load); starting
    it and its wake-ups take the interpreter from the request being served. Here the counts
    of ended windows are swept on the request path instead, at most every SWEEP_SECONDS.
    """

    base_exceptions = ValueError

    def __init__(self, capacity: int = MEMORY_WINDOWS) -> None:
        super().__init__(wrap_exceptions=True)
        self.counts: dict[str, tuple[int, float]] = {}  # key: (count, when its window ends)
        self.capacity = capacity
        self.lock = threading.Lock()
        self.swept_at = time.time()

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        """Add to a key's count, opening a window of `expiry` seconds when none is running."""
        now = time.time()
        with self.lock:
            if now - self.swept_at >= SWEEP_SECONDS or (key not in self.counts and len(self.counts) >= self.capacity):
                self.sweep(now)
            count, window_ends = self.counts.get(key, (0, now))
            if window_ends <= now:
                count, window_ends = 0, now + expiry
            self.counts[key] = (count + amount, window_ends)
        return count + amount

    def sweep(self, now: float) -> None:
        """Drop the ended windows; when still full, the tenth of them that would end soonest.

        So however many addresses a flood brings, a worker holds at most `capacity` windows.
        """
        self.counts = {name: entry for name, entry in self.counts.items() if entry[1] > now}
        self.swept_at = now
        if len(self.counts) >= self.capacity:
            ending = heapq.nsmallest(max(1, self.capacity // 10), self.counts, key=lambda name: self.counts[name][1])
            for name in ending:
                del self.counts[name]

    def get(self, key: str) -> int:
        """A key's count in its running window; 0 when none is running."""
        count, window_ends = self.counts.get(key, (0, 0.0))
        return count if window_ends > time.time() else 0

    def get_expiry(self, key: str) -> float:
        """When a key's window ends."""
        return self.counts.get(key, (0, time.time()))[1]

    def check(self) -> bool:
        """Memory always answers."""
        return True

    def reset(self) -> int:
        """Forget every count; how many there were."""
        with self.lock:
            forgotten, self.counts = len(self.counts), {}
        return forgotten

    def clear(self, key: str) -> None:
        """Forget a key's count."""
        with self.lock:
            self.counts.pop(key, None)


def open_store(uri: str) -> Storage:
    """The limit store a URI names; a Redis one gives up on any call after STORE_TIMEOUT_SECONDS."""
    if uri.partition("//")[0] == "memory:":
        return WorkerMemoryStorage()
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
        self.resting_until = float("-inf")
        self.failing = False

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


def rate_limits() -> RateLimits:
    """The current app's limits."""
    return current_app.extensions["rate_limits"]


def limit_per_address(
    setting: str,
    counts: Callable[[Response], bool] | None = None,
    methods: Collection[str] = ("POST",),
) -> Callable[[Callable[Params, ResponseReturnValue]], Callable[Params, ResponseReturnValue]]:
    """Limit a view's requests of some methods per client address, to the limit a setting names.

    Without `counts` every request counts and the one past the limit is refused. With it, only
    the answers it picks count (failed logins, say), and an address already out of room is
    refused before the view runs.
    """

    def decorate(view: Callable[Params, ResponseReturnValue]) -> Callable[Params, ResponseReturnValue]:
        @wraps(view)
        def limited(*args: Params.args, **kwargs: Params.kwargs) -> ResponseReturnValue:
            if request.method not in methods:
                return view(*args, **kwargs)
            scope = (view.__name__, rate_limits().address(request.remote_addr or ""))
            if counts is None:
                rate_limits().take(setting, *scope)
                return view(*args, **kwargs)
            rate_limits().check(setting, *scope)
            response = current_app.make_response(view(*args, **kwargs))
            if counts(response):
                rate_limits().count(setting, *scope)
            return response

        setattr(limited, "rate_limited", True)  # the OpenAPI document lists its 429
        return limited

    return decorate


def limit_per_user(
    setting: str, scope: str
) -> Callable[[Callable[Params, ResponseReturnValue]], Callable[Params, ResponseReturnValue]]:
    """Limit the authenticated user's requests to the views that share a scope, to a setting's limit."""

    def decorate(view: Callable[Params, ResponseReturnValue]) -> Callable[Params, ResponseReturnValue]:
        @wraps(view)
        def limited(*args: Params.args, **kwargs: Params.kwargs) -> ResponseReturnValue:
            rate_limits().take(setting, scope, str(g.user.id))
            return view(*args, **kwargs)

        setattr(limited, "rate_limited", True)
        return limited

    return decorate
