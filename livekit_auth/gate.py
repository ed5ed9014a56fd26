"""The x-api-key gate: one before_request hook in front of every endpoint not marked public."""

from typing import Any, TypeVar

from flask import Flask, Response, current_app, g, request

from .apikeys.keys import SCOPE_PATTERN
from .blueprints import owning_blueprint
from .errors import ApiError
from .marks import Marks
from .observability import LOGGED_ENDPOINT, LOGGED_KEY

Target = TypeVar("Target")
KEY_VERSION_DIGITS = 19  # a BIGINT's
PUBLIC: Marks[bool] = Marks()  # the views and blueprints open without a key


def public(target: Target) -> Target:
    """Mark a view function, or a whole blueprint, as open without an API key."""
    PUBLIC.put(target, True)
    return target


def is_public(target: object) -> bool:
    """Whether a view function (or one it wraps) or a blueprint is marked public."""
    return PUBLIC.of(target) is not None


def is_public_request(endpoint: str | None) -> bool:
    """Tell whether the request is on the allow-list; an unmatched path only under a public prefix."""
    if endpoint is None:
        return is_public(owning_blueprint())
    decided = current_app.extensions["public_endpoints"]
    is_open = decided.get(endpoint)
    if is_open is None:
        is_open = decided[endpoint] = endpoint == "static" or any(
            is_public(target) for target in (owning_blueprint(), current_app.view_functions[endpoint])
        )
    return is_open


def require_api_key() -> None:
    """Authenticate the x-api-key header and put the key and its user on flask.g.

    What the request log needs of it (the endpoint, the key) is left in the WSGI environ, which
    outlives the request context.
    """
    endpoint = request.endpoint
    environ = request.environ
    environ[LOGGED_ENDPOINT] = endpoint
    if is_public_request(endpoint):
        return
    # Duplicate headers reach WSGI joined by commas, which no key contains: they are refused.
    keyring = current_app.extensions["keyring"]
    admitted = keyring.authenticate(
        environ.get("HTTP_X_API_KEY"), request.remote_addr or "", seen_version(environ), required_scope(environ)
    )
    g.api_key = environ[LOGGED_KEY] = admitted.key
    g.user = admitted.key.holder
    if admitted.limit_headers is not None:
        g.limit_headers = admitted.limit_headers


def add_limit_headers(response: Response) -> Response:
    """Give a limited key's 2xx answers the RateLimit headers of its tightest limit."""
    headers = g.get("limit_headers")
    if headers is not None and response.status_code < 300:
        response.headers.extend(headers)
    return response


def required_scope(environ: dict[str, Any]) -> str | None:
    """The scope a proxy asks the key to act in (X-Required-Scope), if it asks one.

    A value that is no scope is refused with 400: a proxy that mistypes one must not open a
    location to every key.
    """
    asked = environ.get("HTTP_X_REQUIRED_SCOPE")
    if asked is None:
        return None
    if not SCOPE_PATTERN.fullmatch(asked):
        raise ApiError(400, "X-Required-Scope must be 1 to 64 lower-case letters, digits and _.:-")
    return asked


def seen_version(environ: dict[str, Any]) -> int | None:
    """The version of the keys a proxy says it has seen (X-Auth-Key-Version), if it says one."""
    given = environ.get("HTTP_X_AUTH_KEY_VERSION")
    if given is None or not (given.isascii() and given.isdigit() and len(given) <= KEY_VERSION_DIGITS):
        return None
    return int(given)


def register_gate(app: Flask) -> None:
    """Put the gate in front of every view; whether an endpoint is public is decided once."""
    app.extensions["public_endpoints"] = {}
    app.before_request(require_api_key)
    app.after_request(add_limit_headers)
