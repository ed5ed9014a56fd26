"""gunicorn settings, every one from the environment with a safe default."""

import os

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
timeout = int(os.environ.get("GUNICORN_TIMEOUT", "30"))
graceful_timeout = 10

# The access log names the path without its query string and no headers at all, so a key
# sent where it should not be (?api_key=…, a Referer) never reaches the log.
accesslog = "-"
access_log_format = '%(h)s %(t)s "%(m)s %(U)s %(H)s" %(s)s %(b)s %(M)sms'

# gunicorn 27 opens a control socket in a per-user directory by default; servers started
# side by side would share it. Nothing here uses gunicornc, so there is none.
control_socket_disable = True
