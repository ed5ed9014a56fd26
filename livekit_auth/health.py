"""Liveness and readiness probes."""

from flask import Blueprint
from flask.typing import ResponseReturnValue
from sqlalchemy import text
from sqlalchemy.exc import InterfaceError, OperationalError

from .envelope import error_response, success_response
from .extensions import db
from .gate import public

bp = Blueprint("health", __name__, url_prefix="/health")


@bp.get("")
@public
def live() -> ResponseReturnValue:
    """Answer 200 while the process serves, without touching the database."""
    return success_response("ok", None)


@bp.get("/ready")
@public
def ready() -> ResponseReturnValue:
    """Answer 200 when the database answers, 503 when it does not."""
    try:
        db.session.execute(text("SELECT 1"))
    except (OperationalError, InterfaceError):
        db.session.rollback()
        return error_response(503, "Database unavailable")
    return success_response("ready", None)
