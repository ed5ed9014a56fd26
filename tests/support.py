"""Helpers shared by the tests: envelope checks, required services, a real gunicorn."""

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis
import requests
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient

from livekit_auth import create_app
from livekit_auth.config import database_url
from livekit_auth.extensions import db
from livekit_auth.models import AuditEvent

PROJECT_ROOT = Path(__file__).resolve().parent.parent
NGINX = "/usr/sbin/nginx"
NGINX_MODULES = ("/usr/lib/nginx/modules/ndk_http_module.so", "/usr/lib/nginx/modules/ngx_http_lua_module.so")
NGINX_DEPLOY = PROJECT_ROOT / "deploy" / "nginx"
NGINX_CONFIG = NGINX_DEPLOY / "livekit-auth.conf"
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


def free_port() -> int:
    """Ask the kernel for a port nobody is listening on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def child_pids(pid: int) -> list[int]:
    """The processes a process started."""
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(child) for child in out.stdout.split()]


@dataclass
class LiveServer:
    """A gunicorn started through boot.sh, as `make run` starts it (or another command)."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    database_url: str
    workers: int

    def log(self) -> str:
        """Everything gunicorn and the app have written so far."""
        return self.log_path.read_text(errors="replace")

    def worker_pids(self) -> list[int]:
        """The worker processes under gunicorn's master."""
        return child_pids(self.process.pid)


@contextmanager
def live_server(
    database_url: str, workdir: Path, workers: int = 2, command: list[str] | None = None, **environment: str
) -> Iterator[LiveServer]:
    """Run boot.sh (migrations, then gunicorn), or another command, on a free port; stop it by its PID.

    The tests and make bench both start their servers here.
    """
    port = free_port()
    log_path = workdir / f"gunicorn-{port}.log"
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PORT": str(port),
        "WEB_CONCURRENCY": str(workers),
        "DATABASE_URL": database_url,
        "SECRET_KEY": "live-server-test-secret",
        "XDG_RUNTIME_DIR": str(workdir),
        "RATELIMIT_ENABLED": "false",  # the rate limit tests turn it on
        **environment,
    }
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command or [str(PROJECT_ROOT / "boot.sh")], cwd=PROJECT_ROOT, env=env, stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = LiveServer(f"http://127.0.0.1:{port}", process, log_path, database_url, workers)
    try:
        wait_until_serving(server)
        yield server
    finally:
        stop(process)


class ServerDidNotStart(RuntimeError):
    """The server exited, or did not answer in time; the message holds its log."""


def wait_until_serving(server: LiveServer, seconds: float = 60) -> None:
    """Poll /health until it answers and every worker has booted, or fail with the server's log."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise ServerDidNotStart(f"the server exited with {server.process.returncode}:\n{server.log()}")
        try:
            if (requests.get(f"{server.url}/health", timeout=2).status_code == 200
                    and len(server.worker_pids()) == server.workers):
                return
        except (requests.ConnectionError, requests.Timeout):
            pass  # not listening yet, or a worker still booting
        time.sleep(0.1)
    raise ServerDidNotStart(f"the server did not answer within {seconds} s:\n{server.log()}")


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop gunicorn by its PID: TERM for a graceful stop, KILL if it hangs."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()



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
            redis.Redis.from_url(LOCAL_REDIS, socket_connect_timeout=1, socket_timeout=1).ping()
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


@dataclass
class Nginx:
    """A running nginx: its ports, and the certificate its clients trust."""

    https_port: int
    http_port: int
    certificate: Path
    process: subprocess.Popen[bytes]


def nginx_config(directory: Path, replacements: dict[str, str], locations: str = "", workers: str = "1") -> Path:
    """deploy/nginx's config with this run's ports and paths, inside a main config of its own.

    More locations (the bench's unprotected one) go in before the config's own.
    """
    site = NGINX_CONFIG.read_text()
    for written, replacement in {**replacements, "    location / {": locations + "    location / {"}.items():
        assert written in site, f"{written} is no longer in {NGINX_CONFIG}"
        site = site.replace(written, replacement)
    site = site.replace("/etc/nginx/lua/", f"{NGINX_DEPLOY}/").replace("/etc/nginx/snippets/", f"{NGINX_DEPLOY}/")
    (directory / "livekit-auth.conf").write_text(site)
    temporary = "\n".join(
        f"    {kind}_temp_path {directory / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    main = directory / "nginx.conf"
    main.write_text(
        "".join(f"load_module {module};\n" for module in NGINX_MODULES)
        + ("user root;\n" if os.geteuid() == 0 else "")
        + f"worker_processes {workers};\npid {directory / 'nginx.pid'};\nerror_log {directory / 'error.log'};\n"
        + "events {}\n"
        + f"http {{\n    access_log {directory / 'access.log'};\n{temporary}\n"
        + f"    include {directory / 'livekit-auth.conf'};\n}}\n"
    )
    return main


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made for this run."""
    certificate, key = directory / "server.crt", directory / "server.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(certificate), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    return certificate, key


def wait_for_port(port: int, seconds: float = 10) -> None:
    """Wait until something listens on a local port."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise ServerDidNotStart(f"nothing listens on port {port}")


@contextmanager
def running_nginx(directory: Path, app_servers: list[str], upstream: str, locations: str = "",
                  workers: str = "1") -> Iterator[Nginx]:
    """nginx with deploy/nginx's config in front of app servers and a protected upstream; stopped by its PID."""
    certificate, key = make_certificate(directory)
    https_port, http_port = free_port(), free_port()
    config = nginx_config(directory, {
        "127.0.0.1:8001": app_servers[0],
        "127.0.0.1:8002": app_servers[1],
        "127.0.0.1:9000": upstream,
        "listen 443 ssl": f"listen 127.0.0.1:{https_port} ssl",
        "listen 80": f"listen 127.0.0.1:{http_port}",
        "/etc/nginx/tls/livekit-auth.crt": str(certificate),
        "/etc/nginx/tls/livekit-auth.key": str(key),
    }, locations, workers)
    process = subprocess.Popen([NGINX, "-g", "daemon off;", "-c", str(config), "-e", str(directory / "error.log")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(https_port)
        yield Nginx(https_port, http_port, certificate, process)
    finally:
        process.terminate()
        process.wait(timeout=10)
