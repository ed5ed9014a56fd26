"""The documented response envelope: success, message, data."""

from functools import lru_cache
from typing import Any

from flask import Response, current_app, jsonify
from flask.typing import ResponseReturnValue


def success_response(message: str, data: Any) -> Response:
    """Build a 200 answer in the envelope."""
    return jsonify({"success": True, "message": message, "data": data})


def success_body(message: str, data: Any) -> bytes:
    """The body success_response sends, for an answer kept and sent again."""
    return rendered({"success": True, "message": message, "data": data})


def rendered(document: dict[str, Any]) -> bytes:
    """A document as jsonify sends it: compact JSON and a newline."""
    return (current_app.json.dumps(document, separators=(",", ":")) + "\n").encode()


@lru_cache(maxsize=256)
def failure_body(message: str) -> bytes:
    """The body of a failure without per-field details, rendered once per message.

    The messages come from a short fixed list (those of settings are fixed per process), and
    refusing a key is the path a client guessing keys drives as fast as it can.
    tests/test_speedups.py checks that the bytes are jsonify's.
    """
    return rendered({"success": False, "message": message, "data": None})


def error_response(
    status: int, message: str, errors: Any = None, headers: dict[str, str] | None = None
) -> ResponseReturnValue:
    """Build an error answer: success false, a message, data null, per-field details if any."""
    if errors:
        return jsonify({"success": False, "message": message, "data": None, "errors": errors}), status, headers or {}
    return current_app.response_class(failure_body(message), status, headers, mimetype=current_app.json.mimetype)
