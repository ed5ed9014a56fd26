"""Hostile input, thrown by Hypothesis and by hand: never a 500, always the envelope."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from livekit_auth.extensions import db
from livekit_auth.apikeys.models import ApiKey, User
from livekit_auth.schemas import NO_CONTROLS

from .support import envelope_error

ANY_CHARACTER = st.characters(codec=None, exclude_categories=())
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(ANY_CHARACTER),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
field_values = st.one_of(
    json_values,
    st.text(ANY_CHARACTER, max_size=300),
    st.emails().map(str),
    st.text(max_size=20).map(lambda name: f"{name}@example.com"),
)
bodies = st.one_of(
    json_values,
    st.fixed_dictionaries(
        {},
        optional={"user_name": field_values, "user_email": field_values, "org_name": field_values,
                  "extra": field_values},
    ),
)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def assert_envelope(response) -> None:
    """Every answer is the documented envelope, and no answer is a server error."""
    assert response.status_code < 500, response.get_data(as_text=True)
    body = response.json
    assert set(body) >= {"success", "message", "data"}
    assert body["success"] is (response.status_code == 200)


@FUZZ
@given(body=bodies)
@pytest.mark.slow
def test_create_key_survives_any_json(app, client, body) -> None:
    before = count(app)
    response = client.post("/auth/create-key", data=json.dumps(body), content_type="application/json")
    assert_envelope(response)
    assert count(app) == before + (1 if response.status_code == 200 else 0)


@FUZZ
@given(raw=st.binary(max_size=200))
@pytest.mark.slow
def test_create_key_survives_any_bytes(app, client, raw) -> None:
    before = count(app)
    response = client.post("/auth/create-key", data=raw, content_type="application/json")
    assert_envelope(response)
    assert count(app) == before + (1 if response.status_code == 200 else 0)


@FUZZ
@given(value=st.text(st.characters(min_codepoint=32, max_codepoint=255), max_size=200))
@pytest.mark.slow
def test_the_gate_survives_any_header_value(client, value) -> None:
    for path in ("/auth/check-key", "/auth/keys", "/assistant/list"):
        response = client.get(path, headers={"x-api-key": value})
        assert_envelope(response)
        assert response.status_code == 401


def count(app) -> int:
    """Users and keys the database holds, which must only grow with 200s."""
    with app.app_context():
        users = db.session.scalar(select(func.count()).select_from(User))
        assert db.session.scalar(select(func.count()).select_from(ApiKey)) == users
        return users


def test_two_x_api_key_headers_are_refused(api, client) -> None:
    key = api.new_key()
    response = client.get("/auth/check-key", headers=[("x-api-key", key), ("x-api-key", key)])
    envelope_error(response, 401, "Invalid API key")


@pytest.mark.parametrize("decorate", [lambda k: f" {k}", lambda k: f"{k}\t", lambda k: k.lower(), lambda k: k + "x"])
def test_a_key_that_is_not_exactly_the_key_is_refused(api, decorate) -> None:
    envelope_error(api.get("/auth/check-key", decorate(api.new_key())), 401, "Invalid API key")


def test_a_key_in_a_cookie_the_query_or_the_body_is_never_accepted(api, client) -> None:
    key = api.new_key()
    client.set_cookie("x-api-key", key)
    envelope_error(client.get(f"/auth/check-key?x-api-key={key}&api_key={key}"), 401)
    envelope_error(client.post("/auth/keys", json={"x-api-key": key, "api_key": key}), 401)


@pytest.mark.parametrize("spelling", ["ｄｕｐｅ@example.com", "ＤＵＰＥ@EXAMPLE.COM", "dupe@ｅｘａｍｐｌｅ.com"])
def test_a_compatibility_spelling_of_a_taken_email_is_the_same_user(api, spelling) -> None:
    api.new_key(user_email="dupe@example.com")
    envelope_error(api.create_key(user_email=spelling), 409, "An API key has already been issued for this email address")


@pytest.mark.parametrize("control", ["\u202a", "\u202b", "\u202c", "\u202d", "\u202e", "\u2066", "\u2067", "\u2068",
                                     "\u2069"])
@pytest.mark.parametrize("field", ["user_name", "org_name"])
def test_bidirectional_controls_are_refused_like_other_control_characters(api, control, field) -> None:
    body = envelope_error(api.create_key(**{field: f"Acme {control}moc.elpmaxe"}), 400)
    assert "control characters" in str(body["errors"])


@pytest.mark.parametrize(("given", "expires"), [(30.0, "2026-02-14T10:00"), (1.0, "2026-01-16T10:00")])
def test_a_whole_number_written_with_a_fraction_of_zero_is_that_number(api, given, expires, frozen_clock) -> None:
    answer = api.call("POST", "/auth/keys", api.new_key(), json={"expires_in_days": given})
    assert answer.status_code == 200, answer.json
    assert answer.json["data"]["expires_at"].startswith(expires)
    rotated = api.call("POST", "/auth/keys/rotate", answer.json["data"]["api_key"], json={"grace_hours": 2.0})
    assert rotated.status_code == 200, rotated.json


@pytest.mark.parametrize("given", [30.5, "30", True])
def test_a_number_that_is_not_whole_is_refused(api, given) -> None:
    body = envelope_error(api.call("POST", "/auth/keys", api.new_key(), json={"expires_in_days": given}), 400)
    assert body["errors"] == {"expires_in_days": ["expires_in_days must be a whole number"]}


def test_the_document_states_the_no_control_characters_rule(client) -> None:
    schema = client.get("/openapi.json").json["components"]["schemas"]["CreateKey"]["properties"]["user_name"]
    assert schema["pattern"] == NO_CONTROLS
