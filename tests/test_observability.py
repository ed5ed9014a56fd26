"""Every request's trace: a request id, no caching, one JSON log line without secrets, the metrics."""

import json

import pytest

from livekit_auth.apikeys import keys

from .support import envelope_error


def test_api_answers_are_not_cached_and_carry_a_request_id(api, client) -> None:
    response = client.get("/auth/check-key", headers={"x-api-key": api.new_key(), "X-Request-ID": "abc-123"})
    assert response.headers["Cache-Control"] == "no-store"
    assert response.headers["X-Request-ID"] == "abc-123"
    generated = client.get("/health", headers={"X-Request-ID": "bad id\x01" + "x" * 200})
    assert generated.headers["X-Request-ID"] != "bad id"
    assert len(generated.headers["X-Request-ID"]) == 32


def test_each_request_logs_one_json_line_without_secrets(api, client, capfd) -> None:
    capfd.readouterr()
    key = api.new_key()
    client.get(f"/auth/check-key?api_key={key}", headers={"x-api-key": key, "X-Request-ID": "r-1"})
    lines = capfd.readouterr().out.splitlines()
    assert len(lines) == 2
    record = json.loads(lines[1])
    assert record["path"] == "/auth/check-key" and record["status"] == 200
    assert record["request_id"] == "r-1" and record["key_prefix"] == keys.display_prefix(key)
    assert isinstance(record["duration_ms"], float) and record["client"] == "127.0.0.1"
    assert all(key not in line for line in lines)


@pytest.mark.slow
def test_metrics_need_their_token(app, api, client) -> None:
    envelope_error(client.get("/metrics"), 404)
    app.config["METRICS_TOKEN"] = "metrics-secret"
    envelope_error(client.get("/metrics"), 401)
    envelope_error(client.get("/metrics", headers={"Authorization": "Bearer nope"}), 401)
    envelope_error(client.get("/metrics", headers={"Authorization": "metrics-secret"}), 401)  # Bearer only
    envelope_error(client.get("/metrics", headers={"Authorization": "Basic metrics-secret"}), 401)
    api.get("/auth/check-key", api.new_key())
    api.get("/auth/check-key", "lvk_bad")
    response = client.get("/metrics", headers={"Authorization": "Bearer metrics-secret"})
    assert response.status_code == 200
    text = response.get_data(as_text=True)
    assert 'livekit_auth_key_checks_total{outcome="valid"}' in text
    assert 'livekit_auth_key_checks_total{outcome="invalid"}' in text
    assert 'livekit_auth_requests_total{endpoint="auth.check_key",status="200"}' in text
