"""Acting from the dashboard: issue a key, revoke all of a user's keys, export the list."""

import csv
import io
import time
from datetime import datetime, timezone

import pytest
import sqlalchemy as sa
from sqlalchemy import select

from livekit_auth.apikeys import keys
from livekit_auth.extensions import db
from livekit_auth.apikeys.models import ApiKey, User

from bench.servers import live_server

from .support import cap_active_keys, clear_database, envelope_error, events, logged_in_admin


def issue(admin, **fields):
    """Submit the issue form."""
    return admin.post("/admin/keys/new", "/admin/keys/new", **fields)


@pytest.mark.slow
def test_an_admin_issues_a_key_to_a_new_user_and_sees_it_once(app, client, admin, api) -> None:
    posted = issue(admin, email="New.User@example.com", user_name="New User", org_name="Acme",
                   key_name="ci", expires_in_days="30")
    assert posted.status_code == 303 and posted.headers["Location"].endswith("/issued")
    response = client.get(posted.headers["Location"])
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    html = response.get_data(as_text=True)
    secret = html.split('<code id="issued-key" class="mono">')[1].split("</code>")[0]
    assert keys.is_well_formed(secret)
    assert 'data-copy="issued-key"' in html and "/static/admin.js" in html
    data = api.get("/auth/check-key", secret).json["data"]
    assert (data["user_name"], data["org_name"], data["user_email"]) == ("New User", "Acme", "New.User@example.com")
    listed = api.get("/auth/keys", secret).json["data"][0]
    assert listed["name"] == "ci" and listed["expires_at"] is not None
    created = events(app, "key_created")
    assert [(e.actor, e.target) for e in created] == [("ops@example.com", keys.display_prefix(secret))]
    key_page = client.get(f"/admin/keys/{listed['id']}").get_data(as_text=True)
    assert secret not in key_page


@pytest.mark.slow
def test_reloading_the_issued_page_issues_nothing_and_shows_the_key_no_more(app, client, admin, api) -> None:
    posted = issue(admin, email="once@example.com", key_name="once")
    shown = client.get(posted.headers["Location"]).get_data(as_text=True)
    secret = shown.split('<code id="issued-key" class="mono">')[1].split("</code>")[0]
    reloaded = client.get(posted.headers["Location"])
    assert reloaded.status_code == 302 and reloaded.headers["Location"] == posted.headers["Location"][: -len("/issued")]
    page = client.get(reloaded.headers["Location"]).get_data(as_text=True)
    assert "was shown already" in page and secret not in page
    assert len(api.get("/auth/keys", secret).json["data"]) == 1
    assert len(events(app, "key_created")) == 1


@pytest.mark.slow
def test_the_key_being_shown_is_held_by_neither_the_database_nor_the_cookie_alone(app, client, admin, api) -> None:
    from livekit_auth.admin.models import AdminSession

    posted = issue(admin, email="split@example.com")
    cookie = client.get_cookie("livekit_admin").value
    with app.app_context():
        [held] = [row for row in db.session.scalars(select(AdminSession)) if row.issued_key_id is not None]
        server_share = held.issued_key_share
        session = app.session_interface.get_signing_serializer(app).loads(cookie)
    shown = client.get(posted.headers["Location"]).get_data(as_text=True)
    secret = shown.split('<code id="issued-key" class="mono">')[1].split("</code>")[0]
    browser_share = session["issued_key"][1]
    assert secret not in cookie and secret not in server_share and secret not in browser_share
    assert bytes(a ^ b for a, b in zip(bytes.fromhex(browser_share), bytes.fromhex(server_share))).decode() == secret
    with app.app_context():
        assert [row.issued_key_share for row in db.session.scalars(select(AdminSession))] == [None]
    # The issued page of a key this session did not just issue shows nothing.
    other = api.new_key(user_email="other@example.com")
    other_id = api.get("/auth/keys", other).json["data"][0]["id"]
    issue(admin, email="third@example.com")
    assert client.get(f"/admin/keys/{other_id}/issued").status_code == 302


@pytest.mark.slow
def test_an_admin_issues_another_key_to_an_existing_user(client, admin, api) -> None:
    first = api.new_key(user_email="john@example.com", user_name="John")
    response = issue(admin, email="JOHN@example.com", user_name="Ignored")
    assert response.status_code == 303
    assert len(api.get("/auth/keys", first).json["data"]) == 2


@pytest.mark.slow
def test_a_bad_issue_form_is_refused_and_issues_nothing(app, client, admin) -> None:
    for fields in ({"email": "not an email"}, {"email": "a@example.com", "expires_in_days": "0"},
                   {"email": "a@example.com", "user_name": "a\x1bb"}):
        assert issue(admin, **fields).status_code == 400
    assert events(app, "key_created") == []


@pytest.mark.slow
def test_issuing_past_the_cap_on_active_keys_is_refused(app, client, admin, api) -> None:
    cap_active_keys(app, 1)
    api.new_key(user_email="full@example.com")
    response = issue(admin, email="full@example.com")
    assert response.status_code == 409
    assert "at most 1 active keys" in response.get_data(as_text=True)


@pytest.mark.slow
def test_revoking_all_of_a_users_keys_names_how_many_then_revokes_each(app, client, admin, api) -> None:
    first = api.new_key(user_email="many@example.com")
    others = [api.call("POST", "/auth/keys", first).json["data"]["api_key"] for _ in range(2)]
    bystander = api.new_key(user_email="bystander@example.com")
    key_id = api.get("/auth/keys", first).json["data"][-1]["id"]
    key_page = client.get(f"/admin/keys/{key_id}").get_data(as_text=True)
    user_id = key_page.split("/admin/users/")[1].split("/")[0]
    assert "Revoke all 3 active keys of John Doe" in key_page
    confirm = client.get(f"/admin/users/{user_id}/revoke-all").get_data(as_text=True)
    assert "Revoke all 3 active keys of John Doe?" in confirm
    done = admin.post(f"/admin/users/{user_id}/revoke-all", f"/admin/users/{user_id}/revoke-all")
    assert done.status_code == 302
    for key in (first, *others):
        envelope_error(api.get("/auth/check-key", key), 401, "API key has been revoked")
    assert api.get("/auth/check-key", bystander).status_code == 200
    assert len(events(app, "revoke")) == 3
    again = client.get(f"/admin/users/{user_id}/revoke-all").get_data(as_text=True)
    assert "Revoke all 0 active keys" in again


@pytest.mark.slow
def test_revoke_all_needs_its_csrf_token_and_a_user(client, admin, api) -> None:
    assert client.post("/admin/users/1/revoke-all").status_code == 400
    assert client.get("/admin/users/999999/revoke-all").status_code == 404
    assert client.get("/admin/users/99999999999/revoke-all").status_code == 404


def exported(client, query: str = "") -> list[dict[str, str]]:
    """The CSV export for a query string, parsed."""
    response = client.get(f"/admin/keys.csv?{query}")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert response.is_streamed
    assert response.headers["Content-Disposition"].startswith('attachment; filename="livekit-auth-keys-')
    return list(csv.DictReader(io.StringIO(response.get_data(as_text=True))))


@pytest.mark.slow
def test_the_export_is_the_list_with_its_search_and_filters_never_a_secret(client, admin, api) -> None:
    alice = api.new_key(user_email="alice@example.com", user_name="Alice", org_name="=HYPERLINK(1)")
    bob = api.new_key(user_email="bob@example.com", user_name="Bob")
    api.get("/auth/check-key", bob)
    bob_id = api.get("/auth/keys", bob).json["data"][0]["id"]
    api.call("DELETE", f"/auth/keys/{bob_id}", bob)
    rows = exported(client)
    assert [row["user_email"] for row in rows] == ["bob@example.com", "alice@example.com"]
    assert list(rows[0]) == ["key_id", "display_prefix", "name", "status", "user_name", "user_email",
                             "org_name", "created_at", "expires_at", "last_used_at", "revoked_at",
                             "requests_30d"]
    assert rows[0]["status"] == "revoked" and rows[0]["requests_30d"] == "3"
    assert rows[1]["org_name"] == "'=HYPERLINK(1)"  # a spreadsheet shows it as text, not a formula
    text = client.get("/admin/keys.csv").get_data(as_text=True)
    assert alice not in text and bob not in text and keys.digest(alice) not in text
    assert [row["user_email"] for row in exported(client, "q=alice")] == ["alice@example.com"]
    assert [row["user_email"] for row in exported(client, "status=revoked")] == ["bob@example.com"]
    assert 'href="/admin/keys.csv?q=alice&amp;status=revoked&amp;sort=created"' in \
        client.get("/admin/?q=alice&status=revoked").get_data(as_text=True)


@pytest.mark.slow
def test_the_export_streams_past_one_batch(client, admin, api, monkeypatch) -> None:
    from livekit_auth.admin import queries

    monkeypatch.setattr(queries, "EXPORT_BATCH", 3)
    for n in range(7):
        api.new_key(user_email=f"user{n}@example.com")
    assert len(exported(client)) == 7


def test_the_export_needs_a_login(client) -> None:
    assert client.get("/admin/keys.csv").status_code == 302


def seed_keys(database_uri: str, count: int) -> None:
    """One user holding count keys, inserted in bulk (past any cap: no key here is ever checked)."""
    engine = sa.create_engine(database_uri)
    created = datetime(2026, 1, 1, tzinfo=timezone.utc)
    try:
        with engine.begin() as connection:
            user_id = connection.execute(User.__table__.insert().returning(User.__table__.c.id), {
                "name": "Many Keys", "email": "many@example.com", "created_at": created,
            }).scalar_one()
            connection.execute(ApiKey.__table__.insert(), [
                {"user_id": user_id, "digest": f"{n:064x}", "display_prefix": f"lvk_{n:08d}", "created_at": created}
                for n in range(count)
            ])
    finally:
        engine.dispose()


@pytest.mark.slow
def test_an_export_longer_than_the_worker_timeout_completes_for_a_slow_reader(tmp_path, database_uri) -> None:
    count = 100_000
    try:
        with live_server(database_uri, tmp_path, workers=1, GUNICORN_TIMEOUT="1") as server:
            seed_keys(database_uri, count)
            browser = logged_in_admin(server.url, database_uri)
            started, lines = time.monotonic(), 0
            with browser.get(f"{server.url}/admin/keys.csv", stream=True, timeout=30) as answer:
                assert answer.status_code == 200
                for chunk in answer.iter_content(64 * 1024):
                    lines += chunk.count(b"\n")
                    time.sleep(0.01)  # a reader slower than the worker writes
            assert lines == count + 1
            assert time.monotonic() - started > 2  # well past GUNICORN_TIMEOUT
            assert "WORKER TIMEOUT" not in server.log()
    finally:
        clear_database(database_uri)
