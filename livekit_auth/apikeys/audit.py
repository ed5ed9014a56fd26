"""The audit log: who did what, when, from where; never a secret."""

from sqlalchemy.orm import Session

from .. import clock
from .models import AuditEvent

LOGIN = "login"
LOGIN_FAILED = "login_failed"
LOGIN_LOCKED = "login_locked"  # an account's failed logins ran out: recorded once per window
LOGOUT = "logout"
REVOKE = "revoke"
REVOKE_LEAKED = "revoke_leaked"
KEY_CREATED = "key_created"
KEY_ROTATED = "key_rotated"
KEY_DELETED = "key_deleted"
KEY_SUSPENDED = "key_suspended"
KEY_RESUMED = "key_resumed"
KEY_LIMITS_CHANGED = "key_limits_changed"
USER_LIMITS_CHANGED = "user_limits_changed"
ADMIN_CREATED = "admin_created"
ADMIN_DELETED = "admin_deleted"
# Who acted, besides an admin's email: the flask command line, or a key holder through the API.
CLI = "cli"
API = "api"
LEAK_REPORT = "leak report"  # whoever sent a leaked key to POST /auth/keys/leaked; the address says who
COMMAND_LINE = "command line"  # the address of what the command line does


def by_key(display_prefix: str) -> str:
    """The actor that a key holder acting through the API is recorded as."""
    return f"{API} {display_prefix}"


def record(
    session: Session, action: str, actor: str, address: str, target: str | None = None, detail: str | None = None
) -> AuditEvent:
    """Stage an audit event done from an address (COMMAND_LINE for the CLI), committed with the work it describes."""
    event = AuditEvent(
        at=clock.now(),
        actor=actor[:254],
        action=action,
        target=target[:254] if target else None,
        address=address[:64],
        detail=detail[:500] if detail else None,
    )
    session.add(event)
    return event
