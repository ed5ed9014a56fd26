"""Rate limits: per client address, from the environment, shared across workers through Redis."""

import os
import signal
import socket
import threading
import time
import uuid

import pytest
import redis
import requests
from prometheus_client import REGISTRY
from sqlalchemy import func, select

from livekit_auth import create_app, rate_limits

from livekit_auth.apikeys import keys
from livekit_auth.extensions import db
from livekit_auth.apikeys.models import AuditEvent, User

from bench.servers import child_pids, live_server

from .support import AdminActions, envelope_error, release, require_service


@pytest.fixture
def limited(app, database_uri):
    """Build apps with rate limits on, in memory, and the given settings."""
    made = []

    def build(**settings):
        app = create_app({
            "SQLALCHEMY_DATABASE_URI": database_uri, "SECRET_KEY": "test", "TESTING": True,
            "RATELIMIT_ENABLED": True, "RATELIMIT_STORAGE_URI": "memory://",
            "LAST_USED_FLUSH_SECONDS": 0, **settings,
        })
        made.append(app)
        return app

    yield build
    for app in made:
        release(app)


def create(client, email, **headers):
    """POST a valid create-key body."""
    return client.post("/auth/create-key", json={"user_name": "A", "user_email": email}, headers=headers)


def users(app) -> int:
    """How many users the database holds."""
    with app.app_context():
        return db.session.scalar(select(func.count()).select_from(User))


def test_create_key_is_limited_per_address_with_retry_after(app, limited) -> None:
    client = limited(RATELIMIT_CREATE_KEY="3 per hour").test_client()
    for n in range(3):
        assert create(client, f"u{n}@example.com").status_code == 200
    refused = create(client, "u3@example.com")
    body = envelope_error(refused, 429)
    assert "3 per 1 hour" in body["message"]
    assert int(refused.headers["Retry-After"]) > 0
    assert users(app) == 3


def check(client, key=None, path="/auth/check-key"):
    """GET a path with key in x-api-key, or without the header."""
    return client.get(path, headers={} if key is None else {"x-api-key": key})


def test_an_address_past_its_failed_checks_gets_429_for_them_and_its_valid_keys_still_open(app, limited) -> None:
    client = limited(RATELIMIT_FAILED_AUTH="5 per minute").test_client()
    proven = create(client, "proven@example.com").json["data"]["api_key"]
    unproven = create(client, "unproven@example.com").json["data"]["api_key"]
    for _ in range(10):
        assert check(client, proven).status_code == 200
    for bad in ("lvk_wrong", None, "lvk_" + "A" * 49, "not a key", "lvk_" + proven[4:-1] + "x"):
        envelope_error(check(client, bad), 401)
    refused = check(client, "lvk_wrong")
    envelope_error(refused, 429, "Too many requests (limit: 5 per 1 minute); try again later")
    assert 0 < int(refused.headers["Retry-After"]) <= 60
    assert refused.headers["X-RateLimit-Limit"] == "5" and refused.headers["X-RateLimit-Remaining"] == "0"
    # A valid key opens whether or not this worker has seen it: no cache decides an answer.
    assert check(client, proven).status_code == 200
    assert check(client, proven, "/auth/keys").status_code == 200
    assert check(client, unproven).status_code == 200
    # A revoked key is refused as throttled too, and no valid check counted against the address.
    key_id = check(client, unproven, "/auth/keys").json["data"][0]["id"]
    assert client.delete(f"/auth/keys/{key_id}", headers={"x-api-key": unproven}).status_code == 200
    envelope_error(check(client, unproven), 429)


def test_a_throttled_address_gets_one_answer_for_a_valid_key_from_every_worker(app, limited) -> None:
    # Two apps on one store are two workers of a server; only the first has seen the key.
    first = limited(RATELIMIT_FAILED_AUTH="2 per minute")
    second = limited(RATELIMIT_FAILED_AUTH="2 per minute")
    second.extensions["rate_limits"].store.close()
    second.extensions["rate_limits"].store = first.extensions["rate_limits"].store
    seen, unseen = first.test_client(), second.test_client()
    key = create(seen, "both@example.com").json["data"]["api_key"]
    assert check(seen, key).status_code == 200
    for _ in range(3):
        check(unseen, "lvk_wrong")
    envelope_error(check(seen, "lvk_wrong"), 429)
    answers = [check(client, key, path).status_code
               for client in (seen, unseen, seen, unseen) for path in ("/auth/check-key", "/auth/verify")]
    assert answers == [200, 204] * 4


def test_forward_authentication_is_throttled_with_the_failed_checks(limited) -> None:
    client = limited(RATELIMIT_FAILED_AUTH="2 per minute").test_client()
    unproven = create(client, "unproven@example.com").json["data"]["api_key"]
    for _ in range(2):
        envelope_error(check(client, "lvk_wrong", "/auth/verify"), 401)
    refused = check(client, "lvk_wrong", "/auth/verify")
    envelope_error(refused, 429)
    assert "Retry-After" in refused.headers
    assert check(client, unproven, "/auth/verify").status_code == 204


def test_only_a_429_carries_retry_after_and_rate_limit_headers(limited) -> None:
    client = limited(RATELIMIT_FAILED_AUTH="1 per minute", RATELIMIT_CREATE_KEY="1 per hour").test_client()
    created = create(client, "a@example.com")
    key = created.json["data"]["api_key"]
    answers = [created, check(client, key), check(client, "lvk_wrong"), check(client, key)]
    assert [answer.status_code for answer in answers] == [200, 200, 401, 200]
    refused = [check(client, "lvk_wrong"), create(client, "b@example.com")]
    assert [answer.status_code for answer in refused] == [429, 429]
    for answer in answers:
        assert not [name for name in answer.headers.keys() if name.lower().startswith(("retry-after", "x-ratelimit"))]
    for answer in refused:
        assert int(answer.headers["Retry-After"]) > 0 and "X-RateLimit-Reset" in answer.headers


def test_probes_and_metrics_are_never_limited(limited) -> None:
    client = limited(RATELIMIT_FAILED_AUTH="2 per minute", METRICS_TOKEN="metrics-secret").test_client()
    for _ in range(3):
        check(client, "lvk_wrong")
    envelope_error(check(client, "lvk_wrong"), 429)
    assert client.get("/health").status_code == 200
    assert client.get("/health/ready").status_code == 200
    assert client.get("/metrics", headers={"Authorization": "Bearer metrics-secret"}).status_code == 200


def test_metrics_token_guesses_count_against_the_address_and_the_right_token_still_works(limited) -> None:
    client = limited(RATELIMIT_FAILED_AUTH="3 per minute", METRICS_TOKEN="metrics-secret").test_client()
    for n in range(3):
        envelope_error(client.get("/metrics", headers={"Authorization": f"Bearer guess-{n}"}), 401)
    refused = client.get("/metrics", headers={"Authorization": "Bearer guess-3"})
    envelope_error(refused, 429)
    assert int(refused.headers["Retry-After"]) > 0
    envelope_error(check(client, "lvk_wrong"), 429)  # one count of failures per address
    assert client.get("/metrics", headers={"Authorization": "Bearer metrics-secret"}).status_code == 200


def test_failed_guesses_count_on_paths_that_do_not_exist(limited) -> None:
    client = limited(RATELIMIT_FAILED_AUTH="3 per minute").test_client()
    guess = "lvk_" + "B" * 43
    guess += keys.checksum(guess[4:])
    for path in ("/nothing", "/auth/nothing", "/assistant/list"):
        envelope_error(check(client, guess, path), 401)
    envelope_error(check(client, guess), 429)


def test_limits_can_be_turned_off(limited) -> None:
    client = limited(RATELIMIT_ENABLED=False, RATELIMIT_CREATE_KEY="1 per hour").test_client()
    assert [create(client, f"u{n}@example.com").status_code for n in range(3)] == [200] * 3


def store_errors() -> float:
    """How many limit store calls have failed in this process."""
    return REGISTRY.get_sample_value("livekit_auth_limit_store_errors_total") or 0.0


def store_warnings(caplog) -> list[str]:
    """The warnings logged about the limit store."""
    return [record.getMessage() for record in caplog.records if "rate limit store failed" in record.getMessage()]


def test_a_limit_store_that_is_down_lets_requests_through_and_says_so_once(limited, caplog) -> None:
    errors_before = store_errors()
    client = limited(RATELIMIT_STORAGE_URI="redis://127.0.0.1:1/0", RATELIMIT_CREATE_KEY="1 per hour").test_client()
    assert [create(client, f"u{n}@example.com").status_code for n in range(3)] == [200] * 3
    assert client.get("/auth/check-key", headers={"x-api-key": "lvk_x"}).status_code == 401
    assert len(store_warnings(caplog)) == 1
    # After one failure the store is left alone for a few seconds: one error, not four.
    assert store_errors() - errors_before == 1


def test_while_the_store_stays_down_each_retry_counts_but_warns_no_more(limited, caplog, monkeypatch) -> None:
    monkeypatch.setattr(rate_limits, "STORE_RETRY_SECONDS", 0)
    errors_before = store_errors()
    client = limited(RATELIMIT_STORAGE_URI="redis://127.0.0.1:1/0").test_client()
    assert [create(client, f"u{n}@example.com").status_code for n in range(3)] == [200] * 3
    assert store_errors() - errors_before == 3
    assert len(store_warnings(caplog)) == 1


def test_a_limit_store_that_never_answers_costs_one_short_wait(limited, caplog) -> None:
    # A socket that accepts connections (the kernel's backlog) and never says a word.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(16)
        store = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        client = limited(RATELIMIT_STORAGE_URI=store, RATELIMIT_CREATE_KEY="1 per hour").test_client()
        started = time.monotonic()
        codes = [create(client, f"u{n}@example.com").status_code for n in range(5)]
        waited = time.monotonic() - started
        assert client.get("/health").status_code == 200
    assert codes == [200] * 5
    # redis-py's default would wait 5 s on each of them.
    assert waited < 2, waited
    assert len(store_warnings(caplog)) == 1


@pytest.mark.slow
def test_with_redis_a_valid_key_costs_no_command_and_a_refusal_at_most_two(limited, monkeypatch) -> None:
    redis_url = require_service("TEST_REDIS_URL", "set it to a Redis database the test may use")
    sent: list[str] = []
    send = redis.Redis.execute_command

    def counting(client, *args, **options):
        sent.append(str(args[0]))
        return send(client, *args, **options)

    monkeypatch.setattr(redis.Redis, "execute_command", counting)
    client = limited(
        RATELIMIT_STORAGE_URI=redis_url, RATELIMIT_KEY_PREFIX=f"test-{uuid.uuid4().hex}",
        RATELIMIT_FAILED_AUTH="4 per minute",
    ).test_client()
    proven = create(client, "proven@example.com").json["data"]["api_key"]
    unknown = "lvk_" + "C" * 43
    unknown += keys.checksum(unknown[4:])
    check(client, "lvk_warm_up")  # Redis learns the counting script on its first use

    def commands(key, times: int = 1) -> int:
        """Redis commands the app sent while it answered `times` checks of a key."""
        sent.clear()
        for _ in range(times):
            check(client, key)
        return len(sent)

    assert commands(proven) == 0  # a valid key is read from the database, never counted
    assert commands(proven, times=20) == 0
    assert commands(unknown) == 2  # allowed? then count the failure
    assert commands("lvk_malformed") == 2
    assert commands(None) == 2
    assert check(client, unknown).status_code == 429
    assert commands(unknown) == 2  # allowed? no: then how long until it is
    assert commands(proven, times=20) == 0


def test_behind_a_proxy_limits_key_on_the_real_client(limited) -> None:
    client = limited(TRUSTED_PROXY_COUNT=1, RATELIMIT_CREATE_KEY="1 per hour").test_client()
    assert create(client, "a@example.com", **{"X-Forwarded-For": "10.0.0.1"}).status_code == 200
    assert create(client, "b@example.com", **{"X-Forwarded-For": "10.0.0.2"}).status_code == 200
    # A client forging the header gets its own address appended by the proxy: that one counts.
    forged = create(client, "c@example.com", **{"X-Forwarded-For": "6.6.6.6, 10.0.0.1"})
    envelope_error(forged, 429)


def test_without_trusted_proxies_a_forwarded_header_is_ignored(limited) -> None:
    client = limited(RATELIMIT_CREATE_KEY="1 per hour").test_client()
    assert create(client, "a@example.com", **{"X-Forwarded-For": "10.0.0.1"}).status_code == 200
    envelope_error(create(client, "b@example.com", **{"X-Forwarded-For": "10.0.0.2"}), 429)


@pytest.mark.slow
def test_admin_login_failures_are_limited_per_address(limited, admin_account) -> None:
    app = limited(RATELIMIT_ADMIN_LOGIN="2 per 15 minutes")
    actions = AdminActions(app.test_client())
    assert actions.login(email="x@example.com", password="wrong password!").status_code == 401
    assert actions.login(email="y@example.com", password="wrong password!").status_code == 401
    refused = actions.login()
    assert refused.status_code == 429 and refused.mimetype == "text/html"


@pytest.mark.slow
def test_a_redis_limit_holds_across_workers_and_hosts(database_uri, tmp_path) -> None:
    redis_url = require_service("TEST_REDIS_URL", "set it to a Redis database the test may use")
    if database_uri.startswith("sqlite"):
        database_uri = f"sqlite:///{tmp_path / 'limits.db'}"
    settings = {
        "RATELIMIT_ENABLED": "true", "RATELIMIT_STORAGE_URI": redis_url,
        "RATELIMIT_CREATE_KEY": "6 per hour", "RATELIMIT_KEY_PREFIX": f"test-{uuid.uuid4().hex}",
        "RATELIMIT_FAILED_AUTH": "3 per minute",
    }
    # Two servers of one worker each, as two hosts would be: which process answers is certain.
    with live_server(database_uri, tmp_path, workers=1, **settings) as first, \
            live_server(database_uri, tmp_path, workers=1, **settings) as second:

        def create_once(n: int) -> requests.Response:
            server = (first, second)[n % 2]
            body = {"user_name": "R", "user_email": f"redis{n}-{uuid.uuid4().hex[:6]}@example.com"}
            return requests.post(f"{server.url}/auth/create-key", json=body, timeout=10)

        assert [create_once(n).status_code for n in range(6)] == [200] * 6
        envelope_error(create_once(6), 429)
        envelope_error(create_once(7), 429)

        def guess(n: int) -> requests.Response:
            server = (first, second)[n % 2]
            return requests.get(f"{server.url}/auth/check-key", headers={"x-api-key": "lvk_guess"}, timeout=10)

        assert [guess(n).status_code for n in range(3)] == [401] * 3
        envelope_error(guess(3), 429)
        envelope_error(guess(4), 429)
    if not database_uri.startswith("sqlite"):
        from .support import clear_database

        clear_database(database_uri)


def test_issuing_keys_is_limited_per_user_for_adding_and_rotating_together(limited) -> None:
    client = limited(RATELIMIT_KEY_ISSUE="3 per hour").test_client()
    key = create(client, "busy@example.com").json["data"]["api_key"]
    other = create(client, "calm@example.com").json["data"]["api_key"]

    def issue(path: str, holder: str):
        return client.post(path, json={}, headers={"x-api-key": holder})

    assert issue("/auth/keys", key).status_code == 200
    assert issue("/auth/keys", key).status_code == 200
    rotated = issue("/auth/keys/rotate", key)
    assert rotated.status_code == 200
    envelope_error(issue("/auth/keys", key), 429, "Too many requests (limit: 3 per 1 hour); try again later")
    envelope_error(issue("/auth/keys/rotate", rotated.json["data"]["api_key"]), 429)
    assert issue("/auth/keys", other).status_code == 200  # counted per user


def test_memory_store_counts_a_fixed_window_and_starts_again_when_it_ends(monkeypatch) -> None:
    store = rate_limits.open_store("memory://")
    now = [1000.0]
    monkeypatch.setattr(rate_limits.time, "time", lambda: now[0])
    assert [store.incr("k", 60) for _ in range(3)] == [1, 2, 3]
    assert store.get("k") == 3 and store.get("other") == 0
    assert store.get_expiry("k") == 1060.0
    now[0] = 1059.9
    assert store.incr("k", 60) == 4
    now[0] = 1060.0  # the window has ended: a new one starts with this count
    assert store.get("k") == 0
    assert store.incr("k", 60) == 1 and store.get_expiry("k") == 1120.0
    store.clear("k")
    assert store.get("k") == 0


def test_memory_store_counts_without_a_thread_and_reuses_the_slots_of_ended_windows(monkeypatch) -> None:
    threads = threading.active_count()
    store = rate_limits.ServerMemoryStorage(buckets=1)  # one bucket of SLOTS windows
    now = [1000.0]
    monkeypatch.setattr(rate_limits.time, "time", lambda: now[0])
    for address in range(rate_limits.SLOTS):
        store.incr(f"address-{address}", 60)
    assert threading.active_count() == threads
    now[0] += 60
    assert store.incr("late", 60) == 1 and store.incr("late", 60) == 2
    assert store.get("address-0") == 0 and store.reset() == 1


def test_two_workers_of_a_server_share_one_count_through_the_limit_file(tmp_path) -> None:
    path = tmp_path / "limits"
    path.touch()
    first, second = rate_limits.ServerMemoryStorage(str(path)), rate_limits.ServerMemoryStorage(str(path))
    assert first.incr("k", 60) == 1 and second.incr("k", 60) == 2 and first.get("k") == 2
    del first  # a worker gone: its counts stay
    assert rate_limits.ServerMemoryStorage(str(path)).incr("k", 60) == 3


@pytest.mark.parametrize(("given", "counted"), [
    ("2001:DB8::7", "2001:db8::/64"),
    ("2001:db8:0:0:0:0:0:7", "2001:db8::/64"),
    ("2001:db8::ffff:1:2", "2001:db8::/64"),
    ("2001:db8:0:1::7", "2001:db8:0:1::/64"),
    ("::ffff:192.0.2.7", "192.0.2.7"),
    ("192.0.2.7", "192.0.2.7"),
    ("not an address", "not an address"),
])
def test_an_address_is_counted_by_its_canonical_form_and_ipv6_by_its_64(given, counted) -> None:
    assert rate_limits.counted_address(given, 64) == counted


def test_behind_a_proxy_addresses_of_one_ipv6_64_share_one_count(limited) -> None:
    client = limited(TRUSTED_PROXY_COUNT=1, RATELIMIT_FAILED_AUTH="3 per minute").test_client()
    for address in ("2001:DB8::1", "2001:db8:0:0:0:0:0:2", "2001:db8::abcd:3"):
        envelope_error(client.get("/auth/check-key", headers={"x-api-key": "lvk_x", "X-Forwarded-For": address}), 401)
    rotated = client.get("/auth/check-key", headers={"x-api-key": "lvk_x", "X-Forwarded-For": "2001:db8::ffff:9"})
    envelope_error(rotated, 429)
    other = client.get("/auth/check-key", headers={"x-api-key": "lvk_x", "X-Forwarded-For": "2001:db8:1::1"})
    envelope_error(other, 401)


def test_the_ipv6_prefix_is_a_setting(limited) -> None:
    client = limited(TRUSTED_PROXY_COUNT=1, RATELIMIT_FAILED_AUTH="1 per minute", RATELIMIT_IPV6_PREFIX=128).test_client()
    for address in ("2001:db8::1", "2001:db8::2"):
        envelope_error(client.get("/auth/check-key", headers={"x-api-key": "lvk_x", "X-Forwarded-For": address}), 401)


def test_memory_store_holds_at_most_its_capacity_however_many_addresses_come(monkeypatch) -> None:
    store = rate_limits.ServerMemoryStorage(buckets=4)
    now = [1000.0]
    monkeypatch.setattr(rate_limits.time, "time", lambda: now[0])
    for address in range(1000):
        now[0] += 0.01
        store.incr(f"address-{address}", 60)
    assert len(store.memory) == 4 * rate_limits.SLOTS * rate_limits.WINDOW.size
    assert store.get("address-999") == 1  # the newest stay; those ending soonest went first
    assert sum(store.get(f"address-{address}") for address in range(1000)) == 4 * rate_limits.SLOTS


@pytest.mark.slow
def test_a_locked_accounts_refusals_count_against_the_address_and_are_recorded_once(limited, admin_account) -> None:
    app = limited(RATELIMIT_ADMIN_LOGIN="9 per 15 minutes")
    actions = AdminActions(app.test_client())
    statuses = [actions.login(password="wrong password!").status_code for _ in range(9)]
    assert statuses == [401] * 5 + [429] * 4  # the account locks after five failures
    with app.app_context():
        recorded = [event.action for event in db.session.scalars(select(AuditEvent).order_by(AuditEvent.id))
                    if event.action.startswith("login")]
    assert recorded == ["login_failed"] * 5 + ["login_locked"]
    # The four refusals counted against the address too: it may try no other account now.
    refused = actions.login(email="other@example.com", password="wrong password!")
    assert refused.status_code == 429


@pytest.mark.slow
def test_memory_limits_hold_across_the_workers_of_a_server_and_outlive_them(tmp_path) -> None:
    with live_server(f"sqlite:///{tmp_path / 'limits.db'}", tmp_path, workers=2, RATELIMIT_ENABLED="true",
                     RATELIMIT_CREATE_KEY="3 per hour") as server:

        def create_over_http(n: int) -> int:
            body = {"user_name": "W", "user_email": f"worker{n}@example.com"}
            # A connection each, so that both workers take their turns.
            return requests.post(f"{server.url}/auth/create-key", json=body, timeout=10,
                                 headers={"Connection": "close"}).status_code

        assert [create_over_http(n) for n in range(4)] == [200, 200, 200, 429]
        killed = child_pids(server.process.pid)
        for worker in killed:
            os.kill(worker, signal.SIGKILL)
        deadline = time.monotonic() + 30
        while len(workers := set(child_pids(server.process.pid)) - set(killed)) < 2:
            assert time.monotonic() < deadline, f"gunicorn did not replace its workers: {workers}"
            time.sleep(0.1)
        # Every worker is new; the counts are not.
        assert [create_over_http(n) for n in range(4, 8)] == [429] * 4


@pytest.mark.slow
def test_the_admins_failed_logins_per_address_count_one_address_however_it_is_written(limited, admin_account) -> None:
    app = limited(TRUSTED_PROXY_COUNT=1, RATELIMIT_ADMIN_LOGIN="100 per 15 minutes")
    client = app.test_client()
    spellings = ["2001:DB8::7", "2001:db8:0:0:0:0:0:7", "2001:db8::7", "2001:0db8::0007", "2001:db8:0:0::7"]

    def attempt(email: str, address: str) -> int:
        headers = {"X-Forwarded-For": address}
        actions = AdminActions(client)
        token = actions.csrf_token()
        form = {"email": email, "password": "wrong password!", "csrf_token": token}
        return client.post("/admin/login", data=form, headers=headers).status_code

    assert [attempt(f"guess{n}@example.com", spelling) for n, spelling in enumerate(spellings)] == [401] * 5
    assert attempt("another@example.com", "2001:db8:0::7") == 429
    assert attempt("another@example.com", "2001:db8::8") == 401  # another address
    with app.app_context():
        addresses = {event.address for event in db.session.scalars(select(AuditEvent))}
    assert addresses == {"2001:db8::7", "2001:db8::8"}
