"""marshmallow schemas: what the API accepts, and what it returns (never a digest)."""

import json
import unicodedata
from datetime import datetime
from typing import Any

from email_validator import EmailNotValidError, validate_email
from flask import request
from marshmallow import Schema, ValidationError, fields

from .errors import ApiError

INVALID_EMAIL = "Invalid email address"
# Control characters, and lone surrogates that no database can store as text.
FORBIDDEN_CATEGORIES = {"Cc", "Cs"}


def timestamp(value: datetime) -> str:
    """Format a UTC time as the contract shows it: 2024-01-15T10:00:00.000000."""
    return value.strftime("%Y-%m-%dT%H:%M:%S.%f")


class NamedString(fields.String):
    """A string field whose error messages start with the field's own name."""

    default_error_messages = {
        "required": "{field} is required",
        "null": "{field} may not be null",
        "invalid": "{field} must be a string",
    }

    def make_error(self, key: str, **kwargs: Any) -> ValidationError:
        """Fill the field's name into the message for key."""
        return super().make_error(key, field=self.name, **kwargs)


class TrimmedText(NamedString):
    """A string of bounded length with outer whitespace removed and no control characters."""

    def __init__(self, *, min_length: int = 0, max_length: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.min_length = min_length
        self.max_length = max_length

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs).strip()
        if not self.min_length <= len(text) <= self.max_length:
            if self.min_length:
                bounds = f"{self.min_length} to {self.max_length}"
            else:
                bounds = f"at most {self.max_length}"
            raise ValidationError(f"{self.name} must be {bounds} characters")
        if any(unicodedata.category(char) in FORBIDDEN_CATEGORIES for char in text):
            raise ValidationError(f"{self.name} must not contain control characters")
        return text


class Email(NamedString):
    """An email address, checked and normalised by email-validator without the network."""

    MAX_LENGTH = 254

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        text = super()._deserialize(value, attr, data, **kwargs).strip()
        if len(text) > self.MAX_LENGTH:
            raise ValidationError(INVALID_EMAIL)
        try:
            return validate_email(text, check_deliverability=False).normalized
        except EmailNotValidError as error:
            raise ValidationError(INVALID_EMAIL) from error


class CreateKeySchema(Schema):
    """The body of POST /auth/create-key; unknown fields are refused, not dropped."""

    # Schema-level messages; the error handler fills in {field} for an unknown field.
    error_messages = {
        "unknown": "{field} is not a known field",
        "type": "The request body must be a JSON object",
    }

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

    created_at = fields.Function(lambda holder: timestamp(holder["created_at"]))


def load_json_body(schema: Schema) -> dict[str, Any]:
    """Read the request's JSON body and validate it with a schema, or fail with 400/415."""
    if not request.is_json:
        raise ApiError(415, "Content-Type must be application/json")
    raw = request.get_data(cache=False)
    if not raw.strip():
        raise ApiError(400, "The request body is empty; send a JSON object")
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError) as error:
        raise ApiError(400, "The request body is not valid JSON") from error
    return schema.load(document)
