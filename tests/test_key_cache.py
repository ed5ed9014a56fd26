"""The per-worker key cache: bounded, and emptied by any key change in any worker."""

import time
from datetime import datetime, timezone

from livekit_auth import create_app
from livekit_auth.key_cache import KeyCache, KnownKey

from .support import envelope_error, release


def known(digest: str) -> KnownKey:
    """A cache entry with the given digest."""
    moment = datetime(2026, 1, 1, tzinfo=timezone.utc)
    return KnownKey(1, 1, digest, "lvk_x", moment, None, None, None, "n", "e@example.com", None)


def test_the_cache_forgets_the_least_recently_used_past_its_capacity() -> None:
    cache = KeyCache(capacity=2, poll_seconds=60)
    cache.put(known("a"))
    cache.put(known("b"))
    assert cache.get("a") is not None
    cache.put(known("c"))
    assert cache.get("b") is None
    assert cache.get("a") is not None and cache.get("c") is not None
    assert len(cache.entries) == 2


def test_a_cache_of_size_zero_keeps_nothing() -> None:
    cache = KeyCache(capacity=0, poll_seconds=60)
    cache.put(known("a"))
    assert cache.get("a") is None


def test_the_cache_empties_when_the_version_moves_and_asks_at_most_every_poll() -> None:
    versions = iter([1, 1, 2])
    cache = KeyCache(capacity=10, poll_seconds=0.05)
    cache.sync(lambda: next(versions))
    cache.put(known("a"))
    cache.sync(lambda: next(versions))  # within the poll interval: not asked
    assert cache.get("a") is not None
    time.sleep(0.06)
    cache.sync(lambda: next(versions))
    assert cache.get("a") is not None
    time.sleep(0.06)
    cache.sync(lambda: next(versions))
    assert cache.get("a") is None


def test_a_revocation_in_another_worker_is_seen_within_the_poll_interval(app, api, database_uri) -> None:
    worker = create_app({"SQLALCHEMY_DATABASE_URI": database_uri, "SECRET_KEY": "test",
                         "KEY_CACHE_POLL_SECONDS": 0.2})
    other = worker.test_client()
    key = api.new_key()
    key_id = api.get("/auth/keys", key).json["data"][0]["id"]
    assert other.get("/auth/check-key", headers={"x-api-key": key}).status_code == 200
    assert api.call("DELETE", f"/auth/keys/{key_id}", key).status_code == 200
    time.sleep(0.25)
    envelope_error(other.get("/auth/check-key", headers={"x-api-key": key}), 401, "API key has been revoked")
    release(worker)


def test_an_expired_key_is_refused_at_its_expiry_even_when_cached(api, frozen_clock) -> None:
    key = api.new_key()
    short = api.call("POST", "/auth/keys", key, json={"expires_in_days": 1}).json["data"]["api_key"]
    assert api.get("/auth/check-key", short).status_code == 200
    frozen_clock.advance(days=1)
    envelope_error(api.get("/auth/check-key", short), 401, "API key has expired")
