"""The admin pages, server-rendered, behind their own login."""

import csv
import io
from collections.abc import Callable, Iterator, Mapping
from itertools import chain
from typing import Any
from urllib.parse import unquote, urlsplit

from flask import (
    Blueprint,
    abort,
    current_app,
    flash,
    g,
    redirect,
    render_template,
    request,
    session,
    stream_with_context,
    url_for,
)
from flask.typing import ResponseReturnValue
from marshmallow import ValidationError
from sqlalchemy.exc import IntegrityError
from werkzeug.wrappers import Response

from .. import clock
from ..apikeys import audit, reports
from ..apikeys.errors import KeyRuleBroken
from ..apikeys.keys import KEY_PATTERN
from ..apikeys.meter import LimitSettings, settings_from, settings_of
from ..apikeys.models import ApiKey, User, canonical_email
from ..apikeys.services import KeyService
from ..context import client_address, key_service, record
from ..errors import describe_validation_error, renders_errors
from ..extensions import csrf, db
from ..gate import public
from ..schemas import CreateKeySchema, NewKeySchema
from ..throttles import limit_per_address
from . import accounts, queries
from .charts import daily_chart
from .forms import ConfirmForm, IssueKeyForm, LimitsForm, LoginForm
from .paths import PREFIX

bp = public(Blueprint("admin", __name__, url_prefix=PREFIX))
INVALID_LOGIN = "Invalid email or password"
# 50 keys a page: 50 million keys, far past any table here, and an OFFSET every database takes.
MAX_PAGE = 1_000_000
SECURITY_HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "Cache-Control": "no-store",
}


bp.add_app_template_filter(clock.to_the_minute, "when")  # how the pages show times


@bp.before_request
def require_admin() -> ResponseReturnValue | None:
    """Check the CSRF token of every form, and send visitors without a session to log in."""
    if carries_nul():
        abort(400, "Text with a NUL character is not accepted")
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        csrf.protect()
    if request.endpoint == "admin.login":
        return None
    admin_session = accounts.current_session()
    if admin_session is None:
        session.clear()
        target = request.full_path.rstrip("?") if request.method == "GET" else None
        if target is not None and holds_a_key(target):
            target = None  # the login page's address would carry the key on
        return redirect(url_for("admin.login", next=target))
    g.admin_session = admin_session
    # A plain string for the pages, error pages included: they must render without a query,
    # after a database error too.
    g.admin_email = admin_session.admin.email
    db.session.commit()
    return None


def holds_a_key(text: str) -> bool:
    """Whether text (an address, say, percent-encoded or not) holds a whole key."""
    return KEY_PATTERN.search(unquote(text)) is not None


def carries_nul() -> bool:
    """Whether any query or form value holds a NUL, which no database column may store."""
    values = chain(request.args.listvalues(), request.form.listvalues())
    return any("\x00" in value for listed in values for value in listed)


@bp.after_request
def add_security_headers(response: Response) -> Response:
    """Give every admin page the browser protections (error pages get them from error_page)."""
    response.headers.update(SECURITY_HEADERS)
    return response


def error_page(status: int, message: str, headers: dict[str, str]) -> ResponseReturnValue:
    """An admin error as an HTML page, never JSON, with the browser protections."""
    return render_template("admin/error.html", status=status, message=message), status, {
        **headers, **SECURITY_HEADERS
    }


renders_errors(bp, error_page)


def safe_next(target: str | None) -> str:
    """Where to go after login: only a plain path inside the admin pages.

    No control character (a CR or LF would split the Location header) and no backslash
    (which browsers read as a slash, turning /admin/\\host into another site).
    """
    if (
        target
        and target.startswith(PREFIX + "/")
        and target.isprintable()
        and "\\" not in target
        and not urlsplit(target).netloc
    ):
        return target
    return url_for("admin.keys")


@bp.route("/login", methods=["GET", "POST"])
@limit_per_address("RATELIMIT_ADMIN_LOGIN", counts=lambda response: response.status_code in (401, 429))
def login() -> ResponseReturnValue:
    """Sign in with email and password; repeated failures are slowed down."""
    form = LoginForm()
    if not form.validate_on_submit():
        status = 400 if request.method == "POST" else 200
        return render_template("admin/login.html", form=form), status
    email = canonical_email(form.email.data)
    # The attempt is recorded as failed, and committed, before its password is checked: each
    # attempt then counts every one committed before it, so attempts sent in parallel cannot
    # all find room under the limit. A successful one is rewritten as a login.
    attempt = record(audit.LOGIN_FAILED, actor=email, target=email)
    db.session.commit()
    limit = current_app.config["ADMIN_LOGIN_MAX_FAILURES"]
    now = clock.now()
    if accounts.recent_failures(email, client_address(), now) > limit:
        # A refusal is no failed login of its own: the first is recorded as the lock-out, once
        # per window, and the rest leave no row that could push everything else off the log.
        if accounts.locked_since(email, now):
            db.session.delete(attempt)
        else:
            attempt.action = audit.LOGIN_LOCKED
        db.session.commit()
        window = current_app.config["ADMIN_LOGIN_WINDOW_MINUTES"]
        flash(f"Too many failed attempts. Try again in {window} minutes.", "error")
        return render_template("admin/login.html", form=form), 429
    admin = accounts.verify_login(email, form.password.data)
    if admin is None:
        flash(INVALID_LOGIN, "error")
        return render_template("admin/login.html", form=form), 401
    accounts.start_session(admin)
    attempt.action, attempt.actor = audit.LOGIN, admin.email
    db.session.commit()
    return redirect(safe_next(request.args.get("next")))


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    """End the session on the server and forget the cookie."""
    record(audit.LOGOUT, actor=g.admin_email, target=g.admin_email)
    accounts.end_session(g.admin_session)
    db.session.commit()
    flash("You have been logged out.", "info")
    return redirect(url_for("admin.login"))


def page_number() -> int:
    """The ?page= argument, from 1 to MAX_PAGE: past the data a page is empty, never an overflow."""
    return min(max(request.args.get("page", 1, type=int) or 1, 1), MAX_PAGE)


@bp.post("/search")
def search() -> ResponseReturnValue:
    """The search form, posted: a whole key opens its own page, anything else the list searched.

    Posted, so that a whole key pasted from a leak is in no address: not the browser's history,
    a proxy's log, the list's links or the login page's next=.
    """
    text, status, sort = list_arguments(request.form)
    if holds_a_key(text):  # a key's shape, its checksum right or not: most of a secret all the same
        found = key_service().key_by_secret(text)
        if found is not None:
            return redirect(url_for("admin.key_detail", key_id=found.id), 303)
        flash("No key is that key.", "info")
        text = ""
    return redirect(url_for("admin.keys", q=text or None, status=status or None, sort=sort), 303)


def refuse_a_key_in_the_address(endpoint: str) -> ResponseReturnValue | None:
    """Send a list address that holds a whole key to the list without it, saying why."""
    if not holds_a_key(request.args.get("q", "")):
        return None
    flash("Search for a whole key with the search box: it keeps the key out of every address.", "error")
    _, status, sort = list_arguments(request.args)
    return redirect(url_for(endpoint, status=status or None, sort=sort), 303)


@bp.get("/")
def keys() -> ResponseReturnValue:
    """Every key: overview, search, status filter, sort and pages of 50."""
    refused = refuse_a_key_in_the_address("admin.keys")
    if refused is not None:
        return refused
    now = clock.now()
    text, status, sort = list_arguments(request.args)
    page = queries.key_page(text, status, sort, page_number(), now)
    overview = queries.overview(now)
    activity = daily_chart(overview.days, [
        ("created", "keys created", overview.created_per_day),
        ("used", "keys used", overview.used_per_day),
    ])
    return render_template(
        "admin/keys.html",
        page=page,
        requests=reports.recent_requests(db.session, [key.id for key, _ in page.rows], now.date()),
        q=text,
        status=status,
        status_filters=queries.STATUS_FILTERS,
        sort=sort,
        overview=overview,
        chart=activity,
        now=now,
        rotation_days=current_app.config["ROTATION_AGE_DAYS"],
    )


# The worker's heartbeat, which gunicorn.conf.py's post_worker_init gives the app; none elsewhere.
WORKER_HEARTBEAT = "worker_heartbeat"
CSV_COLUMNS = ["key_id", "display_prefix", "name", "status", "user_name", "user_email", "org_name",
               "created_at", "expires_at", "last_used_at", "revoked_at", "requests_30d"]


def list_arguments(given: Mapping[str, str]) -> tuple[str, str, str]:
    """The list's search text, status filter and sort, as the query or form gives them (or their defaults)."""
    status = given.get("status", "")
    sort = given.get("sort", "created")
    return (
        given.get("q", "").strip()[:254],
        status if status in queries.STATUS_FILTERS else "",
        sort if sort in queries.SORTS else "created",
    )


@bp.get("/keys.csv")
def keys_csv() -> ResponseReturnValue:
    """The list as it is searched, filtered and sorted, as CSV, streamed: never a key or a digest.

    A batch at a time, however many keys: between batches the worker's heartbeat is beaten, so
    an export that takes longer than GUNICORN_TIMEOUT (a million keys, a slow reader) completes.
    """
    refused = refuse_a_key_in_the_address("admin.keys")
    if refused is not None:
        return refused
    now = clock.now()
    batches = queries.export_batches(*list_arguments(request.args), now)
    heartbeat = current_app.extensions.get(WORKER_HEARTBEAT, lambda: None)

    def lines() -> Iterator[str]:
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(CSV_COLUMNS)
        for batch in batches:
            writer.writerows([spreadsheet_safe(value) for value in row] for row in batch)
            yield out.getvalue()
            out.seek(0)
            out.truncate()
            heartbeat()
        yield out.getvalue()

    filename = f"livekit-auth-keys-{now:%Y%m%dT%H%M%SZ}.csv"
    return Response(stream_with_context(lines()), mimetype="text/csv",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


def spreadsheet_safe(value: object) -> object:
    """A cell a spreadsheet shows as text: one starting like a formula gets a leading quote."""
    if isinstance(value, str) and value.startswith(("=", "+", "-", "@", "\t", "\r")):
        return "'" + value
    return value


def key_or_404(key_id: int) -> ApiKey:
    """A key by id, or the admin's 404 page."""
    key = key_service().key_by_id(key_id)
    if key is None:
        abort(404)
    return key


# The refusals of a valid key its chart shows beside the checks it passed: (outcome, CSS class, label).
CHARTED_REFUSALS = [
    ("rate_limited_key", "rate-limited", "rate limited"),
    ("quota_exhausted", "over-quota", "over quota"),
    ("missing_scope", "missing-scope", "lacking a scope"),
    ("suspended", "suspended", "refused while suspended"),
]


def limit_fields(settings: LimitSettings) -> dict[str, Any]:
    """Limits as a limits form's fields start: rate limit, quota and period (a month by default)."""
    return {"rate_limit": settings.rate_limit, "quota": settings.quota.limit if settings.quota else None,
            "quota_period": settings.quota.period if settings.quota else "month"}


def limits_form(row: ApiKey | User) -> LimitsForm:
    """The limits form of a key or a user, filled with what it carries now."""
    return LimitsForm(formdata=None, **limit_fields(settings_of(row)))


@bp.get("/keys/<int:key_id>")
def key_detail(key_id: int) -> ResponseReturnValue:
    """One key: its facts, limits and their use, checks by outcome, its owner's other keys, and actions."""
    key = key_or_404(key_id)
    owner: User = key.user
    service = key_service()
    # One page of the owner's other keys; the key list, searched by their email, has the rest.
    others = [other for other in service.user_keys(owner.id, queries.PAGE_SIZE + 2) if other.id != key.id]
    now = clock.now()
    daily = reports.daily_requests(db.session, key.id, now.date())
    refused = reports.daily_refusals(db.session, key.id, now.date())
    series = [("requests", "checks passed", daily)] + [
        (css_class, label, refused[outcome]) for outcome, css_class, label in CHARTED_REFUSALS if outcome in refused
    ]
    return render_template(
        "admin/key.html",
        key=key,
        chart=daily_chart(reports.usage_days(now.date()), series),
        refusals_30d={label: sum(refused[outcome]) for outcome, _, label in CHARTED_REFUSALS if outcome in refused},
        key_quota=service.quota_use(key, now),
        user_quota=service.quota_use(owner, now),
        key_limits=limits_form(key),
        user_limits=limits_form(owner),
        requests_30d=sum(daily),
        active_count=service.count_active(owner.id, now),
        owner=owner,
        others=others[: queries.PAGE_SIZE],
        more_others=len(others) > queries.PAGE_SIZE,
        now=now,
        rotation_days=current_app.config["ROTATION_AGE_DAYS"],
        form=ConfirmForm(),
    )


@bp.route("/keys/<int:key_id>/revoke", methods=["GET", "POST"])
def revoke(key_id: int) -> ResponseReturnValue:
    """Confirm, then revoke: the key is refused by every worker on its next request."""
    key = key_or_404(key_id)
    form = ConfirmForm()
    if request.method == "GET":
        return render_template("admin/confirm_revoke.html", key=key, form=form)
    return change_key(key, KeyService.revoke, "revoked", "was already revoked")


def change_key(
    key: ApiKey, change: Callable[[KeyService, ApiKey, str], bool], done: str, undone: str
) -> ResponseReturnValue:
    """Make a confirmed change of a key, tell the admin whether it was made, and go back to its page."""
    if change(key_service(), key, g.admin_email):
        db.session.commit()
        queries.forget_overview()
        flash(f"Key {key.display_prefix}… {done}.", "info")
    else:
        db.session.rollback()
        flash(f"Key {key.display_prefix}… {undone}.", "info")
    return redirect(url_for("admin.key_detail", key_id=key.id))


# What suspending and resuming do: the service's method, and what the admin is told after.
SUSPENSION = {
    "suspend": (KeyService.suspend, "suspended: refused until it is resumed", "was not active; nothing changed"),
    "resume": (KeyService.resume, "resumed: it opens the API again", "was not suspended; nothing changed"),
}


@bp.route("/keys/<int:key_id>/suspend", methods=["GET", "POST"], defaults={"action": "suspend"},
          endpoint="suspend")
@bp.route("/keys/<int:key_id>/resume", methods=["GET", "POST"], defaults={"action": "resume"},
          endpoint="resume")
def change_suspension(key_id: int, action: str) -> ResponseReturnValue:
    """Confirm, then suspend a key (refused on every worker and proxy as a revoked one) or resume it."""
    key = key_or_404(key_id)
    form = ConfirmForm()
    if request.method == "GET":
        return render_template("admin/confirm_suspension.html", key=key, action=action, form=form)
    return change_key(key, *SUSPENSION[action])


def sentence(error: ValueError) -> str:
    """A rule's message (limits' are lower-case clauses) as a sentence for the admin."""
    said = str(error)
    return f"{said[:1].upper()}{said[1:]}."


def posted_limits(form: LimitsForm) -> LimitSettings | None:
    """The limits a posted form asks for, or None after flashing what is wrong with them."""
    if not form.validate_on_submit():
        flash("; ".join(error for errors in form.errors.values() for error in errors), "error")
        return None
    try:
        return settings_from(*form.limit_fields())
    except ValueError as error:
        flash(sentence(error), "error")
        return None


def change_limits(
    row: ApiKey | User, named: str, change: Callable[[KeyService, Any, LimitSettings, str], bool], back: str
) -> ResponseReturnValue:
    """Set the limits a form posted on a key or a user, tell the admin, and go back to the key's page."""
    limits = posted_limits(LimitsForm())
    if limits is not None:
        if change(key_service(), row, limits, g.admin_email):
            db.session.commit()
            flash(f"Limits of {named} now: {limits.describe()}.", "info")
        else:
            flash(f"Limits of {named} unchanged: {limits.describe()}.", "info")
    return redirect(back, 303)


@bp.post("/keys/<int:key_id>/limits")
def key_limits(key_id: int) -> ResponseReturnValue:
    """Set a key's own rate limits and quota; every worker and proxy counts by them at once."""
    key = key_or_404(key_id)
    return change_limits(key, f"{key.display_prefix}…", KeyService.set_key_limits,
                         url_for("admin.key_detail", key_id=key.id))


@bp.post("/keys/<int:key_id>/user-limits")
def user_limits(key_id: int) -> ResponseReturnValue:
    """Set the limits counted across all the keys of a key's user, from that key's page."""
    key = key_or_404(key_id)
    return change_limits(key.user, key.user.email, KeyService.set_user_limits,
                         url_for("admin.key_detail", key_id=key.id))


@bp.route("/keys/new", methods=["GET", "POST"])
def issue() -> ResponseReturnValue:
    """Issue a key to a user, registering them if they are new; its page shows the key once.

    The form starts with the default limits of new keys (KEY_RATE_LIMIT_DEFAULT, KEY_QUOTA_DEFAULT).
    """
    form = IssueKeyForm(**limit_fields(key_service().settings.default_limits))
    if not form.validate_on_submit():
        return render_template("admin/issue.html", form=form), 400 if request.method == "POST" else 200
    email = form.email.data.strip()
    try:
        holder = CreateKeySchema().load({
            "user_email": email, "user_name": form.user_name.data or email.split("@")[0],
            "org_name": form.org_name.data or None,
        })
        asked_scopes = form.scopes.data.split() if form.scopes.data else None
        key_fields = NewKeySchema().load({"name": form.key_name.data or None,
                                          "expires_in_days": form.expires_in_days.data, "scopes": asked_scopes})
        limits = settings_from(*form.limit_fields())
        key, secret = key_service().issue_for_email(
            holder["user_email"], holder, key_fields["name"], key_fields["expires_in_days"], g.admin_email,
            key_fields["scopes"], limits,
        )
        db.session.flush()
        issued_id = key.id
        accounts.hold_issued_key(g.admin_session, issued_id, secret)
        db.session.commit()
    except ValidationError as error:
        db.session.rollback()
        flash(describe_validation_error(error)[0], "error")
        return render_template("admin/issue.html", form=form), 400
    except ValueError as error:  # limits that are no limits
        db.session.rollback()
        flash(sentence(error), "error")
        return render_template("admin/issue.html", form=form), 400
    except (KeyRuleBroken, IntegrityError) as error:
        db.session.rollback()
        flash(error.message if isinstance(error, KeyRuleBroken) else "The user was registered meanwhile; try again",
              "error")
        return render_template("admin/issue.html", form=form), 409
    queries.forget_overview()
    # Post/Redirect/Get: reloading the page that shows the key must not issue another.
    return redirect(url_for("admin.issued", key_id=issued_id), 303)


@bp.get("/keys/<int:key_id>/issued")
def issued(key_id: int) -> ResponseReturnValue:
    """The key just issued, shown this once; reloaded or visited later, the key's own page."""
    key = key_or_404(key_id)
    secret = accounts.take_issued_key(g.admin_session, key.id)
    db.session.commit()
    if secret is None:
        flash(f"A key is shown once, as it is issued: {key.display_prefix}… was shown already.", "info")
        return redirect(url_for("admin.key_detail", key_id=key.id))
    return render_template("admin/issued.html", key=key, secret=secret)


@bp.route("/users/<int:user_id>/revoke-all", methods=["GET", "POST"])
def revoke_all(user_id: int) -> ResponseReturnValue:
    """Confirm with the number of keys at stake, then revoke every active key of a user."""
    service = key_service()
    user = service.user_by_id(user_id)
    if user is None:
        abort(404)
    form = ConfirmForm()
    now = clock.now()
    if request.method == "GET":
        count = service.count_active(user.id, now)
        return render_template("admin/confirm_revoke_all.html", user=user, count=count, form=form)
    revoked = service.revoke_all(user.id, g.admin_email, now)
    db.session.commit()
    queries.forget_overview()
    flash(f"Revoked {revoked} keys of {user.email}.", "info")
    return redirect(url_for("admin.keys", q=user.email))


@bp.get("/audit")
def audit_log() -> ResponseReturnValue:
    """Every admin action, newest first, 50 per page."""
    return render_template("admin/audit.html", page=queries.audit_page(page_number()))
