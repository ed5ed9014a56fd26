"""The key domain's errors: what a key check refuses, and the rules a change of keys breaks.

None of them knows about HTTP; the web layer's error handlers (livekit_auth.errors) give each
its status and the contract's message.
"""

from .models import KeyStatus

class KeyRefused(Exception):
    """A presented key that opens nothing; outcome names it in the key-check metrics."""

    outcome = "invalid"
    key_id: int | None = None  # the key refused, when one was found


class MissingKey(KeyRefused):
    """No x-api-key header at all."""


class InvalidKey(KeyRefused):
    """A key of the wrong shape or checksum, or one no user holds."""


class RevokedKey(KeyRefused):
    """A key its holder or an admin revoked."""

    outcome = "revoked"


class ExpiredKey(KeyRefused):
    """A key past its expiry."""

    outcome = "expired"


class SuspendedKey(KeyRefused):
    """A key an operator suspended, refused until it is resumed."""

    outcome = "suspended"


class MissingScope(Exception):
    """A valid restricted key asked to act in a scope it does not carry: 403, not a failed check."""

    def __init__(self, scope: str) -> None:
        super().__init__(scope)
        self.scope = scope


class KeyLimited(Exception):
    """A valid key past one of its own or its user's rate limits: 429, not a failed check."""

    outcome = "rate_limited_key"

    def __init__(self, retry_after: int, headers: list[tuple[str, str]]) -> None:
        super().__init__(retry_after)
        self.retry_after = retry_after
        self.headers = headers


class QuotaExhausted(KeyLimited):
    """A valid key past its own or its user's quota, until the period's refill."""

    outcome = "quota_exhausted"


# The refusal of a key in each status but active.
REFUSALS: dict[KeyStatus, type[KeyRefused]] = {
    KeyStatus.REVOKED: RevokedKey, KeyStatus.EXPIRED: ExpiredKey, KeyStatus.SUSPENDED: SuspendedKey,
}



class KeyRuleBroken(Exception):
    """A change of keys the domain's rules forbid; message says which rule, in the contract's words."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class KeyNotFound(KeyRuleBroken):
    """No key by that id, or one of another user's (which is as missing)."""

    def __init__(self) -> None:
        super().__init__("API key not found")


class TooManyKeys(KeyRuleBroken):
    """A user who holds the most active keys allowed asked for another."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"A user may hold at most {limit} active keys; revoke one first")


class ScopeNotHeld(KeyRuleBroken):
    """A restricted key asked to issue a key wider than itself."""
