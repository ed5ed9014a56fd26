"""Extension objects, created without an app and bound in create_app."""

from flask import Flask
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFProtect

from .apikeys.models import Base


class SessionWhereOpened(SQLAlchemy):
    """Flask-SQLAlchemy, removing a request's session only where the request opened one.

    Its own teardown removes the session unconditionally: for the API requests that never
    open one (a cached key, the probes) that is two scope look-ups and a KeyError raised and
    caught, on every request. It overrides a private method: tests/test_speedups.py fails when
    Flask-SQLAlchemy changes it.
    """

    def _teardown_session(self, exc: BaseException | None) -> None:
        """Close and forget the ending context's session, if it has one."""
        if self.session.registry.has():
            self.session.remove()


db = SessionWhereOpened(model_class=Base)
migrate = Migrate()


class CheckedWhereAsked(CSRFProtect):
    """Flask-WTF's CSRF protection, checked only where a view asks (the admin pages).

    CSRFProtect.init_app also puts a before_request hook on the whole app, which with
    WTF_CSRF_CHECK_DEFAULT off checks nothing but costs every API request: it is taken off
    again. The JSON API authenticates by header and needs no CSRF token. tests/test_speedups.py
    fails when init_app adds other hooks than that one.
    """

    def init_app(self, app: Flask) -> None:
        """Set up CSRF tokens for the app's forms, without the app-wide hook."""
        hooks = app.before_request_funcs.setdefault(None, [])
        before = list(hooks)
        super().init_app(app)
        hooks[:] = before


csrf = CheckedWhereAsked()

