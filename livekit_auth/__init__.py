"""livekit-auth: the API-key service in front of the LiveKit Agents API."""

import os
import sqlite3
from typing import Any, Mapping

from flask import Flask
from sqlalchemy import event
from werkzeug.middleware.proxy_fix import ProxyFix

from . import commands, config, errors, gate, health, openapi
from .admin import views as admin_views
from .apikeys.cache import KeyCache
from .apikeys.keyring import Keyring
from .apikeys.meter import default_limits
from .apikeys.services import KeySettings
from .apikeys.signal import signal_from_environment
from .apikeys.usage import UsageRecorder
from .auth import routes as auth_routes
from .extensions import csrf, db, migrate
from .observability import RequestLog
from .rate_limits import RateLimits
from .sessions import SessionOnlyWhenSent

PROJECT_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SQLITE_BUSY_TIMEOUT_MS = 5000
SQLITE_MMAP_BYTES = 2**31 - 2**16


def create_app(overrides: Mapping[str, Any] | None = None) -> Flask:
    """Build the app: settings from the environment, then any overrides (for tests)."""
    app = Flask(
        __name__,
        static_folder=os.path.join(PROJECT_ROOT, "static"),
        template_folder=os.path.join(PROJECT_ROOT, "templates"),
    )
    app.config.from_mapping(config.settings_from_env(os.environ, app.instance_path))
    app.config.from_mapping(overrides or {})
    if not app.config["SECRET_KEY"]:
        if app.config["ENVIRONMENT"] == "production":
            raise config.SettingError("LIVEKIT_AUTH_ENV=production needs an explicit SECRET_KEY")
        app.config["SECRET_KEY"] = config.load_or_create_secret_key(app.instance_path)
    app.wsgi_app = RequestLog(app.wsgi_app)  # type: ignore[method-assign]
    proxies = app.config["TRUSTED_PROXY_COUNT"]
    if proxies:
        # Only the last `proxies` X-Forwarded-* entries are believed, so a client cannot
        # pick its own address (and its own rate limit) by sending the header itself.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies, x_host=proxies)
    app.config.setdefault(
        "SQLALCHEMY_ENGINE_OPTIONS", config.engine_options(app.config["SQLALCHEMY_DATABASE_URI"])
    )
    app.json.sort_keys = False  # keep fields in the order the contract documents them
    app.session_interface = SessionOnlyWhenSent()
    register_extensions(app)
    register_blueprints(app)
    errors.register_errorhandlers(app)
    commands.register_commands(app)
    with app.app_context():
        engine = db.engine
    app.extensions["rate_limits"] = RateLimits(app.config)
    app.extensions["key_settings"] = KeySettings(app.config["MAX_ACTIVE_KEYS_PER_USER"], default_limits(app.config))
    app.extensions["keyring"] = Keyring(
        engine,
        KeyCache(app.config["KEY_CACHE_SIZE"], app.config["KEY_CACHE_POLL_SECONDS"], signal_from_environment()),
        UsageRecorder(engine, app.config["LAST_USED_INTERVAL_SECONDS"], app.config["LAST_USED_FLUSH_SECONDS"]),
        app.extensions["rate_limits"],
    )
    gate.register_gate(app)
    return app


def register_extensions(app: Flask) -> None:
    """Bind the extensions, and tune SQLite for several gunicorn workers."""
    if app.config["SQLALCHEMY_DATABASE_URI"].startswith("sqlite:"):
        os.makedirs(app.instance_path, exist_ok=True)
    db.init_app(app)
    migrate.init_app(app, db, directory=os.path.join(PROJECT_ROOT, "migrations"))
    csrf.init_app(app)
    with app.app_context():
        if db.engine.dialect.name == "sqlite":
            event.listen(db.engine, "connect", configure_sqlite)


def configure_sqlite(connection: sqlite3.Connection, record: Any) -> None:
    """WAL lets readers and one writer work at once; the busy timeout makes writers queue."""
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # In WAL mode NORMAL syncs at checkpoints, not at every commit: a commit survives any
    # crash of the application, though the last ones may be lost if the machine loses power.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    # 1 MiB of pages per connection: the operating system caches the file for every worker
    # at once, and a worker's memory stays flat however many keys it looks up.
    cursor.execute("PRAGMA cache_size=-1024")
    # Reads go through a memory map of the file (up to 2 GiB, SQLite's own ceiling) rather than
    # a read() per page: an uncached key costs a few B-tree pages, and on this path a system
    # call per page costs more than the search. The mapped pages are the operating system's
    # file cache, shared by every worker, not memory of the worker's own.
    cursor.execute(f"PRAGMA mmap_size={SQLITE_MMAP_BYTES}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def register_blueprints(app: Flask) -> None:
    """Attach the API, probe, documentation and admin blueprints."""
    app.register_blueprint(auth_routes.bp)
    app.register_blueprint(health.bp)
    app.register_blueprint(openapi.bp)
    app.register_blueprint(admin_views.bp)
