"""Admin accounts and their server-side sessions."""

import secrets
from datetime import datetime, timedelta

from flask import current_app, session
from sqlalchemy import ColumnElement, delete, func, or_, select
from sqlalchemy.orm import joinedload
from werkzeug.security import check_password_hash, generate_password_hash

from .. import clock
from ..apikeys import audit, keys
from ..apikeys.models import AuditEvent, canonical_email
from ..extensions import db
from .models import Admin, AdminSession

SESSION_TOKEN = "admin_session"
ISSUED_KEY = "issued_key"  # the cookie session's entry: [a key's id, the browser's share of it]
MIN_PASSWORD_LENGTH = 12
UNKNOWN_ADMIN_HASH = "admin_unknown_hash"  # the app.extensions entry of unknown_admin_hash()


class PasswordTooShort(ValueError):
    """A password under MIN_PASSWORD_LENGTH characters."""


def hash_password(password: str) -> str:
    """Hash a new admin password with scrypt, refusing short ones."""
    if len(password) < MIN_PASSWORD_LENGTH:
        raise PasswordTooShort(f"The password must be at least {MIN_PASSWORD_LENGTH} characters")
    return generate_password_hash(password, method="scrypt")


def all_admins() -> list[Admin]:
    """Every admin account, by email."""
    return list(db.session.scalars(select(Admin).order_by(Admin.email)))


def add_admin(email: str, password_hash: str) -> Admin:
    """Stage a new admin account."""
    admin = Admin(email=canonical_email(email), password_hash=password_hash, created_at=clock.now())
    db.session.add(admin)
    return admin


def delete_admin(admin: Admin) -> None:
    """Stage the deletion of an admin account and of its sessions."""
    db.session.execute(delete(AdminSession).where(AdminSession.admin_id == admin.id))
    db.session.delete(admin)


def find_admin(email: str) -> Admin | None:
    """The admin with this email, compared case-insensitively."""
    return db.session.scalar(select(Admin).where(Admin.email == canonical_email(email)))


def unknown_admin_hash() -> str:
    """A hash of a random password, compared against when the email is unknown.

    So a wrong email costs as long as a wrong password, and timing does not reveal which
    accounts exist. Made once per app, when first needed: hashing takes a while.
    """
    extensions = current_app.extensions
    if UNKNOWN_ADMIN_HASH not in extensions:
        extensions[UNKNOWN_ADMIN_HASH] = hash_password(secrets.token_hex(16))
    return extensions[UNKNOWN_ADMIN_HASH]


def verify_login(email: str, password: str) -> Admin | None:
    """The admin whose email and password these are, or None; as slow either way."""
    admin = find_admin(email)
    stored = admin.password_hash if admin else unknown_admin_hash()
    if check_password_hash(stored, password) and admin is not None:
        return admin
    return None


def recent_events(action: str, now: datetime, *whose: ColumnElement[bool]) -> int:
    """Audit events of one kind within the login throttle window that meet a condition."""
    window = timedelta(minutes=current_app.config["ADMIN_LOGIN_WINDOW_MINUTES"])
    query = (
        select(func.count())
        .select_from(AuditEvent)
        .where(AuditEvent.action == action, AuditEvent.at > now - window, *whose)
    )
    return db.session.scalar(query) or 0


def recent_failures(email: str, address: str, now: datetime) -> int:
    """Failed logins for this account or from this address within the throttle window."""
    return recent_events(audit.LOGIN_FAILED, now,
                         or_(AuditEvent.target == canonical_email(email)[:254], AuditEvent.address == address))


def locked_since(email: str, now: datetime) -> bool:
    """Whether an account's lock-out within the throttle window has been recorded already."""
    return bool(recent_events(audit.LOGIN_LOCKED, now, AuditEvent.target == canonical_email(email)[:254]))


def start_session(admin: Admin) -> None:
    """Sign an admin in with a fresh server-side session; any earlier cookie state is dropped."""
    token = secrets.token_urlsafe(32)
    now = clock.now()
    db.session.add(
        AdminSession(token_digest=keys.digest(token), admin=admin, created_at=now, last_seen_at=now)
    )
    session.clear()
    session[SESSION_TOKEN] = token


def current_session() -> AdminSession | None:
    """The signed-in admin's live session, touched now; None when absent, ended or idle."""
    token = session.get(SESSION_TOKEN)
    if not isinstance(token, str):
        return None
    found = db.session.scalar(
        select(AdminSession)
        .options(joinedload(AdminSession.admin))
        .where(AdminSession.token_digest == keys.digest(token))
    )
    now = clock.now()
    idle = timedelta(minutes=current_app.config["ADMIN_IDLE_TIMEOUT_MINUTES"])
    if found is None or found.ended_at is not None or now - found.last_seen_at > idle:
        return None
    found.last_seen_at = now
    return found


def end_session(admin_session: AdminSession) -> None:
    """End a session on the server, so that a copy of its cookie opens nothing."""
    admin_session.ended_at = clock.now()
    session.clear()


def hold_issued_key(admin_session: AdminSession, key_id: int, secret: str) -> None:
    """Keep a key just issued until its page shows it, as two random shares.

    The server keeps one with the session, the browser's cookie the other, and the key is their
    XOR: neither the database nor the cookie holds it, and the page can show it once.
    """
    whole = secret.encode("ascii")
    server_share = secrets.token_bytes(len(whole))
    admin_session.issued_key_id = key_id
    admin_session.issued_key_share = server_share.hex()
    session[ISSUED_KEY] = [key_id, bytes(a ^ b for a, b in zip(whole, server_share)).hex()]


def take_issued_key(admin_session: AdminSession, key_id: int) -> str | None:
    """The key issued with this id, once; None when it was shown already, or held for another."""
    held = session.pop(ISSUED_KEY, None)
    server_share = admin_session.issued_key_share
    if admin_session.issued_key_id != key_id or server_share is None:
        return None
    admin_session.issued_key_id = admin_session.issued_key_share = None
    if not (isinstance(held, list) and len(held) == 2 and held[0] == key_id and isinstance(held[1], str)):
        return None
    try:
        browser_share = bytes.fromhex(held[1])
        shares = zip(browser_share, bytes.fromhex(server_share), strict=True)
        return bytes(a ^ b for a, b in shares).decode("ascii")
    except (ValueError, UnicodeDecodeError):  # a cookie that is not what this page wrote
        return None
