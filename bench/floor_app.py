"""The framework's floor: a bare Flask app with one route that answers our JSON envelope.

make bench serves it with the project's own gunicorn.conf.py, beside the real app, and takes
every ratio against it.
"""

from flask import Flask, jsonify

app = Flask(__name__)


@app.get("/health")
def health():
    """The same envelope our /health answers."""
    return jsonify({"success": True, "message": "ok", "data": None})


# The service nginx protects in the bench's proxy rows (bench/proxy.py), at the path it protects.
app.add_url_rule("/agents/health", "agents_health", health)
