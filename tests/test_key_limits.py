"""Keys and users with their own rate limits and quotas: counted at every passed check, refused past them."""

import json
import uuid
from datetime import datetime, timezone

import pytest
import redis
import requests
from prometheus_client import REGISTRY
from sqlalchemy import select

from livekit_auth import create_app

from livekit_auth.apikeys import keys
from livekit_auth.config import SettingError
from livekit_auth.extensions import db
from livekit_auth.apikeys.meter import LimitSettings, Quota, parse_quota
from livekit_auth.apikeys.models import ApiKey, KeyRefusalCount, User

from bench.servers import live_server

from .support import envelope_error, events, release, require_service

RATE_LIMIT_HEADERS = ("RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset")


def key_id(app, key: str) -> int:
    """The id of a key, read without a check of it (which would count)."""
    with app.app_context():
        return db.session.scalar(select(ApiKey.id).where(ApiKey.display_prefix == keys.display_prefix(key)))


def set_limits(app, key: int, rate: str | None = None, quota: Quota | None = None) -> None:
    """Set a key's limits as an operator does."""
    from livekit_auth.context import key_service

    with app.test_request_context():
        key_service().set_key_limits(db.session.get(ApiKey, key), LimitSettings(rate, quota), "ops@example.com")
        db.session.commit()


def set_user_limits(app, email: str, rate: str | None = None, quota: Quota | None = None) -> None:
    """Set a user's limits as an operator does."""
    from livekit_auth.context import key_service

    with app.test_request_context():
        key_service().set_user_limits(key_service().user_by_email(email), LimitSettings(rate, quota), "ops@example.com")
        db.session.commit()


def checks(api, key: str, times: int, path: str = "/auth/check-key") -> list:
    """Check a key some times; the answers."""
    return [api.get(path, key) for _ in range(times)]


def outcome_count(outcome: str) -> float:
    """Key checks with an outcome so far, in this process."""
    return REGISTRY.get_sample_value("livekit_auth_key_checks_total", {"outcome": outcome}) or 0.0


def listed_key(api, caller: str, wanted: int) -> dict:
    """One key as GET /auth/keys lists it to a caller."""
    return next(row for row in api.get("/auth/keys", caller).json["data"] if row["id"] == wanted)


def test_a_key_with_a_rate_limit_is_counted_and_refused_past_it_and_others_are_untouched(app, api) -> None:
    limited, free = api.new_key(user_email="rate@example.com"), api.new_key(user_email="free@example.com")
    set_limits(app, key_id(app, limited), "3 per minute")
    before = outcome_count("rate_limited_key")
    passed = checks(api, limited, 3)
    assert [answer.status_code for answer in passed] == [200] * 3
    assert [answer.headers["RateLimit-Limit"] for answer in passed] == ["3"] * 3
    assert [answer.headers["RateLimit-Remaining"] for answer in passed] == ["2", "1", "0"]
    assert 0 < int(passed[0].headers["RateLimit-Reset"]) <= 60
    refused = api.get("/auth/verify", limited)
    envelope_error(refused, 429, "API key rate limit exceeded")
    assert 1 <= int(refused.headers["Retry-After"]) <= 60 and refused.headers["RateLimit-Remaining"] == "0"
    envelope_error(api.get("/auth/keys", limited), 429, "API key rate limit exceeded")  # every gated endpoint
    assert outcome_count("rate_limited_key") == before + 2
    for answer in checks(api, free, 5) + checks(api, free, 2, "/auth/verify"):
        assert answer.status_code in (200, 204) and not set(RATE_LIMIT_HEADERS) & set(answer.headers)
    with app.app_context():  # what the key's chart shows
        refusals = db.session.scalars(select(KeyRefusalCount)).all()
        assert [(row.key_id, row.outcome, row.refusals) for row in refusals] == [
            (key_id(app, limited), "rate_limited_key", 2)
        ]
    assert listed_key(api, free, key_id(app, free))["rate_limit"] is None


def test_a_limited_keys_verify_answer_carries_its_limit_and_no_max_age(app, api) -> None:
    key = api.new_key(user_email="proxy-limited@example.com")
    assert "X-Auth-Max-Age" in api.get("/auth/verify", key).headers  # unlimited: a proxy may keep it
    set_limits(app, key_id(app, key), "5 per minute; 100 per day")
    opened = api.get("/auth/verify", key)
    assert opened.status_code == 204 and "X-Auth-Max-Age" not in opened.headers
    # Several limits: the headers tell of the one with the least room left.
    assert (opened.headers["RateLimit-Limit"], opened.headers["RateLimit-Remaining"]) == ("5", "4")


def test_the_tightest_of_several_limits_is_the_one_with_least_room(app, api) -> None:
    key = api.new_key(user_email="tight@example.com")
    set_limits(app, key_id(app, key), "10 per minute; 3 per hour")
    first, second = checks(api, key, 2)
    assert (first.headers["RateLimit-Limit"], first.headers["RateLimit-Remaining"]) == ("3", "2")
    assert int(first.headers["RateLimit-Reset"]) > 60  # the hour's window
    assert second.headers["RateLimit-Remaining"] == "1"


@pytest.mark.slow
def test_a_quota_is_exhausted_refilled_at_the_period_start_and_shown_in_the_list(app, api, frozen_clock) -> None:
    frozen_clock.current = datetime(2026, 3, 31, 22, 0, tzinfo=timezone.utc)
    lister = {"api_key": api.new_key(user_email="quota@example.com")}
    lister["id"] = key_id(app, lister["api_key"])
    added = api.call("POST", "/auth/keys", lister["api_key"], json={"name": "quota"}).json["data"]
    key, quota_key = added["api_key"], added["id"]
    set_limits(app, quota_key, quota=Quota(3, "day"))
    before = outcome_count("quota_exhausted")
    assert [answer.status_code for answer in checks(api, key, 3)] == [200] * 3
    refused = api.get("/auth/check-key", key)
    envelope_error(refused, 429, "API key quota exhausted")
    assert int(refused.headers["Retry-After"]) == 2 * 3600  # until midnight UTC
    assert outcome_count("quota_exhausted") == before + 1
    assert listed_key(api, lister["api_key"], quota_key)["quota"] == {
        "limit": 3, "period": "day", "used": 3, "resets_at": "2026-04-01T00:00:00+00:00",
    }
    assert listed_key(api, lister["api_key"], lister["id"])["quota"] is None
    frozen_clock.advance(hours=2)
    assert api.get("/auth/check-key", key).status_code == 200
    set_limits(app, quota_key, quota=Quota(2, "month"))
    assert listed_key(api, lister["api_key"], quota_key)["quota"]["resets_at"] == "2026-05-01T00:00:00+00:00"


def test_a_quota_survives_a_restart_of_every_server_since_the_database_is_its_record(app, api, database_uri) -> None:
    key = api.new_key(user_email="restart@example.com")
    set_limits(app, key_id(app, key), quota=Quota(4, "month"))
    assert [answer.status_code for answer in checks(api, key, 3)] == [200] * 3
    # Another app on the same database, with a limit store of its own: as after a restart.
    again = create_app({"SQLALCHEMY_DATABASE_URI": database_uri, "SECRET_KEY": "test", "TESTING": True,
                        "LAST_USED_FLUSH_SECONDS": 0})
    try:
        client = again.test_client()
        assert client.get("/auth/check-key", headers={"x-api-key": key}).status_code == 200
        envelope_error(client.get("/auth/check-key", headers={"x-api-key": key}), 429, "API key quota exhausted")
    finally:
        release(again)


def test_a_users_limits_count_across_all_its_keys_together(app, api) -> None:
    first = api.new_key(user_email="team@example.com")
    second = api.call("POST", "/auth/keys", first, json={}).json["data"]["api_key"]
    set_user_limits(app, "team@example.com", "4 per minute")
    assert [api.get("/auth/check-key", key).status_code for key in (first, second, first)] == [200] * 3
    last = api.get("/auth/check-key", second)
    assert last.status_code == 200 and last.headers["RateLimit-Remaining"] == "0"
    envelope_error(api.get("/auth/check-key", first), 429, "API key rate limit exceeded")
    envelope_error(api.get("/auth/check-key", second), 429, "API key rate limit exceeded")
    other = api.new_key(user_email="other-team@example.com")
    assert api.get("/auth/check-key", other).status_code == 200


def test_a_user_quota_and_a_key_limit_both_apply(app, api) -> None:
    key = api.new_key(user_email="both@example.com")
    set_limits(app, key_id(app, key), "100 per minute")
    set_user_limits(app, "both@example.com", quota=Quota(2, "day"))
    answers = checks(api, key, 3)
    assert [answer.status_code for answer in answers] == [200, 200, 429]
    assert answers[0].headers["RateLimit-Limit"] == "2"  # the quota has less room than the rate limit
    assert answers[2].json["message"] == "API key quota exhausted"


def test_adding_or_rotating_a_key_gains_no_room(app, api) -> None:
    parent = api.new_key(user_email="family@example.com")
    set_limits(app, key_id(app, parent), "4 per minute", Quota(1000, "month"))
    child = api.call("POST", "/auth/keys", parent, json={"name": "child"})  # the parent's first use
    assert child.status_code == 200
    child_key = child.json["data"]["api_key"]
    with app.app_context():
        stored = db.session.get(ApiKey, child.json["data"]["id"])
        assert (stored.rate_limit, stored.quota_limit, stored.quota_period) == ("4 per minute", 1000, "month")
    assert api.get("/auth/check-key", child_key).headers["RateLimit-Remaining"] == "2"  # counted together
    rotated = api.call("POST", "/auth/keys/rotate", child_key, json={}).json["data"]["api_key"]
    assert api.get("/auth/check-key", rotated).headers["RateLimit-Remaining"] == "0"
    for key in (parent, child_key, rotated):
        envelope_error(api.get("/auth/check-key", key), 429, "API key rate limit exceeded")


def test_a_change_of_limits_applies_at_once_to_a_cached_key_and_is_audited(app, api) -> None:
    key = api.new_key(user_email="at-once@example.com")
    assert api.get("/auth/check-key", key).status_code == 200  # cached, unlimited
    set_limits(app, key_id(app, key), "1 per minute")
    assert api.get("/auth/check-key", key).status_code == 200
    envelope_error(api.get("/auth/check-key", key), 429)
    set_limits(app, key_id(app, key))
    assert api.get("/auth/check-key", key).status_code == 200
    changed = events(app, "key_limits_changed")
    assert [event.detail.split(": ", 1)[1] for event in changed] == [
        "rate limit none, quota none -> rate limit 1 per minute, quota none",
        "rate limit 1 per minute, quota none -> rate limit none, quota none",
    ]
    assert all(event.actor == "ops@example.com" for event in changed)


@pytest.mark.slow
def test_new_keys_get_the_default_limits_and_a_bad_default_stops_the_start(app, database_uri) -> None:
    settings = {"SQLALCHEMY_DATABASE_URI": database_uri, "SECRET_KEY": "test", "TESTING": True,
                "LAST_USED_FLUSH_SECONDS": 0, "KEY_RATE_LIMIT_DEFAULT": "2 per minute",
                "KEY_QUOTA_DEFAULT": "10000 per month"}
    app = create_app(settings)
    try:
        client = app.test_client()
        key = client.post("/auth/create-key", json={"user_name": "D", "user_email": "default@example.com"})
        headers = {"x-api-key": key.json["data"]["api_key"]}
        listed = client.get("/auth/keys", headers=headers).json["data"][0]
        assert listed["rate_limit"] == "2 per minute" and listed["quota"]["limit"] == 10000
        assert client.get("/auth/keys", headers=headers).status_code == 200
        envelope_error(client.get("/auth/keys", headers=headers), 429, "API key rate limit exceeded")
    finally:
        release(app)
    for name, value in (("KEY_RATE_LIMIT_DEFAULT", "lots"), ("KEY_RATE_LIMIT_DEFAULT", "5 per 0 minutes"),
                        ("KEY_QUOTA_DEFAULT", "10000"), ("KEY_QUOTA_DEFAULT", "0 per day"),
                        ("KEY_QUOTA_DEFAULT", "5 per week")):
        with pytest.raises(SettingError, match=name):
            create_app({**settings, name: value})


@pytest.mark.parametrize("text, expected", [
    ("10000 per month", Quota(10000, "month")), (" 5 / Day ", Quota(5, "day")),
])
def test_a_quota_is_written_as_a_number_per_day_or_month(text, expected) -> None:
    assert parse_quota(text) == expected


@pytest.mark.slow
def test_the_command_line_issues_limited_keys_and_sets_the_limits_of_keys_and_users(app, runner) -> None:
    created = runner.invoke(args=["keys", "create", "--email", "cli-limits@example.com", "--rate", "100 per minute",
                                  "--quota", "10000", "--period", "day", "--scope", "calls:write"])
    assert created.exit_code == 0, created.output
    listed = json.loads(runner.invoke(args=["keys", "list", "--json"]).stdout)[0]
    assert listed["rate_limit"] == "100 per minute" and listed["scopes"] == ["calls:write"]
    assert listed["quota"]["limit"] == 10000 and listed["quota"]["period"] == "day" and listed["quota"]["used"] == 0
    assert listed["status"] == "active"
    changed = runner.invoke(args=["keys", "limit", str(listed["id"]), "--rate", "5 per second; 100 per hour"])
    assert changed.exit_code == 0 and "rate limit 5 per second; 100 per hour, quota none" in changed.output
    cleared = runner.invoke(args=["keys", "limit", str(listed["id"]), "--clear"])
    assert "rate limit none, quota none" in cleared.output
    again = runner.invoke(args=["keys", "limit", str(listed["id"]), "--clear"])
    assert again.exit_code == 0 and "already" in again.output
    user = runner.invoke(args=["users", "limit", "CLI-limits@example.com", "--quota", "500"])
    assert user.exit_code == 0 and "quota 500 per month" in user.output, user.output
    with app.app_context():
        stored = db.session.scalar(select(User))
        assert (stored.quota_limit, stored.quota_period) == (500, "month")
    assert len(events(app, "key_limits_changed")) == 2 and len(events(app, "user_limits_changed")) == 1
    for arguments, said in (
        (["keys", "limit", str(listed["id"])], "or --clear"),
        (["keys", "limit", str(listed["id"]), "--rate", "5", "--clear"], "not both"),
        (["keys", "limit", str(listed["id"]), "--rate", "often"], "is not a rate limit"),
        (["keys", "limit", str(listed["id"]), "--period", "day"], "a period needs a quota"),
        (["keys", "limit", str(listed["id"]), "--quota", "0"], "--quota"),
        (["users", "limit", "nobody@example.com", "--quota", "5"], "No user has the email nobody@example.com"),
    ):
        refused = runner.invoke(args=arguments)
        assert refused.exit_code != 0 and said in refused.output, (arguments, refused.output)


def test_with_redis_a_limited_check_is_one_round_trip(app, database_uri, monkeypatch) -> None:
    redis_url = require_service("TEST_REDIS_URL", "set it to a Redis database the test may use")
    limited = create_app({"SQLALCHEMY_DATABASE_URI": database_uri, "SECRET_KEY": "test", "TESTING": True,
                          "LAST_USED_FLUSH_SECONDS": 0, "RATELIMIT_STORAGE_URI": redis_url,
                          "RATELIMIT_KEY_PREFIX": f"test-{uuid.uuid4().hex}"})
    sent: list[str] = []
    send = redis.Redis.execute_command

    def counting(client, *args, **options):
        sent.append(str(args[0]))
        return send(client, *args, **options)

    try:
        client = limited.test_client()
        key = client.post("/auth/create-key", json={"user_name": "R", "user_email": "trip@example.com"})
        secret = key.json["data"]["api_key"]
        with limited.test_request_context():
            from livekit_auth.context import key_service

            row = db.session.scalar(select(ApiKey))
            key_service().set_key_limits(row, LimitSettings("100 per minute; 1000 per hour", Quota(50, "day")), "ops")
            key_service().set_user_limits(row.user, LimitSettings("100 per minute", Quota(500, "month")), "ops")
            db.session.commit()
        monkeypatch.setattr(redis.Redis, "execute_command", counting)
        assert client.get("/auth/check-key", headers={"x-api-key": secret}).status_code == 200  # opens the quotas
        sent.clear()
        for expected_remaining in ("48", "47", "46"):
            answer = client.get("/auth/check-key", headers={"x-api-key": secret})
            assert answer.headers["RateLimit-Remaining"] == expected_remaining
        assert sent == ["EVALSHA"] * 3  # five windows, one round trip each check
    finally:
        release(limited)


@pytest.mark.slow
def test_limits_and_a_quota_hold_across_two_servers_with_redis_and_outlive_its_data(database_uri, tmp_path) -> None:
    redis_url = require_service("TEST_REDIS_URL", "set it to a Redis database the test may use")
    if database_uri.startswith("sqlite"):
        database_uri = f"sqlite:///{tmp_path / 'key-limits.db'}"
    prefix = f"test-{uuid.uuid4().hex}"
    settings = {"RATELIMIT_STORAGE_URI": redis_url, "RATELIMIT_KEY_PREFIX": prefix, "LAST_USED_FLUSH_SECONDS": "0"}
    with live_server(database_uri, tmp_path, workers=1, **settings) as first, \
            live_server(database_uri, tmp_path, workers=1, **settings) as second:
        servers = (first, second)

        def check(n: int, key: str) -> requests.Response:
            return requests.get(f"{servers[n % 2].url}/auth/check-key", headers={"x-api-key": key}, timeout=10)

        made = [requests.post(f"{first.url}/auth/create-key", timeout=10, json={
            "user_name": "R", "user_email": f"two-{n}-{uuid.uuid4().hex[:6]}@example.com"
        }).json()["data"]["api_key"] for n in range(2)]
        app = create_app({"SQLALCHEMY_DATABASE_URI": database_uri, "SECRET_KEY": "test", "TESTING": True})
        try:
            # Set before either server has seen the keys: no cache to wait for.
            rated, quoted = made
            set_limits(app, key_id(app, rated), "5 per minute")
            set_limits(app, key_id(app, quoted), None, Quota(6, "day"))
            assert [check(n, rated).status_code for n in range(5)] == [200] * 5
            assert [check(n, rated).json()["message"] for n in range(5, 7)] == ["API key rate limit exceeded"] * 2
            assert [check(n, quoted).headers["RateLimit-Remaining"] for n in range(6)] == ["5", "4", "3", "2", "1", "0"]
            # Redis loses every count: the quota opens again from the database, its record.
            with redis.Redis.from_url(redis_url) as store:
                store.flushdb()
            for n in range(2):
                refused = check(n, quoted)
                assert refused.status_code == 429 and refused.json()["message"] == "API key quota exhausted"
        finally:
            release(app)
    if not database_uri.startswith("sqlite"):
        from .support import clear_database

        clear_database(database_uri)


def test_a_limit_store_that_is_down_lets_a_limited_key_through(app, database_uri, caplog) -> None:
    app = create_app({"SQLALCHEMY_DATABASE_URI": database_uri, "SECRET_KEY": "test", "TESTING": True,
                      "LAST_USED_FLUSH_SECONDS": 0, "RATELIMIT_STORAGE_URI": "redis://127.0.0.1:1/0"})
    try:
        client = app.test_client()
        key = client.post("/auth/create-key", json={"user_name": "R", "user_email": "down@example.com"})
        secret = key.json["data"]["api_key"]
        set_limits(app, key_id(app, secret), "1 per minute")
        for _ in range(3):
            answer = client.get("/auth/check-key", headers={"x-api-key": secret})
            assert answer.status_code == 200 and "RateLimit-Limit" not in answer.headers
        assert "rate limit store failed" in caplog.text
    finally:
        release(app)


def test_limits_that_are_not_limits_are_refused(app) -> None:
    from livekit_auth.apikeys.meter import parse_rate_limit, settings_from

    for text in ("often", "0 per minute", "10 per 0 hours", "1/second;" * 9 + "1/second", "x" * 201):
        with pytest.raises(ValueError):
            parse_rate_limit(text)
    with pytest.raises(ValueError):
        settings_from(None, 0, "day")
    assert settings_from(" 1/second , 5 per minute ", 7, None) == LimitSettings("1/second; 5 per minute",
                                                                                 Quota(7, "month"))


@pytest.mark.slow
def test_an_admin_issues_a_limited_key_sets_limits_on_its_page_and_sees_them_used(app, client, admin, api) -> None:
    issued = admin.post("/admin/keys/new", "/admin/keys/new", email="admin-limits@example.com",
                        rate_limit="2 per minute", quota="100", quota_period="day")
    assert issued.status_code == 303
    secret = client.get(issued.headers["Location"]).get_data(as_text=True).split(
        '<code id="issued-key" class="mono">')[1].split("</code>")[0]
    issued_id = key_id(app, secret)
    assert [api.get("/auth/check-key", secret).status_code for _ in range(3)] == [200, 200, 429]
    page = client.get(f"/admin/keys/{issued_id}").get_data(as_text=True)
    assert "2 per minute" in page and "2 of 100 checks this day (2.0%)" in page
    assert "2 checks passed in the last 30 days; 1 rate limited" in page
    assert 'class="rate-limited"' in page and 'id="user-rate_limit"' in page
    changed = admin.post(f"/admin/keys/{issued_id}/limits", f"/admin/keys/{issued_id}", rate_limit="",
                         quota="3", quota_period="day")
    assert changed.status_code == 303
    assert "Limits of" in client.get(changed.headers["Location"]).get_data(as_text=True)
    assert api.get("/auth/check-key", secret).status_code == 200  # no rate limit now; the third check of the day
    envelope_error(api.get("/auth/check-key", secret), 429, "API key quota exhausted")
    refused = admin.post(f"/admin/keys/{issued_id}/limits", f"/admin/keys/{issued_id}", rate_limit="often")
    assert "often&#39; is not a rate limit" in client.get(refused.headers["Location"]).get_data(as_text=True)
    assert events(app, "key_limits_changed")[-1].detail.endswith("quota 3 per day")
    user = admin.post(f"/admin/keys/{issued_id}/user-limits", f"/admin/keys/{issued_id}", quota="50")
    assert user.status_code == 303
    with app.app_context():
        assert db.session.scalar(select(User.quota_limit)) == 50
    assert len(events(app, "user_limits_changed")) == 1
    near = client.get("/admin/?status=near_quota").get_data(as_text=True)
    assert keys.display_prefix(secret) in near
    assert keys.display_prefix(api.new_key(user_email="far@example.com")) not in client.get(
        "/admin/?status=near_quota").get_data(as_text=True)


def test_a_holder_cannot_set_or_widen_limits_through_the_api(app, api) -> None:
    key = api.new_key(user_email="no-self-service@example.com")
    set_limits(app, key_id(app, key), "50 per minute", Quota(100, "day"))
    for fields in ({"rate_limit": None}, {"quota": None}, {"rate_limit": "1000000 per second"}):
        refused = envelope_error(api.call("POST", "/auth/keys", key, json=fields), 400)
        assert refused["message"].endswith("is not a known field")
    added = api.call("POST", "/auth/keys", key, json={"name": "same limits"}).json["data"]
    listed = listed_key(api, key, added["id"])
    assert listed["rate_limit"] == "50 per minute" and listed["quota"]["limit"] == 100
