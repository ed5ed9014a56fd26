"""Restricted keys: scopes a key may act in, asked by a proxy in X-Required-Scope, never widened."""

import pytest
from prometheus_client import REGISTRY

from .support import envelope_error, events

CALLS = "calls:write"


def restricted(api, key: str, *scopes: str, **fields) -> dict:
    """Add a key restricted to scopes, with the calling key; its answer's data."""
    answer = api.call("POST", "/auth/keys", key, json={"scopes": list(scopes), **fields})
    assert answer.status_code == 200, answer.json
    return answer.json["data"]


def verify(api, key: str, scope: str | None = None, path: str = "/auth/verify"):
    """Ask whether a key may act in a scope, as a proxy asks."""
    headers = {"x-api-key": key, **({"X-Required-Scope": scope} if scope is not None else {})}
    return api.client.get(path, headers=headers)


def missing_scope_checks() -> float:
    """Key checks refused for a scope the key lacks so far, in this process."""
    return REGISTRY.get_sample_value("livekit_auth_key_checks_total", {"outcome": "missing_scope"}) or 0.0


def test_a_proxy_asks_for_a_scope_and_a_restricted_key_passes_only_with_it(app, api) -> None:
    full = api.new_key(user_email="scoped@example.com")
    calls = restricted(api, full, CALLS, "assistants:read")
    assert calls["scopes"] == ["assistants:read", CALLS]
    for scope in (None, CALLS, "rooms:admin"):
        opened = verify(api, full, scope)
        assert opened.status_code == 204 and "X-Auth-Scopes" not in opened.headers  # full access: every scope
    before = missing_scope_checks()
    for scope in (CALLS, "assistants:read", None):
        opened = verify(api, calls["api_key"], scope)
        assert opened.status_code == 204 and opened.headers["X-Auth-Scopes"] == "assistants:read calls:write"
    refused = verify(api, calls["api_key"], "rooms:admin")
    envelope_error(refused, 403, "API key lacks the scope rooms:admin")
    assert "X-Auth-Max-Age" not in refused.headers  # a refusal is never kept
    envelope_error(verify(api, calls["api_key"], "rooms:admin", "/auth/check-key"), 403,
                   "API key lacks the scope rooms:admin")
    assert missing_scope_checks() == before + 2
    # Answered from the worker's cache now: the decision is still the scope's.
    assert verify(api, calls["api_key"], CALLS).status_code == 204
    envelope_error(verify(api, calls["api_key"], "calls:read"), 403)
    envelope_error(verify(api, calls["api_key"], "Calls:Write"), 400,
                   "X-Required-Scope must be 1 to 64 lower-case letters, digits and _.:-")


def test_a_restricted_key_issues_only_keys_within_its_scopes(app, api) -> None:
    full = api.new_key(user_email="narrow@example.com")
    calls = restricted(api, full, CALLS, "assistants:read")["api_key"]
    inherited = api.call("POST", "/auth/keys", calls, json={"name": "same"}).json["data"]
    assert inherited["scopes"] == ["assistants:read", CALLS]
    assert restricted(api, calls, CALLS)["scopes"] == [CALLS]
    created = len(events(app, "key_created"))
    envelope_error(api.call("POST", "/auth/keys", calls, json={"scopes": [CALLS, "rooms:admin"]}), 403,
                   "API key lacks the scope rooms:admin")
    envelope_error(api.call("POST", "/auth/keys", calls, json={"scopes": None}), 403,
                   "A restricted API key cannot issue a key with full access")
    assert len(events(app, "key_created")) == created
    rotated = api.call("POST", "/auth/keys/rotate", calls, json={}).json["data"]
    assert rotated["scopes"] == ["assistants:read", CALLS]
    assert verify(api, rotated["api_key"], "rooms:admin").status_code == 403
    listed = {key["id"]: key["scopes"] for key in api.get("/auth/keys", full).json["data"]}
    assert listed[rotated["id"]] == ["assistants:read", CALLS] and None in listed.values()
    assert "scopes assistants:read calls:write" in events(app, "key_created")[-1].detail


@pytest.mark.parametrize("scopes", [[], ["Calls"], [CALLS, CALLS], ["a" * 65], [f"s{n}" for n in range(33)],
                                    [7], "calls:write", [""]])
def test_scopes_that_are_not_scopes_are_refused_and_nothing_is_issued(app, api, scopes) -> None:
    full = api.new_key(user_email="bad-scopes@example.com")
    refused = envelope_error(api.call("POST", "/auth/keys", full, json={"scopes": scopes}), 400)
    assert refused["message"].startswith("scopes must be a list of 1 to 32 distinct scopes")
    assert len(events(app, "key_created")) == 1


@pytest.mark.slow
def test_the_command_line_and_the_admin_issue_restricted_keys(app, api, runner, client, admin) -> None:
    result = runner.invoke(args=["keys", "create", "--email", "cli-scoped@example.com", "--scope", CALLS,
                                 "--scope", "assistants:read"])
    assert result.exit_code == 0, result.output
    secret = result.stdout.strip()
    assert verify(api, secret, CALLS).headers["X-Auth-Scopes"] == "assistants:read calls:write"
    refused = runner.invoke(args=["keys", "create", "--email", "cli-scoped@example.com", "--scope", "No"])
    assert refused.exit_code == 2 and "--scope must be a list of 1 to 32 distinct scopes" in refused.output
    posted = admin.post("/admin/keys/new", "/admin/keys/new", email="admin-scoped@example.com", scopes=f" {CALLS} ")
    shown = client.get(posted.headers["Location"]).get_data(as_text=True)
    issued = shown.split('<code id="issued-key" class="mono">')[1].split("</code>")[0]
    assert verify(api, issued, CALLS).headers["X-Auth-Scopes"] == CALLS
    key_id = api.get("/auth/keys", issued).json["data"][0]["id"]
    assert f'<span class="mono">{CALLS}</span>' in client.get(f"/admin/keys/{key_id}").get_data(as_text=True)
