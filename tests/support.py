"""Helpers shared by the tests: envelope checks, required services, admin actions.

The real servers (gunicorn, nginx) start in bench/servers.py, which make bench uses too.
"""

import dataclasses
import os
import re
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

import pytest
import redis
import requests
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from bench.servers import NGINX, NGINX_MODULES, PROJECT_ROOT
from livekit_auth import create_app
from livekit_auth.config import database_url
from livekit_auth.extensions import db
from livekit_auth.apikeys.models import AuditEvent

# .ci/run sets this so that a missing service fails the run instead of skipping tests.
REQUIRE_SERVICES = os.environ.get("REQUIRE_SERVICES") == "1"


def require_service(variable: str, how: str) -> str:
    """Return a service's address from the environment, or skip (fail under CI) without it."""
    value = os.environ.get(variable)
    if value:
        return value
    reason = f"{variable} is not set: {how}"
    if REQUIRE_SERVICES:
        pytest.fail(reason)
    pytest.skip(reason)


def envelope_error(response: Any, status: int, message: str | None = None) -> dict[str, Any]:
    """Assert an error answer in the documented envelope and return its body."""
    assert response.status_code == status, getattr(response, "text", None) or getattr(response, "data", None) \
        or response.content
    body = response.json() if callable(response.json) else response.json
    assert body["success"] is False
    assert body["data"] is None
    assert isinstance(body["message"], str) and body["message"]
    if message is not None:
        assert body["message"] == message
    return body


def empty_tables() -> None:
    """Delete every row, children first, so the next test starts clean."""
    for table in reversed(db.metadata.sorted_tables):
        if table.name not in ("key_changes", "key_shards"):  # their rows are part of the schema
            db.session.execute(table.delete())
    db.session.commit()


def clear_database(uri: str) -> None:
    """Empty the tables of the database at uri, from outside any app."""
    app = create_app({"SQLALCHEMY_DATABASE_URI": uri, "SECRET_KEY": "test"})
    with app.app_context():
        empty_tables()
    release(app)


def release(app: Flask) -> None:
    """Close every connection an app holds: the key reader's, the limit store's, then the pool's."""
    app.extensions["keyring"].close()
    app.extensions["rate_limits"].close()
    with app.app_context():
        db.engine.dispose()



LOCAL_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
LOCAL_REDIS = "redis://127.0.0.1:6379/15"


def local_services(name: str = f"livekit_auth_test_{os.getpid()}") -> Callable[[], None]:
    """Use the PostgreSQL and Redis that answer on this machine when none were named.

    A database of this run's own (name) is created, and dropped by the returned function; a service
    that does not answer within a second is left out, and its tests skip with the reason.
    """
    cleanups: list[Callable[[], None]] = []
    if not os.environ.get("TEST_DATABASE_URL"):
        # No pool: the clean-up connects afresh, since the server may have restarted during the run.
        server = sa.create_engine(database_url(LOCAL_POSTGRES, ""), isolation_level="AUTOCOMMIT",
                                  connect_args={"connect_timeout": 1}, poolclass=sa.pool.NullPool)
        try:
            with server.connect() as connection:
                connection.execute(sa.text(f"CREATE DATABASE {name}"))
        except sa.exc.DBAPIError:
            server.dispose()
        else:
            os.environ["TEST_DATABASE_URL"] = LOCAL_POSTGRES.rsplit("/", 1)[0] + "/" + name

            def drop_database() -> None:
                with server.connect() as connection:
                    connection.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                server.dispose()

            cleanups.append(drop_database)
    if not os.environ.get("TEST_REDIS_URL"):
        try:
            with redis.Redis.from_url(LOCAL_REDIS, socket_connect_timeout=1, socket_timeout=1) as store:
                store.ping()
        except redis.RedisError:
            pass
        else:
            os.environ["TEST_REDIS_URL"] = LOCAL_REDIS

    def undo() -> None:
        for cleanup in cleanups:
            cleanup()

    return undo


def events(app, action: str | None = None) -> list[AuditEvent]:
    """The audit rows, oldest first, of one action or all."""
    with app.app_context():
        query = sa.select(AuditEvent).order_by(AuditEvent.id)
        if action is not None:
            query = query.where(AuditEvent.action == action)
        rows = list(db.session.scalars(query))
        db.session.expunge_all()
        return rows


def prefix_of(key: str) -> str:
    """A key's display prefix, as the audit log names it."""
    return key[:12]


def rows_on(client, query: str) -> int:
    """How many key rows the list page shows for a query string."""
    html = client.get(f"/admin/?{query}").get_data(as_text=True)
    return html.count('<a class="mono" href="/admin/keys/')


ADMIN_EMAIL = "ops@example.com"
ADMIN_PASSWORD = "correct horse battery"


class AdminActions:
    """A browser's worth of admin actions through the test client."""

    def __init__(self, client: FlaskClient) -> None:
        self.client = client

    def csrf_token(self, path: str = "/admin/login") -> str:
        """The CSRF token from a page's form."""
        html = self.client.get(path).get_data(as_text=True)
        match = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', html)
        assert match, html
        return match.group(1)

    def login(self, email: str = ADMIN_EMAIL, password: str = ADMIN_PASSWORD) -> Any:
        """Submit the login form with a valid CSRF token."""
        token = self.csrf_token()
        return self.client.post(
            "/admin/login", data={"email": email, "password": password, "csrf_token": token}
        )

    def post(self, path: str, form_page: str, **data: str) -> Any:
        """Submit a form found on form_page to path, with its CSRF token."""
        return self.client.post(path, data={"csrf_token": self.csrf_token(form_page), **data})


def flask_command(database_uri: str, *arguments: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    """Run a flask command of the app in a process of its own, as an operator would."""
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", *arguments], input=stdin, capture_output=True,
        text=True, cwd=PROJECT_ROOT, timeout=60,
        env={"PATH": "/usr/bin:/bin", "DATABASE_URL": database_uri, "SECRET_KEY": "test"},
    )


def logged_in_admin(origin: str, database_uri: str, verify: str | bool = True) -> requests.Session:
    """An admin made with the CLI and logged in over HTTP at origin, as a browser would be."""
    email, password = f"admin-{uuid.uuid4().hex[:6]}@example.com", "a long admin password"
    created = flask_command(database_uri, "admin", "create", "--email", email, "--password-stdin",
                            stdin=password + "\n")
    assert created.returncode == 0, created.stderr
    browser = requests.Session()
    browser.trust_env = False  # REQUESTS_CA_BUNDLE would overrule the certificate it is to trust
    browser.verify = verify
    browser.headers["Referer"] = f"{origin}/admin/login"
    page = browser.get(f"{origin}/admin/login", timeout=15).text
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)
    answer = browser.post(f"{origin}/admin/login", data={"email": email, "password": password, "csrf_token": token},
                          timeout=15, allow_redirects=False)
    assert answer.status_code == 302, answer.text
    return browser


def require_nginx() -> None:
    """Skip (fail under CI) without Debian's nginx, its Lua module and openssl."""
    if all(os.path.exists(path) for path in (NGINX, *NGINX_MODULES)) and shutil.which("openssl"):
        return
    reason = "Debian's nginx, its Lua module and openssl are needed: apt-get install nginx libnginx-mod-http-lua openssl"
    if REQUIRE_SERVICES:
        pytest.fail(reason)
    pytest.skip(reason)


def cap_active_keys(app: Flask, limit: int) -> None:
    """Let each user of a built app hold at most limit active keys (MAX_ACTIVE_KEYS_PER_USER)."""
    app.extensions["key_settings"] = dataclasses.replace(app.extensions["key_settings"], max_active_keys=limit)


class Ticker:
    """A monotonic clock that stands still until a test moves it (KeyCache's monotonic)."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock on."""
        self.now += seconds


def eventually(condition: Callable[[], Any], seconds: float = 10, what: str = "the awaited state") -> Any:
    """Ask condition again and again until it answers something true, and return that; fail after seconds.

    For a state another process reaches in its own time (a worker's batch, a poll): the test
    waits for the state itself, never for a guess at how long it takes.
    """
    deadline = time.monotonic() + seconds
    while not (answer := condition()):
        if time.monotonic() > deadline:
            pytest.fail(f"{what} was not reached within {seconds} s")
        time.sleep(0.02)
    return answer
