"""make bench: key checks against the framework's own floor, at a million keys.

For each backend: seed a fresh database in bulk (seed.py); start, side by side, the bare Flask
route of floor_app.py, the same route with our request log (floor_logged_app.py), and our app
with its production defaults (limits on in memory, metrics, the request log), all under the
project's gunicorn.conf.py, and our app again with its limits in Redis (servers.py); drive wrk
at every workload in alternating rounds (load.py, with churn.py's revocations beside the hot
one); measure how soon a revocation is refused (reach.py) and the rows through nginx
(proxy.py); report requests per second, p50, p99, worker CPU and memory, every throughput as a
ratio of the bare route's (report.py). The in-process cost of one request of each app's
/health comes from in_process.py. Results go to bench/results/ as JSON and a PNG chart.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import datetime, timezone
from functools import partial
from pathlib import Path

import numpy as np
import requests

from .load import WARM_UP_SECONDS, ENDPOINTS, measure_path, wrk
from .proxy import require_counted, run_proxy
from .reach import revocation_reach
from .report import Backend, print_table, save
from .seed import bench_secret, fresh_database, seed, spare_keys, write_key_files
from .servers import PROJECT_ROOT, floor_command, postgres_pids, serve, worker_rss_mb

RESULTS = PROJECT_ROOT / "bench" / "results"


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
    spare = iter(spare_keys(count))  # shared by every run that revokes: a key is revoked once
    if not proxy_only:
        framework_rows(result, url, workdir, seconds, rounds, memory_checks, key_files, redis_limits, spare)
    result.proxy = run_proxy(partial(serve, url, workdir), floor_command("bench.floor_app:app"), key_files, spare,
                             bench_secret, measure_path, seconds, rounds, WARM_UP_SECONDS, workdir,
                             postgres_pids if backend == "postgresql" else list, TRUSTED_PROXY_COUNT="1",
                             **redis_limits)
    return result


def framework_rows(result: Backend, url: str, workdir: Path, seconds: int, rounds: int, memory_checks: int,
                   key_files: dict[str, Path], redis_limits: dict[str, str], spare: Iterator[int]) -> None:
    """Every workload against the bare route, then the reach, in-process and uncached figures."""
    with serve(url, workdir) as server, serve(url, workdir, floor_command("bench.floor_app:app")) as floor, \
            serve(url, workdir, floor_command("bench.floor_logged_app:app")) as floor_logged, \
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
    done = subprocess.run([sys.executable, "-m", "bench.in_process", url, str(workdir / "in-process.log"),
                           str(requests)], cwd=PROJECT_ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"bench/in_process.py failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stderr.strip().splitlines()[-1])


def cold_without_cache(url: str, workdir: Path, seconds: int, rounds: int,
                       key_files: dict[str, Path]) -> float:
    """Cold check-key throughput with the key cache off: what the index lookup costs."""
    with serve(url, workdir, KEY_CACHE_SIZE="0") as server:
        wrk(server, "check_cold", WARM_UP_SECONDS, key_files)
        return float(np.median([wrk(server, "check_cold", seconds, key_files)["rps"] for _ in range(rounds)]))


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
