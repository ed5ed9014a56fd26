"""Prometheus metrics, added up across gunicorn workers when PROMETHEUS_MULTIPROC_DIR is set."""

import os

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest, multiprocess

REQUESTS = Counter(
    "livekit_auth_requests_total", "Requests answered, by endpoint and status.", ["endpoint", "status"]
)
LATENCY = Histogram(
    "livekit_auth_request_seconds", "Time to answer a request, by endpoint.", ["endpoint"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5),
)
KEY_CHECKS = Counter(
    "livekit_auth_key_checks_total",
    "x-api-key checks by outcome: valid, invalid, revoked, expired, rate_limited.",
    ["outcome"],
)
LIMIT_STORE_ERRORS = Counter(
    "livekit_auth_limit_store_errors_total",
    "Calls to the rate limit store that failed or timed out; limits are not enforced meanwhile.",
)

KEY_CHECK_OUTCOMES = {
    outcome: KEY_CHECKS.labels(outcome)
    for outcome in ("valid", "invalid", "revoked", "expired", "rate_limited")
}


def count_key_check(outcome: str) -> None:
    """Count one key check's outcome."""
    KEY_CHECK_OUTCOMES[outcome].inc()


def exposition() -> bytes:
    """Every metric in Prometheus text format, from all workers when there are several."""
    if "PROMETHEUS_MULTIPROC_DIR" in os.environ:
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest()
