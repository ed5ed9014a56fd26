#!/bin/sh
# Apply the migrations, then become the gunicorn master (so its PID is this script's).
set -e
cd "$(dirname "$0")"
flask --app wsgi db upgrade
exec gunicorn --config gunicorn.conf.py wsgi:app
