"""marshmallow schemas: what the API accepts, and what it returns (never a digest)."""

import unicodedata
from datetime import datetime
from typing import Any

from email_validator import EmailNotValidError, validate_email
from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

from . import clock
from .apikeys import keys
from .apikeys.meter import PERIODS
from .apikeys.models import KeyStatus

INVALID_EMAIL = "Invalid email address"
EMAIL_MAX_LENGTH = 254
MAX_LEAKED_KEYS = 100
LEAKED_STRING_MAX_LENGTH = 200  # far past a key's 53 characters: anything longer is not one
# Control characters, and lone surrogates that no database can store as text.
FORBIDDEN_CATEGORIES = {"Cc", "Cs"}
# The bidirectional embeddings, overrides and isolates, which reorder what the admin and the CLI
# show around them ("‮moc.elpmaxe" reads as example.com).
BIDI_CONTROLS = frozenset(map(chr, [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]))
# The same rule in the OpenAPI document: outer whitespace, which is trimmed, and no control inside.
NO_CONTROLS = r"^\s*[^\u0000-\u001f\u007f-\u009f\u202a-\u202e\u2066-\u2069]*\s*$"


def timestamp(value: datetime) -> str:
    """Format a UTC time as the contract shows it: 2024-01-15T10:00:00.000000."""
    return value.strftime("%Y-%m-%dT%H:%M:%S.%f")


class NamedErrors(fields.Field):
    """A field whose error messages start with "{field}", which the error's reader fills in.

    The API fills in the field's name, the CLI its option (errors.field_messages).
    """

    default_error_messages = {
        "required": "{field} is required",
        "null": "{field} may not be null",
    }

    def make_error(self, key: str, **kwargs: Any) -> ValidationError:
        """The message for key, with "{field}" left in it to fill."""
        return super().make_error(key, field="{field}", **kwargs)


class NamedString(NamedErrors, fields.String):
    """A string field with named error messages."""

    default_error_messages = {"invalid": "{field} must be a string"}


class WholeNumber(NamedErrors, fields.Integer):
    """A JSON integer within bounds: no strings, no fractions, no booleans.

    30.0 is an integer to JSON Schema, and so to the OpenAPI document: it is taken as 30.
    """

    default_error_messages = {"invalid": "{field} must be a whole number"}

    def __init__(self, *, minimum: int, maximum: int, **kwargs: Any) -> None:
        super().__init__(strict=True, metadata={"minimum": minimum, "maximum": maximum}, **kwargs)
        self.minimum = minimum
        self.maximum = maximum

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> int:
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        number = super()._deserialize(value, attr, data, **kwargs)
        if not self.minimum <= number <= self.maximum:
            raise ValidationError(f"{{field}} must be from {self.minimum} to {self.maximum}")
        return number


class Timestamp(fields.Field):
    """A UTC time written as the contract writes created_at, or null."""

    def __init__(self, **kwargs: Any) -> None:
        metadata = {"example": "2024-01-15T10:00:00.000000"}
        super().__init__(metadata=metadata, **kwargs)

    def _serialize(self, value: datetime | None, attr: str | None, obj: Any, **kwargs: Any) -> str | None:
        return None if value is None else timestamp(value)


class TrimmedText(NamedString):
    """A string of bounded length with outer whitespace removed and no control characters."""

    def __init__(self, *, min_length: int = 0, max_length: int, **kwargs: Any) -> None:
        metadata = {"minLength": min_length, "maxLength": max_length, "pattern": NO_CONTROLS}
        super().__init__(metadata=metadata, **kwargs)
        self.min_length = min_length
        self.max_length = max_length

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs).strip()
        if not self.min_length <= len(text) <= self.max_length:
            if self.min_length:
                bounds = f"{self.min_length} to {self.max_length}"
            else:
                bounds = f"at most {self.max_length}"
            raise ValidationError(f"{{field}} must be {bounds} characters")
        if any(unicodedata.category(char) in FORBIDDEN_CATEGORIES or char in BIDI_CONTROLS for char in text):
            raise ValidationError("{field} must not contain control characters")
        return text


def normalise_email(text: str) -> str:
    """Check an address with email-validator, without the network, and normalise it."""
    text = text.strip()
    if len(text) > EMAIL_MAX_LENGTH:
        raise ValidationError(INVALID_EMAIL)
    try:
        return validate_email(text, check_deliverability=False).normalized
    except EmailNotValidError as error:
        raise ValidationError(INVALID_EMAIL) from error


class Email(NamedString):
    """An email address field."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(metadata={"format": "email", "maxLength": EMAIL_MAX_LENGTH}, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        return normalise_email(super()._deserialize(value, attr, data, **kwargs))


class RequestSchema(Schema):
    """A request body: a JSON object whose unknown fields are refused, not dropped."""

    # Schema-level messages; the error handler fills in {field} for an unknown field.
    error_messages = {
        "unknown": "{field} is not a known field",
        "type": "The request body must be a JSON object",
    }


class CreateKeySchema(RequestSchema):
    """The body of POST /auth/create-key."""

    user_name = TrimmedText(required=True, min_length=1, max_length=100)
    user_email = Email(required=True)
    org_name = TrimmedText(load_default=None, allow_none=True, max_length=100)


class KeyHolderSchema(Schema):
    """The user behind a key, as the API shows them."""

    user_name = fields.String()
    org_name = fields.String(allow_none=True)
    user_email = fields.String()


class CreatedKeySchema(KeyHolderSchema):
    """The data of a create-key answer: the only time the key itself is ever sent."""

    class Meta:
        """The key first, as the contract shows it."""

        fields = ("api_key", "user_name", "org_name", "user_email")

    api_key = fields.String()


class CheckedKeySchema(KeyHolderSchema):
    """The data of a check-key answer."""

    created_at = Timestamp()


EXPIRES_IN_DAYS = {"minimum": 1, "maximum": 3650, "load_default": None, "allow_none": True}


class Scopes(NamedErrors, fields.Field):
    """A restricted key's scopes: 1 to MAX_SCOPES distinct strings such as calls:write; null for full access."""

    def __init__(self, description: str | None = None, **kwargs: Any) -> None:
        metadata = {"type": "array", "minItems": 1, "maxItems": keys.MAX_SCOPES, "uniqueItems": True,
                    "items": {"type": "string", "pattern": f"^{keys.SCOPE_PATTERN.pattern}$"},
                    **({"description": description} if description else {})}
        super().__init__(metadata=metadata, allow_none=True, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list[str]:
        if not (
            isinstance(value, list) and 1 <= len(value) <= keys.MAX_SCOPES
            and all(isinstance(item, str) and keys.SCOPE_PATTERN.fullmatch(item) for item in value)
            and len(set(value)) == len(value)
        ):
            raise ValidationError(
                f"{{field}} must be a list of 1 to {keys.MAX_SCOPES} distinct scopes, each 1 to 64 "
                "lower-case letters, digits and _.:-, or null for full access"
            )
        return value

    def _serialize(self, value: str | None, attr: str | None, obj: Any, **kwargs: Any) -> list[str] | None:
        return keys.scope_list(value)


class NewKeySchema(RequestSchema):
    """The body of POST /auth/keys: every field optional; scopes left out are the calling key's."""

    name = TrimmedText(load_default=None, allow_none=True, max_length=100)
    expires_in_days = WholeNumber(**EXPIRES_IN_DAYS)
    scopes = Scopes()


class RotateKeySchema(RequestSchema):
    """The body of POST /auth/keys/rotate: how long the calling key keeps working."""

    grace_hours = WholeNumber(minimum=0, maximum=168, load_default=24)
    expires_in_days = WholeNumber(**EXPIRES_IN_DAYS)


class LeakedStrings(NamedErrors, fields.Field):
    """A list of 1 to MAX_LEAKED_KEYS strings, each of at most LEAKED_STRING_MAX_LENGTH."""

    def __init__(self, **kwargs: Any) -> None:
        metadata = {"type": "array", "items": {"type": "string", "maxLength": LEAKED_STRING_MAX_LENGTH},
                    "minItems": 1, "maxItems": MAX_LEAKED_KEYS}
        super().__init__(metadata=metadata, **kwargs)

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> list[str]:
        if not (
            isinstance(value, list)
            and 1 <= len(value) <= MAX_LEAKED_KEYS
            and all(isinstance(item, str) and len(item) <= LEAKED_STRING_MAX_LENGTH for item in value)
        ):
            raise ValidationError(
                f"{{field}} must be a list of 1 to {MAX_LEAKED_KEYS} strings, "
                f"each at most {LEAKED_STRING_MAX_LENGTH} characters"
            )
        return value


class LeakReportSchema(RequestSchema):
    """The body of POST /auth/keys/leaked: the strings a scanner found."""

    keys = LeakedStrings(required=True)


class LeakReportResultSchema(Schema):
    """The data of a leak report's answer."""

    revoked = fields.Integer(metadata={"description": "How many active keys the report revoked"})


class KeyPageSchema(Schema):
    """The query of GET /auth/keys: how many keys a page holds, and where it starts."""

    class Meta:
        """Other query arguments (a cache buster, say) are left alone."""

        unknown = EXCLUDE

    limit = fields.Integer(load_default=50, validate=validate.Range(1, 200))
    before = fields.Integer(load_default=None, validate=validate.Range(1, 2**31 - 1),
                            metadata={"description": "Only keys with a smaller id: the next page's start"})


class KeySchema(Schema):
    """One of a user's keys as a listing shows it: never the key, never its digest."""

    id = fields.Integer()
    name = fields.String(allow_none=True)
    display_prefix = fields.String()
    status = fields.Function(
        lambda key: key.status(clock.now()).value,
        metadata={"type": "string", "enum": [status.value for status in KeyStatus]},
    )
    created_at = Timestamp()
    expires_at = Timestamp(allow_none=True)
    last_used_at = Timestamp(allow_none=True)
    revoked_at = Timestamp(allow_none=True)
    scopes = Scopes("The scopes a restricted key may act in; null: full access")
    rate_limit = fields.String(
        allow_none=True,
        metadata={"description": "The key's own rate limits in the limits notation; null: none", "example": "100 per minute"},
    )


class QuotaSchema(Schema):
    """A key's quota and its use in the current period."""

    limit = fields.Integer(metadata={"description": "Checks the key may pass per period"})
    period = fields.String(metadata={"enum": list(PERIODS), "description": "A UTC day or calendar month"})
    used = fields.Integer(metadata={"description": "Checks passed this period, by the record (exact to LAST_USED_FLUSH_SECONDS)"})
    resets_at = fields.String(metadata={"format": "date-time", "description": "When the period ends and the quota refills"})


class ListedKeySchema(KeySchema):
    """A key as GET /auth/keys lists it: its fields, its quota's use, and how much it was used lately."""

    requests_30d = fields.Integer(
        metadata={"description": "Checks the key passed in the last 30 days (UTC), today included"}
    )
    quota = fields.Nested(QuotaSchema, allow_none=True, dump_default=None,
                          metadata={"description": "The key's own quota and its use; null: none"})


class IssuedKeySchema(CreatedKeySchema):
    """A key issued to a known user: create-key's shape plus the key's id, name and expiry."""

    class Meta:
        """The key first, then the holder, then the key's own details."""

        fields = ("api_key", "user_name", "org_name", "user_email", "id", "name", "expires_at", "scopes")

    id = fields.Integer()
    name = fields.String(allow_none=True)
    expires_at = Timestamp(allow_none=True)
    scopes = Scopes()


class RotatedKeySchema(IssuedKeySchema):
    """A rotation's answer: the new key, and when the calling key stops working."""

    class Meta:
        """The new key's fields, then the old key's end."""

        fields = IssuedKeySchema.Meta.fields + ("previous_key_expires_at",)

    previous_key_expires_at = Timestamp(allow_none=True)
