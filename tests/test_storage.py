"""What the database holds: digests not keys, a schema the migrations build, a kept secret."""

import os
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from livekit_auth.apikeys import keys
from livekit_auth.config import database_url, load_or_create_secret_key
from livekit_auth.extensions import db

from bench.servers import PROJECT_ROOT

from .support import LOCAL_POSTGRES, local_services, require_service


def every_stored_value(app) -> list[str]:
    """Every value of every row of every table, as text."""
    values = []
    with app.app_context():
        inspector = sa.inspect(db.engine)
        with db.engine.connect() as connection:
            for table in inspector.get_table_names():
                for row in connection.execute(sa.text(f'SELECT * FROM "{table}"')):
                    values.extend(str(value) for value in row)
    return values


def test_the_key_is_never_stored_in_clear(app, api, database_uri) -> None:
    key = api.new_key()
    random_part = key[len(keys.KEY_PREFIX) : len(keys.KEY_PREFIX) + keys.RANDOM_LENGTH]
    stored = every_stored_value(app)
    assert keys.digest(key) in stored
    for value in stored:
        assert key not in value
        assert random_part[keys.DISPLAY_LENGTH :][:16] not in value
    if database_uri.startswith("sqlite:///"):
        path = Path(database_uri.removeprefix("sqlite:///"))
        raw = b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))
        assert key.encode() not in raw
        assert random_part[keys.DISPLAY_LENGTH :].encode() not in raw


def test_the_migrations_build_exactly_the_models(app) -> None:
    with app.app_context(), db.engine.connect() as connection:
        differences = compare_metadata(MigrationContext.configure(connection), db.metadata)
    assert differences == []


def test_sqlite_runs_in_wal_mode_with_foreign_keys_and_reads_through_a_memory_map(app, database_uri) -> None:
    if not database_uri.startswith("sqlite"):
        pytest.skip("a SQLite setting")
    with app.app_context(), db.engine.connect() as connection:
        assert connection.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert connection.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert connection.exec_driver_sql("PRAGMA busy_timeout").scalar() >= 1000
        assert connection.exec_driver_sql("PRAGMA mmap_size").scalar() >= 2**30


def test_a_generated_secret_key_is_private_and_shared_by_every_worker(tmp_path) -> None:
    with ThreadPoolExecutor(8) as pool:
        secrets = set(pool.map(lambda _: load_or_create_secret_key(str(tmp_path)), range(16)))
    assert len(secrets) == 1
    assert len(secrets.pop()) >= 64
    mode = stat.S_IMODE(os.stat(tmp_path / "secret_key").st_mode)
    assert mode == 0o600
    assert sorted(os.listdir(tmp_path)) == ["secret_key"]


def test_a_generated_secret_key_is_reused(tmp_path) -> None:
    assert load_or_create_secret_key(str(tmp_path)) == load_or_create_secret_key(str(tmp_path))


def test_a_request_gives_back_the_session_it_opened_and_opens_none_it_does_not_need(app, client) -> None:
    with app.app_context():
        pool = db.engine.pool
    checked_out = pool.checkedout()
    assert client.get("/health/ready").status_code == 200  # runs a query in the request's session
    assert pool.checkedout() == checked_out
    assert not db.session.registry.registry
    assert client.get("/health").status_code == 200
    assert pool.checkedout() == checked_out
    assert not db.session.registry.registry


@pytest.mark.slow
def test_servers_started_together_on_a_fresh_postgresql_database_all_migrate(tmp_path) -> None:
    server = require_service("TEST_DATABASE_URL", "set it to a PostgreSQL database the test may use")
    name = f"livekit_auth_migrate_{os.getpid()}"
    admin = sa.create_engine(database_url(server, ""), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as connection:
            connection.execute(sa.text(f"CREATE DATABASE {name}"))
        fresh = database_url(server, "").rsplit("/", 1)[0] + "/" + name
        commands = [
            subprocess.Popen([sys.executable, "-m", "flask", "--app", "wsgi", "db", "upgrade"], cwd=PROJECT_ROOT,
                             env={"PATH": "/usr/bin:/bin", "DATABASE_URL": fresh, "SECRET_KEY": "test"},
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            for _ in range(4)
        ]
        finished = [command.communicate(timeout=120) for command in commands]
        assert [command.returncode for command in commands] == [0] * 4, [err[-2000:] for _, err in finished]
    finally:
        with admin.connect() as connection:
            connection.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


def test_the_suites_own_database_is_dropped_on_a_fresh_connection(monkeypatch) -> None:
    require_service("TEST_DATABASE_URL", "set it to a PostgreSQL database the test may use")
    monkeypatch.delenv("TEST_DATABASE_URL")
    monkeypatch.delenv("TEST_REDIS_URL", raising=False)
    sessions = sa.text("SELECT pid FROM pg_stat_activity WHERE datname = 'postgres' AND pid <> pg_backend_pid()")
    watcher = sa.create_engine(database_url(LOCAL_POSTGRES, ""), isolation_level="AUTOCOMMIT")
    try:
        with watcher.connect() as connection:
            before = set(connection.execute(sessions).scalars())
            undo = local_services(f"livekit_auth_cleanup_{os.getpid()}")
            made = os.environ["TEST_DATABASE_URL"].rsplit("/", 1)[1]
            # As when PostgreSQL restarts during the run: whatever local_services kept open dies.
            for pid in set(connection.execute(sessions).scalars()) - before:
                connection.execute(sa.text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
            undo()
            left = connection.execute(sa.text("SELECT count(*) FROM pg_database WHERE datname = :name"),
                                      {"name": made}).scalar()
            assert left == 0
    finally:
        watcher.dispose()
