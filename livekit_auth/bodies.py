"""Reading a request's JSON body: the size, type and syntax checks before a schema validates it."""

import json
from typing import Any

from flask import current_app, request
from marshmallow import Schema
from werkzeug.exceptions import RequestEntityTooLarge

from .errors import ApiError


def load_json_body(schema: Schema, optional: bool = False) -> dict[str, Any]:
    """Read the request's JSON body and validate it with a schema, or fail with 400/415.

    An optional body may be left out entirely, and then means {}.
    """
    raw = request.get_data(cache=False)
    # A body sent in chunks, with no Content-Length, is read up to MAX_CONTENT_LENGTH and cut
    # there without a word: one more byte behind the limit means it was too large.
    if len(raw) >= current_app.config["MAX_CONTENT_LENGTH"] and request.environ["wsgi.input"].read(1):
        raise RequestEntityTooLarge()
    if optional and not raw.strip():
        return schema.load({})
    if not request.is_json:
        raise ApiError(415, "Content-Type must be application/json")
    if not raw.strip():
        raise ApiError(400, "The request body is empty; send a JSON object")
    try:
        document = json.loads(raw)
    except (ValueError, RecursionError) as error:
        raise ApiError(400, "The request body is not valid JSON") from error
    return schema.load(document)
