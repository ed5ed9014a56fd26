"""Acting from the dashboard: issue a key, revoke all of a user's keys, export the list."""

import csv
import io

from livekit_auth import keys

from .support import envelope_error, events


def issue(admin, **fields):
    """Submit the issue form."""
    return admin.post("/admin/keys/new", "/admin/keys/new", **fields)


def test_an_admin_issues_a_key_to_a_new_user_and_sees_it_once(app, client, admin, api) -> None:
    response = issue(admin, email="New.User@example.com", user_name="New User", org_name="Acme",
                     key_name="ci", expires_in_days="30")
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


def test_an_admin_issues_another_key_to_an_existing_user(client, admin, api) -> None:
    first = api.new_key(user_email="john@example.com", user_name="John")
    response = issue(admin, email="JOHN@example.com", user_name="Ignored")
    assert response.status_code == 200
    assert len(api.get("/auth/keys", first).json["data"]) == 2


def test_a_bad_issue_form_is_refused_and_issues_nothing(app, client, admin) -> None:
    for fields in ({"email": "not an email"}, {"email": "a@example.com", "expires_in_days": "0"},
                   {"email": "a@example.com", "user_name": "a\x1bb"}):
        assert issue(admin, **fields).status_code == 400
    assert events(app, "key_created") == []


def test_issuing_past_the_cap_on_active_keys_is_refused(app, client, admin, api) -> None:
    app.config["MAX_ACTIVE_KEYS_PER_USER"] = 1
    api.new_key(user_email="full@example.com")
    response = issue(admin, email="full@example.com")
    assert response.status_code == 409
    assert "at most 1 active keys" in response.get_data(as_text=True)


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


def test_revoke_all_needs_its_csrf_token_and_a_user(client, admin, api) -> None:
    assert client.post("/admin/users/1/revoke-all").status_code == 400
    assert client.get("/admin/users/999999/revoke-all").status_code == 404
    assert client.get("/admin/users/99999999999/revoke-all").status_code == 404
