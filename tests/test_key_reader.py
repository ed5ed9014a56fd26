"""Key look-ups run on one connection each worker holds open, and survive its loss."""

import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from livekit_auth.extensions import db


def check_uncached(app, api, key: str) -> int:
    """Check a key with the cache emptied first, so that it is read from the database."""
    app.extensions["keyring"].cache.changed(None)
    return api.get("/auth/check-key", key).status_code


def backend_pid(app) -> int:
    """The PostgreSQL server process behind the key reader's held connection."""
    return app.extensions["keyring"].reader.connection.connection.driver_connection.info.backend_pid


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
        reader.first(text("SELECT * FROM no_such_table"))
    assert reader.connection is None
    assert reader.first(text("SELECT 1 AS one")).one == 1
    assert reader.connection is not None
