"""Real servers on free ports, stopped by their PIDs: gunicorn (through boot.sh, as make run starts
it, or another command) and nginx with deploy/nginx's config. make bench starts its servers
here, and the tests start theirs here too.
"""

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import requests

PROJECT_ROOT = Path(__file__).resolve().parent.parent
NGINX = "/usr/sbin/nginx"
NGINX_MODULES = ("/usr/lib/nginx/modules/ndk_http_module.so", "/usr/lib/nginx/modules/ngx_http_lua_module.so")
NGINX_DEPLOY = PROJECT_ROOT / "deploy" / "nginx"
NGINX_CONFIG = NGINX_DEPLOY / "livekit-auth.conf"


def free_port() -> int:
    """Ask the kernel for a port nobody is listening on."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def child_pids(pid: int) -> list[int]:
    """The processes a process started."""
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(child) for child in out.stdout.split()]


@dataclass
class LiveServer:
    """A gunicorn started through boot.sh, as `make run` starts it (or another command)."""

    url: str
    process: subprocess.Popen[bytes]
    log_path: Path
    database_url: str
    workers: int

    def log(self) -> str:
        """Everything gunicorn and the app have written so far."""
        return self.log_path.read_text(errors="replace")

    def worker_pids(self) -> list[int]:
        """The worker processes under gunicorn's master."""
        return child_pids(self.process.pid)


@contextmanager
def live_server(
    database_url: str, workdir: Path, workers: int = 2, command: list[str] | None = None, **environment: str
) -> Iterator[LiveServer]:
    """Run boot.sh (migrations, then gunicorn), or another command, on a free port; stop it by its PID.

    The tests and make bench both start their servers here.
    """
    port = free_port()
    log_path = workdir / f"gunicorn-{port}.log"
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "PORT": str(port),
        "WEB_CONCURRENCY": str(workers),
        "DATABASE_URL": database_url,
        "SECRET_KEY": "live-server-test-secret",
        "XDG_RUNTIME_DIR": str(workdir),
        "RATELIMIT_ENABLED": "false",  # the rate limit tests turn it on
        **environment,
    }
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            command or [str(PROJECT_ROOT / "boot.sh")], cwd=PROJECT_ROOT, env=env, stdout=log,
            stderr=subprocess.STDOUT,
        )
    server = LiveServer(f"http://127.0.0.1:{port}", process, log_path, database_url, workers)
    try:
        wait_until_serving(server)
        yield server
    finally:
        stop(process)


class ServerDidNotStart(RuntimeError):
    """The server exited, or did not answer in time; the message holds its log."""


def wait_until_serving(server: LiveServer, seconds: float = 60) -> None:
    """Poll /health until it answers and every worker has booted, or fail with the server's log."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise ServerDidNotStart(f"the server exited with {server.process.returncode}:\n{server.log()}")
        try:
            if (requests.get(f"{server.url}/health", timeout=2).status_code == 200
                    and len(server.worker_pids()) == server.workers):
                return
        except (requests.ConnectionError, requests.Timeout):
            pass  # not listening yet, or a worker still booting
        time.sleep(0.1)
    raise ServerDidNotStart(f"the server did not answer within {seconds} s:\n{server.log()}")


def stop(process: subprocess.Popen[bytes]) -> None:
    """Stop gunicorn by its PID: TERM for a graceful stop, KILL if it hangs."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@dataclass
class Nginx:
    """A running nginx: its ports, and the certificate its clients trust."""

    https_port: int
    http_port: int
    certificate: Path
    process: subprocess.Popen[bytes]


def nginx_config(directory: Path, replacements: dict[str, str], locations: str = "", workers: str = "1") -> Path:
    """deploy/nginx's config with this run's ports and paths, inside a main config of its own.

    More locations (the bench's unprotected one) go in before the config's own.
    """
    site = NGINX_CONFIG.read_text()
    for written, replacement in {**replacements, "    location / {": locations + "    location / {"}.items():
        assert written in site, f"{written} is no longer in {NGINX_CONFIG}"
        site = site.replace(written, replacement)
    site = site.replace("/etc/nginx/lua/", f"{NGINX_DEPLOY}/").replace("/etc/nginx/snippets/", f"{NGINX_DEPLOY}/")
    (directory / "livekit-auth.conf").write_text(site)
    temporary = "\n".join(
        f"    {kind}_temp_path {directory / kind};" for kind in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi")
    )
    main = directory / "nginx.conf"
    main.write_text(
        "".join(f"load_module {module};\n" for module in NGINX_MODULES)
        + ("user root;\n" if os.geteuid() == 0 else "")
        + f"worker_processes {workers};\npid {directory / 'nginx.pid'};\nerror_log {directory / 'error.log'};\n"
        + "events {}\n"
        + f"http {{\n    access_log {directory / 'access.log'};\n{temporary}\n"
        + f"    include {directory / 'livekit-auth.conf'};\n}}\n"
    )
    return main


def make_certificate(directory: Path) -> tuple[Path, Path]:
    """A self-signed certificate for 127.0.0.1, made for this run."""
    certificate, key = directory / "server.crt", directory / "server.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(certificate), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )
    return certificate, key


def wait_for_port(port: int, seconds: float = 10) -> None:
    """Wait until something listens on a local port."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.05)
    raise ServerDidNotStart(f"nothing listens on port {port}")


@contextmanager
def running_nginx(directory: Path, app_servers: list[str], upstream: str, locations: str = "",
                  workers: str = "1") -> Iterator[Nginx]:
    """nginx with deploy/nginx's config in front of app servers and a protected upstream; stopped by its PID."""
    certificate, key = make_certificate(directory)
    https_port, http_port = free_port(), free_port()
    config = nginx_config(directory, {
        "127.0.0.1:8001": app_servers[0],
        "127.0.0.1:8002": app_servers[1],
        "127.0.0.1:9000": upstream,
        "listen 443 ssl": f"listen 127.0.0.1:{https_port} ssl",
        "listen 80": f"listen 127.0.0.1:{http_port}",
        "/etc/nginx/tls/livekit-auth.crt": str(certificate),
        "/etc/nginx/tls/livekit-auth.key": str(key),
    }, locations, workers)
    process = subprocess.Popen([NGINX, "-g", "daemon off;", "-c", str(config), "-e", str(directory / "error.log")],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_port(https_port)
        yield Nginx(https_port, http_port, certificate, process)
    finally:
        process.terminate()
        process.wait(timeout=10)


WORKERS = 2
# The production defaults, as make run serves them. Only the two limits that one load generator
# on one address would trip at once are raised, never switched off.
PRODUCTION = {
    "RATELIMIT_ENABLED": "true",
    "RATELIMIT_STORAGE_URI": "memory://",
    "METRICS_TOKEN": "bench-metrics-token",
    "RATELIMIT_CREATE_KEY": "1000000 per hour",
    "RATELIMIT_FAILED_AUTH": "1000000 per minute",
}


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


def floor_command(app: str) -> list[str]:
    """The command that serves another WSGI app (a floor) with the project's own gunicorn.conf.py."""
    return [str(Path(sys.executable).parent / "gunicorn"), "--config", "gunicorn.conf.py", app]


def serve(url: str, workdir: Path, command: list[str] | None = None, **settings: str):
    """Our app through boot.sh (the production path), or another command, with the production defaults.

    The servers start as the tests start theirs (live_server).
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


def cache_results(server: LiveServer) -> dict[str, float]:
    """livekit_auth_key_cache_total by result, added up over the server's workers."""
    text = requests.get(f"{server.url}/metrics", timeout=10,
                        headers={"Authorization": f"Bearer {PRODUCTION['METRICS_TOKEN']}"}).text
    counts = {"hit": 0.0, "miss": 0.0}
    for result in counts:
        prefix = f'livekit_auth_key_cache_total{{result="{result}"}} '
        counts[result] = sum(float(line[len(prefix):]) for line in text.splitlines() if line.startswith(prefix))
    return counts
