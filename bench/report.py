"""Reporting: what one backend's run measured, as Markdown tables, JSON and a PNG chart."""

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .load import CONNECTIONS, ENDPOINTS
from .proxy import print_rows as print_proxy_rows
from .servers import WORKERS


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
