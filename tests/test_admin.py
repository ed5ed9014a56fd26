"""The admin pages through the test client: access, sessions, CSRF, revocation, search, audit."""

import pytest
from sqlalchemy import select, text

from livekit_auth.apikeys import audit, keys
from livekit_auth.context import record
from livekit_auth.admin import queries
from livekit_auth.extensions import db
from livekit_auth.apikeys.models import ApiKey, AuditEvent

from .support import ADMIN_EMAIL, ADMIN_PASSWORD, AdminActions, envelope_error, rows_on


def audit_actions(app) -> list[tuple[str, str]]:
    """(action, target) of every audit event, oldest first."""
    with app.app_context():
        events = db.session.scalars(select(AuditEvent).order_by(AuditEvent.id))
        return [(event.action, event.target) for event in events]


def key_id_of(app, secret: str) -> int:
    """The id of the stored key behind a secret."""
    with app.app_context():
        return db.session.scalar(select(ApiKey.id).where(ApiKey.digest == keys.digest(secret)))


@pytest.mark.parametrize("path", ["/admin/", "/admin/audit", "/admin/keys/1", "/admin/keys/1/revoke"])
@pytest.mark.slow
def test_pages_without_a_session_redirect_to_login(client, path) -> None:
    response = client.get(path)
    assert response.status_code == 302
    assert response.headers["Location"].startswith("/admin/login")


def test_an_api_key_does_not_open_the_admin(client, api, admin_account) -> None:
    response = api.get("/admin/", api.new_key())
    assert response.status_code == 302


@pytest.mark.slow
def test_an_admin_session_does_not_pass_the_api_gate(admin, client) -> None:
    envelope_error(client.get("/auth/check-key"), 401)


def test_the_login_page_has_a_labelled_form_and_security_headers(client) -> None:
    response = client.get("/admin/login")
    html = response.get_data(as_text=True)
    assert response.status_code == 200
    assert '<label for="email">' in html and '<label for="password">' in html
    assert 'name="csrf_token"' in html
    assert response.headers["X-Frame-Options"] == "DENY"
    assert response.headers["X-Content-Type-Options"] == "nosniff"
    assert response.headers["Referrer-Policy"] == "same-origin"
    csp = response.headers["Content-Security-Policy"]
    assert "script-src 'self'" in csp and "style-src 'self'" in csp and "frame-ancestors 'none'" in csp


@pytest.mark.parametrize("email, password", [(ADMIN_EMAIL, "wrong password!"), ("nobody@example.com", ADMIN_PASSWORD)])
@pytest.mark.slow
def test_a_failed_login_says_the_same_whichever_was_wrong(app, client, admin_account, email, password) -> None:
    response = AdminActions(client).login(email, password)
    assert response.status_code == 401
    assert "Invalid email or password" in response.get_data(as_text=True)
    assert audit_actions(app) == [("login_failed", email)]
    with app.app_context():
        stored = " ".join(str(v) for e in db.session.scalars(select(AuditEvent)) for v in vars(e).values())
    assert password not in stored


@pytest.mark.slow
def test_login_lands_on_the_key_list_with_a_safe_cookie(app, client, admin_account) -> None:
    response = AdminActions(client).login()
    assert response.status_code == 302
    assert response.headers["Location"] == "/admin/"
    cookie = response.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Secure" not in cookie
    assert client.get("/admin/").status_code == 200
    assert audit_actions(app) == [("login", ADMIN_EMAIL)]


@pytest.mark.slow
def test_the_cookie_is_secure_when_configured(app, client, admin_account) -> None:
    app.config["SESSION_COOKIE_SECURE"] = True
    response = AdminActions(client).login()
    assert "Secure" in response.headers["Set-Cookie"]


@pytest.mark.slow
def test_login_returns_to_the_page_asked_for_but_never_elsewhere(client, admin_account) -> None:
    actions = AdminActions(client)
    token = actions.csrf_token()
    form = {"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD, "csrf_token": token}
    response = client.post("/admin/login?next=/admin/audit", data=form)
    assert response.headers["Location"] == "/admin/audit"
    actions.post("/admin/logout", "/admin/")
    form["csrf_token"] = actions.csrf_token()
    response = client.post("/admin/login?next=https://evil.example.com/admin/", data=form)
    assert response.headers["Location"] == "/admin/"


@pytest.mark.slow
def test_each_login_gets_a_new_session(client, admin_account) -> None:
    actions = AdminActions(client)
    actions.login()
    with client.session_transaction() as session:
        first = session["admin_session"]
    actions.post("/admin/logout", "/admin/")
    actions.login()
    with client.session_transaction() as session:
        assert session["admin_session"] != first


@pytest.mark.slow
def test_logout_ends_the_session_on_the_server(app, client, admin) -> None:
    stolen = client.get_cookie("livekit_admin").value
    response = admin.post("/admin/logout", "/admin/")
    assert response.status_code == 302
    client.set_cookie("livekit_admin", stolen)
    assert client.get("/admin/").status_code == 302
    assert ("logout", ADMIN_EMAIL) in audit_actions(app)


@pytest.mark.slow
def test_logout_is_a_post(client, admin) -> None:
    response = client.get("/admin/logout")
    assert response.status_code == 405
    assert response.mimetype == "text/html"


@pytest.mark.slow
def test_an_idle_session_times_out(client, admin_account, frozen_clock) -> None:
    AdminActions(client).login()
    frozen_clock.advance(minutes=29)
    assert client.get("/admin/").status_code == 200
    frozen_clock.advance(minutes=30, seconds=1)
    assert client.get("/admin/").status_code == 302


@pytest.mark.slow
def test_repeated_failures_for_an_account_are_slowed_down(client, admin_account, frozen_clock) -> None:
    actions = AdminActions(client)
    for _ in range(5):
        assert actions.login(password="wrong password!").status_code == 401
    response = actions.login()
    assert response.status_code == 429
    assert "Too many failed attempts" in response.get_data(as_text=True)
    frozen_clock.advance(minutes=15, seconds=1)
    assert actions.login().status_code == 302


@pytest.mark.slow
def test_repeated_failures_from_one_client_are_slowed_down(client, admin_account) -> None:
    actions = AdminActions(client)
    for n in range(5):
        actions.login(email=f"guess{n}@example.com")
    assert actions.login().status_code == 429


@pytest.mark.slow
def test_a_form_without_its_csrf_token_is_refused(app, client, admin, api) -> None:
    secret = api.new_key()
    key_id = key_id_of(app, secret)
    response = client.post(f"/admin/keys/{key_id}/revoke")
    assert response.status_code == 400
    assert response.mimetype == "text/html"
    assert api.get("/auth/check-key", secret).status_code == 200
    assert client.post("/admin/login", data={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}).status_code == 400


@pytest.mark.slow
def test_revoking_asks_first_then_refuses_the_key(app, client, admin, api) -> None:
    secret = api.new_key(user_email="victim@example.com")
    key_id = key_id_of(app, secret)
    confirm = client.get(f"/admin/keys/{key_id}/revoke")
    assert confirm.status_code == 200
    assert "Revoke key" in confirm.get_data(as_text=True)
    assert api.get("/auth/check-key", secret).status_code == 200
    response = admin.post(f"/admin/keys/{key_id}/revoke", f"/admin/keys/{key_id}/revoke")
    assert response.status_code == 302
    envelope_error(api.get("/auth/check-key", secret), 401, "API key has been revoked")
    page = client.get(f"/admin/keys/{key_id}").get_data(as_text=True)
    assert "revoked" in page and f"by {ADMIN_EMAIL}" in page
    assert ("revoke", keys.display_prefix(secret)) in audit_actions(app)


@pytest.mark.slow
def test_revoking_twice_is_harmless(app, client, admin, api) -> None:
    secret = api.new_key()
    key_id = key_id_of(app, secret)
    for _ in range(2):
        response = admin.post(f"/admin/keys/{key_id}/revoke", f"/admin/keys/{key_id}/revoke")
        assert response.status_code == 302
    assert [a for a, _ in audit_actions(app)].count("revoke") == 1


@pytest.mark.slow
def test_user_supplied_text_is_escaped(client, admin, api) -> None:
    api.new_key(user_name="<script>alert(1)</script>", org_name='"><img src=x>')
    html = client.get("/admin/").get_data(as_text=True)
    assert "<script>alert(1)</script>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "<img src=x>" not in html


@pytest.mark.slow
def test_the_list_shows_prefixes_never_keys(client, admin, api) -> None:
    secret = api.new_key()
    html = client.get("/admin/").get_data(as_text=True)
    assert keys.display_prefix(secret) in html
    assert secret not in html


@pytest.mark.slow
def test_the_list_has_pages_of_fifty(client, admin, api) -> None:
    for n in range(120):
        api.new_key(user_email=f"user{n:03}@example.com")
    assert rows_on(client, "") == 50
    assert rows_on(client, "page=3") == 20
    html = client.get("/admin/?page=2").get_data(as_text=True)
    assert "Next" in html and "Previous" in html


@pytest.mark.slow
def test_search_by_email_name_organisation_and_prefix(client, admin, api) -> None:
    api.new_key(user_name="Alice Smith", user_email="alice@acme.example", org_name="Acme Corp")
    bob = api.new_key(user_name="Bob Jones", user_email="bob@other.example", org_name="Globex")
    assert rows_on(client, "q=ALICE@") == 1
    assert rows_on(client, "q=bob") == 1
    assert rows_on(client, "q=glob") == 1
    assert rows_on(client, "q=acme") == 1
    assert rows_on(client, f"q={keys.display_prefix(bob)}") == 1
    assert rows_on(client, "q=nobody") == 0
    assert rows_on(client, "q=%25") == 0


@pytest.mark.slow
def test_filter_by_status_and_sort_by_last_use(app, client, admin, api) -> None:
    used = api.new_key(user_email="used@example.com")
    revoked = api.new_key(user_email="revoked@example.com")
    key_id = key_id_of(app, revoked)
    admin.post(f"/admin/keys/{key_id}/revoke", f"/admin/keys/{key_id}/revoke")
    api.get("/auth/check-key", used)
    assert rows_on(client, "status=revoked") == 1
    assert rows_on(client, "status=active") == 1
    assert rows_on(client, "status=expired") == 0
    another = api.new_key(user_email="another@example.com")
    api.get("/auth/check-key", another)
    html = client.get("/admin/?sort=last_used").get_data(as_text=True)
    assert html.index("another@example.com") < html.index("used@example.com")
    assert "revoked@example.com" not in html  # never used


@pytest.mark.slow
def test_the_overview_counts_keys_and_flags_stale_ones(app, client, admin, api, frozen_clock) -> None:
    api.new_key(user_email="old@example.com")
    frozen_clock.advance(days=91)
    api.new_key(user_email="new@example.com")
    html = client.get("/admin/").get_data(as_text=True)
    assert '<span class="value">2</span><span class="label">active keys' in html
    assert '<span class="value">1</span><span class="label">active, older than 90 days' in html
    assert 'class="stale"' in html
    assert "<svg" in html and "<polyline" in html


@pytest.mark.slow
def test_the_audit_log_records_sessions_and_is_paginated(app, client, admin_account) -> None:
    actions = AdminActions(client)
    actions.login()
    actions.post("/admin/logout", "/admin/")
    with app.app_context():
        for n in range(60):
            record(audit.REVOKE, actor=ADMIN_EMAIL, target=f"lvk_{n:08}")
        db.session.commit()
    actions.login()
    first = client.get("/admin/audit").get_data(as_text=True)
    assert first.count('<span class="badge action') == 50
    assert "Older" in first and "127.0.0.1" in first
    second = client.get("/admin/audit?page=2").get_data(as_text=True)
    assert second.count('<span class="badge action') == 13
    assert "login" in second and "logout" in second


def test_a_body_too_large_for_the_admin_gets_an_html_page(client) -> None:
    response = client.post("/admin/login", data={"email": "x" * (70 * 1024)})
    assert response.status_code == 413
    assert response.mimetype == "text/html"
    assert "64 KiB" in response.get_data(as_text=True)


@pytest.mark.slow
def test_admin_errors_are_html_pages(app, client, admin) -> None:
    missing = client.get("/admin/keys/999999")
    assert missing.status_code == 404 and missing.mimetype == "text/html"
    unknown = client.get("/admin/no-such-page")
    assert unknown.status_code == 404 and unknown.mimetype == "text/html"
    assert unknown.headers["X-Frame-Options"] == "DENY"

    def explode() -> None:
        raise RuntimeError("internal detail")

    app.config["PROPAGATE_EXCEPTIONS"] = False
    app.view_functions["admin.audit_log"] = explode
    crashed = client.get("/admin/audit")
    assert crashed.status_code == 500 and crashed.mimetype == "text/html"
    assert "internal detail" not in crashed.get_data(as_text=True)


@pytest.mark.parametrize("path", ["/admin/?q=a%00b", "/admin/audit?q=%00", "/admin/?page=%00"])
@pytest.mark.slow
def test_a_nul_in_admin_text_is_a_400_page(client, admin, path) -> None:
    response = client.get(path)
    assert response.status_code == 400 and response.mimetype == "text/html"


def test_a_nul_in_the_login_email_is_a_400_page(client, admin_account) -> None:
    actions = AdminActions(client)
    response = client.post("/admin/login", data={
        "email": "admin\x00@example.com", "password": ADMIN_PASSWORD, "csrf_token": actions.csrf_token(),
    })
    assert response.status_code == 400 and response.mimetype == "text/html"


@pytest.mark.parametrize("path", [
    "/admin/?page=184467440737095518", "/admin/audit?page=99999999999999999999", "/admin/?page=-5",
])
@pytest.mark.slow
def test_a_page_past_the_data_is_an_ordinary_page(client, admin, path) -> None:
    response = client.get(path)
    assert response.status_code == 200 and response.mimetype == "text/html"


@pytest.mark.parametrize("target", ["/admin/audit\r\nSet-Cookie: x=1", "/admin/\n", "/admin/\\\\evil.example"])
@pytest.mark.slow
def test_a_next_with_control_characters_or_backslashes_lands_on_the_key_list(client, admin_account, target) -> None:
    actions = AdminActions(client)
    response = client.post("/admin/login", query_string={"next": target}, data={
        "email": ADMIN_EMAIL, "password": ADMIN_PASSWORD, "csrf_token": actions.csrf_token(),
    })
    assert response.status_code == 302
    assert response.headers["Location"] == "/admin/"


def test_the_favicon_is_served_without_a_key_and_no_key_check_is_counted(client) -> None:
    from prometheus_client import REGISTRY

    def invalid_checks() -> float:
        return REGISTRY.get_sample_value("livekit_auth_key_checks_total", {"outcome": "invalid"}) or 0.0

    before = invalid_checks()
    with client.get("/favicon.ico") as response:
        assert response.status_code == 200 and response.data[:4] == b"\x00\x00\x01\x00"
    assert invalid_checks() == before
    assert 'rel="icon"' in client.get("/admin/login").get_data(as_text=True)


@pytest.mark.slow
def test_an_admin_page_that_fails_in_the_database_still_gets_its_own_error_page(app, client, admin, monkeypatch) -> None:
    def broken(*args, **kwargs):
        db.session.execute(text("SELECT * FROM no_such_table"))

    app.config["PROPAGATE_EXCEPTIONS"] = False
    monkeypatch.setattr(queries, "audit_page", broken)
    response = client.get("/admin/audit")
    assert response.status_code in (500, 503) and response.mimetype == "text/html"
    assert response.headers["X-Frame-Options"] == "DENY" and "X-Request-ID" in response.headers
    assert ADMIN_EMAIL in response.get_data(as_text=True)  # the page names its admin without a query


@pytest.mark.slow
def test_a_key_page_shows_fifty_of_the_owners_other_keys_and_links_to_the_rest(app, client, admin, api) -> None:
    key = api.new_key(user_email="many@example.com")
    with app.app_context():
        owner = db.session.scalars(select(ApiKey)).one().user
        for n in range(55):
            db.session.add(ApiKey(user_id=owner.id, digest=f"{n:064d}", display_prefix=f"lvk_more{n:04d}",
                                  created_at=owner.created_at))
        db.session.commit()
        first_id = min(db.session.scalars(select(ApiKey.id)))
    page = client.get(f"/admin/keys/{first_id}").get_data(as_text=True)
    assert page.count("lvk_more") == 50
    assert "/admin/?q=many@example.com" in page
    assert keys.display_prefix(key) in page
