"""flask keys create / list / revoke / prune."""

import json
import subprocess
import sys
from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from livekit_auth import create_app

from livekit_auth.apikeys import keys
from livekit_auth.extensions import db

from bench.servers import PROJECT_ROOT, free_port

from .support import cap_active_keys, flask_command, release

def test_create_prints_a_working_key_once(runner, api) -> None:
    result = runner.invoke(args=["keys", "create", "--email", "ops@example.com", "--name", "ci"])
    assert result.exit_code == 0, result.output
    secret = result.stdout.strip()
    assert keys.is_well_formed(secret)
    data = api.get("/auth/check-key", secret).json["data"]
    assert data["user_email"] == "ops@example.com"
    assert data["user_name"] == "ops"

def test_create_adds_to_an_existing_user(runner, api) -> None:
    first = api.new_key(user_email="john@example.com")
    result = runner.invoke(args=["keys", "create", "--email", "JOHN@example.com", "--expires-in-days", "5"])
    assert result.exit_code == 0, result.output
    listed = api.get("/auth/keys", first).json["data"]
    assert len(listed) == 2
    assert listed[0]["expires_at"] is not None

@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--email", "nope"], "Invalid email address"),
        (["--email", "a@example.com", "--expires-in-days", "0"], "--expires-in-days must be from 1 to 3650"),
        (["--email", "a@example.com", "--name", "x" * 101], "--name must be at most 100 characters"),
        (["--email", "a@example.com", "--user-name", "a\x1bb"], "--user-name must not contain control characters"),
        ([], "Missing option '--email'"),
    ],
)
def test_create_refuses_bad_options(runner, arguments, message) -> None:
    result = runner.invoke(args=["keys", "create", *arguments])
    assert result.exit_code == 2
    assert message in result.output

def test_create_respects_the_cap(app, runner) -> None:
    cap_active_keys(app, 1)
    assert runner.invoke(args=["keys", "create", "--email", "a@example.com"]).exit_code == 0
    result = runner.invoke(args=["keys", "create", "--email", "a@example.com"])
    assert result.exit_code == 1
    assert "at most 1 active keys" in result.output

def test_list_shows_prefixes_never_keys(runner, api) -> None:
    secret = api.new_key(user_email="john@example.com")
    api.new_key(user_email="jane@example.com")
    result = runner.invoke(args=["keys", "list", "--email", "john@example.com"])
    assert result.exit_code == 0
    assert keys.display_prefix(secret) in result.output
    assert secret not in result.output
    assert "jane@example.com" not in result.output

def test_revoke_by_prefix_or_id(runner, api) -> None:
    first = api.new_key(user_email="john@example.com")
    second = api.new_key(user_email="jane@example.com")
    assert runner.invoke(args=["keys", "revoke", keys.display_prefix(first)]).exit_code == 0
    assert api.get("/auth/check-key", first).json["message"] == "API key has been revoked"
    second_id = api.get("/auth/keys", second).json["data"][0]["id"]
    assert runner.invoke(args=["keys", "revoke", str(second_id)]).exit_code == 0
    assert api.get("/auth/check-key", second).status_code == 401
    listed = runner.invoke(args=["keys", "list", "--status", "revoked"]).output
    assert "john@example.com" in listed and "jane@example.com" in listed

@pytest.mark.parametrize("name", ["lvk_nothing", "12", str(10**20)])
@pytest.mark.slow
def test_revoke_an_unknown_key_fails(runner, name) -> None:
    result = runner.invoke(args=["keys", "revoke", name])
    assert result.exit_code == 1
    assert "No key has the id or prefix" in result.output

def test_prune_deletes_only_old_revoked_or_expired_keys(runner, api, frozen_clock) -> None:
    kept = api.new_key(user_email="kept@example.com")
    revoked = api.new_key(user_email="gone@example.com")
    runner.invoke(args=["keys", "revoke", keys.display_prefix(revoked)])
    frozen_clock.advance(days=10)
    recent = api.new_key(user_email="recent@example.com")
    runner.invoke(args=["keys", "revoke", keys.display_prefix(recent)])
    result = runner.invoke(args=["keys", "prune", "--revoked-older-than-days", "5"])
    assert result.exit_code == 0
    assert "Deleted 1 keys" in result.output
    listed = runner.invoke(args=["keys", "list"]).output
    assert "gone@example.com" not in listed
    assert "recent@example.com" in listed
    assert api.get("/auth/check-key", kept).status_code == 200

def test_prune_needs_its_option(runner) -> None:
    assert runner.invoke(args=["keys", "prune"]).exit_code == 2


@pytest.mark.slow
def test_admin_create_asks_for_the_password_twice(app, runner) -> None:
    from livekit_auth.admin.accounts import verify_login

    result = runner.invoke(
        args=["admin", "create", "--email", "Ops@Example.com"],
        input="a long passphrase\na long passphrase\n",
    )
    assert result.exit_code == 0, result.output
    assert result.output.count("Password") == 1 and "Repeat" in result.output
    assert "a long passphrase" not in result.output
    with app.app_context():
        assert verify_login("ops@example.com", "a long passphrase") is not None


def test_admin_create_reads_stdin_for_scripts(app, runner) -> None:
    result = runner.invoke(
        args=["admin", "create", "--email", "ops@example.com", "--password-stdin"],
        input="scripted password\n",
    )
    assert result.exit_code == 0, result.output
    assert "ops@example.com" in runner.invoke(args=["admin", "list"]).output


def test_admin_passwords_are_at_least_twelve_characters(runner) -> None:
    result = runner.invoke(
        args=["admin", "create", "--email", "ops@example.com", "--password-stdin"], input="elevenchars\n"
    )
    assert result.exit_code == 1
    assert "at least 12 characters" in result.output


def test_admin_passwords_are_stored_hashed(app, runner) -> None:
    from livekit_auth.admin.models import Admin

    runner.invoke(args=["admin", "create", "--email", "ops@example.com", "--password-stdin"],
                  input="a long passphrase\n")
    with app.app_context():
        stored = db.session.scalar(select(Admin.password_hash))
    assert stored.startswith("scrypt:") and "a long passphrase" not in stored


def test_admin_create_refuses_a_duplicate_and_delete_removes(runner) -> None:
    arguments = ["admin", "create", "--email", "ops@example.com", "--password-stdin"]
    assert runner.invoke(args=arguments, input="a long passphrase\n").exit_code == 0
    assert runner.invoke(args=arguments, input="a long passphrase\n").exit_code == 1
    assert runner.invoke(args=["admin", "delete", "--email", "OPS@example.com"]).exit_code == 0
    assert "ops@example.com" not in runner.invoke(args=["admin", "list"]).output
    assert runner.invoke(args=["admin", "delete", "--email", "ops@example.com"]).exit_code == 1


def test_revoke_with_a_digit_that_is_not_ascii_is_a_clean_error(runner) -> None:
    result = runner.invoke(args=["keys", "revoke", "²"])
    assert result.exit_code == 1
    assert "No key has the id or prefix '²'" in result.output
    assert isinstance(result.exception, SystemExit)


def test_every_command_names_its_database_on_stderr_without_a_password(runner, app) -> None:
    result = runner.invoke(args=["keys", "list"])
    assert result.stderr.startswith("Database: sqlite") or result.stderr.startswith("Database: postgresql")
    locked = create_app({"SQLALCHEMY_DATABASE_URI": "postgresql://ops:s3cret@127.0.0.1:9/none", "SECRET_KEY": "x"})
    try:
        named = locked.test_cli_runner().invoke(args=["admin", "list"])
    finally:
        release(locked)
    assert "Database: postgresql://ops:***@127.0.0.1:9/none" in named.stderr
    assert "s3cret" not in named.output



def test_create_stores_a_name_that_grows_when_lower_cased(runner, api) -> None:
    name = "İ" * 100  # its lower-cased search copy is 200 characters
    result = runner.invoke(args=["keys", "create", "--email", "dotted@example.com", "--user-name", name,
                                 "--org", name])
    assert result.exit_code == 0, result.output
    data = api.get("/auth/check-key", result.stdout.strip()).json["data"]
    assert data["user_name"] == name and data["org_name"] == name


def test_keys_list_shows_organisation_and_last_use(runner, api, frozen_clock) -> None:
    secret = api.new_key(user_email="john@example.com", org_name="Acme Corp")
    api.get("/auth/check-key", secret)
    output = runner.invoke(args=["keys", "list"]).output
    assert "organisation" in output and "last used" in output
    assert "Acme Corp" in output and "2026-01-15 10:00" in output


@pytest.mark.slow
def test_keys_list_json_prints_every_column_of_every_key(api, database_uri) -> None:
    secret = api.new_key(user_email="json@example.com", org_name="Acme")
    api.get("/auth/check-key", secret)
    listed = api.get("/auth/keys", secret).json["data"][0]
    done = flask_command(database_uri, "keys", "list", "--json")
    assert done.returncode == 0, done.stderr
    assert done.stderr.startswith("Database: ")
    [row] = json.loads(done.stdout)
    assert set(row) == set(listed) | {"email", "org_name"}
    assert row["id"] == listed["id"] and row["display_prefix"] == keys.display_prefix(secret)
    assert row["email"] == "json@example.com" and row["org_name"] == "Acme"
    assert row["requests_30d"] == 2 and row["status"] == "active" and row["expires_at"] is None
    for name in ("created_at", "last_used_at"):
        assert datetime.fromisoformat(row[name]).utcoffset() == timedelta(0)
    assert secret not in done.stdout and keys.digest(secret) not in done.stdout
    assert json.loads(flask_command(database_uri, "keys", "list", "--json", "--status", "revoked").stdout) == []


@pytest.mark.slow
def test_admin_list_json_prints_every_admin_and_never_a_hash(admin_account, database_uri) -> None:
    done = flask_command(database_uri, "admin", "list", "--json")
    assert done.returncode == 0, done.stderr
    [row] = json.loads(done.stdout)
    assert set(row) == {"id", "email", "created_at"} and row["email"] == admin_account
    assert datetime.fromisoformat(row["created_at"]).utcoffset() == timedelta(0)
    assert "scrypt" not in done.stdout


def test_revoke_reads_exactly_one_key_from_stdin(runner, api) -> None:
    first, second = api.new_key(user_email="one@example.com"), api.new_key(user_email="two@example.com")
    for given, says in ((f"{first}\n{second}\n", "Standard input holds 2 lines"), ("\n \n", "Standard input holds no lines")):
        result = runner.invoke(args=["keys", "revoke", "--stdin"], input=given)
        assert result.exit_code == 1 and says in result.output, result.output
        assert first not in result.output and second not in result.output
    assert api.get("/auth/check-key", first).status_code == 200
    assert api.get("/auth/check-key", second).status_code == 200
    result = runner.invoke(args=["keys", "revoke", "--stdin"], input=f"  {first}\n\n")
    assert result.exit_code == 0, result.output
    assert api.get("/auth/check-key", first).status_code == 401


def test_revoke_never_says_a_whole_key_back(runner, api) -> None:
    secret = api.new_key(user_email="leak@example.com")
    result = runner.invoke(args=["keys", "revoke", secret])
    assert result.exit_code == 2 and "send it with --stdin" in result.output
    assert secret not in result.output and secret[12:20] not in result.output
    assert api.get("/auth/check-key", secret).status_code == 200
    typo = secret[:-1] + ("x" if secret[-1] != "x" else "y")
    result = runner.invoke(args=["keys", "revoke", typo])
    assert result.exit_code == 1 and f"No key has the id or prefix '{secret[:12]}…'" in result.output
    assert secret[12:20] not in result.output


def test_revoke_with_an_id_and_stdin_says_so(runner, api) -> None:
    secret = api.new_key(user_email="both@example.com")
    result = runner.invoke(args=["keys", "revoke", "1", "--stdin"], input=secret)
    assert result.exit_code == 2 and "Give either a key id or prefix, or --stdin, not both" in result.output
    assert api.get("/auth/check-key", secret).status_code == 200


@pytest.mark.parametrize("days", ["999999", "99999999999"])
def test_prune_refuses_a_number_of_days_past_any_date(runner, days) -> None:
    result = runner.invoke(args=["keys", "prune", "--revoked-older-than-days", days])
    assert result.exit_code == 2 and isinstance(result.exception, SystemExit)
    assert "0<=x<=36500" in result.output and "Traceback" not in result.output


@pytest.mark.parametrize("arguments", [
    ["keys", "list"], ["keys", "revoke", "1"], ["keys", "create", "--email", "a@example.com"], ["admin", "list"],
])
@pytest.mark.slow
def test_an_unreachable_database_ends_a_command_with_one_line(arguments) -> None:
    done = flask_command(f"postgresql://ops:s3cret@127.0.0.1:{free_port()}/none", *arguments)
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert lines[0].startswith("Database: postgresql+psycopg://ops:***@127.0.0.1:")
    assert len(lines) == 2 and lines[1].startswith("Error: The database failed: connection failed: "), done.stderr
    assert "s3cret" not in done.stderr and "Traceback" not in done.stderr


@pytest.mark.slow
def test_admin_create_refuses_standard_input_that_is_not_text(admin_account, database_uri) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "flask", "--app", "wsgi", "admin", "create", "--email", "bin@example.com",
         "--password-stdin"], input=b"\xff\xfe\x00 binary, and long enough\n", capture_output=True, cwd=PROJECT_ROOT, timeout=60,
        env={"PATH": "/usr/bin:/bin", "DATABASE_URL": database_uri, "SECRET_KEY": "test"},
    )
    assert done.returncode == 1
    assert done.stderr.decode().strip().splitlines()[-1] == "Error: Standard input is not UTF-8 text"
    assert b"Traceback" not in done.stderr


@pytest.mark.slow
def test_admin_create_asks_again_for_a_password_too_short(app, runner) -> None:
    from livekit_auth.admin.accounts import verify_login

    result = runner.invoke(args=["admin", "create", "--email", "ops@example.com"],
                           input="short\nshort\na long passphrase\na long passphrase\n")
    assert result.exit_code == 0, result.output
    assert "The password must be at least 12 characters; try again." in result.output
    with app.app_context():
        assert verify_login("ops@example.com", "a long passphrase") is not None


def test_admin_list_says_when_there_is_no_admin(runner) -> None:
    result = runner.invoke(args=["admin", "list"])
    assert result.exit_code == 0
    assert "No admin accounts yet; create one with: flask --app wsgi admin create --email EMAIL" in result.output
