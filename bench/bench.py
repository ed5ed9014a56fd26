"""make bench: key checks against the framework's own floor, at a million keys.

For each backend: seed a fresh database in bulk; start, side by side, the bare Flask route of
bench/floor_app.py, the same route with our request log (bench/floor_logged_app.py), and our
app with its production defaults (limits on in memory, metrics, the request log), all under
the project's gunicorn.conf.py, and our app again with its limits in Redis; drive wrk at every
workload in alternating rounds; report requests per second, p50, p99, worker CPU and memory,
every throughput as a ratio of the bare route's. The in-process cost of one request of each
app's /health comes from bench/in_process.py. Results go to bench/results/ as JSON and a PNG
chart.
"""

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from collections.abc import Callable
from functools import partial
from typing import Any, Iterator

import numpy as np
import requests
import sqlalchemy as sa

PROJECT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(PROJECT))

from livekit_auth import keys  # noqa: E402
from livekit_auth.config import database_url  # noqa: E402
from livekit_auth.models import ApiKey, User  # noqa: E402
from tests.support import LiveServer, live_server  # noqa: E402
from bench.proxy import print_rows as print_proxy_rows, require_counted, run_proxy  # noqa: E402
from bench.reach import revocation_reach  # noqa: E402

RESULTS = PROJECT / "bench" / "results"
LUA = PROJECT / "bench" / "wrk"
BATCH = 20_000
SAMPLE = 100_000  # keys drawn for each workload's file
ZIPF_S = 1.1
PROXY_HOT_KEYS = 1000
WORKERS = 2
CONNECTIONS = 8
WARM_UP_SECONDS = 2
# The wrk script and path of the workloads that do not send keys from a file.
SCRIPTS = {
    "floor": ("report.lua", "/health"),
    "floor_logged": ("report.lua", "/health"),
    "health": ("report.lua", "/health"),
    "create_key": ("create_key.lua", "/auth/create-key"),
    "verify_one": ("keys.lua", "/auth/verify"),
}
# check_one sends one key over and over: always cached, it is the floor of any authenticated
# request (the x-api-key header, the gate, a larger answer), whatever the cache's hit rate.
# check_one_redis does the same against a server whose limits count in Redis.
# check_hot_churn is check_hot while a second client revokes REVOCATIONS_PER_SECOND other keys:
# each revocation must evict only its own key from the workers' caches.
# verify_one is check_one against /auth/verify, the forward-authentication answer.
# check_limited is check_one with a key that carries a rate limit (LIMITED_KEY_RATE, never reached),
# counted in the server's shared memory; check_limited_redis the same with the limits in Redis.
# floor_logged is the floor with our request log and an empty before_request hook (bench/floor_logged_app.py).
ENDPOINTS = ["floor", "floor_logged", "health", "check_one", "verify_one", "check_one_redis", "check_limited",
             "check_limited_redis", "check_hot", "check_hot_churn", "check_cold", "check_unknown", "check_malformed",
             "create_key"]
KEY_FILES = {"check_one_redis": "check_one", "check_hot_churn": "check_hot", "verify_one": "check_one",
             "check_limited_redis": "check_limited"}
# The limited key's limit: counted at every check, and far past what a run sends.
LIMITED_KEY_RATE = "100000000 per minute"
REVOCATIONS_PER_SECOND = 10
# The production defaults, as make run serves them. Only the two limits that one load generator
# on one address would trip at once are raised, never switched off.
PRODUCTION = {
    "RATELIMIT_ENABLED": "true",
    "RATELIMIT_STORAGE_URI": "memory://",
    "METRICS_TOKEN": "bench-metrics-token",
    "RATELIMIT_CREATE_KEY": "1000000 per hour",
    "RATELIMIT_FAILED_AUTH": "1000000 per minute",
}


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


def worker_rss_mb(server: LiveServer, field: str = "VmRSS") -> list[float]:
    """Resident memory of each of a server's workers, in MB: all of it (VmRSS), or a part of it.

    RssAnon is the worker's own memory; VmRSS also counts the pages of files it maps and has
    touched (SQLite's database file), which the operating system's file cache holds once for
    every process.
    """
    sizes = []
    for pid in server.worker_pids():
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                sizes.append(int(line.split()[1]) / 1024)
    return sizes


def serve(url: str, workdir: Path, command: list[str] | None = None, **settings: str):
    """Our app through boot.sh (the production path), or another command, with the production defaults.

    The servers start as the tests start theirs (tests/support.py).
    """
    return live_server(url, workdir, workers=WORKERS, command=command,
                       **{**PRODUCTION, "SECRET_KEY": "bench-secret", **settings})


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU time of some processes so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / ticks


def postgres_pids() -> list[int]:
    """Every PostgreSQL server process on the machine."""
    out = subprocess.run(["pgrep", "-x", "postgres"], capture_output=True, text=True)
    return [int(pid) for pid in out.stdout.split()]


class Revoker:
    """A second client that revokes spare keys, each with itself, at a steady rate while it runs."""

    def __init__(self, server: LiveServer, spare: Iterator[int]) -> None:
        self.server = server
        self.spare = spare
        self.revoked = 0
        self.stopping = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def __enter__(self) -> "Revoker":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping.set()
        self.thread.join()

    def run(self) -> None:
        """Revoke one key every 1/REVOCATIONS_PER_SECOND seconds until stopped or out of keys."""
        with requests.Session() as session:
            next_at = time.monotonic()
            for index in self.spare:
                if self.stopping.wait(max(0.0, next_at - time.monotonic())):
                    return
                next_at += 1 / REVOCATIONS_PER_SECOND
                answer = session.delete(f"{self.server.url}/auth/keys/{index + 1}",  # seeded ids start at 1
                                        headers={"x-api-key": bench_secret(index)}, timeout=10)
                answer.raise_for_status()
                self.revoked += 1


def cache_results(server: LiveServer) -> dict[str, float]:
    """livekit_auth_key_cache_total by result, added up over the server's workers."""
    text = requests.get(f"{server.url}/metrics", timeout=10,
                        headers={"Authorization": f"Bearer {PRODUCTION['METRICS_TOKEN']}"}).text
    counts = {"hit": 0.0, "miss": 0.0}
    for result in counts:
        prefix = f'livekit_auth_key_cache_total{{result="{result}"}} '
        counts[result] = sum(float(line[len(prefix):]) for line in text.splitlines() if line.startswith(prefix))
    return counts


def run_wrk(url: str, script: str, keys_file: Path | None, seconds: int) -> dict[str, Any]:
    """wrk with one thread and CONNECTIONS connections at a URL; its figures as its done() hook reports them."""
    env = {**os.environ, "KEYS_FILE": str(keys_file or "")}
    command = ["wrk", "-t1", f"-c{CONNECTIONS}", f"-d{seconds}s", "-s", str(LUA / script), url]
    out = subprocess.run(command, env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out[out.index("{"):out.rindex("}") + 1])


def measure_path(url: str, keys_file: Path, seconds: int, pids: Callable[[], dict[str, list[int]]]) -> dict[str, Any]:
    """One wrk run sending keys from a file, with the CPU per request of each group of processes pids() names."""
    before = {pid: cpu_seconds([pid]) for members in pids().values() for pid in members}
    report = run_wrk(url, "keys.lua", keys_file, seconds)
    requests = max(report["requests"], 1)
    # Each process's CPU since the start, or since it started; one that exited meanwhile (a
    # database backend, say) is left out, so a group's figure never runs below zero.
    report["cpu_us_by_process"] = {
        name: round(sum(max(0.0, cpu_seconds([pid]) - before.get(pid, 0.0)) for pid in members) / requests * 1e6, 1)
        for name, members in pids().items()
    }
    report["cpu_us"] = round(sum(report["cpu_us_by_process"].values()), 1)
    return report


def wrk(server: LiveServer, endpoint: str, seconds: int, key_files: dict[str, Path],
        spare: Iterator[int] = iter(())) -> dict[str, Any]:
    """One wrk run at one endpoint; its figures as wrk's done() hook reports them.

    A check workload also reports the key cache's hit rate; the churn workload runs beside a
    Revoker of the spare keys.
    """
    script, path = SCRIPTS.get(endpoint, ("keys.lua", "/auth/check-key"))
    keys_file = key_files.get(KEY_FILES.get(endpoint, endpoint))
    workers = server.worker_pids()
    checks = endpoint.startswith(("check", "verify"))
    cache_before = cache_results(server) if checks else {}
    workers_before, pg_before = cpu_seconds(workers), cpu_seconds(postgres_pids())
    started = time.perf_counter()
    with Revoker(server, spare if endpoint == "check_hot_churn" else iter(())) as revoker:
        report = run_wrk(server.url + path, script, keys_file, seconds)
    elapsed = time.perf_counter() - started
    pg_cpu = (cpu_seconds(postgres_pids()) - pg_before) / elapsed
    report["revoked_per_second"] = round(revoker.revoked / elapsed, 1)
    if checks:
        cache_after = cache_results(server)
        hits, misses = (cache_after[result] - cache_before[result] for result in ("hit", "miss"))
        report["hit_rate"] = round(hits / max(hits + misses, 1), 4)
    report["postgres_cpu_cores"] = round(pg_cpu, 2)
    # CPU per request is steadier than requests per second on a shared machine.
    report["worker_cpu_us"] = round((cpu_seconds(workers) - workers_before) / max(report["requests"], 1) * 1e6, 1)
    return report


@dataclass
class Backend:
    """What one backend's run measured."""

    name: str
    keys: int
    seed_seconds: float
    runs: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    rss: dict[str, Any] = field(default_factory=dict)
    uncached: dict[int, float] = field(default_factory=dict)
    reach: list[float] = field(default_factory=list)
    in_process: dict[str, float] = field(default_factory=dict)
    proxy: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, dict[str, float]]:
        """Per workload: median rps over rounds, worst p50/p99, and the ratio to the bare route."""
        result = {}
        for endpoint, runs in self.runs.items():
            result[endpoint] = {
                "rps": float(np.median([r["rps"] for r in runs])),
                "p50_ms": max(r["p50_us"] for r in runs) / 1000,
                "p99_ms": max(r["p99_us"] for r in runs) / 1000,
                "non_2xx": sum(r["non_2xx"] for r in runs),
                "socket_errors": sum(r["socket_errors"] for r in runs),
                "postgres_cpu_cores": max(r["postgres_cpu_cores"] for r in runs),
                "worker_cpu_us": float(np.median([r["worker_cpu_us"] for r in runs])),
                "hit_rate": float(np.median([r["hit_rate"] for r in runs])) if "hit_rate" in runs[0] else None,
                "revoked_per_second": float(np.median([r["revoked_per_second"] for r in runs])),
            }
        floor = result["floor"]["rps"]
        for figures in result.values():
            figures["ratio"] = figures["rps"] / floor
        return result


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
                   cwd=PROJECT, env=env, check=True, capture_output=True)
    return url


def run_backend(
    backend: str, count: int, seconds: int, rounds: int, workdir: Path, memory_checks: int, proxy_only: bool
) -> Backend:
    """Seed, serve and measure one backend: the framework's rows (unless proxy_only), then the proxy's."""
    url = fresh_database(backend, workdir, f"livekit_auth_bench_{count}")
    print(f"[{backend}] seeding {count:,} users and keys…", flush=True)
    result = Backend(backend, count, seed(url, count))
    print(f"[{backend}] seeded in {result.seed_seconds:.1f} s", flush=True)
    key_files = write_key_files(workdir, count)
    redis_limits = {"RATELIMIT_STORAGE_URI": os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0"),
                    "RATELIMIT_KEY_PREFIX": f"livekit-bench-{os.getpid()}"}
    gunicorn = [str(Path(sys.executable).parent / "gunicorn"), "--config", "gunicorn.conf.py"]
    spare = iter(spare_keys(count))  # shared by every run that revokes: a key is revoked once
    if not proxy_only:
        framework_rows(result, url, workdir, seconds, rounds, memory_checks, key_files, redis_limits, spare)
    result.proxy = run_proxy(partial(serve, url, workdir), gunicorn + ["bench.floor_app:app"], key_files, spare,
                             bench_secret, measure_path, seconds, rounds, WARM_UP_SECONDS, workdir,
                             postgres_pids if backend == "postgresql" else list, TRUSTED_PROXY_COUNT="1",
                             **redis_limits)
    return result


def framework_rows(result: Backend, url: str, workdir: Path, seconds: int, rounds: int, memory_checks: int,
                   key_files: dict[str, Path], redis_limits: dict[str, str], spare: Iterator[int]) -> None:
    """Every workload against the bare route, then the reach, in-process and uncached figures."""
    gunicorn = [str(Path(sys.executable).parent / "gunicorn"), "--config", "gunicorn.conf.py"]
    with serve(url, workdir) as server, serve(url, workdir, gunicorn + ["bench.floor_app:app"]) as floor, \
            serve(url, workdir, gunicorn + ["bench.floor_logged_app:app"]) as floor_logged, \
            serve(url, workdir, **redis_limits) as redis_server:
        servers = {"floor": floor, "floor_logged": floor_logged, "check_one_redis": redis_server,
                   "check_limited_redis": redis_server}
        wrk(server, "check_cold", 1, key_files)  # warm-up: about a thousand checks
        for limiting in (server, redis_server):
            require_counted(requests.Session(), f"{limiting.url}/auth/check-key", key_files["check_limited"])
        result.rss["after_warmup_mb"] = worker_rss_mb(server)
        result.rss["after_warmup_own_mb"] = worker_rss_mb(server, "RssAnon")
        checks = 0
        for round_number in range(rounds):
            for endpoint in ENDPOINTS:
                target = servers.get(endpoint, server)
                wrk(target, endpoint, WARM_UP_SECONDS, key_files, spare)  # steady state, not the last run's
                report = wrk(target, endpoint, seconds, key_files, spare)
                result.runs.setdefault(endpoint, []).append(report)
                if endpoint.startswith("check"):
                    checks += report["requests"]
                print(f"[{result.name}] round {round_number + 1} {endpoint:16} {report['rps']:8.0f} rps", flush=True)
        while checks < memory_checks:
            checks += wrk(server, "check_cold", seconds, key_files)["requests"]
        result.rss["after_checks"] = checks
        result.rss["after_checks_mb"] = worker_rss_mb(server)
        result.rss["after_checks_own_mb"] = worker_rss_mb(server, "RssAnon")
    result.reach = revocation_reach_across_servers(url, workdir, spare)
    result.in_process = in_process_costs(url, workdir, min(result.keys, 20_000))
    result.uncached = {result.keys: cold_without_cache(url, workdir, seconds, rounds, key_files)}
    small_url = fresh_database(result.name, workdir, "livekit_auth_bench_small")
    seed(small_url, 1_000)
    small_dir = workdir / "small"  # its own key files: the large run's limited rows still read theirs
    small_dir.mkdir(exist_ok=True)
    small_files = write_key_files(small_dir, 1_000)
    result.uncached[1_000] = cold_without_cache(small_url, workdir, seconds, rounds, small_files)


def revocation_reach_across_servers(url: str, workdir: Path, spare: Iterator[int]) -> list[float]:
    """Seconds from a revocation answered by one server until every worker of another refuses the key.

    Eight checks first put the key in the caches of both workers of the second server.
    """
    with serve(url, workdir) as first, serve(url, workdir) as second, requests.Session() as session:
        return revocation_reach(session, f"{second.url}/auth/check-key", first.url, spare, bench_secret, 8)


def in_process_costs(url: str, workdir: Path, requests: int) -> dict[str, float]:
    """µs per request inside one process: our /health and the bare route (bench/in_process.py)."""
    done = subprocess.run([sys.executable, str(PROJECT / "bench" / "in_process.py"), url,
                           str(workdir / "in-process.log"), str(requests)], capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"bench/in_process.py failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stderr.strip().splitlines()[-1])


def cold_without_cache(url: str, workdir: Path, seconds: int, rounds: int,
                       key_files: dict[str, Path]) -> float:
    """Cold check-key throughput with the key cache off: what the index lookup costs."""
    with serve(url, workdir, KEY_CACHE_SIZE="0") as server:
        wrk(server, "check_cold", WARM_UP_SECONDS, key_files)
        return float(np.median([wrk(server, "check_cold", seconds, key_files)["rps"] for _ in range(rounds)]))


def print_table(results: list[Backend]) -> None:
    """The figures as Markdown tables, then the other targets; the proxy's rows last."""
    framework = [backend for backend in results if backend.runs]
    if framework:
        print_framework_rows(framework)
    for backend in results:
        print_proxy_rows(backend.name, backend.proxy)


def print_framework_rows(results: list[Backend]) -> None:
    """The framework's rows, against the bare route."""
    print("\n| backend | workload | req/s | ratio to the bare route | p50 ms | p99 ms | non-2xx "
          "| worker CPU µs/request | PG CPU (cores) | key cache hit rate |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for backend in results:
        for endpoint, f in backend.summary().items():
            hit_rate = "" if f["hit_rate"] is None else f"{f['hit_rate']:.3f}"
            print(f"| {backend.name} | {endpoint} | {f['rps']:.0f} | {f['ratio']:.2f} | {f['p50_ms']:.2f} "
                  f"| {f['p99_ms']:.2f} | {f['non_2xx']} | {f['worker_cpu_us']:.0f} "
                  f"| {f['postgres_cpu_cores']:.2f} | {hit_rate} |")
    for backend in results:
        summary = backend.summary()
        quiet, churn = summary["check_hot"], summary["check_hot_churn"]
        print(f"\n{backend.name}: hot checks while {churn['revoked_per_second']:.1f} keys a second are revoked: "
              f"{churn['rps'] / quiet['rps']:.2f} of the quiet run's throughput, hit rate "
              f"{churn['hit_rate']:.3f} against {quiet['hit_rate']:.3f}")
        print(f"\n{backend.name}: a revocation through one server reached every worker of another in "
              f"{np.median(backend.reach) * 1000:.0f} ms (median), {max(backend.reach) * 1000:.0f} ms at most, "
              f"over {len(backend.reach)} keys")
    for backend in results:
        costs = backend.in_process
        print(f"\n{backend.name}: in process, one /health costs {costs['health_us']:.1f} µs and one bare "
              f"request {costs['floor_us']:.1f} µs: {costs['health_us'] - costs['floor_us']:.1f} µs of machinery, "
              f"of which the request log and an empty hook (the floor_logged app, "
              f"{costs['floor_logged_us']:.1f} µs) take {costs['floor_logged_us'] - costs['floor_us']:.1f} µs")
        large, small = backend.uncached[backend.keys], backend.uncached[1_000]
        print(f"\n{backend.name}: seeded {backend.keys:,} keys in {backend.seed_seconds:.1f} s; "
              f"cold check without the key cache: {large:.0f} rps at {backend.keys:,} keys, "
              f"{small:.0f} rps at 1,000 keys (ratio {large / small:.2f}); "
              f"worker RSS {['%.1f' % m for m in backend.rss['after_warmup_mb']]} MB after warm-up, "
              f"{['%.1f' % m for m in backend.rss['after_checks_mb']]} MB after {backend.rss['after_checks']:,} checks; "
              f"of it the workers' own (RssAnon) {['%.1f' % m for m in backend.rss['after_warmup_own_mb']]} MB, "
              f"then {['%.1f' % m for m in backend.rss['after_checks_own_mb']]} MB")


def save(results: list[Backend], stamp: str, directory: Path) -> list[Path]:
    """Write the JSON, and the PNG chart of the framework's rows when they ran."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    directory.mkdir(parents=True, exist_ok=True)
    data = [{"backend": b.name, "keys": b.keys, "seed_seconds": b.seed_seconds,
             "summary": b.summary() if b.runs else {}, "runs": b.runs, "rss": b.rss,
             "cold_uncached_rps_by_keys": b.uncached, "in_process_us": b.in_process,
             "revocation_reach_seconds": b.reach, "proxy": b.proxy} for b in results]
    json_path = directory / f"bench-{stamp}.json"
    json_path.write_text(json.dumps({"machine": machine(), "results": data}, indent=2))
    if not all(backend.runs for backend in results):
        return [json_path]
    figure, axis = plt.subplots(figsize=(10, 4.5))
    width = 0.8 / len(results)
    for offset, backend in enumerate(results):
        summary = backend.summary()
        positions = [i + offset * width for i in range(len(ENDPOINTS))]
        axis.bar(positions, [summary[e]["rps"] for e in ENDPOINTS], width, label=backend.name)
    axis.set_xticks([i + width * (len(results) - 1) / 2 for i in range(len(ENDPOINTS))], ENDPOINTS)
    axis.set_ylabel("requests per second")
    axis.set_title(f"livekit-auth, {results[0].keys:,} keys, {WORKERS} gunicorn workers")
    axis.legend()
    figure.tight_layout()
    png_path = directory / f"bench-{stamp}.png"
    figure.savefig(png_path, dpi=110)
    return [json_path, png_path]


def machine() -> dict[str, Any]:
    """What the figures were measured on."""
    return {"cpus": os.cpu_count(), "python": sys.version.split()[0],
            "uname": " ".join(os.uname()), "wrk_connections": CONNECTIONS, "workers": WORKERS}


def main() -> None:
    """Parse the options and run every backend."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--keys", type=int, default=1_000_000)
    parser.add_argument("--seconds", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--backends", default="sqlite,postgresql")
    parser.add_argument("--memory-checks", type=int, default=100_000,
                        help="checks to run before the second memory reading")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where the JSON and PNG go")
    parser.add_argument("--proxy-only", action="store_true", help="only the rows through nginx")
    options = parser.parse_args()
    if shutil.which("wrk") is None:
        sys.exit("wrk is missing: apt-get install wrk (make bench installs it)")
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    results = []
    with tempfile.TemporaryDirectory(prefix="livekit-bench-") as directory:
        for backend in options.backends.split(","):
            results.append(run_backend(backend, options.keys, options.seconds, options.rounds,
                                       Path(directory), options.memory_checks, options.proxy_only))
    print_table(results)
    written = save(results, stamp, options.results)
    print(f"\nwrote {' and '.join(str(path) for path in written)}")


if __name__ == "__main__":
    main()
