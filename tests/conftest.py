"""Fixtures: an app on each database backend, a client, and helpers that speak the API."""

import threading
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient, FlaskCliRunner
from flask_migrate import upgrade

from livekit_auth import clock, create_app
from livekit_auth.config import database_url
from livekit_auth.admin.accounts import hash_password
from livekit_auth.extensions import db
from livekit_auth.apikeys.reader import KeyReader, PreparedRead
from livekit_auth.apikeys.usage import UsageRecorder
from livekit_auth.admin.models import Admin

from .support import (
    ADMIN_EMAIL, ADMIN_PASSWORD, AdminActions, empty_tables, local_services, release, require_service,
)

PROJECT_ROOT = Path(__file__).resolve().parent.parent
UNDO_LOCAL_SERVICES = pytest.StashKey[Callable[[], None]]()


def pytest_configure(config: pytest.Config) -> None:
    """Run the whole suite on the PostgreSQL and Redis of this machine when they answer."""
    config.stash[UNDO_LOCAL_SERVICES] = local_services()


def pytest_unconfigure(config: pytest.Config) -> None:
    """Drop the database this run made for itself."""
    undo = config.stash.get(UNDO_LOCAL_SERVICES, None)
    if undo is not None:
        undo()


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database_uri(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    """A migrated, empty database on each backend; PostgreSQL needs TEST_DATABASE_URL."""
    if request.param == "sqlite":
        uri = f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'test.db'}"
    else:
        raw = require_service(
            "TEST_DATABASE_URL", "set it to an empty PostgreSQL database to run these tests"
        )
        uri = database_url(raw, "")
        reset_postgres_schema(uri)
    app = create_app({"SQLALCHEMY_DATABASE_URI": uri, "SECRET_KEY": "test"})
    with app.app_context():
        upgrade()
        db.engine.dispose()
    return uri


def reset_postgres_schema(uri: str) -> None:
    """Drop everything in the test database's public schema."""
    engine = sa.create_engine(uri)
    try:
        with engine.begin() as connection:
            connection.execute(sa.text("DROP SCHEMA public CASCADE"))
            connection.execute(sa.text("CREATE SCHEMA public"))
    finally:
        engine.dispose()


class WatchedRecorder(UsageRecorder):
    """A usage recorder that tells a test when its writer has written a batch."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.batches = 0
        self.batch_written = threading.Condition()

    def flush(self) -> None:
        super().flush()
        with self.batch_written:
            self.batches += 1
            self.batch_written.notify_all()

    def wait_for_what_was_noted(self, seconds: float = 10) -> None:
        """Wait until everything noted so far has been written by the writer thread.

        A batch under way may have taken its notes before the last one: the batch after it
        holds everything noted before this call.
        """
        with self.batch_written:
            target = self.batches + 2
            assert self.batch_written.wait_for(lambda: self.batches >= target, seconds), "the writer wrote nothing"


@pytest.fixture
def batched_usage(app: Flask) -> Iterator[Callable[[float], WatchedRecorder]]:
    """Have the app write its uses in batches every so many seconds, from a thread stopped when the test ends."""
    recorders: list[WatchedRecorder] = []

    def install(flush_seconds: float) -> WatchedRecorder:
        with app.app_context():
            recorder = WatchedRecorder(db.engine, 60, flush_seconds=flush_seconds)
        app.extensions["keyring"].usage = recorder
        recorders.append(recorder)
        return recorder

    yield install
    for recorder in recorders:
        recorder.stop()


@pytest.fixture
def app(database_uri: str) -> Iterator[Flask]:
    """A fresh app on a clean database."""
    app = create_app({
        "TESTING": True,
        "SQLALCHEMY_DATABASE_URI": database_uri,
        "SECRET_KEY": "test",
        "LAST_USED_FLUSH_SECONDS": 0,  # write last use at once, so tests can read it back
        "RATELIMIT_ENABLED": False,  # the rate limit tests turn it on
    })
    yield app
    with app.app_context():
        db.session.remove()
        empty_tables()
    release(app)


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    """A test client for the app."""
    return app.test_client()


class ApiActions:
    """Calls to the key API, as a client would make them."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client

    def create_key(self, **fields: Any) -> Any:
        """POST /auth/create-key with a JSON body; defaults fill the required fields."""
        body = {"user_name": "John Doe", "user_email": "john@example.com", **fields}
        return self.client.post("/auth/create-key", json=body)

    def new_key(self, **fields: Any) -> str:
        """Create a key and return it, failing the test if creation fails."""
        response = self.create_key(**fields)
        assert response.status_code == 200, response.json
        return response.json["data"]["api_key"]

    def get(self, path: str, key: str | None = None) -> Any:
        """GET a path, sending key in x-api-key when given."""
        return self.call("GET", path, key)

    def call(self, method: str, path: str, key: str | None = None, **kwargs: Any) -> Any:
        """Send any request, with key in x-api-key when given."""
        headers = {} if key is None else {"x-api-key": key}
        return self.client.open(path, method=method, headers=headers, **kwargs)


@pytest.fixture
def api(client: FlaskClient) -> ApiActions:
    """The API helper bound to the test client."""
    return ApiActions(client)


@pytest.fixture
def statements(app: Flask, monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Every SQL statement the app sends while the test runs: SQLAlchemy's, and the key reader's."""
    seen: list[str] = []

    def record(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        seen.append(statement)

    read = KeyReader.read

    def record_read(reader: KeyReader, prepared: PreparedRead, parameters: Any) -> Any:
        seen.append(prepared.sql)
        return read(reader, prepared, parameters)

    monkeypatch.setattr(KeyReader, "read", record_read)
    with app.app_context():
        engine = db.engine
    sa.event.listen(engine, "before_cursor_execute", record)
    yield seen
    sa.event.remove(engine, "before_cursor_execute", record)


@pytest.fixture(scope="session")
def project_root() -> Path:
    """The repository's top folder."""
    return PROJECT_ROOT


class FakeClock:
    """A clock that stands still until a test moves it."""

    def __init__(self, start: datetime) -> None:
        self.current = start

    def __call__(self) -> datetime:
        return self.current

    def advance(self, **delta: float) -> None:
        """Move time forward by a timedelta's worth of keyword arguments."""
        self.current += timedelta(**delta)


@pytest.fixture
def frozen_clock(monkeypatch: pytest.MonkeyPatch) -> FakeClock:
    """Replace the app's clock with one the test controls."""
    fake = FakeClock(datetime(2026, 1, 15, 10, 0, tzinfo=timezone.utc))
    monkeypatch.setattr(clock, "now", fake)
    return fake


@pytest.fixture
def runner(app: Flask) -> FlaskCliRunner:
    """A runner for the app's flask commands."""
    return app.test_cli_runner()


@pytest.fixture
def admin_account(app: Flask) -> str:
    """An admin account in the database; returns its email."""
    with app.app_context():
        db.session.add(
            Admin(email=ADMIN_EMAIL, password_hash=hash_password(ADMIN_PASSWORD), created_at=clock.now())
        )
        db.session.commit()
    return ADMIN_EMAIL


@pytest.fixture
def admin(client: FlaskClient, admin_account: str) -> AdminActions:
    """The admin helper, already logged in."""
    actions = AdminActions(client)
    assert actions.login().status_code == 302
    return actions
