"""gunicorn settings, every one from the environment with a safe default."""

import gc
import ipaddress
import json
import os
import shutil
import tempfile

import gunicorn.util

if os.environ.get("FLASK_DEBUG", "").lower() in {"1", "true", "yes", "on"}:
    raise SystemExit("Refusing to serve with FLASK_DEBUG on: the debugger runs any code it is sent")


def whole_number(name: str, default: int, minimum: int) -> int:
    """A setting that is a whole number, or a one-line refusal that names it."""
    raw = os.environ.get(name, str(default)).strip()
    if not (raw.isascii() and raw.isdigit() and int(raw) >= minimum):
        raise SystemExit(f"livekit-auth: {name}={raw!r} is not a whole number of {minimum} or more")
    return int(raw)


def is_loopback(host: str) -> bool:
    """Tell whether an address to bind is this machine's own, where no other machine reaches."""
    try:
        return host == "localhost" or ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


host = os.environ.get("HOST", "127.0.0.1")
# A sync worker serves one connection at a time, so a client that sends half a request holds a
# whole worker until GUNICORN_TIMEOUT: four such clients stalled every other request (threads
# only raise the count). Beyond loopback the service is served behind a buffering proxy, which
# TRUSTED_PROXY_COUNT declares.
if not is_loopback(host) and whole_number("TRUSTED_PROXY_COUNT", 0, 0) == 0:
    raise SystemExit(
        f"livekit-auth: HOST={host} serves beyond this machine without a proxy, where a slow client holds a whole "
        "worker; serve it behind nginx (docs/deployment.md) and set TRUSTED_PROXY_COUNT=1"
    )
bind = f"{host}:{whole_number('PORT', 8000, 0)}"
workers = whole_number("WEB_CONCURRENCY", 2, 1)
# A worker silent this long is killed and replaced; its request gets no answer, and nothing
# it had not committed is kept (every 200 from create-key follows its commit).
timeout = whole_number("GUNICORN_TIMEOUT", 30, 1)
graceful_timeout = 10
keepalive = 5

# Requests larger than any this API needs are refused by gunicorn before the app sees them:
# a 4 KiB request line, at most 50 headers, each at most 8 KiB.
limit_request_line = 4094
limit_request_fields = 50
limit_request_field_size = 8190
GUNICORN_REFUSALS = {
    414: f"The request line is over {limit_request_line} bytes",
    431: f"The request has over {limit_request_fields} headers, or one over {limit_request_field_size} bytes",
}


def write_error_envelope(sock, status_int, reason, mesg):
    """gunicorn's own answer to a request it refuses unread (too long, malformed), in the envelope.

    gunicorn writes these as HTML through gunicorn.util.write_error, before any app code runs;
    clients of this API read JSON. tests/test_server.py fails if gunicorn stops calling it.
    """
    message = GUNICORN_REFUSALS.get(status_int, reason)
    body = json.dumps({"success": False, "message": message, "data": None}).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
        f"Cache-Control: no-store\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    gunicorn.util.write_nonblock(sock, head.encode("latin-1") + body)


gunicorn.util.write_error = write_error_envelope

# The app writes one JSON line per request to standard output (path without query string,
# never a key), so gunicorn's own access log is off.
accesslog = None
errorlog = "-"

# gunicorn 27 opens a control socket in a per-user directory by default; servers started
# side by side would share it. Nothing here uses gunicornc, so there is none.
control_socket_disable = True

# Metrics from every worker are added up through files in one directory per server.
metrics_directory_made = "PROMETHEUS_MULTIPROC_DIR" not in os.environ
if metrics_directory_made:
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="livekit-auth-metrics-")


# The workers of this server hear of each other's key changes at once through one number in a
# file made here, before they are forked (livekit_auth/apikeys/signal.py). This file does not import
# the app: prometheus_client must first be imported after PROMETHEUS_MULTIPROC_DIR is set.
if "LIVEKIT_AUTH_KEY_SIGNAL" not in os.environ:
    signal_descriptor, signal_path = tempfile.mkstemp(prefix="livekit-auth-keys-")
    os.write(signal_descriptor, bytes(8))
    os.close(signal_descriptor)
    os.environ["LIVEKIT_AUTH_KEY_SIGNAL"] = signal_path


# memory:// limits count in a file every worker of this server maps (livekit_auth/rate_limits.py),
# so that they hold across the workers and outlive any one of them.
if "LIVEKIT_AUTH_LIMIT_FILE" not in os.environ:
    limit_descriptor, limit_path = tempfile.mkstemp(prefix="livekit-auth-limits-")
    os.close(limit_descriptor)
    os.environ["LIVEKIT_AUTH_LIMIT_FILE"] = limit_path


def on_exit(server):
    """Remove the key signal and the limits' file, and the metrics directory if this server made it."""
    for made in ("LIVEKIT_AUTH_KEY_SIGNAL", "LIVEKIT_AUTH_LIMIT_FILE"):
        try:
            os.unlink(os.environ[made])
        except FileNotFoundError:
            pass
    if metrics_directory_made:
        shutil.rmtree(os.environ["PROMETHEUS_MULTIPROC_DIR"], ignore_errors=True)


def child_exit(server, worker):
    """Let the metrics of a worker that exited stop counting as live."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def post_worker_init(worker):
    """Set aside everything the worker loaded from the garbage collector's full passes.

    The app's modules and their objects (about 100,000) live as long as the worker. Left to
    the collector, each full pass walked them all: 50-60 ms every 8,000 requests or so, under
    load, which is 6-8 µs per request on average and a pause in the slowest answers. Objects
    made by requests are collected as before.

    The app gets the worker's heartbeat ("worker_heartbeat" in its extensions): a response
    that streams for longer than GUNICORN_TIMEOUT (the CSV export) beats it between chunks,
    or gunicorn would take the worker for hung and kill it mid-answer.
    """
    gc.freeze()
    extensions = getattr(getattr(worker, "wsgi", None), "extensions", None)
    if extensions is not None:
        extensions["worker_heartbeat"] = worker.notify


def worker_exit(server, worker):
    """Write the worker's last notes of key use and close its held connection."""
    keyring = getattr(getattr(worker, "wsgi", None), "extensions", {}).get("keyring")
    if keyring is not None:
        keyring.close()
