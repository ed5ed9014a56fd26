"""The key endpoints: the documented contract, and the key lifecycle beyond it."""

from typing import Any
from urllib.parse import quote
from weakref import WeakKeyDictionary

from flask import Blueprint, Response, current_app, g, url_for
from flask.typing import ResponseReturnValue
from marshmallow import Schema
from sqlalchemy.exc import IntegrityError

from .. import clock
from ..apidoc import FORWARDED, KEY_VERSIONS, documented, request_body, request_query
from ..apikeys import audit, reports
from ..apikeys.cache import Holder, KnownKey
from ..apikeys.models import ApiKey, User
from ..apikeys.services import EMAIL_TAKEN, inherited_limits, scopes_for_new_key
from ..context import key_service
from ..envelope import success_body, success_response
from ..errors import ApiError
from ..extensions import db
from ..gate import public
from ..throttles import limit_per_address, limit_per_user
from ..schemas import (
    CheckedKeySchema,
    CreatedKeySchema,
    CreateKeySchema,
    IssuedKeySchema,
    KeyPageSchema,
    KeySchema,
    LeakReportResultSchema,
    LeakReportSchema,
    ListedKeySchema,
    NewKeySchema,
    RotatedKeySchema,
    RotateKeySchema,
    timestamp,
)

bp = Blueprint("auth", __name__, url_prefix="/auth")

KEY_CREATED = "API key created successfully, Store it securely"
KEY_ISSUE_SCOPE = "key-issue"  # adding and rotating keys count together against RATELIMIT_KEY_ISSUE
# What /auth/verify's headers carry unencoded: printable ASCII but the escape character.
HEADER_SAFE = "".join(chr(code) for code in range(0x20, 0x7F) if chr(code) != "%")
MAX_AGE = "X-Auth-Max-Age"  # how long a proxy may keep an answer, in seconds; absent: not at all
# What GET /auth/check-key answers for a key, and GET /auth/verify in headers, rendered once per
# key the key check holds: a key's holder and creation time never change, and an answer goes
# with its KnownKey when the key leaves the worker's cache (or is read again).
CHECKED: WeakKeyDictionary[KnownKey, bytes] = WeakKeyDictionary()
FORWARDED_HEADERS: WeakKeyDictionary[KnownKey, list[tuple[str, str]]] = WeakKeyDictionary()


class NoContent(Response):
    """An answer without a body, and so without a Content-Type."""

    default_mimetype = None


def seconds_text(seconds: float) -> str:
    """A number of seconds as a header says it: to the millisecond, no trailing zeros."""
    return format(round(seconds, 3), "g")


def holder(user: User | Holder) -> dict[str, Any]:
    """The user's fields as the API names them."""
    return {"user_name": user.name, "org_name": user.org_name, "user_email": user.email}


def acting_key() -> str:
    """Who the audit log names for a change made with the calling key."""
    return audit.by_key(g.api_key.display_prefix)


def issued_answer(message: str, schema: Schema, key: ApiKey, secret: str, **more: Any) -> ResponseReturnValue:
    """Commit a newly issued key and answer it with its holder, read before the commit expires them."""
    db.session.flush()
    data = schema.dump({
        "api_key": secret, **holder(key.user), "id": key.id, "name": key.name, "expires_at": key.expires_at,
        "scopes": key.scopes, **more,
    })
    db.session.commit()
    return success_response(message, data)


@bp.post("/create-key")
@public
@documented(body=CreateKeySchema, data=CreatedKeySchema, statuses=(409,))
@limit_per_address("RATELIMIT_CREATE_KEY")
def create_key() -> ResponseReturnValue:
    """Register a user and issue their first key, shown this once."""
    fields = request_body()
    service = key_service()
    user = service.register_user(fields["user_name"], fields["user_email"], fields["org_name"])
    _, secret = service.issue_key(user, user.created_at, audit.API, limits=service.settings.default_limits)
    data = CreatedKeySchema().dump({"api_key": secret, **holder(user)})
    try:
        db.session.commit()
    except IntegrityError as error:
        db.session.rollback()
        raise ApiError(409, EMAIL_TAKEN) from error
    return success_response(KEY_CREATED, data)


@bp.get("/check-key")
@documented(data=CheckedKeySchema)
def check_key() -> ResponseReturnValue:
    """Describe the key the gate has already authenticated.

    This answer runs in front of every API call, and what it says of a key never changes, so
    it is rendered once per cached key (by hand, in CheckedKeySchema's shape: a schema dump
    costs more than the rest of the view) and kept in CHECKED.
    """
    known = g.api_key
    answer = CHECKED.get(known)
    if answer is None:
        data = {**holder(known.holder), "created_at": timestamp(known.created_at)}
        answer = CHECKED[known] = success_body("API key is valid", data)
    return current_app.response_class(answer, mimetype=current_app.json.mimetype)


@bp.get("/verify")
@documented(data=FORWARDED)
def verify() -> ResponseReturnValue:
    """The gate's answer for a reverse proxy's forward authentication: 204 and who is calling.

    nginx auth_request, Traefik ForwardAuth and Envoy ext_authz call this with the client's
    headers; a refused key is answered as check-key answers it, by the gate. The headers are
    built once per cached key, like check-key's answer. HEAD is answered the same way.
    X-Auth-Max-Age says how long a proxy may keep the answer (PROXY_CACHE_SECONDS, and never
    past the key's expiry); a proxy that keeps it also asks /auth/key-versions whether the
    key's shard changed meanwhile (deploy/nginx). A key with limits or a quota (its own or its
    user's) gets none: each of its calls must reach the service to be counted.
    """
    known = g.api_key
    forwarded = FORWARDED_HEADERS.get(known)
    if forwarded is None:
        forwarded = FORWARDED_HEADERS[known] = [
            ("X-Auth-User-Id", str(known.user_id)),
            ("X-Auth-User-Email", header_value(known.user_email)),
            ("X-Auth-Org", header_value(known.org_name or "")),
            ("X-Auth-Key-Id", str(known.id)),
            ("X-Auth-Key-Prefix", known.display_prefix),
            *([("X-Auth-Scopes", known.scopes)] if known.scopes is not None else []),
        ]
    keep = 0.0 if known.limits is not None else float(current_app.config["PROXY_CACHE_SECONDS"])
    if known.expires_at is not None:
        keep = min(keep, (known.expires_at - clock.now()).total_seconds())
    headers = [*forwarded, (MAX_AGE, seconds_text(keep))] if keep > 0 else forwarded
    return NoContent(None, 204, headers)


@bp.get("/key-versions")
@public
@documented(data=KEY_VERSIONS)
def key_versions() -> ResponseReturnValue:
    """Every shard's key version, read now, for a proxy that keeps the answers of /auth/verify.

    One line of 16 hexadecimal digits per shard (keys.shard), shard 0 first: fixed widths, so
    that a proxy finds a shard's version at its offset. A proxy keeps a verify answer only
    while its shard's version stands still, and keeps these for X-Auth-Max-Age seconds:
    KEY_CACHE_POLL_SECONDS, as long as a worker goes without asking for the version.
    """
    versions = current_app.extensions["keyring"].shard_versions()
    body = "".join(f"{version:016x}\n" for version in versions)
    max_age = seconds_text(current_app.config["KEY_CACHE_POLL_SECONDS"])
    return current_app.response_class(body, mimetype="text/plain", headers={MAX_AGE: max_age})


def header_value(text: str) -> str:
    """Text as a header value: printable ASCII as is, anything else (and %) percent-encoded UTF-8.

    A header carries Latin-1 at best, and a newline in an organisation's name must not end it.
    """
    return quote(text, safe=HEADER_SAFE)


@bp.get("/keys")
@documented(query=KeyPageSchema, data=[ListedKeySchema])
def list_keys() -> ResponseReturnValue:
    """The caller's own keys, newest first, a page at a time; never a key or a digest.

    While more keys remain, a Link header (RFC 8288) names the next page: rel="next".
    """
    page = request_query()
    limit = page["limit"]
    service = key_service()
    found = service.user_keys(g.user.id, limit + 1, page["before"])
    listed = found[:limit]
    now = clock.now()
    recent = reports.recent_requests(db.session, [key.id for key in listed], now.date())
    data = ListedKeySchema(many=True).dump(listed)
    for key, row in zip(listed, data):
        row["requests_30d"] = recent.get(row["id"], 0)
        row["quota"] = service.quota_use(key, now)
    response = success_response("API keys", data)
    if len(found) > limit:
        following = url_for("auth.list_keys", limit=limit, before=found[limit - 1].id)
        response.headers["Link"] = f'<{following}>; rel="next"'
    return response


@bp.post("/keys")
@documented(body=NewKeySchema, optional_body=True, data=IssuedKeySchema, statuses=(403, 409))
@limit_per_user("RATELIMIT_KEY_ISSUE", KEY_ISSUE_SCOPE)
def add_key() -> ResponseReturnValue:
    """Issue another key to the caller's user."""
    fields = request_body()
    calling = g.api_key.scopes
    scopes = scopes_for_new_key(calling, fields["scopes"]) if "scopes" in fields else calling
    user = db.session.get(User, g.user.id)
    key, secret = key_service().add_key(user, fields["name"], fields["expires_in_days"], acting_key(), scopes,
                                        *inherited_limits(g.api_key))
    return issued_answer(KEY_CREATED, IssuedKeySchema(), key, secret)


@bp.post("/keys/rotate")
@documented(body=RotateKeySchema, optional_body=True, data=RotatedKeySchema, statuses=(409,))
@limit_per_user("RATELIMIT_KEY_ISSUE", KEY_ISSUE_SCOPE)
def rotate_key() -> ResponseReturnValue:
    """Replace the calling key; it keeps working for the grace period, then expires."""
    fields = request_body()
    old = db.session.get(ApiKey, g.api_key.id)
    key, secret = key_service().rotate_key(old, fields["grace_hours"], fields["expires_in_days"], acting_key())
    return issued_answer("API key rotated, Store the new key securely", RotatedKeySchema(), key, secret,
                         previous_key_expires_at=old.expires_at)


@bp.post("/keys/leaked")
@public
@documented(body=LeakReportSchema, data=LeakReportResultSchema)
@limit_per_address("RATELIMIT_LEAK_REPORT")
def report_leaked_keys() -> ResponseReturnValue:
    """Revoke at once every active key in a list of leaked ones; open to anyone, like a scanner.

    Holding a key already lets anyone revoke it, so this grants no new power, only speed.
    """
    fields = request_body()
    revoked = key_service().revoke_leaked(fields["keys"], clock.now())
    db.session.commit()
    return success_response("Leaked keys revoked", LeakReportResultSchema().dump({"revoked": revoked}))


@bp.delete("/keys/<int:key_id>")
@documented(data=KeySchema, statuses=(404,))
def revoke_key(key_id: int) -> ResponseReturnValue:
    """Revoke one of the caller's keys, the calling key included; twice is harmless."""
    service = key_service()
    key = service.own_key(g.user.id, key_id)
    service.revoke(key, acting_key())
    data = KeySchema().dump(key)
    db.session.commit()
    return success_response("API key revoked", data)
