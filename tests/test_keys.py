"""The key's shape, checksum and digest, without an app or a database."""

import re

import pytest

from livekit_auth.apikeys import keys


def test_a_key_has_the_documented_prefix_and_url_safe_characters() -> None:
    secret = keys.generate().secret
    assert re.fullmatch(r"lvk_[A-Za-z0-9_]+", secret)
    assert len(secret) == keys.KEY_LENGTH


def test_a_key_carries_at_least_256_random_bits() -> None:
    assert 62**keys.RANDOM_LENGTH >= 2 ** (8 * keys.RANDOM_BYTES) >= 2**256


def test_keys_are_unique() -> None:
    assert len({keys.generate().secret for _ in range(1000)}) == 1000


def test_a_generated_key_is_well_formed() -> None:
    assert keys.is_well_formed(keys.generate().secret)


def test_the_stored_digest_is_the_sha256_of_the_key() -> None:
    issued = keys.generate()
    assert issued.digest == keys.digest(issued.secret)
    assert re.fullmatch(r"[0-9a-f]{64}", issued.digest)
    assert issued.secret not in issued.digest


def test_the_display_prefix_shows_only_a_few_random_characters() -> None:
    issued = keys.generate()
    assert issued.secret.startswith(issued.display_prefix)
    assert len(issued.display_prefix) == len("lvk_") + keys.DISPLAY_LENGTH


def flip(character: str) -> str:
    """Another base62 character."""
    return "b" if character == "a" else "a"


@pytest.mark.parametrize("position", [4, 20, 46, 47, 52])
def test_changing_any_one_character_breaks_the_checksum(position: int) -> None:
    secret = keys.generate().secret
    tampered = secret[:position] + flip(secret[position]) + secret[position + 1 :]
    assert not keys.is_well_formed(tampered)


@pytest.mark.parametrize(
    "candidate",
    [
        "",
        "lvk_",
        "lvk_short",
        "sk_" + "a" * 49,
        "LVK_" + "a" * 49,
        "lvk_" + "a" * 48,
        "lvk_" + "a" * 50,
        "lvk_" + "-" * 49,
        "lvk_" + "é" * 49,
    ],
)
def test_strings_without_the_key_shape_are_refused(candidate: str) -> None:
    assert not keys.is_well_formed(candidate)


def test_base62_pads_to_the_width() -> None:
    assert keys.base62(0, 3) == "000"
    assert keys.base62(61, 2) == "0Z"
    assert keys.base62(62, 2) == "10"
