"""Which part of the app a request belongs to, whether its path matched a view or not."""

from flask import Blueprint, current_app, request


def owning_blueprint() -> Blueprint | None:
    """The blueprint of the request's view; for an unmatched path, the one whose URL prefix holds it."""
    if request.blueprint is not None:
        return current_app.blueprints[request.blueprint]
    path = request.path
    for blueprint in current_app.blueprints.values():
        prefix = blueprint.url_prefix
        if prefix and (path == prefix or path.startswith(prefix + "/")):
            return blueprint
    return None
