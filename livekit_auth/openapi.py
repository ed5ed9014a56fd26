"""The OpenAPI 3.1 document, generated from the marshmallow schemas, and the /docs page."""

import re
from typing import Any

from apispec import APISpec
from apispec.ext.marshmallow import MarshmallowPlugin
from flask import Blueprint, current_app, render_template, send_from_directory
from flask.typing import ResponseReturnValue
from marshmallow import Schema
from swagger_ui_bundle import swagger_ui_path
from werkzeug.routing import Rule

from . import schemas
from .gate import public

bp = Blueprint("docs", __name__)
SECURITY_SCHEME = "ApiKeyHeader"
DOCUMENT = "the OpenAPI document itself, outside the envelope"
DOCUMENT_ENTRY = "openapi_document"  # where the app keeps its document, in app.extensions
FORWARDED = "204 and no body: the caller in X-Auth-* headers"
FORWARDED_HEADERS = {
    "X-Auth-User-Id": "The key's user id",
    "X-Auth-User-Email": "The user's email; characters outside printable ASCII, and %, percent-encoded",
    "X-Auth-Org": "The user's organisation, encoded the same way; empty for none",
    "X-Auth-Key-Id": "The key's id",
    "X-Auth-Key-Prefix": "The key's display prefix",
}

DESCRIPTIONS = {
    200: "Success",
    400: "Invalid input: malformed JSON, a wrong field, an invalid email",
    401: "Invalid, missing, revoked or expired API key",
    404: "No such key among the caller's keys",
    409: "Conflict: the email already has a user, or the user holds the most keys allowed",
    413: "The request body is over 64 KiB",
    415: "The body is not application/json",
    429: "Too many requests under a rate limit; Retry-After says when to try again",
    500: "Internal server error",
    503: "The database is unavailable",
}

# What each JSON endpoint takes and returns: (request schema, data schema, error statuses).
# A test checks that every route of the app is here.
OPERATIONS: dict[str, tuple[type[Schema] | None, Any, list[int]]] = {
    "auth.create_key": (schemas.CreateKeySchema, schemas.CreatedKeySchema, [400, 409, 413, 415, 429]),
    "auth.check_key": (None, schemas.CheckedKeySchema, [401, 429]),
    "auth.verify": (None, FORWARDED, [401, 429]),
    "auth.list_keys": (None, [schemas.ListedKeySchema], [400, 401, 429]),
    "auth.add_key": (schemas.NewKeySchema, schemas.IssuedKeySchema, [400, 401, 409, 413, 415, 429]),
    "auth.rotate_key": (schemas.RotateKeySchema, schemas.RotatedKeySchema, [400, 401, 409, 413, 415, 429]),
    "auth.revoke_key": (None, schemas.KeySchema, [401, 404, 429]),
    "auth.report_leaked_keys": (schemas.LeakReportSchema, schemas.LeakReportResultSchema, [400, 413, 415, 429]),
    "health.live": (None, None, []),
    "health.ready": (None, None, []),
    "docs.openapi_document": (None, DOCUMENT, []),
}
# Public endpoints whose request body may be left out entirely.
OPTIONAL_BODIES = {"auth.add_key", "auth.rotate_key"}
# Endpoints that read arguments from the query string.
QUERIES = {"auth.list_keys": schemas.KeyPageSchema}
FORWARDED_RESPONSE = {
    "description": "A valid key; no body",
    "headers": {
        name: {"description": text, "schema": {"type": "string"}} for name, text in FORWARDED_HEADERS.items()
    },
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


ERROR_ENVELOPE = {
    "type": "object",
    "required": ["success", "message", "data"],
    "properties": {
        "success": {"const": False},
        "message": {"type": "string"},
        "data": {"type": "null"},
        "errors": {
            "type": "object",
            "additionalProperties": {"type": "array", "items": {"type": "string"}},
        },
    },
}


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


def success_response(data: Any) -> dict[str, Any]:
    """The 200 answer of an endpoint whose data has this schema."""
    success = {"type": "object"} if data == DOCUMENT else envelope(data_schema(data))
    return {"description": DESCRIPTIONS[200], "content": {"application/json": {"schema": success}}}


def operation(endpoint: str, rule: Rule, method: str) -> dict[str, Any]:
    """The OpenAPI operation for one endpoint and method."""
    body, data, errors = OPERATIONS[endpoint]
    view = current_app.view_functions[endpoint]
    responses: dict[str, Any] = (
        {"204": FORWARDED_RESPONSE} if data == FORWARDED else {"200": success_response(data)}
    )
    for status in sorted({*errors, 500, 503} if endpoint != "health.live" else {500}):
        responses[str(status)] = {"$ref": f"#/components/responses/Error{status}"}
    result: dict[str, Any] = {
        "operationId": endpoint.replace(".", "_"),
        "summary": (view.__doc__ or endpoint).strip().splitlines()[0],
        "tags": [endpoint.split(".")[0]],
        "responses": responses,
    }
    if getattr(view, "is_public", False):
        result["security"] = []
    if body is not None:
        result["requestBody"] = {
            "required": endpoint not in OPTIONAL_BODIES,
            "content": {"application/json": {"schema": schema_ref(body)}},
        }
    parameters: list[dict[str, Any]] = [
        {"name": name, "in": "path", "required": True, "schema": {"type": "integer"}}
        for name in sorted(rule.arguments)
    ]
    if endpoint in QUERIES:
        parameters.append({"in": "query", "schema": QUERIES[endpoint]})
    if parameters:
        result["parameters"] = parameters
    return result


def documented_rules() -> list[Rule]:
    """The app's routes that belong in the document: all but static files and pages."""
    return [rule for rule in current_app.url_map.iter_rules() if rule.endpoint in OPERATIONS]


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
            spec.components.response(
                f"Error{status}",
                {"description": description, "content": {"application/json": {"schema": ERROR_ENVELOPE}}},
            )
    registered = set()
    for body, data, _ in OPERATIONS.values():
        for schema in (body, data[0] if isinstance(data, list) else data):
            if isinstance(schema, type) and schema not in registered:
                spec.components.schema(schema.__name__.removesuffix("Schema"), schema=schema)
                registered.add(schema)
    for rule in documented_rules():
        methods = sorted((rule.methods or set()) - {"HEAD", "OPTIONS"})
        spec.path(
            path=openapi_path(rule),
            operations={method.lower(): operation(rule.endpoint, rule, method) for method in methods},
        )
    document = spec.to_dict()
    document["security"] = [{SECURITY_SCHEME: []}]
    return document


@bp.get("/openapi.json")
@public
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
    return render_template("docs.html")


@bp.get("/docs/assets/<path:filename>")
@public
def docs_asset(filename: str) -> ResponseReturnValue:
    """Swagger UI's own files, from the swagger-ui-bundle package."""
    return send_from_directory(swagger_ui_path, filename)
