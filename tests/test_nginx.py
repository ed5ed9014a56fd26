"""The deployment in deploy/nginx/livekit-auth.conf, run for real.

Debian's nginx terminates TLS with a certificate made here, in front of two gunicorn servers on
one PostgreSQL database with their limits in Redis, and protects a tiny upstream, which echoes
the headers it got, with auth_request /auth/verify. Clients connect from addresses of their own
on the loopback network (127.0.0.2, 127.0.0.3, ...), so the address the app sees can be told
apart from nginx's own (127.0.0.1).
"""

import http.client
import json
import os
import shutil
import socket
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import requests

from .support import (
    PROJECT_ROOT, REQUIRE_SERVICES, LiveServer, clear_database, envelope_error, free_port,
    live_server, require_service,
)

NGINX = "/usr/sbin/nginx"
CONFIG = PROJECT_ROOT / "deploy" / "nginx" / "livekit-auth.conf"
FAILED_AUTH_LIMIT = 4
POLL_SECONDS = 0.5  # KEY_CACHE_POLL_SECONDS, the default


class EchoHeaders(BaseHTTPRequestHandler):
    """The protected service: answers every request with the headers it received, as JSON."""

    def do_GET(self) -> None:
        body = json.dumps(dict(self.headers.items())).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_POST = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the test reads answers, not this log."""


@dataclass
class Deployment:
    """nginx's ports, its certificate, and the two app servers behind it."""

    https_port: int
    http_port: int
    certificate: Path
    servers: tuple[LiveServer, LiveServer]

    def call(
        self, method: str, path: str, key: str | None = None, client: str = "127.0.0.2",
        body: dict[str, Any] | None = None, headers: dict[str, str] | None = None,
    ) -> "Answer":
        """Send one request to nginx over TLS from a client address, and read the answer."""
        context = ssl.create_default_context(cafile=str(self.certificate))
        connection = http.client.HTTPSConnection(
            "127.0.0.1", self.https_port, timeout=15, context=context, source_address=(client, 0)
        )
        sent = dict(headers or {})
        if key is not None:
            sent["x-api-key"] = key
        payload = None
        if body is not None:
            payload = json.dumps(body).encode()
            sent["Content-Type"] = "application/json"
        try:
            connection.request(method, path, body=payload, headers=sent)
            response = connection.getresponse()
            return Answer(response.status, response.headers, response.read())
        finally:
            connection.close()

    def served(self, server: LiveServer, path: str, client: str) -> list[dict[str, Any]]:
        """The request log lines of one server for a path and a client address."""
        lines = [json.loads(line) for line in server.log().splitlines() if line.startswith('{"time"')]
        return [line for line in lines if line["path"] == path and line["client"] == client]


@dataclass
class Answer:
    """An answer as read from nginx."""

    status_code: int
    headers: Any
    content: bytes

    def json(self) -> Any:
        return json.loads(self.content)


def deployment_config(directory: Path, replacements: dict[str, str]) -> Path:
    """The repository's config with this run's ports and certificate, inside a main config of its own."""
    site = CONFIG.read_text()
    for written, replacement in replacements.items():
        assert written in site, f"{written} is no longer in {CONFIG}"
        site = site.replace(written, replacement)
    (directory / "livekit-auth.conf").write_text(site)
    temporary = "\n".join(
        f"    {kind}_temp_path {directory / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    main = directory / "nginx.conf"
    main.write_text(
        ("user root;\n" if os.geteuid() == 0 else "")
        + f"worker_processes 1;\npid {directory / 'nginx.pid'};\nerror_log {directory / 'error.log'};\n"
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
    pytest.fail(f"nothing listens on port {port}")


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """nginx, two app servers on one PostgreSQL with Redis limits, and the protected upstream."""
    database_uri = require_service("TEST_DATABASE_URL", "set it to a PostgreSQL database the test may use")
    redis_url = require_service("TEST_REDIS_URL", "set it to a Redis database the test may use")
    if not os.path.exists(NGINX) or shutil.which("openssl") is None:
        reason = "Debian's nginx and openssl are needed: apt-get install nginx openssl"
        if REQUIRE_SERVICES:
            pytest.fail(reason)
        pytest.skip(reason)
    directory = tmp_path_factory.mktemp("nginx")
    certificate, key = make_certificate(directory)
    upstream = ThreadingHTTPServer(("127.0.0.1", 0), EchoHeaders)
    threading.Thread(target=upstream.serve_forever, daemon=True).start()
    settings = {
        "TRUSTED_PROXY_COUNT": "1",
        "RATELIMIT_ENABLED": "true",
        "RATELIMIT_STORAGE_URI": redis_url,
        "RATELIMIT_KEY_PREFIX": f"nginx-{uuid.uuid4().hex}",
        "RATELIMIT_FAILED_AUTH": f"{FAILED_AUTH_LIMIT} per minute",
    }
    with live_server(database_uri, directory, workers=2, **settings) as first, \
            live_server(database_uri, directory, workers=2, **settings) as second:
        https_port, http_port = free_port(), free_port()
        config = deployment_config(directory, {
            "127.0.0.1:8001": first.url.removeprefix("http://"),
            "127.0.0.1:8002": second.url.removeprefix("http://"),
            "127.0.0.1:9000": f"127.0.0.1:{upstream.server_port}",
            "listen 443 ssl": f"listen 127.0.0.1:{https_port} ssl",
            "listen 80": f"listen 127.0.0.1:{http_port}",
            "/etc/nginx/tls/livekit-auth.crt": str(certificate),
            "/etc/nginx/tls/livekit-auth.key": str(key),
        })
        nginx = subprocess.Popen([NGINX, "-g", "daemon off;", "-c", str(config), "-e", str(directory / "error.log")],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_port(https_port)
            yield Deployment(https_port, http_port, certificate, (first, second))
        finally:
            nginx.terminate()
            nginx.wait(timeout=10)
            upstream.shutdown()
            upstream.server_close()
    clear_database(database_uri)


def new_key(deployment: Deployment, label: str) -> str:
    """Create a user and key through nginx."""
    body = {"user_name": "Proxied", "user_email": f"{label}-{uuid.uuid4().hex[:8]}@example.com", "org_name": "Acme"}
    answer = deployment.call("POST", "/auth/create-key", body=body, client="127.0.0.10")
    assert answer.status_code == 200, answer.content
    return answer.json()["data"]["api_key"]


def direct(server: LiveServer, method: str, path: str, key: str, client: str = "10.9.9.9") -> Any:
    """Call one app server directly, around nginx, as nginx would for a client address."""
    headers = {"x-api-key": key, "X-Forwarded-For": client}
    return requests.request(method, f"{server.url}{path}", headers=headers, timeout=10)


def test_plain_http_is_sent_to_https(deployment) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", deployment.http_port, timeout=10)
    try:
        connection.request("GET", "/auth/check-key")
        response = connection.getresponse()
        assert response.status == 301
        assert response.headers["Location"].startswith("https://")
    finally:
        connection.close()


def test_keys_are_created_and_checked_across_both_servers(deployment) -> None:
    key = new_key(deployment, "across")
    for _ in range(6):
        answer = deployment.call("GET", "/auth/check-key", key, client="127.0.0.11")
        assert answer.status_code == 200 and answer.json()["message"] == "API key is valid"
    for server in deployment.servers:
        assert deployment.served(server, "/auth/check-key", "127.0.0.11"), "nginx sent no check to one server"
        assert direct(server, "GET", "/auth/check-key", key).status_code == 200


def test_a_key_revoked_through_one_server_is_refused_by_the_other_within_a_second(deployment) -> None:
    first, second = deployment.servers
    key = new_key(deployment, "revoked")
    for _ in range(4):  # into the caches of both workers of both servers
        assert direct(second, "GET", "/auth/check-key", key).status_code == 200
    key_id = direct(first, "GET", "/auth/keys", key).json()["data"][0]["id"]
    assert direct(first, "DELETE", f"/auth/keys/{key_id}", key).status_code == 200
    time.sleep(1.0)
    for n in range(8):  # each from an address of its own, to stay under the failed-check limit
        refused = direct(second, "GET", "/auth/check-key", key, client=f"10.0.1.{n}")
        envelope_error(refused, 401, "API key has been revoked")
    envelope_error(deployment.call("GET", "/auth/check-key", key, client="127.0.0.12"), 401)


def test_failed_checks_are_counted_across_both_servers_for_the_real_client(deployment) -> None:
    guesser = "127.0.0.13"
    for n in range(FAILED_AUTH_LIMIT):
        # What a client writes in X-Forwarded-For is replaced by the address nginx saw.
        answer = deployment.call("GET", "/auth/check-key", "lvk_guess", client=guesser,
                                 headers={"X-Forwarded-For": f"10.0.0.{n}"})
        envelope_error(answer, 401)
    refused = deployment.call("GET", "/auth/check-key", "lvk_guess", client=guesser,
                              headers={"X-Forwarded-For": "10.0.0.99"})
    envelope_error(refused, 429)
    assert int(refused.headers["Retry-After"]) > 0
    for server in deployment.servers:  # both servers counted the same address
        assert deployment.served(server, "/auth/check-key", guesser)
    # Another client behind the same nginx is not held to the guesser's count.
    envelope_error(deployment.call("GET", "/auth/check-key", "lvk_guess", client="127.0.0.14"), 401)


def test_the_protected_service_gets_the_callers_identity_and_never_the_key(deployment) -> None:
    key = new_key(deployment, "protected")
    for method in ("GET", "POST"):
        answer = deployment.call(method, "/agents/rooms", key, client="127.0.0.15",
                                 headers={"X-Auth-User-Email": "spoofed@example.com"})
        assert answer.status_code == 200, answer.content
        seen = {name.lower(): value for name, value in answer.json().items()}
        assert seen["x-auth-user-email"].startswith("protected-")
        assert seen["x-auth-org"] == "Acme"
        assert seen["x-auth-key-prefix"] == key[:12]
        assert seen["x-auth-user-id"].isdigit() and seen["x-auth-key-id"].isdigit()
        assert "x-api-key" not in seen


def test_the_protected_service_is_refused_without_a_valid_key(deployment) -> None:
    for key in (None, "lvk_nonsense"):
        answer = deployment.call("GET", "/agents/rooms", key, client="127.0.0.16",
                                 headers={"X-Auth-User-Id": "1"})
        envelope_error(answer, 401, "Invalid API key")


def test_the_protected_service_is_throttled_like_the_api(deployment) -> None:
    guesser = "127.0.0.17"
    for _ in range(FAILED_AUTH_LIMIT):
        envelope_error(deployment.call("GET", "/agents/rooms", "lvk_guess", client=guesser), 401)
    refused = deployment.call("GET", "/agents/rooms", new_key(deployment, "throttled"), client=guesser)
    envelope_error(refused, 429)
    assert int(refused.headers["Retry-After"]) > 0


def send_slowly(port: int, certificate: Path | None) -> socket.socket:
    """Open a connection and send half a request, then nothing more."""
    connection = socket.create_connection(("127.0.0.1", port), timeout=10)
    if certificate is not None:
        context = ssl.create_default_context(cafile=str(certificate))
        connection = context.wrap_socket(connection, server_hostname="127.0.0.1")
    connection.sendall(b"POST /auth/create-key HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                       b"Content-Length: 200\r\n\r\n{\"user_name\": ")
    return connection


def test_slow_clients_hold_no_app_worker(deployment) -> None:
    key = new_key(deployment, "slow")
    first = deployment.servers[0]
    # Straight at one server, two half-sent requests take both of its sync workers ...
    stalled = [send_slowly(int(first.url.rsplit(":", 1)[1]), None) for _ in range(2)]
    try:
        with pytest.raises(requests.Timeout):
            requests.get(f"{first.url}/auth/check-key", headers={"x-api-key": key}, timeout=2)
    finally:
        for connection in stalled:
            connection.close()
    # ... while through nginx, many more leave every worker free for everyone else.
    stalled = [send_slowly(deployment.https_port, deployment.certificate) for _ in range(8)]
    try:
        for _ in range(4):
            started = time.monotonic()
            assert deployment.call("GET", "/auth/check-key", key, client="127.0.0.18").status_code == 200
            assert time.monotonic() - started < 5
    finally:
        for connection in stalled:
            connection.close()
