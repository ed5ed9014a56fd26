"""Driving load: wrk at one workload of one server, with the CPU and cache figures around it."""

import json
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .churn import Revoker
from .servers import PROJECT_ROOT, LiveServer, cache_results, cpu_seconds, postgres_pids

LUA = PROJECT_ROOT / "bench" / "wrk"
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
