"""Rate limits: per client address, from the environment, shared across workers through Redis."""

import uuid
import pytest
import requests
from sqlalchemy import func, select

from livekit_auth import create_app
from livekit_auth.extensions import db
from livekit_auth.models import User

from .support import envelope_error, live_server, release, require_service


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


def test_failed_key_checks_are_limited_and_valid_ones_are_not(app, limited) -> None:
    client = limited(RATELIMIT_FAILED_AUTH="5 per minute").test_client()
    key = create(client, "ok@example.com").json["data"]["api_key"]
    for _ in range(10):
        assert client.get("/auth/check-key", headers={"x-api-key": key}).status_code == 200
    for _ in range(5):
        envelope_error(client.get("/auth/check-key", headers={"x-api-key": "lvk_wrong"}), 401)
    envelope_error(client.get("/auth/check-key", headers={"x-api-key": key}), 429)
    envelope_error(client.get("/auth/keys", headers={"x-api-key": key}), 429)


def test_limits_can_be_turned_off(limited) -> None:
    client = limited(RATELIMIT_ENABLED=False, RATELIMIT_CREATE_KEY="1 per hour").test_client()
    assert [create(client, f"u{n}@example.com").status_code for n in range(3)] == [200] * 3


def test_a_limit_store_that_is_down_lets_requests_through(limited) -> None:
    client = limited(RATELIMIT_STORAGE_URI="redis://127.0.0.1:1/0", RATELIMIT_CREATE_KEY="1 per hour").test_client()
    assert [create(client, f"u{n}@example.com").status_code for n in range(3)] == [200] * 3
    assert client.get("/auth/check-key", headers={"x-api-key": "lvk_x"}).status_code == 401


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


def test_admin_login_failures_are_limited_per_address(limited, admin_account) -> None:
    from .conftest import AdminActions

    app = limited(RATELIMIT_ADMIN_LOGIN="2 per 15 minutes")
    actions = AdminActions(app.test_client())
    assert actions.login(email="x@example.com", password="wrong password!").status_code == 401
    assert actions.login(email="y@example.com", password="wrong password!").status_code == 401
    refused = actions.login()
    assert refused.status_code == 429 and refused.mimetype == "text/html"


def test_a_redis_limit_holds_across_workers_and_hosts(database_uri, tmp_path) -> None:
    redis_url = require_service("TEST_REDIS_URL", "set it to a Redis database the test may use")
    if database_uri.startswith("sqlite"):
        database_uri = f"sqlite:///{tmp_path / 'limits.db'}"
    settings = {
        "RATELIMIT_ENABLED": "true", "RATELIMIT_STORAGE_URI": redis_url,
        "RATELIMIT_CREATE_KEY": "6 per hour", "RATELIMIT_KEY_PREFIX": f"test-{uuid.uuid4().hex}",
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
    if not database_uri.startswith("sqlite"):
        from .support import clear_database

        clear_database(database_uri)
