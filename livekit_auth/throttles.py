"""Rate limits on views: per client address, or per authenticated user, in the app's limit store."""

from collections.abc import Callable, Collection
from functools import wraps
from typing import ParamSpec

from flask import current_app, g, request
from flask.typing import ResponseReturnValue
from werkzeug.wrappers import Response

from .marks import Marks
from .rate_limits import RateLimits

Params = ParamSpec("Params")
THROTTLED: Marks[bool] = Marks()  # the views a decorator here limits


def rate_limits() -> RateLimits:
    """The current app's limits."""
    return current_app.extensions["rate_limits"]


def limit_per_address(
    setting: str,
    counts: Callable[[Response], bool] | None = None,
    methods: Collection[str] = ("POST",),
) -> Callable[[Callable[Params, ResponseReturnValue]], Callable[Params, ResponseReturnValue]]:
    """Limit a view's requests of some methods per client address, to the limit a setting names.

    Without `counts` every request counts and the one past the limit is refused. With it, only
    the answers it picks count (failed logins, say), and an address already out of room is
    refused before the view runs.
    """

    def decorate(view: Callable[Params, ResponseReturnValue]) -> Callable[Params, ResponseReturnValue]:
        @wraps(view)
        def limited(*args: Params.args, **kwargs: Params.kwargs) -> ResponseReturnValue:
            if request.method not in methods:
                return view(*args, **kwargs)
            scope = (view.__name__, rate_limits().address(request.remote_addr or ""))
            if counts is None:
                rate_limits().take(setting, *scope)
                return view(*args, **kwargs)
            rate_limits().check(setting, *scope)
            response = current_app.make_response(view(*args, **kwargs))
            if counts(response):
                rate_limits().count(setting, *scope)
            return response

        THROTTLED.put(limited, True)  # the OpenAPI document lists its 429
        return limited

    return decorate


def limit_per_user(
    setting: str, scope: str
) -> Callable[[Callable[Params, ResponseReturnValue]], Callable[Params, ResponseReturnValue]]:
    """Limit the authenticated user's requests to the views that share a scope, to a setting's limit."""

    def decorate(view: Callable[Params, ResponseReturnValue]) -> Callable[Params, ResponseReturnValue]:
        @wraps(view)
        def limited(*args: Params.args, **kwargs: Params.kwargs) -> ResponseReturnValue:
            rate_limits().take(setting, scope, str(g.user.id))
            return view(*args, **kwargs)

        THROTTLED.put(limited, True)
        return limited

    return decorate
