"""The floor with what the issue asks of every request, and nothing more.

The bare route of floor_app.py behind our request log (the JSON line written with one system
call, X-Request-ID, Cache-Control, the request counter) and a before_request hook that only
reads the x-api-key header. make bench serves it beside the floor: the gap between the two is
what those duties cost as we do them, before any key is checked.
"""

from flask import Flask, request

from livekit_auth.observability import RequestLog

from .floor_app import health

app = Flask(__name__)
app.add_url_rule("/health", view_func=health)


@app.before_request
def read_key() -> None:
    """Stand where our gate stands, doing none of its work."""
    request.environ.get("HTTP_X_API_KEY")


app.wsgi_app = RequestLog(app.wsgi_app)  # type: ignore[method-assign]
