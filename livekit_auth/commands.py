"""flask CLI groups: `flask --app wsgi keys …` and `flask --app wsgi admin …`."""

import json
import sys
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

import click
from flask import Flask, current_app
from flask.cli import AppGroup, with_appcontext
from marshmallow import Schema, ValidationError
from sqlalchemy import make_url
from sqlalchemy.exc import DBAPIError, IntegrityError

from . import clock
from .admin import accounts
from .apikeys import audit, keys, reports
from .apikeys.errors import KeyRuleBroken
from .apikeys.meter import NO_LIMITS, PERIODS, LimitSettings, settings_from, settings_of
from .apikeys.models import ApiKey, KeyStatus, User, canonical_email
from .apikeys.services import KeyService
from .context import key_service, record
from .errors import describe_validation_error
from .extensions import db
from .schemas import CreateKeySchema, NewKeySchema, normalise_email, timestamp

# What the commands call the API's fields, in their messages.
OPTION_NAMES = {"user_email": "--email", "name": "--name", "expires_in_days": "--expires-in-days",
                "user_name": "--user-name", "org_name": "--org", "scopes": "--scope"}
# The longest --revoked-older-than-days: a century, far past any key, and a date every database keeps.
PRUNE_MAX_DAYS = 36_500


@with_appcontext
def name_the_database() -> None:
    """Say on stderr which database a command works on, so a forgotten DATABASE_URL shows."""
    url = make_url(current_app.config["SQLALCHEMY_DATABASE_URI"]).render_as_string(hide_password=True)
    click.echo(f"Database: {url}", err=True)


class OperatorCommands(AppGroup):
    """A group of commands whose database failures are one line for the operator, not a traceback."""

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; a database that fails ends it with one line and exit status 1."""
        try:
            return super().invoke(ctx)
        except DBAPIError as error:
            said = str(error.orig).strip()
            reason = said.splitlines()[0] if said else type(error.orig).__name__
            raise click.ClickException(f"The database failed: {reason}") from None


keys_cli = OperatorCommands(
    "keys", help="Issue, list, suspend, resume, revoke and prune API keys.", callback=name_the_database
)


def email_option(value: str | None) -> str | None:
    """Validate and normalise an --email value."""
    if value is None:
        return None
    try:
        return normalise_email(value)
    except ValidationError as error:
        raise click.BadParameter("Invalid email address", param_hint="--email") from error


def validated(schema: Schema, fields: dict[str, Any]) -> dict[str, Any]:
    """Check options with the API's own schema, so the CLI accepts what the API accepts."""
    try:
        return schema.load({name: value for name, value in fields.items() if value is not None})
    except ValidationError as error:
        raise click.UsageError(describe_validation_error(error, OPTION_NAMES)[0]) from error


def stdin_text() -> str:
    """All of standard input as text; one line of error when it is not UTF-8.

    Read as bytes: under the C locale Python would decode it with surrogate escapes, and a
    password with those fails only later, when it is hashed.
    """
    try:
        return sys.stdin.buffer.read().decode("utf-8")
    except UnicodeDecodeError:
        raise click.ClickException("Standard input is not UTF-8 text") from None


RATE_OPTION = click.option("--rate", help="Rate limits in the limits notation: '100 per minute; 5000 per day'.")
QUOTA_OPTION = click.option("--quota", type=click.IntRange(min=1), help="Checks allowed per --period.")
PERIOD_OPTION = click.option("--period", type=click.Choice(PERIODS), help="The quota's period, in UTC (default: month).")


def limits_option(rate: str | None, quota: int | None, period: str | None) -> LimitSettings:
    """The limits that --rate, --quota and --period give, or one line saying what is wrong."""
    try:
        return settings_from(rate, quota, period)
    except ValueError as error:
        raise click.UsageError(f"{error} (--rate, --quota, --period)") from None


@keys_cli.command("create")
@click.option("--email", required=True, help="The key holder's email; a new user is registered.")
@click.option("--name", help="A label for the key, up to 100 characters.")
@click.option("--expires-in-days", type=int, help="Lifetime, 1 to 3650 days.")
@click.option("--user-name", help="The holder's name when the user is new (default: from --email).")
@click.option("--org", help="The holder's organisation when the user is new.")
@click.option("--scope", "scopes", multiple=True,
              help="Restrict the key to a scope (calls:write); repeat for several. None: full access.")
@RATE_OPTION
@QUOTA_OPTION
@PERIOD_OPTION
def create_key(
    email: str, name: str | None, expires_in_days: int | None, user_name: str | None, org: str | None,
    scopes: tuple[str, ...], rate: str | None, quota: int | None, period: str | None,
) -> None:
    """Issue a key and print it, once; without --rate or --quota it gets KEY_RATE_LIMIT_DEFAULT and KEY_QUOTA_DEFAULT."""
    key_fields = validated(NewKeySchema(), {"name": name, "expires_in_days": expires_in_days,
                                            "scopes": list(scopes) or None})
    limits = None if rate is None and quota is None and period is None else limits_option(rate, quota, period)
    address = email_option(email)
    holder = validated(CreateKeySchema(), {
        "user_email": address, "user_name": user_name or address.split("@")[0], "org_name": org,
    })
    try:
        _, secret = key_service().issue_for_email(
            address, holder, key_fields["name"], key_fields["expires_in_days"], audit.CLI, key_fields.get("scopes"),
            limits,
        )
        db.session.commit()
    except KeyRuleBroken as error:
        raise click.ClickException(error.message) from error
    except IntegrityError as error:
        raise click.ClickException("The user was registered meanwhile; run the command again") from error
    click.echo(secret)


def iso(moment: datetime | None) -> str | None:
    """A time in ISO 8601, in UTC with its offset; None stays None."""
    return None if moment is None else moment.isoformat()


@keys_cli.command("list")
@click.option("--email", help="Only this user's keys.")
@click.option("--status", type=click.Choice([s.value for s in KeyStatus]), help="Only keys in this state.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array, one object per key, every column.")
def list_keys(email: str | None, status: str | None, as_json: bool) -> None:
    """Print keys, oldest first: never a key, only its display prefix."""
    now = clock.now()
    service = key_service()
    found = service.keys_with_users(email_option(email), KeyStatus(status) if status else None, now)
    requests = reports.recent_requests(db.session, [key.id for key in found], now.date())
    if as_json:
        click.echo(json.dumps([{
            "id": key.id, "name": key.name, "display_prefix": key.display_prefix,
            "status": key.status(now).value, "created_at": iso(key.created_at),
            "expires_at": iso(key.expires_at), "last_used_at": iso(key.last_used_at),
            "revoked_at": iso(key.revoked_at), "scopes": keys.scope_list(key.scopes),
            "rate_limit": key.rate_limit, "quota": service.quota_use(key, now),
            "requests_30d": requests.get(key.id, 0),
            "email": key.user.email, "org_name": key.user.org_name,
        } for key in found], indent=2))
        return
    row = "{:>6}  {:<14} {:<8} {:<32} {:<20} {:<20} {:<16} {:<16} {:<16}"
    click.echo(row.format("id", "prefix", "status", "email", "organisation", "name", "created (UTC)",
                          "expires", "last used"))
    for key in found:
        click.echo(row.format(
            key.id, key.display_prefix, key.status(now).value, key.user.email, key.user.org_name or "-",
            key.name or "-", minute(key.created_at), minute(key.expires_at), minute(key.last_used_at),
        ))


def minute(moment: datetime | None) -> str:
    """A time to the minute for the table, or - for none."""
    return "-" if moment is None else clock.to_the_minute(moment)


@keys_cli.command("revoke")
@click.argument("prefix_or_id", required=False)
@click.option("--stdin", "from_stdin", is_flag=True,
              help="Read a whole key from standard input instead, so it is in no shell history.")
def revoke_key(prefix_or_id: str | None, from_stdin: bool) -> None:
    """Revoke one key, named by its id, its display prefix, or (--stdin) the whole key."""
    if from_stdin and prefix_or_id is not None:
        raise click.UsageError("Give either a key id or prefix, or --stdin, not both")
    if not from_stdin and prefix_or_id is None:
        raise click.UsageError("Name the key by its id or prefix, or send the whole key with --stdin")
    key = key_from_stdin() if from_stdin else named_key(prefix_or_id)
    if not key_service().revoke(key, audit.CLI):
        click.echo(f"Key {key.id} ({key.display_prefix}) was already revoked")
        return
    db.session.commit()
    click.echo(f"Revoked key {key.id} ({key.display_prefix})")


def named_key(prefix_or_id: str) -> ApiKey:
    """The one key an id or a display prefix names, or one line saying why there is none."""
    if keys.is_well_formed(prefix_or_id):
        raise click.UsageError("That is a whole key: send it with --stdin, so that it is in no shell history")
    if prefix_or_id.isascii() and prefix_or_id.isdigit():  # "²".isdigit() too, but no int() takes it
        matches = [key for key in [key_service().key_by_id(int(prefix_or_id))] if key is not None]
    else:
        matches = key_service().keys_by_prefix(prefix_or_id)
    if not matches:
        # Text longer than a prefix may be most of a key: only its start is said back.
        length = keys.DISPLAY_PREFIX_LENGTH
        shown = prefix_or_id if len(prefix_or_id) <= length else prefix_or_id[:length] + "…"
        raise click.ClickException(f"No key has the id or prefix {shown!r}")
    if len(matches) > 1:
        raise click.ClickException(f"{len(matches)} keys share the prefix {prefix_or_id!r}; use the id")
    return matches[0]


@keys_cli.command("suspend")
@click.argument("prefix_or_id")
def suspend_key(prefix_or_id: str) -> None:
    """Suspend a key, named by its id or display prefix: refused until resumed."""
    change_suspension(named_key(prefix_or_id), KeyService.suspend, KeyStatus.SUSPENDED, "Suspended")


@keys_cli.command("resume")
@click.argument("prefix_or_id")
def resume_key(prefix_or_id: str) -> None:
    """Resume a suspended key, named by its id or display prefix."""
    change_suspension(named_key(prefix_or_id), KeyService.resume, KeyStatus.ACTIVE, "Resumed")


def change_suspension(
    key: ApiKey, change: Callable[[KeyService, ApiKey, str], bool], wanted: KeyStatus, done: str
) -> None:
    """Suspend or resume a key and say so; a key already so is said to be, a dead one refused."""
    if change(key_service(), key, audit.CLI):
        db.session.commit()
        click.echo(f"{done} key {key.id} ({key.display_prefix})")
        return
    status = key.status(clock.now())
    if status is not wanted:
        raise click.ClickException(f"Key {key.id} ({key.display_prefix}) is {status.value}")
    click.echo(f"Key {key.id} ({key.display_prefix}) was {wanted.value} already")


def limit_options(command: Callable[..., None]) -> Callable[..., None]:
    """The options of a `limit` command: the new limits, or --clear."""
    for option in (click.option("--clear", is_flag=True, help="Take every limit off instead."),
                   PERIOD_OPTION, QUOTA_OPTION, RATE_OPTION):
        command = option(command)
    return command


@keys_cli.command("limit")
@click.argument("prefix_or_id")
@limit_options
def limit_key(prefix_or_id: str, rate: str | None, quota: int | None, period: str | None, clear: bool) -> None:
    """Set a key's own rate limits and quota, named by its id or display prefix; audited."""
    key = named_key(prefix_or_id)
    change_limits(key, f"key {key.id} ({key.display_prefix})", asked_limits(rate, quota, period, clear),
                  KeyService.set_key_limits)


def asked_limits(rate: str | None, quota: int | None, period: str | None, clear: bool) -> LimitSettings:
    """The limits `limit` is asked to set: exactly those given (what is left out, none), or none with --clear."""
    given = rate is not None or quota is not None or period is not None
    if clear == given:
        raise click.UsageError("Give the new limits (--rate, --quota, --period) or --clear, not both")
    return NO_LIMITS if clear else limits_option(rate, quota, period)


def change_limits(row: ApiKey | User, named: str, limits: LimitSettings,
                  change: Callable[[KeyService, Any, LimitSettings, str], bool]) -> None:
    """Set a key's or a user's limits and say what they are now."""
    if change(key_service(), row, limits, audit.CLI):
        db.session.commit()
        click.echo(f"Limits of {named}: {limits.describe()}")
        return
    click.echo(f"Limits of {named} were {settings_of(row).describe()} already")


def key_from_stdin() -> ApiKey:
    """The one known key that standard input holds, or one line saying what is wrong with it."""
    given = [line.strip() for line in stdin_text().splitlines() if line.strip()]
    if len(given) != 1:
        raise click.ClickException(
            f"Standard input holds {len(given) or 'no'} {'line' if len(given) == 1 else 'lines'}; "
            "send exactly one key, on one line"
        )
    found = key_service().key_by_secret(given[0])
    if found is None:
        raise click.ClickException("What standard input holds is not a known key")
    return found


@keys_cli.command("prune")
@click.option("--revoked-older-than-days", type=click.IntRange(min=0, max=PRUNE_MAX_DAYS), required=True,
              help="Delete keys revoked or expired more than this many days ago.")
@click.option("--dry-run", is_flag=True, help="Print the keys that would be deleted; delete nothing.")
def prune_keys(revoked_older_than_days: int, dry_run: bool) -> None:
    """Delete keys that were revoked or expired long ago, one audit row each; users stay."""
    cutoff = clock.now() - timedelta(days=revoked_older_than_days)
    doomed = key_service().prune(cutoff, audit.CLI, dry_run=dry_run)
    for key in doomed:
        click.echo(f"{key.id:>6}  {key.display_prefix:<14} {key.user.email}")
    if dry_run:
        click.echo(f"Would delete {len(doomed)} keys revoked or expired before {timestamp(cutoff)}")
        return
    db.session.commit()
    click.echo(f"Deleted {len(doomed)} keys revoked or expired before {timestamp(cutoff)}")


users_cli = OperatorCommands(
    "users", help="Set the limits counted across all of a user's keys.", callback=name_the_database
)


@users_cli.command("limit")
@click.argument("email")
@limit_options
def limit_user(email: str, rate: str | None, quota: int | None, period: str | None, clear: bool) -> None:
    """Set the rate limits and quota that all of a user's keys count against together; audited."""
    limits = asked_limits(rate, quota, period, clear)
    user = key_service().user_by_email(email_option(email) or email)
    if user is None:
        raise click.ClickException(f"No user has the email {canonical_email(email)}")
    change_limits(user, user.email, limits, KeyService.set_user_limits)


admin_cli = OperatorCommands(
    "admin", help="Manage the accounts that open the admin pages.", callback=name_the_database
)


@admin_cli.command("create")
@click.option("--email", required=True, help="The admin's email, used to log in.")
@click.option("--password-stdin", is_flag=True, help="Read the password from one line of standard input.")
def create_admin(email: str, password_stdin: bool) -> None:
    """Create an admin account; the password is asked for twice, hidden."""
    address = canonical_email(email_option(email))
    if accounts.find_admin(address) is not None:
        raise click.ClickException(f"An admin with the email {address} already exists")
    if password_stdin:
        password_hash = new_password_hash(stdin_text().partition("\n")[0].rstrip("\r"))
    else:
        password_hash = asked_password_hash()
    accounts.add_admin(address, password_hash)
    record(audit.ADMIN_CREATED, actor=audit.CLI, target=address)
    db.session.commit()
    click.echo(f"Created admin {address}")


def new_password_hash(password: str) -> str:
    """The hash of a new password, or one line saying why the password is refused."""
    try:
        return accounts.hash_password(password)
    except accounts.PasswordTooShort as error:
        raise click.ClickException(str(error)) from None


def asked_password_hash() -> str:
    """Ask for a new password, hidden and twice, until it is long enough; its hash."""
    while True:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
        try:
            return accounts.hash_password(password)
        except accounts.PasswordTooShort as error:
            click.echo(f"{error}; try again.", err=True)


@admin_cli.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array, one object per admin.")
def list_admins(as_json: bool) -> None:
    """Print every admin account; never a password hash."""
    admins = accounts.all_admins()
    if as_json:
        click.echo(json.dumps(
            [{"id": admin.id, "email": admin.email, "created_at": iso(admin.created_at)} for admin in admins],
            indent=2,
        ))
        return
    if not admins:
        click.echo("No admin accounts yet; create one with: flask --app wsgi admin create --email EMAIL")
    for admin in admins:
        click.echo(f"{admin.email}  created {timestamp(admin.created_at)}")


@admin_cli.command("delete")
@click.option("--email", required=True, help="The admin to delete.")
def delete_admin(email: str) -> None:
    """Delete an admin account; their sessions end with it."""
    admin = accounts.find_admin(email)
    if admin is None:
        raise click.ClickException(f"No admin has the email {canonical_email(email)}")
    accounts.delete_admin(admin)
    record(audit.ADMIN_DELETED, actor=audit.CLI, target=admin.email)
    db.session.commit()
    click.echo(f"Deleted admin {admin.email}")


def register_commands(app: Flask) -> None:
    """Attach the CLI groups to the app."""
    app.cli.add_command(keys_cli)
    app.cli.add_command(users_cli)
    app.cli.add_command(admin_cli)
