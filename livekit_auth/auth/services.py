"""What the key endpoints do, apart from HTTP: register users, issue and find keys."""

import hmac

from sqlalchemy import select
from sqlalchemy.orm import joinedload

from .. import clock, keys
from ..errors import ApiError
from ..extensions import db
from ..models import ApiKey, User

INVALID_KEY = "Invalid API key"
MISSING_KEY = "Invalid API key: the x-api-key header is missing"
EMAIL_TAKEN = "An API key has already been issued for this email address"


def register_user(name: str, email: str, org_name: str | None) -> tuple[User, str]:
    """Stage a new user with a first key; the caller commits. Returns the user and the key."""
    now = clock.now()
    issued = keys.generate()
    user = User(
        name=name,
        email=email,
        email_canonical=email.lower(),
        org_name=org_name or None,
        created_at=now,
    )
    user.keys.append(
        ApiKey(digest=issued.digest, display_prefix=issued.display_prefix, created_at=now)
    )
    db.session.add(user)
    return user, issued.secret


def authenticate(presented: str) -> ApiKey:
    """Return the stored key for a presented secret, or raise a 401.

    A key with the wrong shape or checksum is refused before any query.
    """
    if not keys.is_well_formed(presented):
        raise ApiError(401, INVALID_KEY)
    wanted = keys.digest(presented)
    found = db.session.scalar(
        select(ApiKey).options(joinedload(ApiKey.user)).where(ApiKey.digest == wanted)
    )
    if found is None or not hmac.compare_digest(found.digest, wanted):
        raise ApiError(401, INVALID_KEY)
    return found
