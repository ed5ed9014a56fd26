"""The key domain as the current request or command sees it: on the app's session and settings.

The domain (livekit_auth.apikeys) takes its session, settings and the actor's address as
arguments; this is where the web layer and the command line hand them in.
"""

from flask import current_app, has_request_context, request

from .apikeys import audit
from .apikeys.models import AuditEvent
from .apikeys.services import KeyService
from .extensions import db
from .rate_limits import canonical_address


def client_address() -> str:
    """The address a request came from, in its canonical spelling, or where a command was run.

    Canonical, so that the admin's count of failed logins per address is one count however
    the address is written.
    """
    if has_request_context():
        return canonical_address(request.remote_addr or "unknown")[:64]
    return audit.COMMAND_LINE


def record(action: str, actor: str, target: str | None = None, detail: str | None = None) -> AuditEvent:
    """Stage an audit event of the current request or command, in the app's session."""
    return audit.record(db.session, action, actor, client_address(), target, detail)


def key_service() -> KeyService:
    """The key domain's operations in the app's session, for whoever the request or command is."""
    extensions = current_app.extensions
    return KeyService(db.session, extensions["key_settings"], extensions["keyring"], client_address())
