"""Key look-ups run on one connection each worker holds open, and survive its loss."""

from datetime import datetime, timezone

import pytest
from sqlalchemy import column, literal, select, table, text
from sqlalchemy.exc import DBAPIError

from livekit_auth.extensions import db
from livekit_auth.apikeys.keyring import LOOK_UP
from livekit_auth.apikeys.models import ApiKey, User


def check_uncached(app, api, key: str) -> int:
    """Check a key with the cache emptied first, so that it is read from the database."""
    app.extensions["keyring"].cache.changed(None)
    return api.get("/auth/check-key", key).status_code


def backend_pid(app) -> int:
    """The PostgreSQL server process behind the key reader's held connection."""
    return app.extensions["keyring"].reader.connection.dbapi_connection.info.backend_pid


def require_postgresql(database_uri: str) -> None:
    """Skip on SQLite, which has no server to hold or drop a connection."""
    if not database_uri.startswith("postgresql"):
        pytest.skip("a PostgreSQL server connection; SQLite has none")


def test_look_ups_reuse_one_held_connection(app, api) -> None:
    first, second = api.new_key(), api.new_key(user_email="other@example.com")
    assert check_uncached(app, api, first) == 200
    held = app.extensions["keyring"].reader.connection
    assert held is not None
    assert check_uncached(app, api, second) == 200
    assert check_uncached(app, api, first) == 200
    assert app.extensions["keyring"].reader.connection is held


def test_the_held_connection_keeps_no_transaction_open(app, api, database_uri) -> None:
    require_postgresql(database_uri)
    assert check_uncached(app, api, api.new_key()) == 200
    with app.app_context():
        state = db.session.scalar(
            text("SELECT state FROM pg_stat_activity WHERE pid = :pid"), {"pid": backend_pid(app)}
        )
    assert state == "idle"  # not "idle in transaction", which would hold back vacuum


def test_a_check_succeeds_after_postgresql_ended_the_held_connection(app, api, database_uri) -> None:
    require_postgresql(database_uri)
    key = api.new_key()
    assert check_uncached(app, api, key) == 200
    ended = backend_pid(app)
    with app.app_context():
        db.session.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": ended})
        db.session.commit()
    assert check_uncached(app, api, key) == 200
    assert backend_pid(app) != ended


def test_a_failed_read_lets_the_connection_go_and_the_next_read_opens_another(app) -> None:
    reader = app.extensions["keyring"].reader
    with pytest.raises(DBAPIError):
        reader.first(select(column("x")).select_from(table("no_such_table")))
    assert reader.connection is None
    assert reader.first(select(literal(1))) == (1,)
    assert reader.connection is not None


def test_a_look_up_reads_what_the_orm_reads(app, api) -> None:
    api.new_key(org_name="Ünïcode Org")
    with app.app_context():
        key, user = db.session.execute(select(ApiKey, User).join(User)).one()
        key.expires_at = datetime(2030, 5, 6, 7, 8, 9, 123456, tzinfo=timezone.utc)
        key.last_used_at = datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
        key.suspended_at = datetime(2026, 1, 3, 4, 5, 6, tzinfo=timezone.utc)
        key.scopes = "assistants:read calls:write"
        key.rate_limit, key.quota_limit, key.quota_period = "100 per minute; 5000 per day", 10_000_000_000, "month"
        user.rate_limit, user.quota_limit, user.quota_period = "1000 per hour", 500, "day"
        key.limit_group = 7
        db.session.commit()
        expected = (key.id, user.id, key.digest, key.display_prefix, key.created_at, key.expires_at,
                    key.revoked_at, key.last_used_at, user.name, user.email, user.org_name, key.suspended_at,
                    key.scopes, key.rate_limit, key.quota_limit, key.quota_period,
                    user.rate_limit, user.quota_limit, user.quota_period, key.limit_group)
    assert app.extensions["keyring"].reader.first(LOOK_UP, {"digest": key.digest}) == expected
    assert all(expected[position].tzinfo is not None for position in (4, 5, 7, 11))  # as UTCDateTime reads them
    assert app.extensions["keyring"].reader.first(LOOK_UP, {"digest": "0" * 64}) is None
