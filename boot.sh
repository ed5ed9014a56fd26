#!/bin/sh
# Apply the migrations, then become the gunicorn master (so its PID is this script's).
set -e
cd "$(dirname "$0")"
# gunicorn reads WEB_CONCURRENCY itself, as it is imported, and would answer a bad value with a
# traceback: it is checked here first.
case "${WEB_CONCURRENCY-2}" in
  '' | *[!0-9]* | 0)
    echo "livekit-auth: WEB_CONCURRENCY='${WEB_CONCURRENCY}' is not a whole number of 1 or more" >&2
    exit 2
    ;;
esac
flask --app wsgi db upgrade
exec gunicorn --config gunicorn.conf.py wsgi:app
