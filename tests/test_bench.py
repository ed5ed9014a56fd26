"""A small run of make bench's script, so that it cannot rot: 1,000 keys, a second a run."""

import json
import shutil
import subprocess
import sys

import pytest

from .support import PROJECT_ROOT, REQUIRE_SERVICES


def test_the_benchmark_runs_and_writes_its_results(tmp_path) -> None:
    if shutil.which("wrk") is None:
        if REQUIRE_SERVICES:
            pytest.fail("wrk is missing: .ci/run installs it")
        pytest.skip("wrk is missing: apt-get install wrk")
    result = subprocess.run(
        [sys.executable, str(PROJECT_ROOT / "bench" / "bench.py"), "--keys", "1000", "--seconds", "1",
         "--rounds", "1", "--backends", "sqlite", "--memory-checks", "2000", "--results", str(tmp_path)],
        capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "| sqlite | check_hot |" in result.stdout
    [report] = tmp_path.glob("bench-*.json")
    summary = json.loads(report.read_text())["results"][0]["summary"]
    assert set(summary) == {
        "floor", "floor_logged", "health", "check_one", "verify_one", "check_one_redis", "check_hot",
        "check_hot_churn", "check_cold", "check_unknown", "check_malformed", "create_key",
    }
    assert all(figures["rps"] > 0 and figures["worker_cpu_us"] > 0 for figures in summary.values())
    assert all(summary[name]["non_2xx"] == 0
               for name in ("check_one", "verify_one", "check_hot", "check_hot_churn", "create_key"))
    assert summary["check_hot_churn"]["revoked_per_second"] > 5
    assert 0 < summary["check_hot"]["hit_rate"] <= 1 and summary["health"]["hit_rate"] is None
    assert "hot checks while" in result.stdout
    assert list(tmp_path.glob("bench-*.png"))
