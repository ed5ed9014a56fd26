"""The audit log: every change to a key, from any channel, is one row; the first revocation wins."""

import threading


import pytest
from livekit_auth import create_app
from livekit_auth.context import key_service
from livekit_auth.extensions import db
from livekit_auth.apikeys.models import ApiKey

from .support import events, prefix_of, release


def test_every_key_change_through_the_api_is_audited_with_who_and_where(app, api) -> None:
    first = api.new_key()
    added = api.call("POST", "/auth/keys", first, json={"name": "ci"}).json["data"]
    rotated = api.call("POST", "/auth/keys/rotate", added["api_key"], json={"grace_hours": 0}).json["data"]
    assert api.call("DELETE", f"/auth/keys/{rotated['id']}", first).status_code == 200
    rows = [(e.action, e.actor, e.target, e.address) for e in events(app) if e.action.startswith(("key_", "revoke"))]
    assert rows == [
        ("key_created", "api", prefix_of(first), "127.0.0.1"),
        ("key_created", f"api {prefix_of(first)}", prefix_of(added["api_key"]), "127.0.0.1"),
        ("key_created", f"api {prefix_of(added['api_key'])}", prefix_of(rotated["api_key"]), "127.0.0.1"),
        ("key_rotated", f"api {prefix_of(added['api_key'])}", prefix_of(added["api_key"]), "127.0.0.1"),
        ("revoke", f"api {prefix_of(first)}", prefix_of(rotated["api_key"]), "127.0.0.1"),
    ]
    assert all(added["api_key"] not in (e.detail or "") for e in events(app))


def test_every_key_change_from_the_command_line_is_audited(app, api, runner) -> None:
    created = runner.invoke(args=["keys", "create", "--email", "ops@example.com"])
    secret = created.stdout.strip()
    assert runner.invoke(args=["keys", "revoke", prefix_of(secret)]).exit_code == 0
    dry = runner.invoke(args=["keys", "prune", "--revoked-older-than-days", "0", "--dry-run"])
    assert dry.exit_code == 0 and prefix_of(secret) in dry.stdout and "Would delete 1 keys" in dry.stdout
    assert api.get("/auth/check-key", secret).json["message"] == "API key has been revoked"
    assert not events(app, "key_deleted")
    pruned = runner.invoke(args=["keys", "prune", "--revoked-older-than-days", "0"])
    assert "Deleted 1 keys" in pruned.stdout
    rows = [(e.action, e.actor, e.target, e.address) for e in events(app) if e.action.startswith(("key_", "revoke"))]
    assert rows == [
        ("key_created", "cli", prefix_of(secret), "command line"),
        ("revoke", "cli", prefix_of(secret), "command line"),
        ("key_deleted", "cli", prefix_of(secret), "command line"),
    ]


def test_a_second_revocation_keeps_the_first_and_is_not_audited(app, api, runner) -> None:
    key = api.new_key()
    key_id = api.get("/auth/keys", key).json["data"][0]["id"]
    assert api.call("DELETE", f"/auth/keys/{key_id}", key).status_code == 200
    again = runner.invoke(args=["keys", "revoke", str(key_id)])
    assert "was already revoked" in again.stdout
    with app.app_context():
        assert db.session.get(ApiKey, key_id).revoked_by == f"api {prefix_of(key)}"
    assert len(events(app, "revoke")) == 1


@pytest.mark.slow
def test_revocations_racing_for_one_key_leave_the_first_and_one_audit_row(app, api, database_uri) -> None:
    key = api.new_key()
    key_id = api.get("/auth/keys", key).json["data"][0]["id"]
    racers = [create_app({"SQLALCHEMY_DATABASE_URI": database_uri, "SECRET_KEY": "test"}) for _ in range(4)]
    start = threading.Barrier(len(racers))
    won: dict[str, bool] = {}

    def revoke(racer, actor: str) -> None:
        with racer.app_context():
            stored = db.session.get(ApiKey, key_id)
            start.wait()
            won[actor] = key_service().revoke(stored, actor)
            db.session.commit()

    threads = [threading.Thread(target=revoke, args=(racer, f"admin{n}@example.com")) for n, racer in enumerate(racers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    for racer in racers:
        release(racer)
    winners = [actor for actor, first in won.items() if first]
    assert len(won) == len(racers) and len(winners) == 1
    with app.app_context():
        assert db.session.get(ApiKey, key_id).revoked_by == winners[0]
    assert [e.actor for e in events(app, "revoke")] == winners
