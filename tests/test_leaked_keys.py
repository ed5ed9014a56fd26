"""A leaked key handled in seconds: POST /auth/keys/leaked, and a whole key in the admin and CLI."""

import pytest
import requests

from livekit_auth.apikeys import keys

from bench.servers import live_server

from .support import clear_database, envelope_error, events, flask_command, prefix_of, rows_on


def report(api, *strings, **headers):
    """POST a leak report of some strings, without a key."""
    return api.client.post("/auth/keys/leaked", json={"keys": list(strings)}, headers=headers)


def test_every_active_key_reported_is_revoked_and_the_rest_ignored(app, api) -> None:
    leaked, other_leaked, kept = (api.new_key(user_email=f"{n}@example.com") for n in ("a", "b", "c"))
    answer = report(api, leaked, other_leaked, leaked, "not a key", keys.generate().secret,
                    leaked[:-1] + ("A" if leaked[-1] != "A" else "B"), "")
    assert answer.status_code == 200
    assert answer.json == {"success": True, "message": "Leaked keys revoked", "data": {"revoked": 2}}
    for key in (leaked, other_leaked):
        envelope_error(api.get("/auth/check-key", key), 401, "API key has been revoked")
    assert api.get("/auth/check-key", kept).status_code == 200
    rows = [(e.actor, e.target, e.address) for e in events(app, "revoke_leaked")]
    assert rows == [("leak report", prefix_of(leaked), "127.0.0.1"),
                    ("leak report", prefix_of(other_leaked), "127.0.0.1")]


def test_a_key_reported_twice_is_revoked_once(app, api) -> None:
    leaked = api.new_key()
    assert report(api, leaked).json["data"] == {"revoked": 1}
    assert report(api, leaked).json["data"] == {"revoked": 0}
    assert len(events(app, "revoke_leaked")) == 1


def test_an_expired_key_is_left_as_it_is(api, frozen_clock) -> None:
    key = api.new_key()
    short = api.call("POST", "/auth/keys", key, json={"expires_in_days": 1}).json["data"]["api_key"]
    frozen_clock.advance(days=2)
    assert report(api, short).json["data"] == {"revoked": 0}


@pytest.mark.parametrize("body", [
    {}, {"keys": []}, {"keys": "lvk_x"}, {"keys": [1]}, {"keys": [None]}, {"keys": ["x"] * 101},
    {"keys": ["x" * 201]}, {"keys": ["lvk_x"], "other": 1}, [],
])
def test_a_malformed_report_is_refused_with_400_and_revokes_nothing(api, body) -> None:
    key = api.new_key()
    envelope_error(api.client.post("/auth/keys/leaked", json=body), 400)
    assert api.get("/auth/check-key", key).status_code == 200


@pytest.mark.slow
def test_over_http_a_report_is_refused_by_every_worker_at_once(database_uri, tmp_path) -> None:
    if database_uri.startswith("sqlite"):
        database_uri = f"sqlite:///{tmp_path / 'leaks.db'}"
    with live_server(database_uri, tmp_path, workers=2) as server:
        body = {"user_name": "L", "user_email": "leak-workers@example.com"}
        key = requests.post(f"{server.url}/auth/create-key", json=body, timeout=10).json()["data"]["api_key"]

        def check():
            return requests.get(f"{server.url}/auth/check-key", headers={"x-api-key": key}, timeout=10)

        assert all(check().status_code == 200 for _ in range(6))  # held in both workers' caches
        answer = requests.post(f"{server.url}/auth/keys/leaked", json={"keys": [key]}, timeout=10)
        assert answer.json()["data"] == {"revoked": 1}
        for _ in range(6):
            envelope_error(check(), 401, "API key has been revoked")
    if not database_uri.startswith("sqlite"):
        clear_database(database_uri)


@pytest.mark.slow
def test_over_http_reports_are_limited_per_address(database_uri, tmp_path) -> None:
    if database_uri.startswith("sqlite"):
        database_uri = f"sqlite:///{tmp_path / 'leaks.db'}"
    with live_server(database_uri, tmp_path, workers=1, RATELIMIT_ENABLED="true",
                     RATELIMIT_LEAK_REPORT="2 per minute") as server:

        def send():
            return requests.post(f"{server.url}/auth/keys/leaked", json={"keys": ["lvk_x"]}, timeout=10)

        assert send().json()["data"] == {"revoked": 0}
        assert send().status_code == 200
        refused = send()
        envelope_error(refused, 429)
        assert "Retry-After" in refused.headers
    if not database_uri.startswith("sqlite"):
        clear_database(database_uri)


@pytest.mark.slow
def test_the_admin_search_opens_a_whole_key_by_its_digest_at_an_address_without_it(client, admin, api) -> None:
    leaked = api.new_key(user_email="leaked@example.com")
    api.new_key(user_email="other@example.com")
    key_id = api.get("/auth/keys", leaked).json["data"][0]["id"]
    found = admin.post("/admin/search", "/admin/", q=f" {leaked} ", status="revoked", sort="created")
    assert found.status_code == 303 and found.headers["Location"] == f"/admin/keys/{key_id}"
    page = client.get(found.headers["Location"]).get_data(as_text=True)
    assert "leaked@example.com" in page and leaked not in page
    tampered = leaked[:-1] + ("A" if leaked[-1] != "A" else "B")
    missed = admin.post("/admin/search", "/admin/", q=tampered, status="active", sort="created")
    assert missed.status_code == 303 and missed.headers["Location"] == "/admin/?status=active&sort=created"
    listed = client.get(missed.headers["Location"]).get_data(as_text=True)
    assert "No key is that key." in listed and tampered not in listed


@pytest.mark.slow
def test_the_admin_search_posts_other_text_to_the_list_it_searches(client, admin, api) -> None:
    api.new_key(user_email="alice@example.com")
    api.new_key(user_email="bob@example.com")
    searched = admin.post("/admin/search", "/admin/", q="alice", status="", sort="last_used")
    assert searched.status_code == 303 and searched.headers["Location"] == "/admin/?q=alice&sort=last_used"
    assert rows_on(client, "q=alice") == 1
    assert client.post("/admin/search", data={"q": "alice"}).status_code == 400  # no CSRF token


@pytest.mark.slow
def test_an_admin_address_that_holds_a_whole_key_never_carries_it_on(client, admin, api) -> None:
    leaked = api.new_key(user_email="leaked@example.com")
    encoded = "lvk_%" + leaked[4:5].encode().hex() + leaked[5:]
    for path in (f"/admin/?q={leaked}&status=active", f"/admin/keys.csv?q={leaked}&status=active",
                 f"/admin/?q={encoded}&status=active"):
        answer = client.get(path)
        assert answer.status_code == 303 and answer.headers["Location"] == "/admin/?status=active&sort=created"
        page = client.get(answer.headers["Location"]).get_data(as_text=True)
        assert "Search for a whole key with the search box" in page and leaked not in page
    admin.post("/admin/logout", "/admin/")
    for path in (f"/admin/?q={leaked}", f"/admin/?q={encoded}"):
        answer = client.get(path)
        assert answer.status_code == 302 and answer.headers["Location"] == "/admin/login"


@pytest.mark.slow
def test_the_command_line_revokes_a_whole_key_read_from_standard_input(api, database_uri) -> None:
    leaked = api.new_key()
    done = flask_command(database_uri, "keys", "revoke", "--stdin", stdin=leaked + "\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("Revoked key ") and leaked not in done.stdout + done.stderr
    envelope_error(api.get("/auth/check-key", leaked), 401, "API key has been revoked")
    again = flask_command(database_uri, "keys", "revoke", "--stdin", stdin=leaked + "\n")
    assert again.returncode == 0 and "already revoked" in again.stdout
    unknown = flask_command(database_uri, "keys", "revoke", "--stdin", stdin="lvk_nothing\n")
    assert unknown.returncode == 1 and "not a known key" in unknown.stderr
    both = flask_command(database_uri, "keys", "revoke", "--stdin", "12", stdin=leaked)
    assert both.returncode == 2
