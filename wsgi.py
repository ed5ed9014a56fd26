"""The WSGI entry point gunicorn serves as wsgi:app."""

from livekit_auth import create_app

app = create_app()
