"""Prometheus metrics, added up across gunicorn workers when PROMETHEUS_MULTIPROC_DIR is set.

Each increment in multiprocess mode is a write to a shared file, paid by every request, so
there are only counters: a latency histogram cost as much as the request counter and the key
check counter together. Each request's duration is in its log line (duration_ms).
"""

import os

from prometheus_client import CollectorRegistry, Counter, generate_latest, multiprocess

REQUESTS = Counter(
    "livekit_auth_requests_total", "Requests answered, by endpoint and status.", ["endpoint", "status"]
)
KEY_CHECKS = Counter(
    "livekit_auth_key_checks_total",
    "x-api-key checks by outcome: valid, invalid, revoked, expired, suspended, rate_limited (an address's "
    "failed checks), missing_scope, rate_limited_key and quota_exhausted (a key's or its user's limits).",
    ["outcome"],
)
KEY_CACHE = Counter(
    "livekit_auth_key_cache_total",
    "Key checks answered from the worker's key cache (hit) or read from the database (miss).",
    ["result"],
)
LIMIT_STORE_ERRORS = Counter(
    "livekit_auth_limit_store_errors_total",
    "Calls to the rate limit store that failed or timed out; limits are not enforced meanwhile.",
)

KEY_CHECK_OUTCOMES = {
    outcome: KEY_CHECKS.labels(outcome)
    for outcome in ("valid", "invalid", "revoked", "expired", "suspended", "rate_limited", "missing_scope",
                    "rate_limited_key", "quota_exhausted")
}

KEY_CACHE_RESULTS = {result: KEY_CACHE.labels(result) for result in ("hit", "miss")}


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


def count_key_cache(result: str) -> None:
    """Count a key check as answered from the cache (hit) or read from the database (miss)."""
    KEY_CACHE_RESULTS[result].inc()
