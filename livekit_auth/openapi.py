"""The OpenAPI 3.1 document, generated from the marshmallow schemas, and the /docs page."""

import re
from collections.abc import Callable
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, current_app, render_template, send_from_directory
from flask.typing import ResponseReturnValue
from marshmallow import Schema
from swagger_ui_bundle import swagger_ui_path
from werkzeug.routing import Rule

from . import schemas
from .apikeys import keys
from .apidoc import DOCUMENT, FORWARDED, KEY_VERSIONS, Operation, documented, operation_of
from .errors import ApiError
from .gate import is_public, public
from .throttles import THROTTLED

bp = Blueprint("docs", __name__)
SECURITY_SCHEME = "ApiKeyHeader"
DOCUMENT_ENTRY = "openapi_document"  # where the app keeps its document, in app.extensions
DOCS_ASSETS = frozenset({"swagger-ui.css", "swagger-ui-bundle.js"})  # what templates/docs.html loads
DOCS_HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    # As the admin's, but Swagger UI draws icons from data: URLs, fetches the document and sends
    # "Try it out" requests to this origin (tests/test_browser.py finds no violation).
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
    ),
}

DESCRIPTIONS = {
    200: "Success",
    400: "Invalid input: malformed JSON, a wrong field, an invalid email",
    401: "Invalid, missing, revoked, expired or suspended API key",
    403: "The API key lacks the scope asked for (X-Required-Scope), or a restricted key asked to issue a wider one",
    404: "No such key among the caller's keys",
    409: "Conflict: the email already has a user, or the user holds the most keys allowed",
    413: "The request body is over 64 KiB",
    414: "The request line is over 4094 bytes (answered by gunicorn, before the app)",
    415: "The body is not application/json",
    429: "Too many requests: an address's limit, or the key's or its user's own ('API key rate limit exceeded', "
         "'API key quota exhausted'); Retry-After says when to try again",
    431: "Over 50 request headers, or one over 8190 bytes (answered by gunicorn, before the app)",
    500: "Internal server error",
    503: "The database is unavailable",
}
FORWARDED_HEADERS = {
    "X-Auth-User-Id": "The key's user id",
    "X-Auth-User-Email": "The user's email; characters outside printable ASCII, and %, percent-encoded",
    "X-Auth-Org": "The user's organisation, encoded the same way; empty for none",
    "X-Auth-Key-Id": "The key's id",
    "X-Auth-Key-Prefix": "The key's display prefix",
    "X-Auth-Scopes": "A restricted key's scopes, space-separated; absent for a key with full access",
    "X-Auth-Max-Age": "Seconds a proxy may keep this answer (while the key's shard version stands still); "
                      "absent: it may not keep it",
}
KEY_VERSION_HEADER = {
    "name": "X-Auth-Key-Version", "in": "header", "required": False,
    "description": "The key version a proxy has seen for the key's shard: the answer comes from a state at "
                   "least that current",
    "schema": {"type": "string", "pattern": "^[0-9]{1,19}$"},
}
REQUIRED_SCOPE_HEADER = {
    "name": "X-Required-Scope", "in": "header", "required": False,
    "description": "A scope the key must carry (a proxy sets it per location); a restricted key without it "
                   "is refused with 403, a key with full access has every scope. Any gated endpoint reads it.",
    "schema": {"type": "string", "pattern": f"^{keys.SCOPE_PATTERN.pattern}$"},
}
# What an answer for a key with limits (its own or its user's) says of the tightest of them.
RATE_LIMIT_HEADERS = {
    "RateLimit-Limit": "How many checks the key's tightest limit or quota lets through per window; absent for "
                       "a key without limits",
    "RateLimit-Remaining": "How many are left in the window after this one",
    "RateLimit-Reset": "Seconds until the window is refilled",
}
REFUSAL_HEADERS = {
    "Retry-After": "Seconds until a request may pass again",
    **RATE_LIMIT_HEADERS,
}


def headers_object(described: dict[str, str]) -> dict[str, Any]:
    """OpenAPI's headers of a response, each a string with a description."""
    return {name: {"description": text, "schema": {"type": "string"}} for name, text in described.items()}


FORWARDED_RESPONSE = {
    "description": "A valid key; no body",
    "headers": headers_object({**FORWARDED_HEADERS, **RATE_LIMIT_HEADERS}),
}


def envelope(data: dict[str, Any]) -> dict[str, Any]:
    """The success envelope around a data schema."""
    return {
        "type": "object",
        "required": ["success", "message", "data"],
        "properties": {
            "success": {"const": True},
            "message": {"type": "string"},
            "data": data,
        },
    }


def error_envelope(status: int) -> dict[str, Any]:
    """The error envelope; only a 400 names the problems field by field."""
    properties: dict[str, Any] = {
        "success": {"const": False},
        "message": {"type": "string"},
        "data": {"type": "null"},
    }
    if status == 400:
        properties["errors"] = {
            "type": "object",
            "additionalProperties": {"type": "array", "items": {"type": "string"}},
        }
    return {"type": "object", "required": ["success", "message", "data"], "properties": properties,
            "additionalProperties": False}


def data_schema(data: Any) -> dict[str, Any]:
    """The OpenAPI schema of an envelope's data."""
    if data is None:
        return {"type": "null"}
    if isinstance(data, list):
        return {"type": "array", "items": schema_ref(data[0])}
    return schema_ref(data)


def schema_ref(schema: type[Schema]) -> dict[str, str]:
    """A $ref to a schema registered under its class name, less 'Schema'."""
    return {"$ref": f"#/components/schemas/{schema.__name__.removesuffix('Schema')}"}


def openapi_path(rule: Rule) -> str:
    """Flask's /keys/<int:key_id> as OpenAPI's /keys/{key_id}."""
    return re.sub(r"<(?:[^:<>]+:)?([^<>]+)>", r"{\1}", rule.rule)


def success_response(data: Any, gated: bool) -> dict[str, Any]:
    """The 200 answer of an endpoint whose data has this schema; a gated one's carries a limited key's headers."""
    if data == KEY_VERSIONS:
        lines = {"type": "string", "pattern": "^([0-9a-f]{16}\\n){256}$"}
        return {"description": "Each shard's key version, 16 hexadecimal digits a line",
                "headers": headers_object({"X-Auth-Max-Age": "Seconds a proxy may keep them"}),
                "content": {"text/plain": {"schema": lines}}}
    success = {"type": "object"} if data == DOCUMENT else envelope(data_schema(data))
    answer = {"description": DESCRIPTIONS[200], "content": {"application/json": {"schema": success}}}
    if gated:
        answer["headers"] = headers_object(RATE_LIMIT_HEADERS)
    return answer


def statuses(view: Callable[..., Any], declared: Operation) -> set[int]:
    """Every error status a documented view can answer: its own, and those that follow from the rest."""
    answered = {*declared.statuses, 414, 431, 500}  # 414 and 431: gunicorn's limits on any request
    if not is_public(view):
        # The gate: a refused key, a scope the key lacks (or an X-Required-Scope that is none), an
        # address throttled after failed checks, a key past its own or its user's limits.
        answered |= {400, 401, 403, 429}
    if declared.body is not None:
        answered |= {400, 413, 415}
    if declared.query is not None:
        answered.add(400)
    if THROTTLED.of(view):
        answered.add(429)
    if declared.uses_database:
        answered.add(503)
    return answered


def operation(endpoint: str, rule: Rule, declared: Operation) -> dict[str, Any]:
    """The OpenAPI operation for one endpoint, from what its route declares."""
    view = current_app.view_functions[endpoint]
    data = declared.data
    responses: dict[str, Any] = (
        {"204": FORWARDED_RESPONSE} if data == FORWARDED
        else {"200": success_response(data, not is_public(view))}
    )
    for status in sorted(statuses(view, declared)):
        responses[str(status)] = {"$ref": f"#/components/responses/Error{status}"}
    result: dict[str, Any] = {
        "operationId": endpoint.replace(".", "_"),
        "summary": (view.__doc__ or endpoint).strip().splitlines()[0],
        "tags": [endpoint.split(".")[0]],
        "responses": responses,
    }
    if is_public(view):
        result["security"] = []
    if declared.body is not None:
        result["requestBody"] = {
            "required": not declared.optional_body,
            "content": {"application/json": {"schema": schema_ref(declared.body)}},
        }
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "integer"}}
        for name in sorted(rule.arguments)
    ]
    if declared.query is not None:
        parameters.append({"in": "query", "schema": declared.query})
    if data == FORWARDED:
        parameters.extend([KEY_VERSION_HEADER, REQUIRED_SCOPE_HEADER])
    if parameters:
        result["parameters"] = parameters
    return result


def documented_rules() -> list[tuple[Rule, Operation]]:
    """The app's routes whose views declare an operation, with their declarations."""
    found = []
    for rule in current_app.url_map.iter_rules():
        declared = operation_of(current_app.view_functions[rule.endpoint])
        if declared is not None:
            found.append((rule, declared))
    return found


def build_document(title: str) -> dict[str, Any]:
    """Build the document from the app's routes."""
    plugin = MarshmallowPlugin()
    spec = APISpec(
        title=title,
        version="1.0.0",
        openapi_version="3.1.0",
        plugins=[plugin],
        info={"description": "API keys for the LiveKit Agents API."},
    )
    plugin.map_to_openapi_type(schemas.Timestamp, "string", None)
    spec.components.security_scheme(
        SECURITY_SCHEME, {"type": "apiKey", "in": "header", "name": "x-api-key"}
    )
    for status, description in DESCRIPTIONS.items():
        if status != 200:
            response = {"description": description, "content": {"application/json": {"schema": error_envelope(status)}}}
            if status == 429:
                response["headers"] = headers_object(REFUSAL_HEADERS)
            spec.components.response(f"Error{status}", response)
    documented = documented_rules()
    registered = set()
    for _, declared in documented:
        data = declared.data
        for schema in (declared.body, data[0] if isinstance(data, list) else data):
            if isinstance(schema, type) and schema not in registered:
                spec.components.schema(schema.__name__.removesuffix("Schema"), schema=schema)
                registered.add(schema)
    for rule, declared in documented:
        methods = sorted((rule.methods or set()) - {"HEAD", "OPTIONS"})
        spec.path(
            path=openapi_path(rule),
            operations={method.lower(): operation(rule.endpoint, rule, declared) for method in methods},
        )
    document = spec.to_dict()
    document["security"] = [{SECURITY_SCHEME: []}]
    return document


@bp.get("/openapi.json")
@public
@documented(data=DOCUMENT, uses_database=False)
def openapi_document() -> ResponseReturnValue:
    """This API's OpenAPI 3.1 document."""
    extensions = current_app.extensions
    if DOCUMENT_ENTRY not in extensions:  # once per app: it changes only with the code
        extensions[DOCUMENT_ENTRY] = build_document("livekit-auth")
    return extensions[DOCUMENT_ENTRY]


@bp.get("/docs")
@public
def docs_page() -> ResponseReturnValue:
    """A page that renders the OpenAPI document with Swagger UI, served from its package."""
    return render_template("docs.html"), DOCS_HEADERS


@bp.get("/docs/assets/<path:filename>")
@public
def docs_asset(filename: str) -> ResponseReturnValue:
    """The two files of Swagger UI that docs.html loads, from the swagger-ui-bundle package.

    The package holds more (a demo page pointed at petstore.swagger.io, an OAuth redirect
    page): none of it is served.
    """
    if filename not in DOCS_ASSETS:
        raise ApiError(404, "Not Found")
    response = send_from_directory(swagger_ui_path, filename)
    response.headers.update(DOCS_HEADERS)
    return response
