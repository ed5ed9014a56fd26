"""The app-level error handlers, all answering in the one envelope.

This is the one place where the key domain's errors (apikeys/errors.py) get their HTTP
statuses and the contract's messages.
"""

import time
from collections.abc import Callable, Mapping
from typing import Any

from flask import Blueprint, Flask, current_app
from flask.typing import ResponseReturnValue
from marshmallow import ValidationError
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge

from .apikeys.errors import (
    ExpiredKey, InvalidKey, KeyLimited, KeyNotFound, KeyRefused, KeyRuleBroken, MissingKey, MissingScope,
    QuotaExhausted, RevokedKey, ScopeNotHeld, SuspendedKey, TooManyKeys,
)
from .blueprints import owning_blueprint
from .envelope import error_response
from .extensions import db
from .marks import Marks
from .rate_limits import RateLimited

DATABASE_WARNED_AT = "database_warned_at"  # app.extensions: when this worker last said the database was gone
DATABASE_WARNING_SECONDS = 60.0
ErrorPage = Callable[[int, str, dict[str, str]], ResponseReturnValue]
ERROR_PAGES: Marks[ErrorPage] = Marks()  # the blueprints that answer errors with pages of their own


class ApiError(Exception):
    """A failure of the web layer itself (a request's form, a probe) to report with a status and a message.

    The key domain raises its own errors instead (apikeys/errors.py), given their statuses below.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def field_messages(messages: dict[str, Any], names: Mapping[str, str] | None = None) -> dict[str, list[str]]:
    """Fill each field's name (or what `names` calls it, such as a CLI option) into its marshmallow messages."""
    names = names or {}
    return {
        field: [problem.format(field=names.get(field, field)) for problem in problems]
        for field, problems in messages.items()
    }


def describe_validation_error(
    error: ValidationError, names: Mapping[str, str] | None = None
) -> tuple[str, dict[str, list[str]]]:
    """One sentence naming every problem, and the problems by field."""
    messages = field_messages(error.normalized_messages(), names)
    return "; ".join(problem for problems in messages.values() for problem in problems), messages


def renders_errors(blueprint: Blueprint, page: ErrorPage) -> None:
    """Have a blueprint answer the errors on its paths with its own page instead of the envelope."""
    ERROR_PAGES.put(blueprint, page)


def failure(status: int, message: str, headers: dict[str, str] | None = None) -> ResponseReturnValue:
    """The envelope, unless the blueprint that owns the path renders errors its own way."""
    render = ERROR_PAGES.of(owning_blueprint())
    if render is not None:
        return render(status, message, headers or {})
    return error_response(status, message, headers=headers)


def handle_http_exception(error: HTTPException) -> ResponseReturnValue:
    """Answer any HTTP error, keeping a message given to abort()."""
    default = type(error).description
    message = error.description if error.description and error.description != default else error.name
    headers = {}
    if error.code == 405 and error.valid_methods:
        headers["Allow"] = ", ".join(error.valid_methods)
    return failure(error.code or 500, message, headers)


def handle_too_large(error: RequestEntityTooLarge) -> ResponseReturnValue:
    """Answer a body over MAX_CONTENT_LENGTH, saying what the limit is."""
    limit = current_app.config["MAX_CONTENT_LENGTH"]
    return failure(413, f"The request body is larger than the {limit // 1024} KiB allowed")


def handle_rate_limited(error: RateLimited) -> ResponseReturnValue:
    """Answer 429, naming the limit, with when to try again; only a 429 carries these headers."""
    headers = {
        "Retry-After": str(error.retry_after),
        "X-RateLimit-Limit": str(error.limit.amount),
        "X-RateLimit-Remaining": "0",
        "X-RateLimit-Reset": str(int(time.time()) + error.retry_after),
    }
    return failure(429, f"Too many requests (limit: {error.limit}); try again later", headers)


def handle_api_error(error: ApiError) -> ResponseReturnValue:
    """Answer a failure a view, the gate or the body reader raised."""
    return failure(error.status, error.message)


# The messages clients code against, by refusal.
KEY_REFUSALS = {
    MissingKey: "Invalid API key: the x-api-key header is missing",
    InvalidKey: "Invalid API key",
    RevokedKey: "API key has been revoked",
    ExpiredKey: "API key has expired",
    SuspendedKey: "API key is suspended",
}


def handle_key_refused(error: KeyRefused) -> ResponseReturnValue:
    """Answer a key that opens nothing with 401 and the contract's message for its kind."""
    return failure(401, KEY_REFUSALS[type(error)])


def handle_missing_scope(error: MissingScope) -> ResponseReturnValue:
    """Answer a restricted key asked to act in a scope it does not carry with 403."""
    return failure(403, f"API key lacks the scope {error.scope}")


KEY_LIMIT_MESSAGES = {KeyLimited: "API key rate limit exceeded", QuotaExhausted: "API key quota exhausted"}
# The status of each rule of the key domain; the message is the rule's own.
KEY_RULE_STATUSES: dict[type[KeyRuleBroken], int] = {KeyNotFound: 404, ScopeNotHeld: 403, TooManyKeys: 409}


def handle_key_limited(error: KeyLimited) -> ResponseReturnValue:
    """Answer a valid key past its own or its user's rate limit or quota with 429, and when to try again."""
    return failure(429, KEY_LIMIT_MESSAGES[type(error)], {"Retry-After": str(error.retry_after), **dict(error.headers)})


def handle_key_rule_broken(error: KeyRuleBroken) -> ResponseReturnValue:
    """Answer a change of keys the domain refuses with the rule's status and message."""
    return failure(KEY_RULE_STATUSES[type(error)], error.message)


def handle_validation_error(error: ValidationError) -> ResponseReturnValue:
    """Answer invalid input with 400, one readable message, and the per-field details."""
    sentence, messages = describe_validation_error(error)
    return error_response(400, sentence, errors=messages)


def handle_database_unavailable(error: Exception) -> ResponseReturnValue:
    """Answer 503 when the database cannot be reached; the pool reconnects by itself.

    A worker warns when it first finds the database gone, and at most once every
    DATABASE_WARNING_SECONDS after that: an outage is one line per worker, not one per request.
    """
    now = time.monotonic()
    if now - current_app.extensions.get(DATABASE_WARNED_AT, float("-inf")) >= DATABASE_WARNING_SECONDS:
        current_app.extensions[DATABASE_WARNED_AT] = now
        current_app.logger.warning("database unavailable: %s", type(error).__name__)
    db.session.rollback()
    return failure(503, "Service temporarily unavailable, try again shortly")


def handle_internal_error(error: HTTPException) -> ResponseReturnValue:
    """Answer an unexpected failure with a generic 500; Flask has already logged it.

    The session is rolled back first: a failed statement leaves PostgreSQL's transaction
    aborted, and nothing more may be read in it.
    """
    db.session.rollback()
    return failure(500, "Internal server error")


def register_errorhandlers(app: Flask) -> None:
    """Attach the envelope handlers to the app, so routing 404/405 use them too."""
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(RequestEntityTooLarge, handle_too_large)
    app.register_error_handler(RateLimited, handle_rate_limited)
    app.register_error_handler(500, handle_internal_error)
    app.register_error_handler(ApiError, handle_api_error)
    app.register_error_handler(MissingScope, handle_missing_scope)
    app.register_error_handler(KeyLimited, handle_key_limited)
    app.register_error_handler(KeyRefused, handle_key_refused)
    app.register_error_handler(KeyRuleBroken, handle_key_rule_broken)
    app.register_error_handler(ValidationError, handle_validation_error)
    app.register_error_handler(OperationalError, handle_database_unavailable)
    app.register_error_handler(InterfaceError, handle_database_unavailable)
    app.register_error_handler(DisconnectionError, handle_database_unavailable)
