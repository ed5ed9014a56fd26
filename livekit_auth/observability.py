"""One JSON log line per request, a request id, and the request metrics.

Nothing secret is logged: the path without its query string, and of a key only its id and
display prefix.
"""

import json
import logging
import os
import re
import sys
import time
import uuid
from datetime import datetime, timezone

from flask import Flask, g, request
from werkzeug.wrappers import Response

from .metrics import LATENCY, REQUESTS

request_logger = logging.getLogger("livekit_auth.requests")
REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

def start_request() -> None:
    """Take the caller's X-Request-ID when it is sane, or make one; start the clock."""
    g.started = time.perf_counter()
    given = request.headers.get("X-Request-ID", "")
    g.request_id = given if REQUEST_ID.fullmatch(given) else uuid.uuid4().hex


def finish_request(response: Response) -> Response:
    """Return the request id, keep API answers out of caches, log the line, count it."""
    response.headers["X-Request-ID"] = g.setdefault("request_id", uuid.uuid4().hex)
    response.headers.setdefault("Cache-Control", "no-store")
    seconds = time.perf_counter() - g.get("started", time.perf_counter())
    endpoint = request.endpoint or "unmatched"
    REQUESTS.labels(endpoint, str(response.status_code)).inc()
    LATENCY.labels(endpoint).observe(seconds)
    line = {
        "time": datetime.now(timezone.utc).isoformat(timespec="milliseconds"),
        "method": request.method,
        "path": request.path,
        "status": response.status_code,
        "duration_ms": round(seconds * 1000, 2),
        "client": request.remote_addr,
        "request_id": g.get("request_id"),
        "worker": os.getpid(),
    }
    key = g.get("api_key")
    if key is not None:
        line["key_id"] = key.id
        line["key_prefix"] = key.display_prefix
    request_logger.info(json.dumps(line))
    return response


def configure_request_log() -> None:
    """Write request lines, bare JSON, to standard output (gunicorn's access log is off)."""
    if request_logger.handlers:
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter("%(message)s"))
    request_logger.addHandler(handler)
    request_logger.setLevel(logging.INFO)
    request_logger.propagate = False


def register_observability(app: Flask) -> None:
    """Attach the request id and the log line; first, so that every other hook is timed."""
    configure_request_log()
    app.before_request(start_request)
    app.after_request(finish_request)
