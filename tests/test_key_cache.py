"""The per-worker key cache: bounded, and rid of each key changed in any worker, and only of those."""

import multiprocessing
from datetime import datetime, timedelta, timezone

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select

from livekit_auth import clock, create_app

from livekit_auth.apikeys import keyring, keys
from livekit_auth.context import key_service
from livekit_auth.extensions import db
from livekit_auth.apikeys.cache import Changes, KeyCache, KnownKey
from livekit_auth.apikeys.signal import KeySignal
from livekit_auth.apikeys.models import ALL_KEYS, ApiKey, KeyChange

from .support import Ticker, envelope_error, release


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


def feed(*answers: Changes):
    """A read_changes that gives these answers in turn, and records the versions it was asked from."""
    asked: list[int | None] = []
    given = iter(answers)

    def read_changes(since: int | None) -> Changes:
        asked.append(since)
        return next(given)

    read_changes.asked = asked  # type: ignore[attr-defined]
    return read_changes


def test_the_cache_evicts_the_keys_changed_and_asks_at_most_every_poll() -> None:
    read_changes = feed(Changes(1, None), Changes(1, ()), Changes(2, {"a"}), Changes(5, None))
    monotonic = Ticker()
    cache = KeyCache(capacity=10, poll_seconds=0.05, monotonic=monotonic)
    cache.sync(read_changes)
    cache.put(known("a"))
    cache.put(known("b"))
    monotonic.advance(0.04)
    cache.sync(read_changes)  # within the poll interval: not asked
    assert read_changes.asked == [None]
    monotonic.advance(0.02)
    cache.sync(read_changes)
    assert cache.get("a") is not None
    monotonic.advance(0.06)
    cache.sync(read_changes)
    assert cache.get("a") is None and cache.get("b") is not None
    monotonic.advance(0.06)
    cache.sync(read_changes)  # too far behind, or a change of every key
    assert cache.entries == {}
    assert read_changes.asked == [None, 1, 1, 2]


@pytest.mark.slow
def test_a_revocation_in_another_worker_is_seen_within_the_poll_interval(app, api, database_uri) -> None:
    worker = create_app({"SQLALCHEMY_DATABASE_URI": database_uri, "SECRET_KEY": "test",
                         "KEY_CACHE_POLL_SECONDS": 0.2})
    monotonic = worker.extensions["keyring"].cache.monotonic = Ticker()
    try:
        other = worker.test_client()
        key = api.new_key()
        key_id = api.get("/auth/keys", key).json["data"][0]["id"]
        assert other.get("/auth/check-key", headers={"x-api-key": key}).status_code == 200
        assert api.call("DELETE", f"/auth/keys/{key_id}", key).status_code == 200
        monotonic.advance(0.1)
        assert other.get("/auth/check-key", headers={"x-api-key": key}).status_code == 200  # within the poll
        monotonic.advance(0.15)
        envelope_error(other.get("/auth/check-key", headers={"x-api-key": key}), 401, "API key has been revoked")
    finally:
        release(worker)


@pytest.fixture
def other_worker(database_uri):
    """A second app on the same database, as another worker or server runs it, that polls on every check."""
    worker = create_app({"SQLALCHEMY_DATABASE_URI": database_uri, "SECRET_KEY": "test",
                         "KEY_CACHE_POLL_SECONDS": 0})
    yield worker
    release(worker)


def check(worker, key: str):
    """Check a key in another worker."""
    return worker.test_client().get("/auth/check-key", headers={"x-api-key": key})


def own_key_id(api, key: str) -> int:
    """The id of a key, as its holder lists it."""
    return api.get("/auth/keys", key).json["data"][0]["id"]


@pytest.mark.slow
def test_a_change_evicts_that_key_in_another_worker_and_keeps_the_rest(api, other_worker) -> None:
    changed = api.new_key(user_email="changed@example.com")
    kept = api.new_key(user_email="kept@example.com")
    assert check(other_worker, changed).status_code == 200
    assert check(other_worker, kept).status_code == 200
    assert api.call("DELETE", f"/auth/keys/{own_key_id(api, changed)}", changed).status_code == 200
    envelope_error(check(other_worker, changed), 401, "API key has been revoked")
    before = cache_results()
    assert check(other_worker, kept).status_code == 200
    assert cache_results()["miss"] == before["miss"]  # still held


def test_a_rotation_evicts_the_old_key_so_its_grace_period_is_seen(api, other_worker, frozen_clock) -> None:
    old = api.new_key()
    assert check(other_worker, old).status_code == 200
    assert api.call("POST", "/auth/keys/rotate", old, json={"grace_hours": 1}).status_code == 200
    frozen_clock.advance(hours=1, seconds=1)
    envelope_error(check(other_worker, old), 401, "API key has expired")


def test_a_pruned_key_is_forgotten_by_another_worker(app, api, other_worker) -> None:
    key = api.new_key()
    assert api.call("DELETE", f"/auth/keys/{own_key_id(api, key)}", key).status_code == 200
    envelope_error(check(other_worker, key), 401, "API key has been revoked")  # now cached as revoked
    with app.app_context():
        assert len(key_service().prune(clock.now() + timedelta(seconds=1), "test")) == 1
        db.session.commit()
    envelope_error(check(other_worker, key), 401, "Invalid API key")


def feed_rows(app) -> list[tuple[int, str]]:
    """The changes feed, oldest first."""
    with app.app_context():
        return [tuple(row) for row in db.session.execute(
            select(KeyChange.version, KeyChange.digest).order_by(KeyChange.version, KeyChange.digest))]


def test_a_change_of_many_keys_is_fed_as_one_change_of_every_key(app, api, other_worker) -> None:
    kept = api.new_key()
    assert check(other_worker, kept).status_code == 200
    many = [f"{number:064x}" for number in range(keyring.FEED_DIGESTS_PER_CHANGE + 1)]
    with app.app_context():
        app.extensions["keyring"].stage_change(db.session, many)
        db.session.commit()
    assert feed_rows(app)[-1][1] == ALL_KEYS
    before = cache_results()
    assert check(other_worker, kept).status_code == 200
    assert cache_results()["miss"] - before["miss"] == 1  # forgotten, so read again


@pytest.mark.slow
def test_the_feed_keeps_its_last_versions_and_a_worker_further_behind_forgets_everything(
    app, api, other_worker, monkeypatch
) -> None:
    monkeypatch.setattr(keyring, "FEED_VERSIONS", 2)
    kept = api.new_key()
    assert check(other_worker, kept).status_code == 200
    for _ in range(3):
        extra = api.call("POST", "/auth/keys", kept).json["data"]["api_key"]
        assert api.call("DELETE", f"/auth/keys/{own_key_id(api, extra)}", extra).status_code == 200
    versions = [version for version, _ in feed_rows(app)]
    assert versions == [versions[-1] - 1, versions[-1]]
    cache = other_worker.extensions["keyring"].cache
    behind = cache.version
    assert behind is not None and versions[-1] - behind == 3
    before = cache_results()
    assert check(other_worker, kept).status_code == 200
    assert cache_results()["miss"] - before["miss"] == 1  # forgotten, so read again
    assert cache.version == versions[-1]


def cache_results() -> dict[str, float]:
    """livekit_auth_key_cache_total by result, in this process."""
    return {result: REGISTRY.get_sample_value("livekit_auth_key_cache_total", {"result": result}) or 0.0
            for result in ("hit", "miss")}


def test_hits_and_misses_are_counted(api) -> None:
    key = api.new_key()
    before = cache_results()
    for _ in range(3):
        assert api.get("/auth/check-key", key).status_code == 200
    envelope_error(api.get("/auth/check-key", keys.generate().secret), 401)  # read, and unknown
    envelope_error(api.get("/auth/check-key", "lvk_malformed"), 401)  # neither: never read
    after = cache_results()
    assert after["hit"] - before["hit"] == 2
    assert after["miss"] - before["miss"] == 2


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


def test_a_moved_signal_makes_the_cache_ask_for_the_changes_at_once(tmp_path) -> None:
    read_changes = feed(Changes(1, None), Changes(2, {"a"}))
    signal = KeySignal(signal_file(tmp_path))
    cache = KeyCache(capacity=10, poll_seconds=60, signal=signal)
    cache.sync(read_changes)
    cache.put(known("a"))
    cache.sync(read_changes)  # within the poll interval and no signal: not asked
    assert cache.get("a") is not None
    signal.send()
    cache.sync(read_changes)
    assert cache.get("a") is None


def test_a_key_change_sends_the_signal_when_it_commits_and_not_when_it_rolls_back(app, api, tmp_path) -> None:
    signal = KeySignal(signal_file(tmp_path))
    app.extensions["keyring"].cache.signal = signal
    key = api.new_key()
    key_id = api.get("/auth/keys", key).json["data"][0]["id"]
    with app.app_context():
        key_service().revoke(db.session.get(ApiKey, key_id), "test")
        db.session.rollback()
        assert signal.read() == 0
        key_service().revoke(db.session.get(ApiKey, key_id), "test")
        assert signal.read() == 0  # staged: another worker must not re-read the key yet
        db.session.commit()
        assert signal.read() == 1


@pytest.mark.slow
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
