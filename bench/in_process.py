"""What one request costs inside a worker, without the network: our /health against the bare
route and against the bare route with our request log, through each app's WSGI callable, with
the production defaults (limits on, metrics in multiprocess mode, the request log written to a
file).

Run by make bench as a subprocess, so that its settings stay out of the servers' environment:
python -m bench.in_process DATABASE_URL LOG_FILE [REQUESTS]; it prints a JSON object on
standard error.
"""

import io
import json
import os
import sys
import tempfile
import time

os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="livekit-bench-metrics-")
from livekit_auth import create_app

from .floor_app import app as floor_app
from .floor_logged_app import app as floor_logged_app

ROUNDS = 7


def environ(path: str) -> dict:
    """A GET as gunicorn hands it to the app."""
    return {
        "REQUEST_METHOD": "GET", "PATH_INFO": path, "QUERY_STRING": "", "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000", "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1",
        "HTTP_HOST": "127.0.0.1:8000", "HTTP_USER_AGENT": "wrk", "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(), "wsgi.errors": sys.stderr, "wsgi.multithread": False,
        "wsgi.multiprocess": True, "wsgi.run_once": False, "wsgi.version": (1, 0),
    }


def microseconds_per_request(app, path: str, requests: int) -> float:
    """The best of several rounds of many requests, in µs each."""
    request = environ(path)

    def start_response(status, headers, exc_info=None):
        assert status.startswith("200"), status

    for _ in range(requests // 10):
        b"".join(app(dict(request), start_response))
    best = float("inf")
    for _ in range(ROUNDS):
        started = time.perf_counter()
        for _ in range(requests):
            b"".join(app(dict(request), start_response))
        best = min(best, (time.perf_counter() - started) / requests * 1e6)
    return best


def main() -> None:
    """Measure the bare route, the logged one and our /health in turn, twice, and print the best of each."""
    url, log_file = sys.argv[1], sys.argv[2]
    requests = int(sys.argv[3]) if len(sys.argv) > 3 else 20_000
    log = os.open(log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(log, 1)  # the request log goes where gunicorn's would: a file, not a terminal
    ours = create_app({
        "SQLALCHEMY_DATABASE_URI": url, "SECRET_KEY": "bench-secret", "METRICS_TOKEN": "bench-metrics-token",
        "RATELIMIT_ENABLED": True, "RATELIMIT_STORAGE_URI": "memory://",
    })
    apps = {"floor_us": floor_app, "floor_logged_us": floor_logged_app, "health_us": ours}
    figures = dict.fromkeys(apps, float("inf"))
    for _ in range(2):
        for name, app in apps.items():
            figures[name] = min(figures[name], microseconds_per_request(app, "/health", requests))
    print(json.dumps({name: round(value, 1) for name, value in figures.items()}), file=sys.stderr)


if __name__ == "__main__":
    main()
