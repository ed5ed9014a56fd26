"""Suspension: a key refused until an operator resumes it, keeping everything else it has."""

from prometheus_client import REGISTRY

import pytest

from livekit_auth.apikeys import keys

from .support import cap_active_keys, envelope_error, events, prefix_of, rows_on

SUSPENDED = "API key is suspended"


def key_id(api, secret: str) -> int:
    """The id of a key, as its holder lists it."""
    return next(key["id"] for key in api.get("/auth/keys", secret).json["data"]
                if key["display_prefix"] == keys.display_prefix(secret))


def suspended_checks() -> float:
    """Key checks refused as suspended so far, in this process."""
    return REGISTRY.get_sample_value("livekit_auth_key_checks_total", {"outcome": "suspended"}) or 0.0


def test_a_suspended_key_is_refused_everywhere_at_once_and_a_resumed_one_opens_again(app, api, runner) -> None:
    secret = api.new_key(user_email="paused@example.com")
    other = api.call("POST", "/auth/keys", secret, json={"name": "other"}).json["data"]["api_key"]
    suspended_id = key_id(api, secret)
    assert api.get("/auth/check-key", secret).status_code == 200  # cached from here on
    before = suspended_checks()
    assert runner.invoke(args=["keys", "suspend", str(suspended_id)]).exit_code == 0
    for path in ("/auth/check-key", "/auth/verify", "/auth/keys"):
        envelope_error(api.get(path, secret), 401, SUSPENDED)
    assert suspended_checks() == before + 3
    listed = {key["id"]: key for key in api.get("/auth/keys", other).json["data"]}
    assert listed[suspended_id]["status"] == "suspended" and listed[suspended_id]["name"] is None
    assert runner.invoke(args=["keys", "resume", keys.display_prefix(secret)]).exit_code == 0
    assert api.get("/auth/check-key", secret).status_code == 200
    assert api.get("/auth/verify", secret).status_code == 204
    assert [(e.action, e.actor, e.target) for e in events(app) if e.action in ("key_suspended", "key_resumed")] == [
        ("key_suspended", "cli", prefix_of(secret)), ("key_resumed", "cli", prefix_of(secret)),
    ]


def test_a_suspended_key_keeps_its_place_and_goes_with_revoke_all_and_a_leak_report(app, api, runner) -> None:
    cap_active_keys(app, 2)
    first = api.new_key(user_email="place@example.com")
    second = api.call("POST", "/auth/keys", first).json["data"]["api_key"]
    runner.invoke(args=["keys", "suspend", str(key_id(api, second))])
    # The suspended key may be resumed, so it still holds its place under the cap.
    envelope_error(api.call("POST", "/auth/keys", first), 409)
    reported = api.client.post("/auth/keys/leaked", json={"keys": [second]})
    assert reported.json["data"] == {"revoked": 1}
    envelope_error(api.get("/auth/check-key", second), 401, "API key has been revoked")
    assert runner.invoke(args=["keys", "resume", keys.display_prefix(second)]).exit_code == 1  # revoked for good


def test_the_command_line_says_what_it_did_and_refuses_a_dead_key(api, runner) -> None:
    secret = api.new_key(user_email="cli@example.com")
    prefix = keys.display_prefix(secret)
    first = runner.invoke(args=["keys", "suspend", prefix])
    assert first.exit_code == 0 and first.stdout.startswith("Suspended key ")
    again = runner.invoke(args=["keys", "suspend", prefix])
    assert again.exit_code == 0 and "was suspended already" in again.stdout
    assert runner.invoke(args=["keys", "resume", prefix]).stdout.startswith("Resumed key ")
    resumed_again = runner.invoke(args=["keys", "resume", prefix])
    assert resumed_again.exit_code == 0 and "was active already" in resumed_again.stdout
    assert runner.invoke(args=["keys", "revoke", prefix]).exit_code == 0
    refused = runner.invoke(args=["keys", "suspend", prefix])
    assert refused.exit_code == 1 and "is revoked" in refused.output
    listed = runner.invoke(args=["keys", "list", "--status", "suspended"])
    assert listed.exit_code == 0 and prefix not in listed.output
    assert runner.invoke(args=["keys", "suspend", secret]).exit_code == 2  # a whole key: never as an argument


@pytest.mark.slow
def test_an_admin_suspends_and_resumes_a_key_after_confirming(app, client, admin, api) -> None:
    secret = api.new_key(user_email="admin-paused@example.com")
    number = key_id(api, secret)
    page = client.get(f"/admin/keys/{number}").get_data(as_text=True)
    assert f'href="/admin/keys/{number}/suspend"' in page and "/resume" not in page
    confirm = client.get(f"/admin/keys/{number}/suspend").get_data(as_text=True)
    assert "Suspend key" in confirm and "until it is resumed" in confirm
    assert client.post(f"/admin/keys/{number}/suspend").status_code == 400  # no CSRF token
    assert api.get("/auth/check-key", secret).status_code == 200
    done = admin.post(f"/admin/keys/{number}/suspend", f"/admin/keys/{number}/suspend")
    assert done.status_code == 302
    envelope_error(api.get("/auth/check-key", secret), 401, SUSPENDED)
    page = client.get(f"/admin/keys/{number}").get_data(as_text=True)
    assert "suspended: refused until it is resumed" in page and 'class="badge suspended"' in page
    assert "by ops@example.com" in page and f'href="/admin/keys/{number}/resume"' in page
    assert rows_on(client, "status=suspended") == 1 and rows_on(client, "status=active") == 0
    admin.post(f"/admin/keys/{number}/resume", f"/admin/keys/{number}/resume")
    assert api.get("/auth/check-key", secret).status_code == 200
    assert rows_on(client, "status=suspended") == 0
    assert [(e.action, e.actor) for e in events(app) if e.action in ("key_suspended", "key_resumed")] == [
        ("key_suspended", "ops@example.com"), ("key_resumed", "ops@example.com"),
    ]
