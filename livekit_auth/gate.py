"""The x-api-key gate: one before_request hook in front of every endpoint not marked public."""

from typing import TypeVar

from flask import current_app, g, request

Target = TypeVar("Target")


def public(target: Target) -> Target:
    """Mark a view function, or a whole blueprint, as open without an API key."""
    setattr(target, "is_public", True)
    return target


def is_public_request() -> bool:
    """Tell whether the request is on the allow-list; an unmatched path only under a public prefix."""
    endpoint = request.endpoint
    if endpoint is None:
        return any(
            getattr(blueprint, "is_public", False)
            and blueprint.url_prefix
            and (request.path == blueprint.url_prefix or request.path.startswith(blueprint.url_prefix + "/"))
            for blueprint in current_app.blueprints.values()
        )
    if endpoint == "static":
        return True
    blueprint = current_app.blueprints.get(request.blueprint or "")
    if getattr(blueprint, "is_public", False):
        return True
    return getattr(current_app.view_functions[endpoint], "is_public", False)


def require_api_key() -> None:
    """Authenticate the x-api-key header and put the key and its user on flask.g."""
    if is_public_request():
        return
    # Duplicate headers reach WSGI joined by commas, which no key contains: they are refused.
    keyring = current_app.extensions["keyring"]
    g.api_key = keyring.authenticate(request.headers.get("x-api-key"), request.remote_addr or "")
    g.user = g.api_key.holder
