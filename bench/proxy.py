"""make bench's forward-authentication rows: a protected call against the same call unprotected.

nginx runs deploy/nginx's configuration as the tests run it (servers.running_nginx), with
a worker per core, in front of two app servers with the production defaults and their limits in
Redis, as docs/deployment.md deploys them, and protects the floor app (bench/floor_app.py) under
/agents/. The bench adds one location, /unprotected/, that passes to the same upstream route
without a key check. wrk sends the same requests, each with an x-api-key header, to both, in
alternating rounds; every process of the path (nginx, both app servers, the floor, PostgreSQL)
is counted for CPU per request.
"""

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import requests

from .reach import revocation_reach
from .servers import child_pids, running_nginx

# Row: the path wrk asks for, and the key file it sends.
ROWS = {
    "proxy_unprotected": ("/unprotected/health", "check_one"),
    "proxy_one": ("/agents/health", "check_one"),
    "proxy_hot": ("/agents/health", "proxy_hot"),
    "proxy_limited": ("/agents/health", "check_limited"),  # never kept by nginx: every call is counted
    "proxy_unknown": ("/agents/health", "check_unknown"),
}
UNPROTECTED = """    location /unprotected/ {
        proxy_set_header Host $http_host;
        proxy_set_header X-Forwarded-For $remote_addr;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_set_header X-Request-ID $request_id;
        proxy_pass http://agents_api/agents/;
    }

"""


def run_proxy(
    serve: Callable[..., Any], floor_command: list[str], key_files: dict[str, Path], spare: Iterator[int],
    secret: Callable[[int], str], measure: Callable[..., dict[str, Any]], seconds: int, rounds: int,
    warm_up: int, workdir: Path, database_pids: Callable[[], list[int]], **settings: str,
) -> dict[str, Any]:
    """Every proxy row in alternating rounds, then the revocation reach through nginx."""
    with serve(**settings) as first, serve(**settings) as second, serve(command=floor_command) as floor:
        servers = [first.url.removeprefix("http://"), second.url.removeprefix("http://")]
        nginx_dir = workdir / f"nginx-{first.url.rsplit(':', 1)[1]}"
        nginx_dir.mkdir()
        with running_nginx(nginx_dir, servers, floor.url.removeprefix("http://"), UNPROTECTED, "auto") as nginx:
            origin = f"https://127.0.0.1:{nginx.https_port}"

            def path_pids() -> dict[str, list[int]]:
                return {
                    "nginx": [nginx.process.pid, *child_pids(nginx.process.pid)],
                    "app servers": [pid for server in (first, second) for pid in (server.process.pid,
                                                                                 *server.worker_pids())],
                    "upstream": [floor.process.pid, *floor.worker_pids()],
                    "database": database_pids(),
                }

            # The hot keys, each once, so that the rounds measure nginx's steady state: it asks about an
            # unchanged key again only every PROXY_CACHE_SECONDS, longer than the whole run.
            hot_keys = workdir / "proxy_hot_each_once.txt"
            hot_keys.write_text("\n".join(dict.fromkeys(key_files["proxy_hot"].read_text().split())) + "\n")
            measure(f"{origin}/agents/health", hot_keys, warm_up, path_pids)
            require_counted(tls_session(nginx.certificate), f"{origin}/agents/health", key_files["check_limited"])
            runs: dict[str, list[dict[str, Any]]] = {}
            for round_number in range(rounds):
                for row, (path, keys_file) in ROWS.items():
                    measure(origin + path, key_files[keys_file], warm_up, path_pids)
                    report = measure(origin + path, key_files[keys_file], seconds, path_pids)
                    runs.setdefault(row, []).append(report)
                    print(f"[proxy] round {round_number + 1} {row:18} {report['rps']:8.0f} rps", flush=True)
            with tls_session(nginx.certificate) as session:
                # Four checks first: nginx keeps the answer after the first.
                reach = revocation_reach(session, f"{origin}/agents/health", first.url, spare, secret, 4)
    return {"runs": runs, "summary": summary(runs), "reach_seconds": reach}


def require_counted(session: requests.Session, url: str, keys_file: Path) -> None:
    """Fail unless the limited rows' key is counted against its limit where it is sent."""
    with session:
        answer = session.get(url, headers={"x-api-key": keys_file.read_text().split()[0]}, timeout=10)
    if answer.status_code != 200 or "RateLimit-Limit" not in answer.headers:
        raise RuntimeError(f"the limited key is not counted at {url}: {answer.status_code} {dict(answer.headers)}")


def tls_session(certificate: Path) -> requests.Session:
    """A session that trusts nginx's certificate, and nothing from the environment."""
    session = requests.Session()
    session.trust_env = False  # REQUESTS_CA_BUNDLE would overrule nginx's certificate
    session.verify = str(certificate)
    return session


def summary(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, float]]:
    """Per row: median rps and CPU per request over rounds, and both as ratios to the unprotected row."""
    result = {}
    for row, reports in runs.items():
        result[row] = {
            "rps": float(np.median([report["rps"] for report in reports])),
            "cpu_us": float(np.median([report["cpu_us"] for report in reports])),
            "p99_ms": max(report["p99_us"] for report in reports) / 1000,
            "non_2xx": sum(report["non_2xx"] for report in reports),
            "cpu_us_by_process": {name: float(np.median([report["cpu_us_by_process"][name] for report in reports]))
                                  for name in reports[0]["cpu_us_by_process"]},
        }
    unprotected = result["proxy_unprotected"]
    for figures in result.values():
        figures["rps_ratio"] = figures["rps"] / unprotected["rps"]
        # A protected call's CPU as its share of capacity: 1.0 costs what the unprotected call costs.
        figures["cpu_ratio"] = unprotected["cpu_us"] / figures["cpu_us"]
    return result


def print_rows(backend: str, proxy: dict[str, Any]) -> None:
    """The proxy rows as a Markdown table, and the reach through nginx."""
    print(f"\n{backend}, through nginx (deploy/nginx, two app servers, limits in Redis):\n")
    groups = list(next(iter(proxy["summary"].values()))["cpu_us_by_process"])
    print("| row | req/s | ratio | CPU µs/request (all processes) | CPU ratio | "
          + " | ".join(f"of it {name}" for name in groups) + " | p99 ms | non-2xx |")
    print("| --- | ---: | ---: | ---: | ---: | " + "---: | " * len(groups) + "---: | ---: |")
    for row, figures in proxy["summary"].items():
        parts = " | ".join(f"{figures['cpu_us_by_process'][name]:.0f}" for name in groups)
        print(f"| {row} | {figures['rps']:.0f} | {figures['rps_ratio']:.2f} | {figures['cpu_us']:.0f} "
              f"| {figures['cpu_ratio']:.2f} | {parts} | {figures['p99_ms']:.2f} | {figures['non_2xx']} |")
    reach = proxy["reach_seconds"]
    if reach:
        print(f"\n{backend}: a revocation through one server was refused through nginx in "
              f"{np.median(reach) * 1000:.0f} ms (median), {max(reach) * 1000:.0f} ms at most, over {len(reach)} keys")
