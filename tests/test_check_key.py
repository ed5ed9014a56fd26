"""GET /auth/check-key and the x-api-key gate in front of every endpoint."""

import re
from datetime import datetime, timezone

import pytest

from livekit_auth import clock

from livekit_auth.apikeys import keys
from livekit_auth.schemas import CheckedKeySchema

from .support import envelope_error


def test_check_key_answers_as_documented(api) -> None:
    key = api.new_key(user_name="John Doe", org_name="Acme Corp", user_email="john@example.com")
    response = api.get("/auth/check-key", key)
    assert response.status_code == 200
    body = response.json
    assert body["success"] is True
    assert body["message"] == "API key is valid"
    assert list(body["data"]) == ["user_name", "org_name", "user_email", "created_at"]
    assert list(body["data"]) == list(CheckedKeySchema().fields)  # what OpenAPI documents
    assert body["data"]["user_name"] == "John Doe"
    assert body["data"]["org_name"] == "Acme Corp"
    assert body["data"]["user_email"] == "john@example.com"


def test_created_at_is_utc_in_the_documented_format(api, monkeypatch) -> None:
    monkeypatch.setattr(clock, "now", lambda: datetime(2024, 1, 15, 10, 0, tzinfo=timezone.utc))
    key = api.new_key()
    assert api.get("/auth/check-key", key).json["data"]["created_at"] == "2024-01-15T10:00:00.000000"


def test_created_at_keeps_microseconds(api) -> None:
    created_at = api.get("/auth/check-key", api.new_key()).json["data"]["created_at"]
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}", created_at)


def test_a_key_is_checked_as_many_times_as_needed(api) -> None:
    key = api.new_key()
    assert all(api.get("/auth/check-key", key).status_code == 200 for _ in range(3))


def test_a_missing_key_answers_401_saying_so(api) -> None:
    body = envelope_error(api.get("/auth/check-key"), 401)
    assert body["message"].startswith("Invalid API key")
    assert "missing" in body["message"]


@pytest.mark.parametrize("presented", ["", "nonsense", "lvk_" + "a" * 49])
def test_a_malformed_key_answers_401(api, presented) -> None:
    envelope_error(api.get("/auth/check-key", presented), 401, "Invalid API key")


def test_an_unknown_well_formed_key_answers_401(api) -> None:
    api.new_key()
    envelope_error(api.get("/auth/check-key", keys.generate().secret), 401, "Invalid API key")


def test_a_tampered_key_is_refused_without_a_query(api, statements) -> None:
    key = api.new_key()
    tampered = key[:10] + ("A" if key[10] != "A" else "B") + key[11:]
    statements.clear()
    envelope_error(api.get("/auth/check-key", tampered), 401, "Invalid API key")
    assert statements == []


def test_a_key_not_in_the_cache_is_read_with_one_query(app, api, statements) -> None:
    key = api.new_key()
    assert api.get("/auth/check-key", key).status_code == 200
    app.extensions["keyring"].cache.entries.clear()
    statements.clear()
    assert api.get("/auth/check-key", key).status_code == 200
    assert len([s for s in statements if "api_keys" in s]) == 1


def test_a_recently_checked_key_needs_no_query(app, api, statements, batched_usage) -> None:
    batched_usage(60)  # as by default, not at once as in the tests
    key = api.new_key()
    assert api.get("/auth/check-key", key).status_code == 200
    statements.clear()
    assert api.get("/auth/check-key", key).status_code == 200
    assert statements == []


def test_the_key_is_read_from_the_header_only(api, client) -> None:
    key = api.new_key()
    envelope_error(client.get(f"/auth/check-key?api_key={key}&x-api-key={key}"), 401)
    client.set_cookie("x-api-key", key)
    envelope_error(client.get("/auth/check-key"), 401)


def test_an_unknown_path_without_a_key_answers_401_not_404(api) -> None:
    envelope_error(api.get("/assistant/list"), 401)
    envelope_error(api.get("/auth/nothing-here"), 401)


def test_an_unknown_path_with_a_valid_key_answers_404(api) -> None:
    envelope_error(api.get("/assistant/list", api.new_key()), 404, "Not Found")


def test_a_wrong_method_with_a_valid_key_answers_405(api, client) -> None:
    key = api.new_key()
    response = client.delete("/auth/check-key", headers={"x-api-key": key})
    envelope_error(response, 405, "Method Not Allowed")
    assert "GET" in response.headers["Allow"]


def test_a_new_endpoint_is_protected_without_writing_a_line(app) -> None:
    app.add_url_rule("/assistant/list", "assistants", lambda: {"assistants": []})
    client = app.test_client()
    envelope_error(client.get("/assistant/list"), 401)


def test_the_gate_puts_the_key_and_user_on_g(app, api) -> None:
    from flask import g

    seen = {}

    def whoami() -> dict[str, str]:
        seen["user"], seen["key"] = g.user.email, g.api_key.display_prefix
        return {}

    app.add_url_rule("/whoami", "whoami", whoami)
    key = api.new_key(user_email="jane@example.com")
    assert app.test_client().get("/whoami", headers={"x-api-key": key}).status_code == 200
    assert seen == {"user": "jane@example.com", "key": keys.display_prefix(key)}


@pytest.mark.parametrize("path", ["/health", "/health/ready"])
def test_health_needs_no_key(client, path) -> None:
    response = client.get(path)
    assert response.status_code == 200
    assert response.json["success"] is True
