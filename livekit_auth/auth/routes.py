"""The key endpoints of the documented contract."""

from flask import Blueprint, g
from flask.typing import ResponseReturnValue
from sqlalchemy.exc import IntegrityError

from ..envelope import success_response
from ..errors import ApiError
from ..extensions import db
from ..gate import public
from ..schemas import CheckedKeySchema, CreatedKeySchema, CreateKeySchema, load_json_body
from . import services

bp = Blueprint("auth", __name__, url_prefix="/auth")


@bp.post("/create-key")
@public
def create_key() -> ResponseReturnValue:
    """Register a user and issue their first key, shown this once."""
    fields = load_json_body(CreateKeySchema())
    user, secret = services.register_user(
        fields["user_name"], fields["user_email"], fields["org_name"]
    )
    data = {
        "api_key": secret,
        "user_name": user.name,
        "org_name": user.org_name,
        "user_email": user.email,
    }
    try:
        db.session.commit()
    except IntegrityError as error:
        db.session.rollback()
        raise ApiError(409, services.EMAIL_TAKEN) from error
    return success_response(
        "API key created successfully, Store it securely", CreatedKeySchema().dump(data)
    )


@bp.get("/check-key")
def check_key() -> ResponseReturnValue:
    """Describe the key the gate has already authenticated."""
    data = {
        "user_name": g.user.name,
        "org_name": g.user.org_name,
        "user_email": g.user.email,
        "created_at": g.api_key.created_at,
    }
    return success_response("API key is valid", CheckedKeySchema().dump(data))
