"""What the service tells a proxy that keeps its verify answers (deploy/nginx).

A 204 from /auth/verify says how long it may be kept (X-Auth-Max-Age); /auth/key-versions says
each shard's key version, which moves when a key of that shard changes; and a verify that names
the version its proxy has seen (X-Auth-Key-Version) is answered from a state at least that
current, so that a proxy never keeps a stale answer under a new version.
"""

import pytest

from livekit_auth import create_app

from livekit_auth.apikeys import keys
from livekit_auth.extensions import db

from .support import envelope_error, release

SHARD_LINE = 17  # 16 hexadecimal digits and a newline


def shard_versions(client) -> list[int]:
    """The versions /auth/key-versions answers, shard 0 first."""
    response = client.get("/auth/key-versions")
    assert response.status_code == 200
    assert response.mimetype == "text/plain"
    body = response.get_data(as_text=True)
    assert len(body) == keys.SHARDS * SHARD_LINE
    return [int(body[shard * SHARD_LINE:shard * SHARD_LINE + 16], 16) for shard in range(keys.SHARDS)]


def shard_of(key: str) -> int:
    """The shard a key's answers are kept under."""
    return keys.shard(keys.digest(key))


def revoke(api, key: str) -> None:
    """Revoke a key with itself."""
    key_id = api.get("/auth/keys", key).json["data"][0]["id"]
    assert api.call("DELETE", f"/auth/keys/{key_id}", key).status_code == 200


def test_a_valid_keys_answer_may_be_kept_for_the_configured_time_and_has_no_content_type(api) -> None:
    response = api.get("/auth/verify", api.new_key())
    assert response.status_code == 204
    assert response.headers["X-Auth-Max-Age"] == "300"
    assert "Content-Type" not in response.headers
    assert response.headers["Cache-Control"] == "no-store"  # for anyone but the proxy


def test_an_expiring_keys_answer_is_never_kept_past_its_expiry(api, frozen_clock) -> None:
    added = api.call("POST", "/auth/keys", api.new_key(), json={"expires_in_days": 1})
    key = added.json["data"]["api_key"]
    frozen_clock.advance(days=1, seconds=-20)
    assert api.get("/auth/verify", key).headers["X-Auth-Max-Age"] == "20"
    frozen_clock.advance(seconds=19.5)
    assert api.get("/auth/verify", key).headers["X-Auth-Max-Age"] == "0.5"


def test_proxies_keep_nothing_when_the_setting_is_zero(database_uri) -> None:
    app = create_app({"SQLALCHEMY_DATABASE_URI": database_uri, "SECRET_KEY": "test", "PROXY_CACHE_SECONDS": 0,
                      "RATELIMIT_ENABLED": False})
    try:
        client = app.test_client()
        key = client.post("/auth/create-key", json={"user_name": "N", "user_email": "n@example.com"}).json
        response = client.get("/auth/verify", headers={"x-api-key": key["data"]["api_key"]})
        assert response.status_code == 204
        assert "X-Auth-Max-Age" not in response.headers
    finally:
        release(app)


@pytest.mark.parametrize("presented", [None, "nonsense", keys.generate().secret])
def test_a_refusal_may_never_be_kept(api, presented) -> None:
    response = api.get("/auth/verify", presented)
    envelope_error(response, 401)
    assert "X-Auth-Max-Age" not in response.headers
    assert response.headers["Cache-Control"] == "no-store"


def test_the_key_versions_may_be_kept_as_long_as_a_worker_goes_without_asking(client) -> None:
    response = client.get("/auth/key-versions")
    assert response.headers["X-Auth-Max-Age"] == "0.5"  # KEY_CACHE_POLL_SECONDS


def test_a_revocation_moves_its_keys_shard_and_no_other(api, client) -> None:
    key = api.new_key()
    before = shard_versions(client)
    revoke(api, key)
    after = shard_versions(client)
    moved = [shard for shard in range(keys.SHARDS) if after[shard] != before[shard]]
    assert moved == [shard_of(key)]
    assert after[shard_of(key)] > before[shard_of(key)]


def test_a_change_of_every_key_moves_every_shard(app, client) -> None:
    before = shard_versions(client)
    with app.app_context():  # more keys than the feed takes one by one: fed as a change of every key
        app.extensions["keyring"].stage_change(db.session, [f"{shard:02x}" + "0" * 62 for shard in range(keys.SHARDS)])
        db.session.commit()
    after = shard_versions(client)
    assert all(after[shard] > before[shard] for shard in range(keys.SHARDS))


@pytest.fixture
def slow_worker(database_uri):
    """A second app on the same database that would go an hour without asking for the key version."""
    worker = create_app({"SQLALCHEMY_DATABASE_URI": database_uri, "SECRET_KEY": "test",
                         "KEY_CACHE_POLL_SECONDS": 3600})
    yield worker.test_client()
    release(worker)


def test_a_verify_that_names_the_version_its_proxy_saw_is_answered_from_a_state_that_current(
    api, client, slow_worker
) -> None:
    key = api.new_key()
    assert slow_worker.get("/auth/verify", headers={"x-api-key": key}).status_code == 204  # now cached
    revoke(api, key)
    seen = shard_versions(client)[shard_of(key)]
    # Without the version, the worker answers from its cache until its next poll ...
    assert slow_worker.get("/auth/verify", headers={"x-api-key": key}).status_code == 204
    # ... with it, it reads the changes first.
    refused = slow_worker.get("/auth/verify", headers={"x-api-key": key, "X-Auth-Key-Version": str(seen)})
    envelope_error(refused, 401, "API key has been revoked")


@pytest.mark.parametrize("given", ["", "-1", "1.5", "１", "9" * 20])
def test_a_version_that_is_not_a_whole_number_is_ignored(api, given) -> None:
    response = api.client.get("/auth/verify", headers={"x-api-key": api.new_key(), "X-Auth-Key-Version": given})
    assert response.status_code == 204
