"""The deployment in deploy/nginx/livekit-auth.conf, run for real.

Debian's nginx, with its Lua module, terminates TLS with a certificate made here, in front of two
gunicorn servers on one PostgreSQL database with their limits in Redis, and protects a tiny
upstream, which echoes the headers it got, with the key check of deploy/nginx/livekit_auth.lua. Clients connect from addresses of their own
on the loopback network (127.0.0.2, 127.0.0.3, ...), so the address the app sees can be told
apart from nginx's own (127.0.0.1).
"""

import http.client
import itertools
import json
import re
import socket
import ssl
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

from livekit_auth.apikeys import keys

from bench.servers import LiveServer, free_port, live_server, running_nginx

from .support import (
    clear_database, envelope_error, eventually, flask_command, logged_in_admin, require_nginx, require_service,
)

pytestmark = pytest.mark.slow  # every test here talks to real servers this module starts

FAILED_AUTH_LIMIT = 4
POLL_SECONDS = 0.5  # KEY_CACHE_POLL_SECONDS, the default
CREATORS = itertools.count(1)


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
    directory: Path  # nginx's configuration, logs and temporary files, and the servers' logs

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


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    """nginx, two app servers on one PostgreSQL with Redis limits, and the protected upstream."""
    database_uri = require_service("TEST_DATABASE_URL", "set it to a PostgreSQL database the test may use")
    redis_url = require_service("TEST_REDIS_URL", "set it to a Redis database the test may use")
    require_nginx()
    directory = tmp_path_factory.mktemp("nginx")
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
        servers = [first.url.removeprefix("http://"), second.url.removeprefix("http://")]
        try:
            with running_nginx(directory, servers, f"127.0.0.1:{upstream.server_port}") as nginx:
                yield Deployment(nginx.https_port, nginx.http_port, nginx.certificate, (first, second), directory)
        finally:
            upstream.shutdown()
            upstream.server_close()
    clear_database(database_uri)


def new_key(deployment: Deployment, label: str) -> str:
    """Create a user and key through nginx."""
    body = {"user_name": "Proxied", "user_email": f"{label}-{uuid.uuid4().hex[:8]}@example.com", "org_name": "Acme"}
    # Each from an address of its own, to stay under RATELIMIT_CREATE_KEY.
    answer = deployment.call("POST", "/auth/create-key", body=body, client=f"127.0.4.{next(CREATORS)}")
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
    addresses = (f"10.{n // 250 % 250}.{n % 250}.2" for n in itertools.count())  # each check from its own

    def refused_by_every_worker() -> bool:
        return all(direct(second, "GET", "/auth/check-key", key, client=next(addresses)).status_code == 401
                   for _ in range(8))

    eventually(refused_by_every_worker, 1.0, "the key refused by both workers of the other server")
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


@pytest.mark.parametrize(("key", "message"), [
    (None, "Invalid API key: the x-api-key header is missing"),
    ("lvk_nonsense", "Invalid API key"),
])
def test_the_protected_service_is_refused_without_a_valid_key_as_the_service_refuses_it(
    deployment, key, message
) -> None:
    answer = deployment.call("GET", "/agents/rooms", key, client="127.0.0.16", headers={"X-Auth-User-Id": "1"})
    envelope_error(answer, 401, message)
    assert answer.headers["Cache-Control"] == "no-store"
    assert answer.headers["X-Request-ID"]


def test_the_protected_service_is_throttled_like_the_api(deployment) -> None:
    guesser = "127.0.0.17"
    for _ in range(FAILED_AUTH_LIMIT):
        envelope_error(deployment.call("GET", "/agents/rooms", "lvk_guess", client=guesser), 401)
    refused = deployment.call("GET", "/agents/rooms", "lvk_guess", client=guesser)
    envelope_error(refused, 429)
    assert int(refused.headers["Retry-After"]) > 0
    # A valid key opens from the throttled address on every server, kept by nginx or not.
    key = new_key(deployment, "throttled")
    answers = [deployment.call("GET", "/agents/rooms", key, client=guesser).status_code for _ in range(6)]
    assert answers == [200] * 6


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


def test_a_client_cannot_send_the_caller_headers_nginx_leaves_empty(deployment) -> None:
    body = {"user_name": "No Org", "user_email": f"no-org-{uuid.uuid4().hex[:8]}@example.com"}
    key = deployment.call("POST", "/auth/create-key", body=body, client=f"127.0.4.{next(CREATORS)}").json()
    answer = deployment.call("GET", "/agents/rooms", key["data"]["api_key"], client="127.0.0.19",
                             headers={"X-Auth-Org": "Spoofed Inc"})
    assert answer.status_code == 200
    assert "Spoofed Inc" not in answer.json().values()


def verifies(deployment: Deployment, client: str) -> int:
    """How many /auth/verify requests for a client address the app servers answered."""
    return sum(len(deployment.served(server, "/auth/verify", client)) for server in deployment.servers)


def protected(deployment: Deployment, key: str | None, client: str, **headers: str) -> Answer:
    """A call to the protected service through nginx."""
    return deployment.call("GET", "/agents/rooms", key, client=client, headers=headers)


def test_an_accepted_key_is_answered_by_nginx_until_something_changes(deployment) -> None:
    key = new_key(deployment, "kept")
    client = "127.0.0.20"
    assert protected(deployment, key, client).status_code == 200
    asked = verifies(deployment, client)
    assert asked == 1
    for _ in range(20):
        answer = protected(deployment, key, client)
        assert answer.status_code == 200
        assert answer.json()["X-Auth-Key-Prefix"] == key[:12]
    assert verifies(deployment, client) == asked  # none of them reached an app server


@pytest.mark.parametrize(("presented", "client"), [("lvk_nonsense", "127.0.0.21"), ("unknown", "127.0.0.25")])
def test_a_refusal_is_never_kept(deployment, presented, client) -> None:
    key = keys.generate().secret if presented == "unknown" else presented
    for n in range(3):
        envelope_error(protected(deployment, key, client), 401, "Invalid API key")
        assert verifies(deployment, client) == n + 1


def test_a_flood_of_unknown_keys_leaves_the_kept_answers_alone(deployment) -> None:
    key = new_key(deployment, "flooded")
    assert protected(deployment, key, "127.0.0.22").status_code == 200
    for n in range(200):  # each from an address of its own, to stay under the failed-check limit
        envelope_error(protected(deployment, keys.generate().secret, f"127.0.2.{n}"), 401)
    assert protected(deployment, key, "127.0.0.22").status_code == 200
    assert verifies(deployment, "127.0.0.22") == 1


def test_a_second_key_header_is_refused_even_beside_a_kept_key(deployment) -> None:
    key = new_key(deployment, "doubled")
    assert protected(deployment, key, "127.0.0.23").status_code == 200
    context = ssl.create_default_context(cafile=str(deployment.certificate))
    connection = http.client.HTTPSConnection("127.0.0.1", deployment.https_port, timeout=15, context=context,
                                             source_address=("127.0.0.23", 0))
    try:
        connection.putrequest("GET", "/agents/rooms")
        connection.putheader("x-api-key", key)
        connection.putheader("x-api-key", "lvk_other")
        connection.endheaders()
        response = connection.getresponse()
        assert response.status == 401, response.read()
    finally:
        connection.close()


def test_no_key_is_at_rest_in_anything_nginx_or_the_servers_wrote(deployment) -> None:
    key = new_key(deployment, "at-rest")
    for _ in range(3):
        assert protected(deployment, key, "127.0.0.24").status_code == 200
    assert deployment.call("GET", "/auth/check-key", key, client="127.0.0.24").status_code == 200
    written = [path for path in deployment.directory.rglob("*") if path.is_file()]
    assert any(path.name == "access.log" for path in written)
    assert not [path for path in written if key.encode() in path.read_bytes()]
    assert not [path for path in written if key[len("lvk_"):].encode() in path.read_bytes()]


def admin_session(deployment: Deployment) -> requests.Session:
    """An admin logged in through nginx, as a browser on this port would be.

    The Referer names the port the client used; with Host without it, the login was a 400.
    """
    return logged_in_admin(f"https://127.0.0.1:{deployment.https_port}", deployment.servers[0].database_url,
                           str(deployment.certificate))


def test_the_admin_logs_in_through_nginx_on_any_port(deployment) -> None:
    assert admin_session(deployment).get(f"https://127.0.0.1:{deployment.https_port}/admin/",
                                         timeout=15).status_code == 200


def revoke_through_the_api(deployment: Deployment, key: str) -> None:
    key_id = deployment.call("GET", "/auth/keys", key, client="127.0.0.30").json()["data"][0]["id"]
    assert deployment.call("DELETE", f"/auth/keys/{key_id}", key, client="127.0.0.30").status_code == 200


def revoke_in_the_admin(deployment: Deployment, key: str) -> None:
    key_id = deployment.call("GET", "/auth/keys", key, client="127.0.0.31").json()["data"][0]["id"]
    browser = admin_session(deployment)
    page_url = f"https://127.0.0.1:{deployment.https_port}/admin/keys/{key_id}/revoke"
    page = browser.get(page_url, timeout=15).text
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)
    browser.headers["Referer"] = page_url
    assert browser.post(page_url, data={"csrf_token": token}, timeout=15, allow_redirects=False).status_code == 302


def revoke_with_the_cli(deployment: Deployment, key: str) -> None:
    revoked = flask_command(deployment.servers[0].database_url, "keys", "revoke", "--stdin", stdin=key + "\n")
    assert revoked.returncode == 0, revoked.stderr


def report_as_leaked(deployment: Deployment, key: str) -> None:
    answer = deployment.call("POST", "/auth/keys/leaked", body={"keys": [key]}, client="127.0.0.32")
    assert answer.json()["data"] == {"revoked": 1}


@pytest.mark.parametrize("revoke", [revoke_through_the_api, revoke_in_the_admin, revoke_with_the_cli,
                                    report_as_leaked])
def test_a_revoked_key_is_refused_through_nginx_within_a_second(deployment, revoke) -> None:
    key = new_key(deployment, revoke.__name__.replace("_", "-"))
    client = "127.0.0.33"
    for _ in range(4):
        assert protected(deployment, key, client).status_code == 200
    revoke(deployment, key)
    revoked_at = time.monotonic()
    while protected(deployment, key, client).status_code == 200:
        assert time.monotonic() - revoked_at < 1.0, "nginx still lets the revoked key through"
    # ... and it stays refused, from every server (nginx takes turns), each from an address of
    # its own to stay under the failed-check limit.
    for n in range(4):
        envelope_error(protected(deployment, key, f"127.0.3.{n}"), 401, "API key has been revoked")


@pytest.fixture(scope="module")
def deployment_without_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """The same nginx, with nothing listening where its app servers and protected upstream should be."""
    require_nginx()
    nowhere = [f"127.0.0.1:{free_port()}" for _ in range(3)]
    with running_nginx(tmp_path_factory.mktemp("nginx-alone"), nowhere[:2], nowhere[2]) as nginx:
        yield Deployment(nginx.https_port, nginx.http_port, nginx.certificate, (), Path())  # type: ignore[arg-type]


@pytest.mark.parametrize(("path", "status", "message"), [
    ("/auth/check-key", 502, "No server answered; try again later"),
    ("/agents/rooms", 503, "The API key service is unavailable"),
])
def test_nginxs_own_answers_are_the_envelope(deployment_without_servers, path, status, message) -> None:
    answer = deployment_without_servers.call("GET", path, "lvk_any")
    envelope_error(answer, status, message)
    assert answer.headers["Content-Type"] == "application/json"
    assert answer.headers["Cache-Control"] == "no-store"
    assert re.fullmatch(r"[0-9a-f]{32}", answer.headers["X-Request-ID"])
    assert answer.headers["Server"] == "nginx"  # server_tokens off: no version


@pytest.mark.parametrize(("path", "headers", "status", "message"), [
    ("/auth/check-key?" + "a" * 6000, {}, 414, "The request line is over 4094 bytes"),  # gunicorn's refusal
    ("/agents/rooms?" + "a" * 20000, {}, 414, "The request line is over 4094 bytes"),  # nginx's own
    ("/auth/check-key", {"X-Filler": "f" * 9000}, 431, "The request has over 50 headers, or one over 8190 bytes"),
    ("/agents/rooms", {"X-Filler": "f" * 20000}, 431, "The request has over 50 headers, or one over 8190 bytes"),
])
def test_requests_too_large_are_refused_in_the_envelope_by_nginx_or_gunicorn(deployment, path, headers, status,
                                                                             message) -> None:
    answer = deployment.call("GET", path, "lvk_any", client="127.0.0.40", headers=headers)
    envelope_error(answer, status, message)
    assert answer.headers["Content-Type"] == "application/json"
    assert answer.headers["Cache-Control"] == "no-store"


def test_a_suspended_key_is_refused_through_nginx_within_a_second_and_opens_again_when_resumed(deployment) -> None:
    key = new_key(deployment, "suspended")
    client = "127.0.0.41"
    database_url = deployment.servers[0].database_url
    for _ in range(4):
        assert protected(deployment, key, client).status_code == 200
    assert flask_command(database_url, "keys", "suspend", key[:12]).returncode == 0
    changed_at = time.monotonic()
    while protected(deployment, key, client).status_code == 200:
        assert time.monotonic() - changed_at < 1.0, "nginx still lets the suspended key through"
    for n in range(4):
        envelope_error(protected(deployment, key, f"127.0.6.{n}"), 401, "API key is suspended")
    assert flask_command(database_url, "keys", "resume", key[:12]).returncode == 0
    changed_at = time.monotonic()
    while protected(deployment, key, client).status_code != 200:  # a valid key opens from a throttled address
        assert time.monotonic() - changed_at < 1.0, "nginx still refuses the resumed key"
    assert [protected(deployment, key, client).status_code for _ in range(4)] == [200] * 4


def test_a_location_that_requires_a_scope_opens_only_to_keys_that_carry_it(deployment) -> None:
    full = new_key(deployment, "scopes")

    def restricted(*scopes: str) -> str:
        answer = deployment.call("POST", "/auth/keys", full, client="127.0.0.42", body={"scopes": list(scopes)})
        assert answer.status_code == 200, answer.content
        return answer.json()["data"]["api_key"]

    # Each key from an address of its own, so that the servers' logs tell their checks apart.
    calls, assistants = restricted("calls:write"), restricted("assistants:read")
    clients = {full: "127.0.0.43", calls: "127.0.0.44", assistants: "127.0.0.45"}
    for _ in range(3):
        for key in (full, calls, assistants):
            assert deployment.call("GET", "/agents/rooms", key, client=clients[key]).status_code == 200
        for key in (full, calls):
            assert deployment.call("GET", "/agents/calls/start", key, client=clients[key]).status_code == 200
        refused = deployment.call("GET", "/agents/calls/start", assistants, client=clients[assistants])
        envelope_error(refused, 403, "API key lacks the scope calls:write")
        assert refused.headers["Cache-Control"] == "no-store"

    def verified(key: str) -> int:
        return sum(len(deployment.served(server, "/auth/verify", clients[key])) for server in deployment.servers)

    # nginx kept each accepting answer under its key and its scope, once asked; the answer it
    # keeps for /agents/rooms was never used for /agents/calls/, and a refusal was never kept.
    assert (verified(full), verified(calls), verified(assistants)) == (2, 2, 1 + 3)
    seen = {name.lower(): value for name, value in
            deployment.call("GET", "/agents/calls/start", calls, client=clients[calls]).json().items()}
    assert seen["x-auth-scopes"] == "calls:write" and "x-required-scope" not in seen
    seen = {name.lower(): value for name, value in
            deployment.call("GET", "/agents/rooms", full, client=clients[full]).json().items()}
    assert seen.get("x-auth-scopes", "") == ""  # full access: no scopes to pass on


def test_a_limited_keys_every_call_reaches_the_service_and_is_refused_past_its_limit(deployment) -> None:
    key = new_key(deployment, "limited")
    client = "127.0.0.46"
    assert protected(deployment, key, client).status_code == 200  # kept by nginx: the key has no limits yet
    assert "RateLimit-Limit" not in protected(deployment, key, client).headers
    limited = flask_command(deployment.servers[0].database_url, "keys", "limit", key[:12], "--rate", "6 per minute")
    assert limited.returncode == 0, limited.stderr
    changed_at = time.monotonic()
    while "RateLimit-Limit" not in (answer := protected(deployment, key, client)).headers:
        assert time.monotonic() - changed_at < 1.0, "nginx still answers the limited key from what it kept"
    asked = verifies(deployment, client)
    remaining = int(answer.headers["RateLimit-Remaining"])
    assert answer.headers["RateLimit-Limit"] == "6" and remaining < 6
    for left in range(remaining - 1, -1, -1):
        answer = protected(deployment, key, client)
        assert answer.status_code == 200 and answer.headers["RateLimit-Remaining"] == str(left)
    refused = protected(deployment, key, client)
    envelope_error(refused, 429, "API key rate limit exceeded")
    assert 1 <= int(refused.headers["Retry-After"]) <= 60 and refused.headers["RateLimit-Remaining"] == "0"
    assert verifies(deployment, client) == asked + remaining + 1  # nginx kept none of them
