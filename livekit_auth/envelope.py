"""The documented response envelope: success, message, data."""

from typing import Any

from flask import Response, current_app, jsonify
from flask.typing import ResponseReturnValue


def success_response(message: str, data: Any) -> Response:
    """Build a 200 answer in the envelope."""
    return jsonify({"success": True, "message": message, "data": data})


def success_body(message: str, data: Any) -> bytes:
    """The body success_response sends (compact JSON and a newline), for an answer kept and sent again."""
    document = {"success": True, "message": message, "data": data}
    return (current_app.json.dumps(document, separators=(",", ":")) + "\n").encode()


def error_response(
    status: int, message: str, errors: Any = None, headers: dict[str, str] | None = None
) -> ResponseReturnValue:
    """Build an error answer: success false, a message, data null, per-field details if any."""
    body: dict[str, Any] = {"success": False, "message": message, "data": None}
    if errors:
        body["errors"] = errors
    return jsonify(body), status, headers or {}
