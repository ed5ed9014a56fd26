"""Every failure answers in the envelope: HTTP errors, crashes, and a database that is down."""

from flask import Flask

from livekit_auth import create_app
from livekit_auth.gate import public

from .support import envelope_error


def test_an_unexpected_error_answers_500_without_internals(app, client) -> None:
    def explode() -> None:
        raise RuntimeError("secret internals /etc/passwd")

    app.config["PROPAGATE_EXCEPTIONS"] = False
    app.add_url_rule("/explode", "explode", public(explode))
    response = client.get("/explode")
    envelope_error(response, 500, "Internal server error")
    assert "internals" not in response.get_data(as_text=True)
    assert "Traceback" not in response.get_data(as_text=True)


def test_a_message_given_to_abort_is_kept(app, client) -> None:
    from flask import abort

    app.add_url_rule("/teapot", "teapot", public(lambda: abort(409, "Already done")))
    envelope_error(client.get("/teapot"), 409, "Already done")


def unreachable_database_app(tmp_path) -> Flask:
    """An app whose SQLite file lies in a folder that does not exist."""
    return create_app(
        {"SQLALCHEMY_DATABASE_URI": f"sqlite:///{tmp_path}/missing/db.sqlite", "SECRET_KEY": "t"}
    )


def test_a_database_fault_answers_503_in_the_envelope(tmp_path) -> None:
    client = unreachable_database_app(tmp_path).test_client()
    response = client.post(
        "/auth/create-key", json={"user_name": "A", "user_email": "a@example.com"}
    )
    envelope_error(response, 503)
    envelope_error(client.get("/health/ready"), 503, "Database unavailable")


def test_liveness_does_not_touch_the_database(tmp_path) -> None:
    assert unreachable_database_app(tmp_path).test_client().get("/health").status_code == 200
