"""Flask's signed-cookie session, opened only for requests that carry the cookie.

Only the admin pages use a session. Flask's own interface builds a signing serializer for
every request, API calls included, which costs more than the rest of a key check.
"""

from flask import Flask, Request
from flask.sessions import SecureCookieSession, SecureCookieSessionInterface
from werkzeug.wrappers import Response


class SessionOnlyWhenSent(SecureCookieSessionInterface):
    """The signed-cookie session, skipped for requests without its cookie that never touch it."""

    def open_session(self, app: Flask, request: Request) -> SecureCookieSession | None:
        """An empty session without the cookie; otherwise the one the cookie holds."""
        # A look at the raw header first: parsing cookies costs more than the rest of this.
        if self.get_cookie_name(app) not in request.environ.get("HTTP_COOKIE", ""):
            return self.session_class()
        return super().open_session(app, request)

    def save_session(self, app: Flask, session: SecureCookieSession, response: Response) -> None:
        """Write the cookie, unless the session is empty and nothing read or changed it."""
        if session or session.modified or session.accessed:
            super().save_session(app, session, response)
