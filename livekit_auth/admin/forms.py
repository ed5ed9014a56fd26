"""The admin's forms; each carries a CSRF token."""

from flask_wtf import FlaskForm
from wtforms import EmailField, IntegerField, PasswordField, StringField
from wtforms.validators import DataRequired, Length, NumberRange, Optional


class LoginForm(FlaskForm):
    """Email and password."""

    email = EmailField("Email", validators=[DataRequired(), Length(max=254)])
    password = PasswordField("Password", validators=[DataRequired(), Length(max=1024)])


class ConfirmForm(FlaskForm):
    """A button that does one thing: its only field is the CSRF token."""


def blank_as_none(text: str | None) -> str | None:
    """Text as typed, or None when there is none but whitespace."""
    return text if text and text.strip() else None


class IssueKeyForm(FlaskForm):
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
