"""A small run of make bench's script, so that it cannot rot: 1,000 keys, a second a run, nginx included."""

import json
import shutil
import subprocess
import sys

import pytest

from bench.servers import PROJECT_ROOT

from .support import REQUIRE_SERVICES, require_nginx

pytestmark = pytest.mark.slow  # every test here starts a process or waits on one


def test_the_benchmark_runs_and_writes_its_results(tmp_path) -> None:
    if shutil.which("wrk") is None:
        if REQUIRE_SERVICES:
            pytest.fail("wrk is missing: .ci/run installs it")
        pytest.skip("wrk is missing: apt-get install wrk")
    require_nginx()  # the proxy's rows
    done = subprocess.run(
        [sys.executable, "-m", "bench", "--keys", "1000", "--seconds", "1",
         "--rounds", "1", "--backends", "sqlite", "--memory-checks", "2000", "--results", str(tmp_path)],
        capture_output=True, text=True, timeout=600, cwd=PROJECT_ROOT,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "| sqlite | check_hot |" in done.stdout
    assert "| proxy_hot |" in done.stdout
    [report] = tmp_path.glob("bench-*.json")
    result = json.loads(report.read_text())["results"][0]
    summary = result["summary"]
    assert set(summary) == {
        "floor", "floor_logged", "health", "check_one", "verify_one", "check_one_redis", "check_limited",
        "check_limited_redis", "check_hot", "check_hot_churn", "check_cold", "check_unknown", "check_malformed",
        "create_key",
    }
    assert all(figures["rps"] > 0 and figures["worker_cpu_us"] > 0 for figures in summary.values())
    assert all(summary[name]["non_2xx"] == 0
               for name in ("check_one", "verify_one", "check_limited", "check_limited_redis", "check_hot",
                            "check_hot_churn", "create_key"))
    assert summary["check_hot_churn"]["revoked_per_second"] > 5
    assert 0 < summary["check_hot"]["hit_rate"] <= 1 and summary["health"]["hit_rate"] is None
    assert "hot checks while" in done.stdout
    assert list(tmp_path.glob("bench-*.png"))
    proxy = result["proxy"]["summary"]
    assert set(proxy) == {"proxy_unprotected", "proxy_one", "proxy_hot", "proxy_limited", "proxy_unknown"}
    assert all(figures["rps"] > 0 and figures["cpu_us"] > 0 for figures in proxy.values())
    assert all(proxy[name]["non_2xx"] == 0 for name in ("proxy_unprotected", "proxy_one", "proxy_hot", "proxy_limited"))
    assert proxy["proxy_unknown"]["non_2xx"] > 0  # every unknown key refused, none let through
    assert proxy["proxy_unprotected"]["rps_ratio"] == 1
    assert len(result["proxy"]["reach_seconds"]) > 0
