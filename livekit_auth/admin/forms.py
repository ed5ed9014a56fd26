"""The admin's forms; each carries a CSRF token."""

from flask_wtf import FlaskForm
from wtforms import EmailField, IntegerField, PasswordField, SelectField, StringField
from wtforms.validators import DataRequired, Length, NumberRange, Optional

from ..apikeys.meter import MAX_QUOTA, PERIODS, RATE_LIMIT_MAX_LENGTH


class LoginForm(FlaskForm):
    """Email and password."""

    email = EmailField("Email", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])


class ConfirmForm(FlaskForm):
    """A button that does one thing: its only field is the CSRF token."""


def blank_as_none(text: str | None) -> str | None:
    """Text as typed, or None when there is none but whitespace."""
    return text if text and text.strip() else None


class LimitsForm(FlaskForm):
    """A key's or a user's rate limits and quota; every field empty is no limit.

    Checked by the same rules as the command line's (meter.settings_from).
    """

    rate_limit = StringField("Rate limits (such as 100 per minute; 5000 per day; empty: none)",
                             validators=[Length(max=RATE_LIMIT_MAX_LENGTH)], filters=[blank_as_none])
    quota = IntegerField("Quota: checks per period (empty: none)", validators=[Optional(), NumberRange(1, MAX_QUOTA)])
    quota_period = SelectField("Quota period (UTC)", choices=list(reversed(PERIODS)),
                               default="month")

    def limit_fields(self) -> tuple[str | None, int | None, str | None]:
        """The rate limit, quota and period as typed; no period without a quota."""
        quota = self.quota.data
        return self.rate_limit.data, quota, self.quota_period.data if quota is not None else None


class IssueKeyForm(LimitsForm):
    """A key for a user: an existing one found by email, or a new one with these details.

    The fields are checked again by the API's own schemas, so the admin accepts what the API
    and the command line accept.
    """

    email = EmailField("Email", validators=[DataRequired(), Length(max=254)])
    user_name = StringField("Name (for a new user; default: from the email)",
                            validators=[Length(max=100)], filters=[blank_as_none])
    org_name = StringField("Organisation (for a new user)", validators=[Length(max=100)], filters=[blank_as_none])
    key_name = StringField("Key name", validators=[Length(max=100)], filters=[blank_as_none])
    expires_in_days = IntegerField(
        "Expires in (days; empty: never)", validators=[Optional(), NumberRange(1, 3650)]
    )
    scopes = StringField("Scopes (space-separated, such as calls:write; empty: full access)",
                         validators=[Length(max=2080)], filters=[blank_as_none])
