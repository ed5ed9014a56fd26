"""The admin pages' own tables: operators and their sessions, apart from the key domain."""

from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column, relationship

from ..apikeys.models import Base, UTCDateTime


class Admin(Base):
    """An operator of the admin pages; not an API user."""

    __tablename__ = "admins"

    id: Mapped[int] = mapped_column(primary_key=True)
    email: Mapped[str] = mapped_column(String(320), unique=True)  # lower-cased: see migration 0007
    password_hash: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


class AdminSession(Base):
    """A signed-in admin's session, kept on the server so that logging out really ends it."""

    __tablename__ = "admin_sessions"

    id: Mapped[int] = mapped_column(primary_key=True)
    token_digest: Mapped[str] = mapped_column(String(64), unique=True)
    admin_id: Mapped[int] = mapped_column(ForeignKey("admins.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    last_seen_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # A key issued in this session and not shown yet: its id, and one of the two random shares
    # whose XOR is the key (the other is in the browser's cookie), so neither side holds it.
    issued_key_id: Mapped[int | None]
    issued_key_share: Mapped[str | None] = mapped_column(String(128))

    admin: Mapped[Admin] = relationship()
