"""The real thing: boot.sh runs the migrations and gunicorn with two workers."""

import json
import os
import re
import signal
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack

import pytest
import requests

from livekit_auth.apikeys import keys

from bench.servers import PROJECT_ROOT, LiveServer, free_port, live_server

from .support import clear_database, envelope_error, flask_command

pytestmark = pytest.mark.slow  # every test here talks to real servers this module starts


@pytest.fixture(scope="module")
def server(database_uri: str, tmp_path_factory: pytest.TempPathFactory):
    """One gunicorn per backend for this module, on a database migrated by boot.sh."""
    workdir = tmp_path_factory.mktemp("server")
    if database_uri.startswith("sqlite"):
        database_uri = f"sqlite:///{workdir / 'live.db'}"
    with live_server(database_uri, workdir, workers=2) as running:
        yield running
    clear_database(database_uri)


def create(server: LiveServer, email: str) -> requests.Response:
    """POST /auth/create-key to the live server."""
    body = {"user_name": "Load Test", "org_name": "Bench", "user_email": email}
    return requests.post(f"{server.url}/auth/create-key", json=body, timeout=30)


def check(server: LiveServer, key: str) -> requests.Response:
    """GET /auth/check-key on the live server."""
    return requests.get(f"{server.url}/auth/check-key", headers={"x-api-key": key}, timeout=30)


def test_fifty_concurrent_creates_all_succeed_and_their_keys_check(server) -> None:
    emails = [f"user{n}@parallel.example.com" for n in range(50)]
    with ThreadPoolExecutor(16) as pool:
        created = list(pool.map(lambda email: create(server, email), emails))
        assert [r.status_code for r in created] == [200] * 50
        keys_issued = [r.json()["data"]["api_key"] for r in created]
        assert len(set(keys_issued)) == 50
        checked = list(pool.map(lambda key: check(server, key), keys_issued))
    assert [r.status_code for r in checked] == [200] * 50
    assert sorted(r.json()["data"]["user_email"] for r in checked) == sorted(emails)


def test_parallel_wrong_passwords_are_checked_no_more_often_than_the_lockout_allows(server) -> None:
    email = f"ops-{uuid.uuid4().hex[:8]}@example.com"
    created = flask_command(server.database_url, "admin", "create", "--email", email, "--password-stdin",
                            stdin="correct horse battery\n")
    assert created.returncode == 0, created.stderr
    with ExitStack() as open_sessions:
        browsers = []
        for _ in range(30):
            browser = open_sessions.enter_context(requests.Session())
            page = browser.get(f"{server.url}/admin/login", timeout=30).text
            token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', page).group(1)
            browsers.append((browser, token))

        def guess(browser_and_token) -> int:
            browser, token = browser_and_token
            form = {"email": email, "password": "wrong password!", "csrf_token": token}
            return browser.post(f"{server.url}/admin/login", data=form, timeout=30, allow_redirects=False).status_code

        with ThreadPoolExecutor(15) as pool:
            statuses = list(pool.map(guess, browsers))
    # 401: a password was checked; 429: refused before checking. At most five checks, however
    # parallel (fewer when more than five attempts are written down before any is counted).
    assert set(statuses) <= {401, 429} and 429 in statuses
    assert statuses.count(401) <= 5, statuses


def test_ten_concurrent_creates_for_one_email_give_one_key(server) -> None:
    with ThreadPoolExecutor(10) as pool:
        answers = list(pool.map(lambda _: create(server, "race@example.com"), range(10)))
    statuses = sorted(r.status_code for r in answers)
    assert statuses == [200] + [409] * 9
    for refused in (r for r in answers if r.status_code == 409):
        envelope_error(refused, 409)


def test_errors_from_the_server_are_in_the_envelope(server) -> None:
    envelope_error(requests.get(f"{server.url}/nowhere", timeout=10), 401)
    envelope_error(check(server, keys.generate().secret), 401, "Invalid API key")
    huge = "x" * (70 * 1024)
    response = requests.post(
        f"{server.url}/auth/create-key", data=huge,
        headers={"Content-Type": "application/json"}, timeout=10,
    )
    envelope_error(response, 413)


def test_make_run_serves_the_app(tmp_path) -> None:
    port = free_port()
    env = {**os.environ, "PORT": str(port), "DATABASE_URL": f"sqlite:///{tmp_path / 'run.db'}",
           "SECRET_KEY": "make-run-test", "XDG_RUNTIME_DIR": str(tmp_path), "WEB_CONCURRENCY": "1"}
    with open(tmp_path / "make-run.log", "wb") as log:
        make = subprocess.Popen(["make", "run"], cwd=PROJECT_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                answer = requests.get(f"http://127.0.0.1:{port}/health", timeout=2)
                break
            except requests.ConnectionError:
                assert make.poll() is None, (tmp_path / "make-run.log").read_text()
                time.sleep(0.2)
        else:
            pytest.fail((tmp_path / "make-run.log").read_text())
        assert answer.status_code == 200
        created = requests.post(f"http://127.0.0.1:{port}/auth/create-key", timeout=10,
                                json={"user_name": "Run", "user_email": "run@example.com"})
        assert created.status_code == 200  # the migrations ran first
    finally:
        os.killpg(make.pid, signal.SIGTERM)  # make, boot.sh and gunicorn: the whole group
        make.wait(timeout=30)


def last_used(server: LiveServer, key: str) -> str | None:
    """The key's last use as GET /auth/keys reports it."""
    listed = requests.get(f"{server.url}/auth/keys", headers={"x-api-key": key}, timeout=10)
    return listed.json()["data"][0]["last_used_at"]


def test_last_use_is_written_once_across_both_workers(database_uri, tmp_path) -> None:
    # Uses written in the request (LAST_USED_FLUSH_SECONDS=0), so that each answer comes after its
    # write: the workers' batches are the same statements, which move a key's last use only once
    # per LAST_USED_INTERVAL_SECONDS whichever worker writes.
    if database_uri.startswith("sqlite"):
        database_uri = f"sqlite:///{tmp_path / 'once.db'}"
    with live_server(database_uri, tmp_path, workers=2, LAST_USED_FLUSH_SECONDS="0") as server:
        key = create(server, "busy@example.com").json()["data"]["api_key"]
        recorded = last_used(server, key)
        assert recorded is not None
        with ThreadPoolExecutor(8) as pool:
            statuses = list(pool.map(lambda _: check(server, key).status_code, range(40)))
        assert statuses == [200] * 40
        assert last_used(server, key) == recorded


def checks_until_both_workers_answered(server: LiveServer, key: str) -> list[requests.Response]:
    """Check a key in concurrent batches until both workers have answered; return the answers.

    Each check carries a request id of this call's own, which the log line of its answer shows
    beside the worker that gave it.
    """
    tag, answers = uuid.uuid4().hex, []

    def tagged_check(number: int) -> requests.Response:
        headers = {"x-api-key": key, "X-Request-ID": f"{tag}-{number}"}
        return requests.get(f"{server.url}/auth/check-key", headers=headers, timeout=30)

    with ThreadPoolExecutor(4) as pool:
        for batch in range(20):
            answers += pool.map(tagged_check, range(batch * 8, batch * 8 + 8))
            workers = {json.loads(line)["worker"] for line in server.log().splitlines() if tag in line}
            if len(workers) == 2:
                return answers
    raise AssertionError("one worker answered every check")


def test_a_revoked_key_is_refused_by_every_worker_on_the_next_request(server) -> None:
    key = create(server, "revoked@example.com").json()["data"]["api_key"]
    assert {a.status_code for a in checks_until_both_workers_answered(server, key)} == {200}
    key_id = requests.get(f"{server.url}/auth/keys", headers={"x-api-key": key}, timeout=10).json()["data"][0]["id"]
    revoked = requests.delete(f"{server.url}/auth/keys/{key_id}", headers={"x-api-key": key}, timeout=10)
    assert revoked.status_code == 200
    # No pause: the revoking worker's signal reaches the other before the DELETE is answered.
    for answer in checks_until_both_workers_answered(server, key):
        envelope_error(answer, 401, "API key has been revoked")


def test_no_key_reaches_the_log(server) -> None:
    key = create(server, "logged@example.com").json()["data"]["api_key"]
    assert check(server, key).status_code == 200
    requests.get(f"{server.url}/auth/check-key?api_key={key}", headers={"Referer": key}, timeout=10)
    log = server.log()
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    checked = [line for line in lines if line.get("key_prefix") == keys.display_prefix(key)]
    assert checked and checked[0]["path"] == "/auth/check-key" and checked[0]["status"] == 200
    assert {"time", "method", "duration_ms", "client", "request_id", "key_id"} <= set(checked[0])
    assert key not in log and key[len(keys.KEY_PREFIX) + keys.DISPLAY_LENGTH:] not in log
    # Nor any other key this server issued, in this test or another: no whole key anywhere.
    assert re.search(rf"{keys.KEY_PREFIX}[0-9A-Za-z]{{{len(key) - len(keys.KEY_PREFIX)}}}", log) is None
