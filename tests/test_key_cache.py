"""The per-worker key cache: bounded, and emptied by any key change in any worker."""

import multiprocessing
import time
from datetime import datetime, timezone

from livekit_auth import create_app
from livekit_auth.auth import services
from livekit_auth.extensions import db
from livekit_auth.keyring.cache import KeyCache, KnownKey
from livekit_auth.keyring.signal import KeySignal
from livekit_auth.models import ApiKey

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


def signal_file(tmp_path) -> str:
    """A key signal's file, as gunicorn.conf.py makes it."""
    path = tmp_path / "key-signal"
    path.write_bytes(bytes(8))
    return str(path)


def test_a_signal_sent_through_one_mapping_is_read_through_another(tmp_path) -> None:
    path = signal_file(tmp_path)
    sender, listener = KeySignal(path), KeySignal(path)  # as two workers map it
    before = listener.read()
    sender.send()
    assert listener.read() == before + 1


def test_a_moved_signal_makes_the_cache_ask_for_the_version_at_once(tmp_path) -> None:
    versions = iter([1, 2])
    signal = KeySignal(signal_file(tmp_path))
    cache = KeyCache(capacity=10, poll_seconds=60, signal=signal)
    cache.sync(lambda: next(versions))
    cache.put(known("a"))
    cache.sync(lambda: next(versions))  # within the poll interval and no signal: not asked
    assert cache.get("a") is not None
    signal.send()
    cache.sync(lambda: next(versions))
    assert cache.get("a") is None


def test_a_key_change_sends_the_signal_when_it_commits_and_not_when_it_rolls_back(app, api, tmp_path) -> None:
    signal = KeySignal(signal_file(tmp_path))
    app.extensions["keyring"].cache.signal = signal
    key = api.new_key()
    key_id = api.get("/auth/keys", key).json["data"][0]["id"]
    with app.app_context():
        services.revoke(db.session.get(ApiKey, key_id), "test")
        db.session.rollback()
        assert signal.read() == 0
        services.revoke(db.session.get(ApiKey, key_id), "test")
        assert signal.read() == 0  # staged: another worker must not re-read the key yet
        db.session.commit()
        assert signal.read() == 1


def test_signals_sent_by_several_processes_at_once_all_move_the_number(tmp_path) -> None:
    # A worker that read the number after one send must see the next one move it again, so
    # sends that race must not collapse into one move.
    path = signal_file(tmp_path)
    context = multiprocessing.get_context("fork")
    start = context.Event()
    senders = [context.Process(target=send_many, args=(path, start, 20_000)) for _ in range(3)]
    for sender in senders:
        sender.start()
    start.set()
    for sender in senders:
        sender.join(timeout=60)
    assert [sender.exitcode for sender in senders] == [0, 0, 0]
    assert KeySignal(path).read() == 60_000


def send_many(path: str, start, times: int) -> None:
    """Send a signal many times, as one worker would, once every sender is ready."""
    signal = KeySignal(path)
    start.wait()
    for _ in range(times):
        signal.send()
