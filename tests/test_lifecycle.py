"""Several keys per user, rotation with a grace period, expiry, revocation and last use."""

import re
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlalchemy import event, select

from livekit_auth.apikeys import keys
from livekit_auth.context import key_service
from livekit_auth.extensions import db
from livekit_auth.apikeys.models import ApiKey, KeyUseCount
from livekit_auth.apikeys.usage import UsageRecorder

from .support import cap_active_keys, envelope_error


def add_key(api, key, **body):
    """POST /auth/keys as the holder of key."""
    return api.call("POST", "/auth/keys", key, json=body)


def rotate(api, key, **body):
    """POST /auth/keys/rotate as the holder of key."""
    return api.call("POST", "/auth/keys/rotate", key, json=body)


def revoke(api, key, key_id):
    """DELETE /auth/keys/<id> as the holder of key."""
    return api.call("DELETE", f"/auth/keys/{key_id}", key)


def listing(api, key):
    """The caller's keys, as GET /auth/keys lists them."""
    response = api.get("/auth/keys", key)
    assert response.status_code == 200, response.json
    return response.json["data"]


def stored_key(app, key_id):
    """The row behind a key id."""
    with app.app_context():
        return db.session.get(ApiKey, key_id)


def test_the_keys_of_the_caller_are_listed_without_secrets(api) -> None:
    key = api.new_key()
    second = add_key(api, key, name="ci").json["data"]
    keys_listed = listing(api, key)
    assert [k["id"] for k in keys_listed] == [second["id"], keys_listed[1]["id"]]
    assert set(keys_listed[0]) == {
        "id", "name", "display_prefix", "status", "created_at",
        "expires_at", "last_used_at", "revoked_at", "scopes", "rate_limit", "requests_30d", "quota",
    }
    assert keys_listed[0]["scopes"] is None  # full access, as every key without scopes
    assert keys_listed[0]["name"] == "ci"
    assert all(k["status"] == "active" for k in keys_listed)
    text = str(keys_listed)
    assert key not in text and second["api_key"] not in text
    assert "digest" not in text


def test_another_users_keys_are_not_listed(api) -> None:
    mine = api.new_key(user_email="me@example.com")
    api.new_key(user_email="you@example.com")
    assert len(listing(api, mine)) == 1


@pytest.mark.slow
def test_a_new_key_is_returned_once_with_its_details(api, frozen_clock) -> None:
    key = api.new_key(user_name="John", org_name="Acme", user_email="john@example.com")
    response = add_key(api, key, name="ci", expires_in_days=30)
    assert response.status_code == 200
    assert response.json["message"] == "API key created successfully, Store it securely"
    data = response.json["data"]
    assert list(data) == [
        "api_key", "user_name", "org_name", "user_email", "id", "name", "expires_at", "scopes",
    ]
    assert (data["user_name"], data["org_name"], data["user_email"]) == ("John", "Acme", "john@example.com")
    assert data["name"] == "ci"
    assert data["expires_at"] == "2026-02-14T10:00:00.000000"
    assert api.get("/auth/check-key", data["api_key"]).status_code == 200


def test_a_new_key_needs_no_body(api) -> None:
    key = api.new_key()
    response = api.call("POST", "/auth/keys", key)
    assert response.status_code == 200
    assert response.json["data"]["name"] is None
    assert response.json["data"]["expires_at"] is None


@pytest.mark.parametrize(
    "body, message",
    [
        ({"expires_in_days": 0}, "expires_in_days must be from 1 to 3650"),
        ({"expires_in_days": 3651}, "expires_in_days must be from 1 to 3650"),
        ({"expires_in_days": "30"}, "expires_in_days must be a whole number"),
        ({"expires_in_days": 1.5}, "expires_in_days must be a whole number"),
        ({"expires_in_days": True}, "expires_in_days must be a whole number"),
        ({"name": "x" * 101}, "name must be at most 100 characters"),
        ({"name": "a\x00"}, "name must not contain control characters"),
        ({"scope": "all"}, "scope is not a known field"),
    ],
)
def test_a_new_key_with_bad_fields_answers_400(app, api, body, message) -> None:
    key = api.new_key()
    envelope_error(add_key(api, key, **body), 400, message)
    assert len(listing(api, key)) == 1


@pytest.mark.parametrize("days", [1, 3650])
def test_expiry_bounds_are_accepted(api, days) -> None:
    assert add_key(api, api.new_key(), expires_in_days=days).status_code == 200


@pytest.mark.slow
def test_a_user_holds_at_most_twenty_active_keys(api) -> None:
    key = api.new_key()
    for _ in range(19):
        assert add_key(api, key).status_code == 200
    envelope_error(add_key(api, key), 409, "A user may hold at most 20 active keys; revoke one first")
    assert len(listing(api, key)) == 20
    revoke(api, key, listing(api, key)[0]["id"])
    assert add_key(api, key).status_code == 200


def test_the_cap_is_configurable(app, api) -> None:
    cap_active_keys(app, 2)
    key = api.new_key()
    assert add_key(api, key).status_code == 200
    envelope_error(add_key(api, key), 409)


def test_expired_keys_do_not_count_against_the_cap(app, api, frozen_clock) -> None:
    cap_active_keys(app, 2)
    key = api.new_key()
    assert add_key(api, key, expires_in_days=1).status_code == 200
    frozen_clock.advance(days=1)
    assert add_key(api, key).status_code == 200


def test_a_key_expires_at_the_instant_it_names(api, frozen_clock) -> None:
    key = api.new_key()
    short = add_key(api, key, expires_in_days=1).json["data"]["api_key"]
    frozen_clock.advance(days=1, microseconds=-1)
    assert api.get("/auth/check-key", short).status_code == 200
    frozen_clock.advance(microseconds=1)
    envelope_error(api.get("/auth/check-key", short), 401, "API key has expired")
    envelope_error(api.get("/auth/keys", short), 401, "API key has expired")
    assert api.get("/auth/check-key", key).status_code == 200


def test_rotation_gives_a_new_key_and_a_grace_period(api, frozen_clock) -> None:
    old = api.new_key()
    response = rotate(api, old, grace_hours=2)
    assert response.status_code == 200
    assert response.json["message"] == "API key rotated, Store the new key securely"
    data = response.json["data"]
    assert data["previous_key_expires_at"] == "2026-01-15T12:00:00.000000"
    new = data["api_key"]
    assert new != old
    frozen_clock.advance(hours=2, microseconds=-1)
    assert api.get("/auth/check-key", old).status_code == 200
    assert api.get("/auth/check-key", new).status_code == 200
    frozen_clock.advance(microseconds=1)
    envelope_error(api.get("/auth/check-key", old), 401, "API key has expired")
    assert api.get("/auth/check-key", new).status_code == 200


def test_rotation_defaults_to_a_day_of_grace(api, frozen_clock) -> None:
    data = api.call("POST", "/auth/keys/rotate", api.new_key()).json["data"]
    assert data["previous_key_expires_at"] == "2026-01-16T10:00:00.000000"


def test_rotation_with_no_grace_ends_the_old_key_now(api) -> None:
    old = api.new_key()
    new = rotate(api, old, grace_hours=0).json["data"]["api_key"]
    envelope_error(api.get("/auth/check-key", old), 401, "API key has expired")
    assert api.get("/auth/check-key", new).status_code == 200


def test_rotation_never_extends_an_earlier_expiry(api, frozen_clock) -> None:
    key = api.new_key()
    short = add_key(api, key, expires_in_days=1).json["data"]
    frozen_clock.advance(hours=23)
    data = rotate(api, short["api_key"], grace_hours=24).json["data"]
    assert data["previous_key_expires_at"] == short["expires_at"]


def test_rotation_keeps_the_name_and_may_set_an_expiry(api, frozen_clock) -> None:
    key = api.new_key()
    named = add_key(api, key, name="deploy").json["data"]["api_key"]
    data = rotate(api, named, expires_in_days=7).json["data"]
    assert data["name"] == "deploy"
    assert data["expires_at"] == "2026-01-22T10:00:00.000000"


@pytest.mark.parametrize(
    "body, message",
    [
        ({"grace_hours": -1}, "grace_hours must be from 0 to 168"),
        ({"grace_hours": 169}, "grace_hours must be from 0 to 168"),
        ({"grace_hours": "24"}, "grace_hours must be a whole number"),
        ({"grace_hours": None}, "grace_hours may not be null"),
    ],
)
def test_rotation_with_a_bad_grace_answers_400(api, body, message) -> None:
    key = api.new_key()
    envelope_error(rotate(api, key, **body), 400, message)
    assert len(listing(api, key)) == 1


def test_rotation_at_the_cap_is_allowed(app, api) -> None:
    cap_active_keys(app, 1)
    assert rotate(api, api.new_key()).status_code == 200


@pytest.mark.slow
def test_a_revoked_key_is_refused_at_once(app, api) -> None:
    key = api.new_key()
    other = add_key(api, key).json["data"]
    response = revoke(api, key, other["id"])
    assert response.status_code == 200
    assert response.json["message"] == "API key revoked"
    assert response.json["data"]["status"] == "revoked"
    envelope_error(api.get("/auth/check-key", other["api_key"]), 401, "API key has been revoked")
    assert stored_key(app, other["id"]).revoked_by == f"api {keys.display_prefix(key)}"


def test_revoking_twice_is_harmless(app, api) -> None:
    key = api.new_key()
    other = add_key(api, key).json["data"]
    first = revoke(api, key, other["id"]).json["data"]["revoked_at"]
    second = revoke(api, key, other["id"])
    assert second.status_code == 200
    assert second.json["data"]["revoked_at"] == first


def test_a_user_may_revoke_the_calling_key(api) -> None:
    key = api.new_key()
    own_id = listing(api, key)[0]["id"]
    assert revoke(api, key, own_id).status_code == 200
    envelope_error(api.get("/auth/check-key", key), 401, "API key has been revoked")


def test_another_users_key_is_as_missing_as_no_key(app, api) -> None:
    mine = api.new_key(user_email="me@example.com")
    theirs = api.new_key(user_email="them@example.com")
    their_id = listing(api, theirs)[0]["id"]
    envelope_error(revoke(api, mine, their_id), 404, "API key not found")
    envelope_error(revoke(api, mine, their_id + 1000), 404, "API key not found")
    envelope_error(revoke(api, mine, 2**31), 404, "API key not found")
    envelope_error(revoke(api, mine, 10**20), 404, "API key not found")
    assert api.get("/auth/check-key", theirs).status_code == 200
    assert stored_key(app, their_id).revoked_at is None


@pytest.mark.parametrize(
    "method, path",
    [("GET", "/auth/keys"), ("POST", "/auth/keys"), ("POST", "/auth/keys/rotate"), ("DELETE", "/auth/keys/1")],
)
def test_lifecycle_endpoints_need_a_key(api, method, path) -> None:
    envelope_error(api.call(method, path), 401)


def test_last_use_is_recorded_at_most_once_a_minute(app, api, frozen_clock) -> None:
    key = api.new_key()
    key_id = listing(api, key)[0]["id"]
    first_use = frozen_clock.current
    assert stored_key(app, key_id).last_used_at == first_use
    frozen_clock.advance(seconds=59)
    api.get("/auth/check-key", key)
    assert stored_key(app, key_id).last_used_at == first_use
    frozen_clock.advance(seconds=2)
    api.get("/auth/check-key", key)
    assert stored_key(app, key_id).last_used_at == first_use + timedelta(seconds=61)
    assert listing(api, key)[0]["last_used_at"] == "2026-01-15T10:01:01.000000"


def test_last_use_never_moves_backwards(app, api, frozen_clock) -> None:
    key = api.new_key()
    api.get("/auth/check-key", key)
    known = app.extensions["keyring"].cache.get(keys.digest(key))
    later = known.last_used_at
    known.last_used_at = None  # as a worker that read the row before the write would see it
    app.extensions["keyring"].usage.note(known, later - timedelta(minutes=5))
    assert stored_key(app, known.id).last_used_at == later


def keys_used_per_day(app) -> dict:
    """The admin chart's counts of keys used, by day."""
    with app.app_context():
        return dict(db.session.execute(select(KeyUseCount.day, KeyUseCount.keys_used)).all())


def test_each_key_counts_once_a_day_among_the_keys_used_whichever_worker_saw_it(
    app, api, frozen_clock
) -> None:
    first, second = api.new_key(user_email="a@example.com"), api.new_key(user_email="b@example.com")
    for key in (first, second, first):
        api.get("/auth/check-key", key)
    today = frozen_clock.current.date()
    assert keys_used_per_day(app) == {today: 2}
    # Another worker read the first key before this one wrote its use, and notes a use later on.
    stale = replace(app.extensions["keyring"].cache.get(keys.digest(first)), last_used_at=None)
    with app.app_context():
        other_worker = UsageRecorder(db.engine, 60, flush_seconds=0)
    other_worker.note(stale, frozen_clock.current + timedelta(minutes=2))
    assert keys_used_per_day(app) == {today: 2}
    assert stored_key(app, stale.id).last_used_at == frozen_clock.current + timedelta(minutes=2)
    frozen_clock.advance(days=1)
    api.get("/auth/check-key", first)
    assert keys_used_per_day(app) == {today: 2, today + timedelta(days=1): 1}


@pytest.mark.slow
def test_uses_are_written_in_batches_in_the_background(app, api, frozen_clock, batched_usage) -> None:
    recorder = batched_usage(0.1)
    first, second = api.new_key(user_email="a@example.com"), api.new_key(user_email="b@example.com")
    for key in (first, second):
        api.get("/auth/check-key", key)
    ids = [k["id"] for k in listing(api, first) + listing(api, second)]
    assert all(stored_key(app, key_id).last_used_at is None for key_id in ids)
    recorder.wait_for_what_was_noted()
    assert all(stored_key(app, key_id).last_used_at == frozen_clock.current for key_id in ids)


def test_the_key_list_comes_in_pages_linked_by_rel_next(api) -> None:
    key = api.new_key()
    for _ in range(4):
        assert add_key(api, key).status_code == 200
    seen, path, pages = [], "/auth/keys?limit=2", 0
    while path:
        response = api.get(path, key)
        assert response.status_code == 200
        seen += [listed["id"] for listed in response.json["data"]]
        pages += 1
        link = response.headers.get("Link")
        path = None if link is None else re.fullmatch(r'<([^>]+)>; rel="next"', link).group(1)
    assert pages == 3 and len(seen) == 5
    assert seen == sorted(seen, reverse=True)
    everything = api.get("/auth/keys", key)
    assert [listed["id"] for listed in everything.json["data"]] == seen and "Link" not in everything.headers


@pytest.mark.parametrize("query", ["limit=0", "limit=201", "limit=abc", "before=0", "before=x"])
def test_a_bad_page_of_keys_is_a_400(api, query) -> None:
    envelope_error(api.get(f"/auth/keys?{query}", api.new_key()), 400)


@pytest.fixture
def keys_loaded():
    """How many ApiKey rows the ORM loads from the database while the test runs."""
    loaded = []

    def count(target, context) -> None:
        loaded.append(target)

    event.listen(ApiKey, "load", count)
    yield loaded
    event.remove(ApiKey, "load", count)


@pytest.mark.slow
def test_issuing_a_key_costs_the_same_however_many_keys_its_user_held(app, api, keys_loaded) -> None:
    key = api.new_key()
    with app.app_context():
        holder = db.session.scalar(select(ApiKey).where(ApiKey.digest == keys.digest(key))).user
        revoked_at = holder.created_at
        for _ in range(300):
            issued = keys.generate()
            db.session.add(ApiKey(user=holder, digest=issued.digest, display_prefix=issued.display_prefix,
                                  created_at=revoked_at, revoked_at=revoked_at))
        db.session.commit()
        email = holder.email
    keys_loaded.clear()
    assert api.call("POST", "/auth/keys", key, json={"name": "more"}).status_code == 200
    assert api.call("POST", "/auth/keys/rotate", key).status_code == 200
    with app.app_context():
        key_service().issue_for_email(email, {}, "admin's", None, "admin@example.com")
        db.session.commit()
    assert len(keys_loaded) <= 3  # the rotated key itself, never the 300 revoked ones
