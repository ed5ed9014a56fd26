"""Liveness and readiness probes, the metrics for Prometheus, and the icon browsers ask for."""

import hmac

from flask import Blueprint, current_app, request
from flask.typing import ResponseReturnValue
from prometheus_client import CONTENT_TYPE_LATEST
from werkzeug.wrappers import Response
from sqlalchemy import text
from sqlalchemy.exc import InterfaceError, OperationalError

from .apidoc import documented
from .envelope import error_response, success_response
from .errors import ApiError
from .extensions import db
from .gate import public
from .apikeys.keyring import FAILED_AUTH, FAILED_AUTH_SCOPE
from .metrics import exposition

bp = Blueprint("health", __name__)


@bp.get("/health")
@public
@documented(uses_database=False)
def live() -> ResponseReturnValue:
    """Answer 200 while the process serves, without touching the database."""
    return success_response("ok", None)


@bp.get("/health/ready")
@public
@documented()
def ready() -> ResponseReturnValue:
    """Answer 200 when the database answers, 503 when it does not."""
    try:
        db.session.execute(text("SELECT 1"))
    except (OperationalError, InterfaceError):
        db.session.rollback()
        return error_response(503, "Database unavailable")
    return success_response("ready", None)


@bp.get("/favicon.ico")
@public
def favicon() -> ResponseReturnValue:
    """The site's icon: browsers ask for it on every admin page, and a 401 would be logged."""
    return current_app.send_static_file("favicon.ico")


@bp.get("/metrics")
@public
def metrics() -> ResponseReturnValue:
    """Prometheus metrics, for a bearer of METRICS_TOKEN; not there at all without one.

    The right token is always answered, so a scraper is never limited; a wrong one counts as a
    failed check against the address (RATELIMIT_FAILED_AUTH), and an address past that limit
    gets 429 for its guesses, like a guesser of keys.
    """
    token = current_app.config["METRICS_TOKEN"]
    if not token:
        raise ApiError(404, "Not Found")
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if scheme == "Bearer" and hmac.compare_digest(given.encode(), token.encode()):
        return Response(exposition(), mimetype=CONTENT_TYPE_LATEST)
    limits = current_app.extensions["rate_limits"]
    address = limits.address(request.remote_addr or "")
    limits.count_failure(FAILED_AUTH, FAILED_AUTH_SCOPE, address)
    raise ApiError(401, "Invalid metrics token")
