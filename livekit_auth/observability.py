"""One JSON log line per request, a request id, and the request metrics, around the Flask app.

This is WSGI middleware rather than Flask hooks: it runs once per request with no context
look-ups, and it is what every request pays, so each piece is the cheapest that does the job
(a line formatted by hand and written with one system call, the counter for each endpoint and
status bound once, the timestamp's seconds formatted once per second).

Nothing secret is logged: the path without its query string, and of a key only its id and
display prefix. The gate leaves the endpoint and the key in the WSGI environ for it.
"""

import itertools
import os
import re
import time
from collections.abc import Callable, Iterable
from json.encoder import encode_basestring_ascii as json_string
from typing import Any

from .metrics import REQUESTS

REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
LOGGED_ENDPOINT = "livekit_auth.endpoint"
LOGGED_KEY = "livekit_auth.key"
STDOUT = 1
WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class RequestLog:
    """WSGI middleware: X-Request-ID and Cache-Control on every answer, a log line, the metrics."""

    def __init__(self, wsgi_app: WsgiApp, output: int = STDOUT) -> None:
        self.wsgi_app = wsgi_app
        self.output = output
        self.counters: dict[tuple[str, str], Any] = {}
        self.second = -1
        self.second_text = ""
        self.new_process()
        os.register_at_fork(after_in_child=self.new_process)

    def new_process(self) -> None:
        """Start this process's log: its pid, and request ids as a random prefix and a count."""
        self.worker = os.getpid()
        self.id_prefix = os.urandom(8).hex()
        self.served = itertools.count()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        """Answer the request through the app, then log and count it."""
        started = time.perf_counter()
        given = environ.get("HTTP_X_REQUEST_ID")
        request_id = given if given and REQUEST_ID.fullmatch(given) else f"{self.id_prefix}{next(self.served):016x}"
        status_line = ""

        def start(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            nonlocal status_line
            status_line = status
            headers.append(("X-Request-ID", request_id))
            if not any(name.lower() == "cache-control" for name, _ in headers):
                headers.append(("Cache-Control", "no-store"))  # API answers name keys and users
            return start_response(status, headers, exc_info)

        body = self.wsgi_app(environ, start)
        seconds = time.perf_counter() - started
        status = status_line[:3]
        self.count(environ.get(LOGGED_ENDPOINT) or "unmatched", status)
        self.write(environ, status, seconds, request_id)
        return body

    def count(self, endpoint: str, status: str) -> None:
        """Count the request under its endpoint and status."""
        counter = self.counters.get((endpoint, status))
        if counter is None:
            counter = self.counters[endpoint, status] = REQUESTS.labels(endpoint, status)
        counter.inc()

    def write(self, environ: dict[str, Any], status: str, seconds: float, request_id: str) -> None:
        """Write the request's line in one system call, so workers' lines never interleave."""
        key = environ.get(LOGGED_KEY)
        key_fields = "" if key is None else f',"key_id":{key.id},"key_prefix":"{key.display_prefix}"'
        line = (
            f'{{"time":"{self.timestamp(time.time())}","method":{json_string(environ["REQUEST_METHOD"])},'
            f'"path":{json_string(path(environ))},"status":{status or 0},'
            f'"duration_ms":{round(seconds * 1000, 2)},"client":{json_string(environ.get("REMOTE_ADDR") or "")},'
            f'"request_id":"{request_id}","worker":{self.worker}{key_fields}}}\n'
        ).encode()
        while line:
            line = line[os.write(self.output, line):]

    def timestamp(self, now: float) -> str:
        """ISO 8601 in UTC to the millisecond; the seconds are formatted once per second."""
        second = int(now)
        if second != self.second:
            self.second = second
            self.second_text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
        return f"{self.second_text}.{int((now - second) * 1000):03d}+00:00"


def path(environ: dict[str, Any]) -> str:
    """The request's path as the client wrote it (WSGI hands it over as Latin-1)."""
    return environ.get("PATH_INFO", "").encode("latin-1").decode("utf-8", "replace")
