"""What a JSON endpoint takes and answers, declared once on its route.

    @bp.post("/keys")
    @documented(body=NewKeySchema, data=IssuedKeySchema, optional_body=True)
    def add_key():
        fields = request_body()
        ...

The view loads its input with the schemas it declares (request_body, request_query), and the
OpenAPI document is built from the same declarations.

Only what the route itself decides is declared: the statuses that follow from the rest are
added by openapi.py (401 and 429 from the gate on a route that is not @public, 400/413/415
from a body, 429 from a rate limit decorator, 500 and 503 everywhere).
"""

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from flask import current_app, request
from marshmallow import Schema

from .bodies import load_json_body
from .marks import Marks

View = TypeVar("View", bound=Callable[..., Any])

# Answers that are not the envelope around a schema's data.
DOCUMENT = "the OpenAPI document itself, outside the envelope"
FORWARDED = "204 and no body: the caller in X-Auth-* headers"
KEY_VERSIONS = "text/plain: each shard's key version, for proxies"


@dataclass(frozen=True)
class Operation:
    """One endpoint's declaration."""

    # The request body's schema, and whether the body may be left out entirely.
    body: type[Schema] | None = None
    optional_body: bool = False
    # The query string's schema.
    query: type[Schema] | None = None
    # The success answer's data: a schema, [schema] for a list, None for null, or DOCUMENT/FORWARDED/KEY_VERSIONS.
    data: Any = None
    # Statuses the view itself answers besides the derived ones (404, 409, ...).
    statuses: tuple[int, ...] = field(default=())
    # False for a probe that answers without the database: no 503.
    uses_database: bool = True


OPERATIONS: Marks[Operation] = Marks()


def documented(**declared: Any) -> Callable[[View], View]:
    """Declare an endpoint's input, output and own statuses for its view."""

    def mark(view: View) -> View:
        OPERATIONS.put(view, Operation(**declared))
        return view

    return mark


def operation_of(view: Callable[..., Any]) -> Operation | None:
    """The declaration of a view, if it is a documented JSON endpoint."""
    return OPERATIONS.of(view)


def declared() -> Operation:
    """The declaration of the view serving the current request."""
    operation = operation_of(current_app.view_functions[request.endpoint])
    assert operation is not None, f"{request.endpoint} declares no operation"
    return operation


def request_body() -> dict[str, Any]:
    """The request's JSON body, loaded with the schema the view declares (or 400, 413, 415)."""
    operation = declared()
    assert operation.body is not None, f"{request.endpoint} declares no body"
    return load_json_body(operation.body(), optional=operation.optional_body)


def request_query() -> dict[str, Any]:
    """The query string, loaded with the schema the view declares (or 400)."""
    operation = declared()
    assert operation.query is not None, f"{request.endpoint} declares no query"
    return operation.query().load(request.args)
