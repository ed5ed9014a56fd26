"""Extension objects, created without an app and bound in create_app."""

from flask import Response, current_app
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_migrate import Migrate
from flask_sqlalchemy import SQLAlchemy
from flask_wtf.csrf import CSRFProtect
from sqlalchemy import MetaData
from sqlalchemy.orm import DeclarativeBase

# Named constraints, so that migrations can alter them on every backend.
NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    """Declarative base for every model."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


db = SQLAlchemy(model_class=Base)
migrate = Migrate()
# Checks only where a view asks (the admin pages); the JSON API authenticates by header.
csrf = CSRFProtect()


def failed_authentication(response: Response) -> bool:
    """Count a request against the failed-authentication limit only when it was refused."""
    return response.status_code == 401


def failed_authentication_limit() -> str:
    """The app's RATELIMIT_FAILED_AUTH, read on each request."""
    return current_app.config["RATELIMIT_FAILED_AUTH"]


# Limits key on the client address (the real one behind TRUSTED_PROXY_COUNT proxies). The one
# application-wide limit counts failed authentications only, over every endpoint together.
limiter = Limiter(
    key_func=get_remote_address,
    application_limits=[failed_authentication_limit],
    application_limits_deduct_when=failed_authentication,
)
