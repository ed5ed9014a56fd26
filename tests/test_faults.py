"""Faults a real deployment meets: its database going away, a worker killed, oversized requests."""

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from bench.servers import free_port, live_server

from .support import REQUIRE_SERVICES, envelope_error

INITDB = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))


class OwnPostgres:
    """A PostgreSQL cluster of this test's own, which it may stop and start at will."""

    def __init__(self) -> None:
        self.bin = Path(INITDB[-1]).parent
        self.directory = Path(tempfile.mkdtemp(prefix="livekit-pg-"))
        self.data = self.directory / "data"
        self.port = free_port()
        self.as_owner: list[str] = []
        if os.geteuid() == 0:  # PostgreSQL will not run as root
            owner = pwd.getpwnam("postgres")
            os.chmod(self.directory, 0o755)
            os.chown(self.directory, owner.pw_uid, owner.pw_gid)
            self.as_owner = ["runuser", "-u", "postgres", "--"]
        self.run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    @property
    def url(self) -> str:
        """The cluster's postgres database."""
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def run(self, program: str, *arguments: str) -> None:
        """Run one of PostgreSQL's programs as the cluster's owner."""
        subprocess.run([*self.as_owner, str(self.bin / program), *arguments],
                       check=True, capture_output=True, timeout=120)

    def start(self) -> None:
        """Start the server and wait until it accepts connections."""
        options = f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
        self.run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.directory / "log"), "-w", "start")

    def stop(self) -> None:
        """Stop the server at once, cutting every connection."""
        self.run("pg_ctl", "-D", str(self.data), "-m", "immediate", "-w", "stop")

    def remove(self) -> None:
        """Stop the server if it runs, and delete the cluster."""
        subprocess.run([*self.as_owner, str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(self.directory, ignore_errors=True)


@pytest.fixture
def own_postgres():
    """A PostgreSQL cluster for this test alone."""
    if not INITDB:
        if REQUIRE_SERVICES:
            pytest.fail("PostgreSQL's initdb is missing")
        pytest.skip("PostgreSQL's server programs are not installed")
    cluster = OwnPostgres()
    cluster.start()
    yield cluster
    cluster.remove()


def timed(call):
    """Run call; return its answer and how long it took."""
    started = time.monotonic()
    answer = call()
    return answer, time.monotonic() - started


@pytest.mark.slow
def test_postgresql_going_away_and_coming_back(own_postgres, tmp_path) -> None:
    with live_server(own_postgres.url, tmp_path, workers=2) as server:
        pids = set(subprocess.run(["pgrep", "-P", str(server.process.pid)], capture_output=True,
                                  text=True).stdout.split())

        def create(n: int) -> requests.Response:
            body = {"user_name": "F", "user_email": f"fault{n}-{time.monotonic_ns()}@example.com"}
            return requests.post(f"{server.url}/auth/create-key", json=body, timeout=30)

        key = create(0).json()["data"]["api_key"]
        own_postgres.stop()
        for n in range(4):  # both workers, with connections that were pooled and now dead
            answer, seconds = timed(lambda: create(n))
            envelope_error(answer, 503)
            assert seconds < 6
        ready, seconds = timed(lambda: requests.get(f"{server.url}/health/ready", timeout=30))
        envelope_error(ready, 503, "Database unavailable")
        assert seconds < 6
        assert requests.get(f"{server.url}/health", timeout=5).status_code == 200

        own_postgres.start()
        deadline = time.monotonic() + 20
        statuses = []
        while time.monotonic() < deadline:
            statuses.append(create(100 + len(statuses)).status_code)
            if statuses[-4:] == [200] * 4:
                break
            time.sleep(0.2)
        assert statuses[-4:] == [200] * 4, statuses
        assert set(statuses) <= {200, 503}
        checked = requests.get(f"{server.url}/auth/check-key", headers={"x-api-key": key}, timeout=10)
        assert checked.status_code == 200
        assert requests.get(f"{server.url}/health/ready", timeout=10).status_code == 200
        after = set(subprocess.run(["pgrep", "-P", str(server.process.pid)], capture_output=True,
                                   text=True).stdout.split())
        assert after == pids, "the same workers serve again, without a restart"
        assert "Traceback" not in server.log()


@pytest.mark.slow
def test_a_worker_killed_mid_load_loses_nothing_it_acknowledged(tmp_path) -> None:
    with live_server(f"sqlite:///{tmp_path / 'kill.db'}", tmp_path, workers=2) as server:

        def create(n: int):
            body = {"user_name": "K", "user_email": f"kill{n}@example.com"}
            try:
                return requests.post(f"{server.url}/auth/create-key", json=body, timeout=30)
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError):
                return None  # cut off by the kill, before or while the answer was sent: not acknowledged

        with ThreadPoolExecutor(8) as pool:
            futures = [pool.submit(create, n) for n in range(120)]
            time.sleep(0.3)
            victim = subprocess.run(["pgrep", "-P", str(server.process.pid)], capture_output=True,
                                    text=True).stdout.split()[0]
            os.kill(int(victim), signal.SIGKILL)
            answers = [future.result() for future in futures]
        acknowledged = [a.json()["data"]["api_key"] for a in answers if a is not None and a.status_code == 200]
        assert acknowledged
        for key in acknowledged:
            checked = requests.get(f"{server.url}/auth/check-key", headers={"x-api-key": key}, timeout=10)
            assert checked.status_code == 200


@pytest.mark.slow
def test_oversized_requests_are_refused_by_gunicorn_in_the_envelope(tmp_path) -> None:
    # gunicorn answers these before the app runs, through gunicorn.util.write_error, which
    # gunicorn.conf.py replaces: a gunicorn that stops calling it fails here.
    with live_server(f"sqlite:///{tmp_path / 'size.db'}", tmp_path, workers=1) as server:
        huge_header = requests.get(f"{server.url}/auth/check-key", headers={"x-api-key": "k" * 9000}, timeout=10)
        envelope_error(huge_header, 431, "The request has over 50 headers, or one over 8190 bytes")
        many = {f"x-filler-{n}": "1" for n in range(60)}
        envelope_error(requests.get(f"{server.url}/health", headers=many, timeout=10), 431)
        long_line = requests.get(f"{server.url}/health?{'a' * 5000}", timeout=10)
        envelope_error(long_line, 414, "The request line is over 4094 bytes")
        for refused in (huge_header, long_line):
            assert refused.headers["Cache-Control"] == "no-store" and "k" * 100 not in refused.text
        answer = requests.get(f"{server.url}/health", timeout=10)
        assert answer.headers["Server"] == "gunicorn"


@pytest.mark.slow
def test_a_chunked_body_over_the_limit_is_refused_whole(tmp_path) -> None:
    # Valid JSON up to the limit and beyond: cut at 64 KiB it would still parse.
    document = b'{"user_name": "C", "user_email": "chunked@example.com"}' + b" " * (70 * 1024)
    with live_server(f"sqlite:///{tmp_path / 'chunked.db'}", tmp_path, workers=1) as server:
        url = f"{server.url}/auth/create-key"
        chunks = iter([document[:40_000], document[40_000:]])  # no Content-Length: chunked
        refused = requests.post(url, data=chunks, headers={"Content-Type": "application/json"}, timeout=10)
        envelope_error(refused, 413)
        small = requests.post(url, data=document[:4096], headers={"Content-Type": "application/json"}, timeout=10)
        assert small.status_code == 200, "nothing of the refused request was stored"


@pytest.mark.slow
def test_gunicorn_refuses_to_serve_with_the_debugger_on(tmp_path) -> None:
    env = {**os.environ, "FLASK_DEBUG": "1", "PORT": str(free_port()), "XDG_RUNTIME_DIR": str(tmp_path),
           "DATABASE_URL": f"sqlite:///{tmp_path / 'debug.db'}", "SECRET_KEY": "x",
           "PATH": f"{Path(os.sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    result = subprocess.run(["gunicorn", "--config", "gunicorn.conf.py", "wsgi:app"], env=env,
                            cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True, timeout=60)
    assert result.returncode != 0
    assert "FLASK_DEBUG" in result.stdout + result.stderr


@pytest.mark.slow
def test_metrics_add_up_across_workers(tmp_path) -> None:
    settings = {"METRICS_TOKEN": "metrics-secret"}
    with live_server(f"sqlite:///{tmp_path / 'metrics.db'}", tmp_path, workers=2, **settings) as server:
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda _: requests.get(f"{server.url}/auth/check-key", timeout=10), range(200)))
        text = requests.get(f"{server.url}/metrics", headers={"Authorization": "Bearer metrics-secret"},
                            timeout=10).text
        line = next(l for l in text.splitlines() if l.startswith('livekit_auth_key_checks_total{outcome="invalid"}'))
        assert float(line.split()[-1]) == 200


@pytest.mark.slow
def test_every_key_checked_endpoint_answers_503_while_postgresql_is_down(own_postgres, tmp_path) -> None:
    with live_server(own_postgres.url, tmp_path, workers=2, KEY_CACHE_POLL_SECONDS="0") as server:

        def new_key(n: int) -> str:
            body = {"user_name": "F", "user_email": f"down{n}@example.com"}
            return requests.post(f"{server.url}/auth/create-key", json=body, timeout=30).json()["data"]["api_key"]

        cached, uncached = new_key(1), new_key(2)
        for _ in range(4):  # into both workers' caches
            assert requests.get(f"{server.url}/auth/check-key", headers={"x-api-key": cached}, timeout=10).ok
        own_postgres.stop()
        calls = [("GET", "/auth/check-key", cached), ("GET", "/auth/check-key", uncached),
                 ("GET", "/auth/verify", cached), ("GET", "/auth/keys", cached),
                 ("POST", "/auth/keys/rotate", cached), ("DELETE", "/auth/keys/1", cached),
                 ("GET", "/auth/key-versions", None)]
        for method, path, key in calls * 2:  # both workers
            headers = {} if key is None else {"x-api-key": key}
            answer, seconds = timed(lambda: requests.request(method, f"{server.url}{path}", headers=headers,
                                                             timeout=30))
            envelope_error(answer, 503)
            assert seconds < 6, (method, path)
        own_postgres.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            answers = [requests.get(f"{server.url}/auth/check-key", headers={"x-api-key": key}, timeout=10)
                       for key in (cached, uncached) * 2]
            if all(answer.status_code == 200 for answer in answers):
                break
            time.sleep(0.2)
        assert [answer.status_code for answer in answers] == [200] * 4
        log = server.log()
        assert "Traceback" not in log, log[log.find("Traceback") - 500:][:4000]
        # One warning per worker for the whole episode, not one per request.
        assert 1 <= log.count("database unavailable") <= server.workers, log[-3000:]
