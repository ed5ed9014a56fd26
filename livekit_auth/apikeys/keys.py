"""The API key itself: generation, checksum, digest and parsing, as pure functions.

A key reads ``lvk_`` + 43 base62 characters of randomness (256 bits) + 6 base62
characters of CRC32 over the random part. The checksum lets a mistyped or forged key
be refused without a database query, and the fixed shape lets secret scanners find
leaked keys. Only the SHA-256 digest and a short display prefix are ever stored.
"""

import hashlib
import hmac
import re
import secrets
import string
import zlib
from collections.abc import Iterable
from typing import NamedTuple

KEY_PREFIX = "lvk_"
ALPHABET = string.digits + string.ascii_letters
RANDOM_BYTES = 32
RANDOM_LENGTH = 43  # 62**43 > 2**256, so 43 base62 digits hold 32 random bytes
CHECKSUM_LENGTH = 6  # 62**6 > 2**32, so 6 base62 digits hold a CRC32
DISPLAY_LENGTH = 8  # random characters kept for display: ~48 of 256 bits
KEY_LENGTH = len(KEY_PREFIX) + RANDOM_LENGTH + CHECKSUM_LENGTH
DISPLAY_PREFIX_LENGTH = len(KEY_PREFIX) + DISPLAY_LENGTH
SHARDS = 256  # a digest's first byte
KEY_PATTERN = re.compile(
    rf"{KEY_PREFIX}([0-9A-Za-z]{{{RANDOM_LENGTH}}})([0-9A-Za-z]{{{CHECKSUM_LENGTH}}})"
)


class NewKey(NamedTuple):
    """A freshly generated key: the secret to hand out once, and what may be stored."""

    secret: str
    digest: str
    display_prefix: str


def base62(number: int, width: int) -> str:
    """Encode a non-negative integer in base62, left-padded with zeros to width."""
    digits = []
    while number:
        number, remainder = divmod(number, 62)
        digits.append(ALPHABET[remainder])
    return "".join(reversed(digits)).rjust(width, ALPHABET[0])


def checksum(random_part: str) -> str:
    """Return the six-character checksum of a key's random part."""
    return base62(zlib.crc32(random_part.encode("ascii")), CHECKSUM_LENGTH)


def digest(secret: str) -> str:
    """Return the hex SHA-256 digest under which a key is stored and looked up."""
    return hashlib.sha256(secret.encode("utf-8")).hexdigest()


def shard(digest: str) -> int:
    """Return the shard of a key, by its digest's first byte: what proxies keep answers by."""
    return int(digest[:2], 16)


def display_prefix(secret: str) -> str:
    """Return the part of a key that may be shown to identify it: never enough to use it."""
    return secret[:DISPLAY_PREFIX_LENGTH]


def generate() -> NewKey:
    """Generate a new key from the operating system's secure random source."""
    random_part = base62(int.from_bytes(secrets.token_bytes(RANDOM_BYTES)), RANDOM_LENGTH)
    secret = KEY_PREFIX + random_part + checksum(random_part)
    return NewKey(secret, digest(secret), display_prefix(secret))


def is_well_formed(candidate: str) -> bool:
    """Tell whether a string has a key's shape and a correct checksum."""
    match = KEY_PATTERN.fullmatch(candidate)
    if match is None:
        return False
    random_part, given_checksum = match.groups()
    return hmac.compare_digest(checksum(random_part), given_checksum)


# A scope a key may be restricted to ("calls:write"), and how many one key may carry.
SCOPE_PATTERN = re.compile(r"[a-z0-9_.:-]{1,64}")
MAX_SCOPES = 32


def scopes_text(scopes: Iterable[str] | None) -> str | None:
    """Scopes as a key stores them: distinct, sorted, space-separated; None (full access) stays None."""
    return None if scopes is None else " ".join(sorted(set(scopes)))


def scope_list(text: str | None) -> list[str] | None:
    """A key's stored scopes as a list; None for a key with full access."""
    return None if text is None else text.split()


def allows(text: str | None, scope: str) -> bool:
    """Whether a key with these stored scopes may act in a scope: a key without scopes may in all."""
    return text is None or scope in text.split()
