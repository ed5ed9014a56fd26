"""GET /auth/verify: the gate's answer for a reverse proxy's forward authentication."""

from urllib.parse import unquote

import pytest

from livekit_auth.apikeys import keys

from .support import envelope_error

FORWARDED = ["X-Auth-User-Id", "X-Auth-User-Email", "X-Auth-Org", "X-Auth-Key-Id", "X-Auth-Key-Prefix"]


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_a_valid_key_gets_204_and_its_caller_in_headers(api, method) -> None:
    key = api.new_key(user_email="ada@example.com", org_name="Acme Corp")
    listed = api.get("/auth/keys", key).json["data"][0]
    response = api.call(method, "/auth/verify", key)
    assert response.status_code == 204
    assert response.data == b""
    assert {name: response.headers[name] for name in FORWARDED[1:]} == {
        "X-Auth-User-Email": "ada@example.com",
        "X-Auth-Org": "Acme Corp",
        "X-Auth-Key-Id": str(listed["id"]),
        "X-Auth-Key-Prefix": keys.display_prefix(key),
    }
    assert response.headers["X-Auth-User-Id"].isdigit()
    assert response.headers["Cache-Control"] == "no-store"
    # Twice: the second answer comes from the cache entry's kept headers.
    assert api.call(method, "/auth/verify", key).headers["X-Auth-Key-Prefix"] == keys.display_prefix(key)


def test_the_user_id_is_the_keys_holder(api) -> None:
    first = api.new_key(user_email="one@example.com")
    second = api.new_key(user_email="two@example.com")
    ids = {api.get("/auth/verify", key).headers["X-Auth-User-Id"] for key in (first, second)}
    assert len(ids) == 2


def test_text_outside_printable_ascii_and_the_percent_sign_are_percent_encoded(api) -> None:
    org = "Zürich 100% 東京"
    response = api.get("/auth/verify", api.new_key(org_name=org))
    assert response.status_code == 204
    assert response.headers["X-Auth-Org"] == "Z%C3%BCrich 100%25 %E6%9D%B1%E4%BA%AC"
    assert unquote(response.headers["X-Auth-Org"]) == org


def test_a_user_without_an_organisation_gets_an_empty_org_header(api) -> None:
    response = api.get("/auth/verify", api.new_key())
    assert response.headers["X-Auth-Org"] == ""


@pytest.mark.parametrize(("presented", "message"), [
    (None, "Invalid API key: the x-api-key header is missing"),
    ("nonsense", "Invalid API key"),
    (keys.generate().secret, "Invalid API key"),
])
def test_anything_but_a_valid_key_is_refused_as_check_key_refuses_it(api, presented, message) -> None:
    response = api.get("/auth/verify", presented)
    envelope_error(response, 401, message)
    assert not any(name in response.headers for name in FORWARDED)


def test_a_revoked_key_is_refused_at_once(api) -> None:
    key = api.new_key()
    assert api.get("/auth/verify", key).status_code == 204
    key_id = api.get("/auth/keys", key).json["data"][0]["id"]
    assert api.call("DELETE", f"/auth/keys/{key_id}", key).status_code == 200
    envelope_error(api.get("/auth/verify", key), 401, "API key has been revoked")
