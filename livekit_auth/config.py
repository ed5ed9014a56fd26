"""Settings, read from the environment in one place, with defaults that are safe."""

import os
import secrets
from pathlib import Path
from typing import Any, Mapping

SECRET_KEY_FILE = "secret_key"
SQLITE_FILE = "livekit_auth.db"
# Seconds a database may take to connect or to answer one statement before the
# request fails with a 503 instead of hanging a worker.
DATABASE_TIMEOUT_SECONDS = 5
TRUE_WORDS = {"1", "true", "yes", "on"}
FALSE_WORDS = {"0", "false", "no", "off", ""}
ENVIRONMENTS = ("development", "production")
DATABASE_SCHEMES = ("sqlite://", "postgres://", "postgresql://", "postgresql+psycopg://")


class SettingError(Exception):
    """A setting the app cannot start with; its message names the setting and what is accepted."""


def database_url(raw: str | None, instance_path: str) -> str:
    """Return the SQLAlchemy URL for DATABASE_URL, defaulting to a SQLite file in instance/."""
    if not raw:
        return f"sqlite:///{Path(instance_path) / SQLITE_FILE}"
    if not raw.startswith(DATABASE_SCHEMES):
        scheme = raw.split(":", 1)[0]
        raise SettingError(
            f"DATABASE_URL names a {scheme!r} database; use sqlite:///path or postgresql://user@host/name"
        )
    for scheme in ("postgres://", "postgresql://"):
        if raw.startswith(scheme):
            return "postgresql+psycopg://" + raw[len(scheme) :]
    return raw


def whole_number(environ: Mapping[str, str], name: str, default: int) -> int:
    """A setting that is a whole number, 0 or more."""
    raw = environ.get(name, str(default)).strip()
    if not raw.isascii() or not raw.isdigit():
        raise SettingError(f"{name}={raw!r} is not a whole number of 0 or more")
    return int(raw)


def seconds(environ: Mapping[str, str], name: str, default: float) -> float:
    """A setting that is a number of seconds, 0 or more."""
    raw = environ.get(name, str(default)).strip()
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise SettingError(f"{name}={raw!r} is not a number of seconds of 0 or more")
    return value


def switch(environ: Mapping[str, str], name: str, default: bool) -> bool:
    """A setting that is on or off: true/false, yes/no, on/off, 1/0 (any case)."""
    raw = environ.get(name)
    if raw is None:
        return default
    word = raw.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise SettingError(f"{name}={raw!r} is neither on nor off; write true or false")


def environment(environ: Mapping[str, str]) -> str:
    """LIVEKIT_AUTH_ENV: development or production, nothing in between."""
    raw = environ.get("LIVEKIT_AUTH_ENV", "development")
    if raw not in ENVIRONMENTS:
        raise SettingError(f"LIVEKIT_AUTH_ENV={raw!r} is not one of {', '.join(ENVIRONMENTS)}")
    return raw


def engine_options(url: str) -> dict[str, Any]:
    """Return engine settings that keep a failing database from hanging requests."""
    # The most recently used connection goes out first: a worker mostly reuses one or two,
    # whose caches stay warm, instead of cycling through (and filling) all of them.
    options: dict[str, Any] = {"pool_use_lifo": True}
    if url in ("sqlite://", "sqlite:///:memory:"):
        return {}  # one in-memory connection: there is no pool to order
    if url.startswith("postgresql"):
        timeout_ms = DATABASE_TIMEOUT_SECONDS * 1000
        # A pooled connection is pinged as it is checked out, so that after a restart of the
        # database no request fails on a connection that died meanwhile. Key checks read on the
        # keyring's held connection, not the pool, so the ping costs nothing on the hot path.
        options["pool_pre_ping"] = True
        options["connect_args"] = {
            "connect_timeout": DATABASE_TIMEOUT_SECONDS,
            "options": f"-c statement_timeout={timeout_ms}",
        }
    return options


def load_or_create_secret_key(instance_path: str) -> str:
    """Read the generated SECRET_KEY from instance/, creating it once with mode 0600.

    The file is written under a private name and then hard-linked into place, so two
    workers starting together agree on one key and never read a half-written file.
    """
    directory = Path(instance_path)
    directory.mkdir(parents=True, exist_ok=True)
    target = directory / SECRET_KEY_FILE
    if not target.exists():
        draft = directory / f".{SECRET_KEY_FILE}.{secrets.token_hex(8)}"
        descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_hex(32))
        try:
            os.link(draft, target)
        except FileExistsError:
            pass
        finally:
            draft.unlink()
    try:
        secret = target.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else "it is not UTF-8 text"
        raise SettingError(
            f"{target} cannot be read as the secret key ({reason}): delete it and a new one is generated, "
            "or set SECRET_KEY"
        ) from None
    if not secret:
        raise SettingError(
            f"{target} is empty: delete it and a new secret key is generated, or set SECRET_KEY"
        )
    return secret


def settings_from_env(environ: Mapping[str, str], instance_path: str) -> dict[str, Any]:
    """Build the Flask config mapping from environment variables."""
    url = database_url(environ.get("DATABASE_URL"), instance_path)
    return {
        "SECRET_KEY": environ.get("SECRET_KEY") or None,
        "SQLALCHEMY_DATABASE_URI": url,
        "MAX_CONTENT_LENGTH": 64 * 1024,
        "MAX_ACTIVE_KEYS_PER_USER": whole_number(environ, "MAX_ACTIVE_KEYS_PER_USER", 20),
        "LAST_USED_INTERVAL_SECONDS": whole_number(environ, "LAST_USED_INTERVAL_SECONDS", 60),
        "LAST_USED_FLUSH_SECONDS": seconds(environ, "LAST_USED_FLUSH_SECONDS", 2),
        "KEY_CACHE_SIZE": whole_number(environ, "KEY_CACHE_SIZE", 5000),
        "KEY_CACHE_POLL_SECONDS": seconds(environ, "KEY_CACHE_POLL_SECONDS", 0.5),
        "PROXY_CACHE_SECONDS": seconds(environ, "PROXY_CACHE_SECONDS", 300),
        "ROTATION_AGE_DAYS": whole_number(environ, "ROTATION_AGE_DAYS", 90),
        "ADMIN_IDLE_TIMEOUT_MINUTES": whole_number(environ, "ADMIN_IDLE_TIMEOUT_MINUTES", 30),
        "ADMIN_LOGIN_MAX_FAILURES": 5,
        "ADMIN_LOGIN_WINDOW_MINUTES": 15,
        "SESSION_COOKIE_NAME": "livekit_admin",
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "SESSION_COOKIE_SECURE": switch(environ, "SESSION_COOKIE_SECURE", False),
        "WTF_CSRF_CHECK_DEFAULT": False,
        "RATELIMIT_ENABLED": switch(environ, "RATELIMIT_ENABLED", True),
        "RATELIMIT_STORAGE_URI": environ.get("RATELIMIT_STORAGE_URI", "memory://"),
        "RATELIMIT_CREATE_KEY": environ.get("RATELIMIT_CREATE_KEY", "10 per hour"),
        "RATELIMIT_FAILED_AUTH": environ.get("RATELIMIT_FAILED_AUTH", "60 per minute"),
        "RATELIMIT_ADMIN_LOGIN": environ.get("RATELIMIT_ADMIN_LOGIN", "5 per 15 minutes"),
        "RATELIMIT_KEY_ISSUE": environ.get("RATELIMIT_KEY_ISSUE", "30 per hour"),
        "RATELIMIT_LEAK_REPORT": environ.get("RATELIMIT_LEAK_REPORT", "30 per minute"),
        "KEY_RATE_LIMIT_DEFAULT": environ.get("KEY_RATE_LIMIT_DEFAULT") or None,
        "KEY_QUOTA_DEFAULT": environ.get("KEY_QUOTA_DEFAULT") or None,
        "RATELIMIT_KEY_PREFIX": environ.get("RATELIMIT_KEY_PREFIX", "livekit_auth"),
        "RATELIMIT_IPV6_PREFIX": whole_number(environ, "RATELIMIT_IPV6_PREFIX", 64),
        "TRUSTED_PROXY_COUNT": whole_number(environ, "TRUSTED_PROXY_COUNT", 0),
        "METRICS_TOKEN": environ.get("METRICS_TOKEN") or None,
        "ENVIRONMENT": environment(environ),
    }
