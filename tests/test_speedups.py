"""The per-request speed-ups lean on dependencies' internals: each test here fails when one changes.

docs/architecture.md#per-request-speed-ups says what each saves.
"""

import inspect
import weakref

from flask import Flask, jsonify
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFProtect
from sqlalchemy import text

from livekit_auth.auth.routes import CHECKED, FORWARDED_HEADERS
from livekit_auth.envelope import failure_body, success_body
from livekit_auth.extensions import CheckedWhereAsked, SessionWhereOpened, db


def bare_app() -> Flask:
    """A Flask app with nothing of ours on it."""
    app = Flask(__name__)
    app.config.update(SECRET_KEY="test", SQLALCHEMY_DATABASE_URI="sqlite://")
    return app


def test_flask_sqlalchemy_still_tears_down_with_the_private_method_we_override() -> None:
    assert "_teardown_session" in vars(SQLAlchemy)
    assert (list(inspect.signature(SQLAlchemy._teardown_session).parameters)
            == list(inspect.signature(SessionWhereOpened._teardown_session).parameters))
    app = bare_app()
    extension = SessionWhereOpened()
    extension.init_app(app)
    assert extension._teardown_session in app.teardown_appcontext_funcs  # what init_app registers


def test_a_session_opened_in_a_context_is_still_closed_when_it_ends(app) -> None:
    with app.app_context():
        db.session.execute(text("SELECT 1"))
        session = db.session()
        assert session.in_transaction()
    assert not session.in_transaction()
    with app.app_context():
        assert not db.session.registry.has()  # a context that opens none has none to remove


def test_csrfprotect_still_adds_one_app_wide_hook_which_we_take_off_and_check_nothing_without(app) -> None:
    plain = bare_app()
    CSRFProtect().init_app(plain)
    assert len(plain.before_request_funcs[None]) == 1
    ours = bare_app()
    CheckedWhereAsked().init_app(ours)
    assert ours.before_request_funcs.get(None, []) == []
    assert "csrf" in ours.extensions  # the rest of init_app stands: tokens for the admin's forms
    assert app.config["WTF_CSRF_CHECK_DEFAULT"] is False  # the hook taken off would have checked nothing


def test_a_body_rendered_once_is_byte_for_byte_what_jsonify_sends(app) -> None:
    with app.test_request_context():
        for message in ("Invalid API key", 'Zürich 100% "quoted" ✓'):
            document = {"success": False, "message": message, "data": None}
            assert failure_body(message) == jsonify(document).get_data()
        data = {"user_name": "Ada", "org_name": None, "user_email": "ada@example.com"}
        assert success_body("API key is valid", data) == jsonify(
            {"success": True, "message": "API key is valid", "data": data}).get_data()


def test_a_keys_rendered_answers_leave_with_it(app, api) -> None:
    key = api.new_key()
    assert api.get("/auth/check-key", key).status_code == 200
    assert api.get("/auth/verify", key).status_code == 204
    cache = app.extensions["keyring"].cache
    [known] = cache.entries.values()
    assert known in CHECKED and known in FORWARDED_HEADERS
    gone = weakref.ref(known)
    cache.evict(None)
    del known
    assert gone() is None  # nothing else holds the key: its entries of both weak dictionaries went with it
