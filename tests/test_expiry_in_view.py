"""Expiry and rotation in the admin's view: an Expires column, keys about to expire, grace periods."""

import pytest

from .support import rows_on

pytestmark = pytest.mark.slow  # every test here signs an admin in: a password hash each


def add_key(api, key: str, **body):
    """Issue another key to the caller's user; return its answer's data."""
    response = api.call("POST", "/auth/keys", key, json=body)
    assert response.status_code == 200, response.json
    return response.json["data"]


def test_the_list_shows_when_each_key_expires(client, admin, api, frozen_clock) -> None:
    key = api.new_key()
    add_key(api, key, expires_in_days=30)
    page = client.get("/admin/").get_data(as_text=True)
    assert "<th scope=\"col\">Expires</th>" in page
    assert "2026-02-14 10:00" in page and "never" in page


def test_expiring_lists_active_keys_that_expire_within_seven_days(client, admin, api, frozen_clock) -> None:
    key = api.new_key()
    add_key(api, key, expires_in_days=7, name="soon")
    add_key(api, key, expires_in_days=8, name="later")
    gone = add_key(api, key, expires_in_days=1, name="gone")
    api.call("DELETE", f"/auth/keys/{gone['id']}", key)
    assert rows_on(client, "status=expiring") == 1
    page = client.get("/admin/?status=expiring").get_data(as_text=True)
    assert "soon" in page and "later" not in page and "gone" not in page
    assert '<option value="expiring" selected>' in page
    frozen_clock.advance(days=1, seconds=1)
    admin.login()  # the session has timed out meanwhile
    assert rows_on(client, "status=expiring") == 2  # "later" is now within seven days
    assert rows_on(client, "status=expiring&q=lvk_") == 2


def test_a_key_in_its_rotation_grace_period_is_labelled_so(client, admin, api, frozen_clock) -> None:
    old = api.new_key()
    old_id = api.get("/auth/keys", old).json["data"][0]["id"]
    assert api.call("POST", "/auth/keys/rotate", old, json={"grace_hours": 24}).status_code == 200
    detail = client.get(f"/admin/keys/{old_id}").get_data(as_text=True)
    assert '<span class="badge grace"' in detail and "works until 2026-01-16 10:00 UTC" in detail
    assert api.get("/auth/keys", old).json["data"][1]["status"] == "active"  # the API's statuses stay
    frozen_clock.advance(hours=24, seconds=1)
    admin.login()
    detail = client.get(f"/admin/keys/{old_id}").get_data(as_text=True)
    assert '<span class="badge expired">expired</span>' in detail and "badge grace" not in detail
