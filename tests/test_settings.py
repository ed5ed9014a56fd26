"""Settings: every one is checked at start, and a bad one stops it with one line naming it."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from livekit_auth import create_app
from livekit_auth.config import SettingError, load_or_create_secret_key

from bench.servers import PROJECT_ROOT, free_port

BIN = Path(sys.executable).parent


def run(command: list[str], tmp_path: Path, **settings: str) -> subprocess.CompletedProcess[str]:
    """Run a command of the project as an operator would, with some settings."""
    env = {**os.environ, "DATABASE_URL": f"sqlite:///{tmp_path / 'settings.db'}", "SECRET_KEY": "x",
           "XDG_RUNTIME_DIR": str(tmp_path), **settings}
    return subprocess.run(command, cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("name, value, says", [
    ("RATELIMIT_CREATE_KEY", "lots", "is not a rate limit; write it as '10 per hour' or '60/minute'"),
    ("RATELIMIT_CREATE_KEY", "10 per hour;5 per minute", "names 2 limits; it takes one, such as '10 per hour'"),
    ("RATELIMIT_FAILED_AUTH", "10 per 0 hour", "has a window of no time; write it as '10 per hour' or '60/minute'"),
    ("RATELIMIT_IPV6_PREFIX", "129", "is not a prefix length from 1 to 128"),
    ("RATELIMIT_KEY_ISSUE", "10/0minute", "has a window of no time; write it as '10 per hour' or '60/minute'"),
    ("RATELIMIT_ENABLED", "ture", "is neither on nor off; write true or false"),
    ("SESSION_COOKIE_SECURE", "yes-please", "is neither on nor off; write true or false"),
    ("LIVEKIT_AUTH_ENV", "prod", "is not one of development, production"),
    ("KEY_CACHE_SIZE", "abc", "is not a whole number of 0 or more"),
    ("LAST_USED_FLUSH_SECONDS", "-1", "is not a number of seconds of 0 or more"),
    ("RATELIMIT_STORAGE_URI", "nosuch://x", "names no limit store; use memory:// or redis://host:6379/0"),
    ("RATELIMIT_STORAGE_URI", "redis://127.0.0.1:notaport/0", "names no limit store; use memory:// or redis://host:6379/0"),
    ("RATELIMIT_STORAGE_URI", "redis://127.0.0.1:99999/0", "names no limit store; use memory:// or redis://host:6379/0"),
])
@pytest.mark.slow
def test_a_bad_setting_stops_every_command_with_one_line(tmp_path, name, value, says) -> None:
    result = run([str(BIN / "flask"), "--app", "wsgi", "keys", "list"], tmp_path, **{name: value})
    assert result.returncode != 0
    assert result.stderr.strip() == f"livekit-auth: {name}={value!r} {says}"


@pytest.mark.slow
def test_a_database_of_another_kind_is_named_not_imported(tmp_path) -> None:
    result = run([str(BIN / "flask"), "--app", "wsgi", "db", "upgrade"], tmp_path,
                 DATABASE_URL="mysql://root@127.0.0.1/x")
    assert result.returncode != 0
    assert result.stderr.strip() == (
        "livekit-auth: DATABASE_URL names a 'mysql' database; use sqlite:///path or postgresql://user@host/name"
    )


@pytest.mark.slow
def test_an_unreachable_database_is_one_line_at_start(tmp_path) -> None:
    url = f"postgresql://ops:s3cret@127.0.0.1:{free_port()}/livekit"
    result = run([str(BIN / "flask"), "--app", "wsgi", "db", "upgrade"], tmp_path, DATABASE_URL=url)
    assert result.returncode != 0
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("livekit-auth: cannot reach the database at postgresql+psycopg://ops:***@127.0.0.1:")
    assert "Traceback" not in result.stderr and "s3cret" not in result.stderr


@pytest.mark.parametrize("name, value", [("GUNICORN_TIMEOUT", "0"), ("PORT", "80a")])
def test_a_bad_server_setting_stops_gunicorn_with_one_line(tmp_path, name, value) -> None:
    result = run([str(BIN / "gunicorn"), "--config", "gunicorn.conf.py", "--check-config", "wsgi:app"],
                 tmp_path, **{name: value})
    assert result.returncode != 0
    assert f"livekit-auth: {name}={value!r} is not a whole number" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(("host", "proxies"), [("0.0.0.0", "0"), ("192.0.2.10", "0"), ("::", "0"),
                                               ("auth.example.com", "0"), ("0.0.0.0", "00")])
def test_serving_beyond_this_machine_without_a_proxy_is_refused_with_one_line(tmp_path, host, proxies) -> None:
    result = run([str(BIN / "gunicorn"), "--config", "gunicorn.conf.py", "--check-config", "wsgi:app"],
                 tmp_path, HOST=host, TRUSTED_PROXY_COUNT=proxies)
    assert result.returncode != 0
    assert result.stderr.strip() == (
        f"livekit-auth: HOST={host} serves beyond this machine without a proxy, where a slow client holds a whole "
        "worker; serve it behind nginx (docs/deployment.md) and set TRUSTED_PROXY_COUNT=1"
    )


@pytest.mark.parametrize(("host", "proxies"), [("127.0.0.1", "0"), ("127.0.0.2", "0"), ("::1", "0"),
                                               ("localhost", "0"), ("0.0.0.0", "1")])
@pytest.mark.slow
def test_loopback_or_a_declared_proxy_serves(tmp_path, host, proxies) -> None:
    result = run([str(BIN / "gunicorn"), "--config", "gunicorn.conf.py", "--check-config", "wsgi:app"],
                 tmp_path, HOST=host, TRUSTED_PROXY_COUNT=proxies)
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
def test_a_worker_sets_what_it_loaded_aside_from_the_garbage_collector(tmp_path) -> None:
    # gunicorn.conf.py's hooks, called as gunicorn calls them in a worker that loaded the app.
    script = (
        "import gc, runpy\n"
        "import wsgi\n"
        "conf = runpy.run_path('gunicorn.conf.py')\n"
        "conf['post_worker_init'](None)\n"
        "print(gc.get_freeze_count())\n"
        "conf['on_exit'](None)\n"
    )
    result = run([sys.executable, "-c", script], tmp_path)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.split()[-1]) > 50_000


@pytest.mark.parametrize("value", ["abc", "0", ""])
def test_a_bad_worker_count_stops_make_run_before_gunicorn_starts(tmp_path, value) -> None:
    result = run([str(PROJECT_ROOT / "boot.sh")], tmp_path, WEB_CONCURRENCY=value,
                 PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}")
    assert result.returncode == 2
    assert result.stderr.strip() == f"livekit-auth: WEB_CONCURRENCY='{value}' is not a whole number of 1 or more"


def test_an_empty_secret_key_file_is_refused_with_what_to_do(tmp_path) -> None:
    (tmp_path / "secret_key").write_text("\n")
    with pytest.raises(SettingError, match="secret_key is empty: delete it"):
        load_or_create_secret_key(str(tmp_path))


@pytest.mark.parametrize("make, reason", [
    (lambda path: path.mkdir(), "Is a directory"),
    (lambda path: path.write_bytes(b"\xff\xfe not text"), "it is not UTF-8 text"),
])
def test_a_secret_key_file_that_cannot_be_read_is_refused_with_what_to_do(tmp_path, make, reason) -> None:
    make(tmp_path / "secret_key")
    with pytest.raises(SettingError, match=f"secret_key cannot be read as the secret key \\({reason}\\): delete it"):
        load_or_create_secret_key(str(tmp_path))


def test_production_refuses_to_start_without_a_secret_key(database_uri) -> None:
    with pytest.raises(SettingError, match="SECRET_KEY"):
        create_app({"SQLALCHEMY_DATABASE_URI": database_uri, "SECRET_KEY": None, "ENVIRONMENT": "production"})
