"""The WSGI entry point gunicorn serves as wsgi:app (and the flask command loads)."""

from livekit_auth import create_app
from livekit_auth.config import SettingError

try:
    app = create_app()
except SettingError as error:
    # One line that names the setting, not a traceback: it is the operator's to fix.
    raise SystemExit(f"livekit-auth: {error}") from None
