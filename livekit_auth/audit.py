"""The audit log: who did what, when, from where; never a secret."""

from flask import has_request_context, request

from . import clock
from .extensions import db
from .models import AuditEvent

LOGIN = "login"
LOGIN_FAILED = "login_failed"
LOGOUT = "logout"
REVOKE = "revoke"
ADMIN_CREATED = "admin_created"
ADMIN_DELETED = "admin_deleted"
COMMAND_LINE = "command line"


def client_address() -> str:
    """The address a request came from, or where a command was run."""
    if has_request_context():
        return (request.remote_addr or "unknown")[:64]
    return COMMAND_LINE


def record(action: str, actor: str, target: str | None = None, detail: str | None = None) -> None:
    """Stage an audit event; it is committed with the work it describes."""
    db.session.add(
        AuditEvent(
            at=clock.now(),
            actor=actor[:254],
            action=action,
            target=target[:254] if target else None,
            address=client_address(),
            detail=detail[:500] if detail else None,
        )
    )
