"""POST /auth/create-key: the documented answer, and every way input can be wrong."""

import pytest
from sqlalchemy import func, select

from livekit_auth.extensions import db
from livekit_auth.apikeys.models import ApiKey, User

from .support import envelope_error


def count_rows(app) -> tuple[int, int]:
    """How many users and keys the database holds."""
    with app.app_context():
        return (
            db.session.scalar(select(func.count()).select_from(User)),
            db.session.scalar(select(func.count()).select_from(ApiKey)),
        )


def test_create_key_answers_as_documented(api) -> None:
    response = api.create_key(user_name="John Doe", org_name="Acme Corp", user_email="john@example.com")
    assert response.status_code == 200
    body = response.json
    assert body["success"] is True
    assert body["message"] == "API key created successfully, Store it securely"
    assert list(body["data"]) == ["api_key", "user_name", "org_name", "user_email"]
    assert body["data"]["api_key"].startswith("lvk_")
    assert body["data"]["user_name"] == "John Doe"
    assert body["data"]["org_name"] == "Acme Corp"
    assert body["data"]["user_email"] == "john@example.com"


def test_create_key_needs_no_api_key(client) -> None:
    response = client.post(
        "/auth/create-key", json={"user_name": "A", "user_email": "a@example.com"}
    )
    assert response.status_code == 200


@pytest.mark.parametrize("org_name", [None, "   "])
def test_org_name_is_optional(api, org_name) -> None:
    fields = {} if org_name is None else {"org_name": org_name}
    response = api.create_key(**fields)
    assert response.status_code == 200
    assert response.json["data"]["org_name"] is None


def test_org_name_may_be_null(api) -> None:
    assert api.create_key(org_name=None).json["data"]["org_name"] is None


def test_names_are_trimmed(api) -> None:
    data = api.create_key(user_name="  Jane  ", org_name=" Acme ").json["data"]
    assert (data["user_name"], data["org_name"]) == ("Jane", "Acme")


def test_the_email_is_normalised(api) -> None:
    assert api.create_key(user_email=" John@EXAMPLE.com ").json["data"]["user_email"] == "John@example.com"


def test_boundaries_that_are_accepted(api) -> None:
    response = api.create_key(user_name="x" * 100, org_name="y" * 100)
    assert response.status_code == 200


def test_unicode_names_are_accepted(api) -> None:
    assert api.create_key(user_name="Zoë Þórsdóttir 李").status_code == 200


INVALID_BODIES = [
    ({"user_name": ""}, "user_name must be 1 to 100 characters"),
    ({"user_name": "   "}, "user_name must be 1 to 100 characters"),
    ({"user_name": "x" * 101}, "user_name must be 1 to 100 characters"),
    ({"user_name": None}, "user_name may not be null"),
    ({"user_name": 42}, "user_name must be a string"),
    ({"user_name": ["a"]}, "user_name must be a string"),
    ({"user_name": "a\x00b"}, "user_name must not contain control characters"),
    ({"user_name": "a\nb"}, "user_name must not contain control characters"),
    ({"user_name": "a\tb"}, "user_name must not contain control characters"),
    ({"user_name": "a\x1bb"}, "user_name must not contain control characters"),
    ({"user_name": "a\ud800b"}, "user_name must not contain control characters"),
    ({"org_name": "y" * 101}, "org_name must be at most 100 characters"),
    ({"org_name": 7}, "org_name must be a string"),
    ({"org_name": "a\rb"}, "org_name must not contain control characters"),
    ({"user_email": "not-an-email"}, "Invalid email address"),
    ({"user_email": "john@"}, "Invalid email address"),
    ({"user_email": "a@b"}, "Invalid email address"),
    ({"user_email": "a" * 64 + "@" + "b" * 185 + ".com"}, "Invalid email address"),
    ({"user_email": "jo\x00hn@example.com"}, "Invalid email address"),
    ({"user_email": 5}, "user_email must be a string"),
    ({"user_email": None}, "user_email may not be null"),
    ({"api_key": "lvk_mine"}, "api_key is not a known field"),
]


@pytest.mark.parametrize("fields, message", INVALID_BODIES)
def test_invalid_fields_answer_400_naming_the_problem(app, api, fields, message) -> None:
    body = envelope_error(api.create_key(**fields), 400, message)
    assert body["errors"]
    assert count_rows(app) == (0, 0)


@pytest.mark.parametrize("missing", ["user_name", "user_email"])
def test_a_missing_required_field_answers_400(client, missing) -> None:
    fields = {"user_name": "John", "user_email": "john@example.com"}
    del fields[missing]
    response = client.post("/auth/create-key", json=fields)
    envelope_error(response, 400, f"{missing} is required")


def email_of_length(length: int) -> str:
    """A syntactically valid address of exactly length characters."""
    local, first, second = "a" * 64, "b" * 63, "c" * 63
    last = "d" * (length - len(f"{local}@{first}.{second}..com"))
    address = f"{local}@{first}.{second}.{last}.com"
    assert len(address) == length
    return address


def test_an_email_of_254_characters_is_accepted(api) -> None:
    assert api.create_key(user_email=email_of_length(254)).status_code == 200


def test_an_email_of_255_characters_is_invalid(api) -> None:
    envelope_error(api.create_key(user_email=email_of_length(255)), 400, "Invalid email address")


def test_several_problems_are_all_named(api) -> None:
    body = envelope_error(api.create_key(user_name="", user_email="x"), 400)
    assert "user_name must be 1 to 100 characters" in body["message"]
    assert "Invalid email address" in body["message"]
    assert set(body["errors"]) == {"user_name", "user_email"}


@pytest.mark.parametrize(
    "raw, message",
    [
        (b"", "The request body is empty; send a JSON object"),
        (b"{", "The request body is not valid JSON"),
        (b"\xff\xfe{}", "The request body is not valid JSON"),
        (b"[" * 50000, "The request body is not valid JSON"),
        (b"[]", "The request body must be a JSON object"),
        (b'"text"', "The request body must be a JSON object"),
        (b"null", "The request body must be a JSON object"),
        (b"12", "The request body must be a JSON object"),
    ],
)
@pytest.mark.slow
def test_bodies_that_are_not_a_json_object_answer_400(app, client, raw, message) -> None:
    response = client.post("/auth/create-key", data=raw, content_type="application/json")
    envelope_error(response, 400, message)
    assert count_rows(app) == (0, 0)


@pytest.mark.parametrize("content_type", ["text/plain", "application/x-www-form-urlencoded", None])
def test_a_body_that_is_not_json_answers_415(client, content_type) -> None:
    response = client.post(
        "/auth/create-key", data='{"user_name": "a", "user_email": "a@example.com"}',
        content_type=content_type,
    )
    envelope_error(response, 415, "Content-Type must be application/json")


def test_a_body_over_64_kib_answers_413(app, client) -> None:
    big = '{"user_name": "' + "x" * (64 * 1024) + '", "user_email": "a@example.com"}'
    response = client.post("/auth/create-key", data=big, content_type="application/json")
    envelope_error(response, 413)
    assert count_rows(app) == (0, 0)


def test_a_second_key_for_a_registered_email_answers_409(app, api) -> None:
    api.new_key(user_email="john@example.com")
    response = api.create_key(user_email="JOHN@Example.COM", user_name="Impostor")
    envelope_error(response, 409, "An API key has already been issued for this email address")
    assert count_rows(app) == (1, 1)


@pytest.mark.parametrize("field, column", [("user_name", "name"), ("org_name", "org_name")])
def test_a_name_that_grows_when_lower_cased_is_stored_and_echoed_exactly(api, app, field, column) -> None:
    # "İ".lower() is two characters: the lower-cased search copy is longer than the name.
    name = "İ" * 100
    response = api.create_key(**{field: name})
    assert response.status_code == 200, response.json
    assert response.json["data"][field] == name
    with app.app_context():
        user = db.session.scalars(select(User)).one()
        assert getattr(user, column) == name
        assert len(getattr(user, f"{column}_lower")) == 200
