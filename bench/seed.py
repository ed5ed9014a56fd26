"""Seeding: a fresh database per backend, filled in bulk with users and keys, and the key files the workloads send."""

import hashlib
import os
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import sqlalchemy as sa

from livekit_auth.apikeys import keys
from livekit_auth.apikeys.models import ApiKey, User
from livekit_auth.config import database_url

from .servers import PROJECT_ROOT

BATCH = 20_000
SAMPLE = 100_000  # keys drawn for each workload's file
ZIPF_S = 1.1
PROXY_HOT_KEYS = 1000
# The limited key's limit: counted at every check, and far past what a run sends.
LIMITED_KEY_RATE = "100000000 per minute"


def bench_secret(index: int) -> str:
    """The key of seeded user number index: the same on every run, so it need not be stored."""
    seed = int.from_bytes(hashlib.sha256(b"bench-key-%d" % index).digest())
    random_part = keys.base62(seed, keys.RANDOM_LENGTH)
    return keys.KEY_PREFIX + random_part + keys.checksum(random_part)


def seed(url: str, count: int) -> float:
    """Insert count users with one key each through SQLAlchemy Core; return the seconds taken."""
    engine = sa.create_engine(url)
    users, api_keys = User.__table__, ApiKey.__table__  # the model's columns fill the lower-cased copies
    created = datetime(2026, 1, 1, tzinfo=timezone.utc)
    started = time.perf_counter()
    with engine.begin() as connection:
        for first in range(0, count, BATCH):
            numbers = range(first, min(first + BATCH, count))
            connection.execute(users.insert(), [
                {"id": n + 1, "name": f"Bench User {n}", "email": f"user{n}@bench.example",
                 "org_name": "Bench", "created_at": created}
                for n in numbers
            ])
            secrets = [bench_secret(n) for n in numbers]
            connection.execute(api_keys.insert(), [
                {"id": n + 1, "user_id": n + 1, "digest": keys.digest(secret),
                 "display_prefix": keys.display_prefix(secret), "created_at": created}
                for n, secret in zip(numbers, secrets)
            ])
        connection.execute(api_keys.update().where(api_keys.c.id == limited_key(count) + 1)
                           .values(rate_limit=LIMITED_KEY_RATE))
        if connection.dialect.name == "postgresql":
            for table in ("users", "api_keys"):
                connection.execute(sa.text(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), {count})"
                ))
    with engine.connect() as connection:
        if connection.dialect.name == "postgresql":
            connection.execution_options(isolation_level="AUTOCOMMIT").execute(sa.text("VACUUM ANALYZE"))
        else:
            connection.execute(sa.text("ANALYZE"))
    engine.dispose()
    return time.perf_counter() - started


def spare_keys(count: int) -> range:
    """The seeded keys no workload sends, the last ones but the limited key: the churn workload revokes them."""
    return range(count - min(2_000, count // 10), limited_key(count))


def limited_key(count: int) -> int:
    """The seeded key with a rate limit: the last, which only the limited rows send."""
    return count - 1


def write_key_files(workdir: Path, count: int) -> dict[str, Path]:
    """The keys each check workload sends, one per line, drawn once before the runs."""
    generator = np.random.default_rng(7)
    limited = bench_secret(limited_key(count))
    count = spare_keys(count).start
    ranks = np.arange(1, count + 1)
    weights = 1.0 / ranks**ZIPF_S
    hot = generator.choice(count, size=SAMPLE, p=weights / weights.sum())
    few = min(PROXY_HOT_KEYS, count)  # the proxy's hot row: a thousand keys, Zipf as well
    few_weights = weights[:few] / weights[:few].sum()
    proxy_hot = generator.choice(few, size=SAMPLE, p=few_weights)
    cold = generator.integers(0, count, size=SAMPLE)
    unknown = [keys.generate().secret for _ in range(10_000)]
    malformed = [secret[:-1] + ("A" if secret[-1] != "A" else "B") for secret in unknown]
    files = {
        "check_one": [bench_secret(0)] * 1000,
        "check_limited": [limited] * 1000,
        "check_hot": [bench_secret(int(n)) for n in hot],
        "proxy_hot": [bench_secret(int(n)) for n in proxy_hot],
        "check_cold": [bench_secret(int(n)) for n in cold],
        "check_unknown": unknown,
        "check_malformed": malformed,
    }
    paths = {}
    for name, lines in files.items():
        paths[name] = workdir / f"{name}.txt"
        paths[name].write_text("\n".join(lines) + "\n")
    return paths


def fresh_database(backend: str, workdir: Path, name: str) -> str:
    """An empty database URL for a backend, migrated to the latest schema."""
    if backend == "sqlite":
        url = f"sqlite:///{workdir / (name + '.db')}"
    else:
        admin = os.environ.get("BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1/postgres")
        engine = sa.create_engine(database_url(admin, ""), isolation_level="AUTOCOMMIT")
        with engine.connect() as connection:
            connection.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            connection.execute(sa.text(f"CREATE DATABASE {name}"))
        engine.dispose()
        url = database_url(admin.rsplit("/", 1)[0] + "/" + name, "")
    env = {**os.environ, "DATABASE_URL": url, "SECRET_KEY": "bench-secret"}
    subprocess.run([str(Path(sys.executable).parent / "flask"), "--app", "wsgi", "db", "upgrade"],
                   cwd=PROJECT_ROOT, env=env, check=True, capture_output=True)
    return url
