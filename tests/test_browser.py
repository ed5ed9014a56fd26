"""The admin pages in a real browser: Debian's Chromium driven by Playwright, on real gunicorn."""

import os
import re
import sqlite3
from contextlib import closing
from datetime import date, timedelta
from pathlib import Path

import pytest
import requests

from bench.servers import live_server

from .support import REQUIRE_SERVICES, eventually, flask_command

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
PASSWORD = "browser test passphrase"

if not os.path.exists(CHROMIUM):
    if REQUIRE_SERVICES:
        pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium", pytrace=False)
    pytest.skip(f"no browser at {CHROMIUM}: apt-get install chromium", allow_module_level=True)

from playwright.sync_api import Browser, expect, sync_playwright  # noqa: E402

pytestmark = pytest.mark.slow  # every test here starts a process or waits on one


@pytest.fixture(scope="module")
def browser():
    """One headless Chromium for the module."""
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
        yield launched
        launched.close()


@pytest.fixture
def server(tmp_path):
    """gunicorn with two workers on a fresh SQLite file, and an admin account."""
    database = f"sqlite:///{tmp_path / 'browser.db'}"
    with live_server(database, tmp_path, workers=2) as running:
        created = flask_command(database, "admin", "create", "--email", "ops@example.com", "--password-stdin",
                                stdin=PASSWORD + "\n")
        assert created.returncode == 0, created.stderr
        yield running


def create_key(server, name: str, email: str) -> str:
    """A key issued through the public API."""
    body = {"user_name": name, "user_email": email, "org_name": "Acme"}
    return requests.post(f"{server.url}/auth/create-key", json=body, timeout=10).json()["data"]["api_key"]


def test_log_in_find_a_user_revoke_their_key_and_log_out(server, browser: Browser, tmp_path) -> None:
    victim = create_key(server, "Victor Victim", "victor@example.com")
    create_key(server, "Other Person", "other@example.com")
    assert requests.get(f"{server.url}/auth/check-key", headers={"x-api-key": victim}, timeout=10).status_code == 200

    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.goto(f"{server.url}/admin/")
    expect(page).to_have_url(f"{server.url}/admin/login?next=/admin/")
    page.get_by_label("Email").fill("ops@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("table.keys tbody tr")).to_have_count(2)

    page.get_by_label("Search").fill("victor")
    page.get_by_role("button", name="Apply").click()
    rows = page.locator("table.keys tbody tr")
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("victor@example.com")
    page.screenshot(path=str(tmp_path / "search.png"), full_page=True)

    # A whole key, pasted, opens its page; no address the browser saw holds it.
    page.get_by_label("Search").fill(victim)
    page.get_by_role("button", name="Apply").click()
    expect(page).to_have_url(re.compile(r"/admin/keys/\d+$"))
    expect(page.locator(".facts")).to_contain_text("victor@example.com")
    seen = page.evaluate("() => performance.getEntriesByType('navigation').map(entry => entry.name)")
    assert victim not in page.url and not [address for address in seen if victim in address]
    page.go_back()
    rows = page.locator("table.keys tbody tr")

    rows.first.locator("a.mono").click()
    page.get_by_role("link", name="Suspend this key…").click()
    page.get_by_role("button", name="Suspend key").click()
    expect(page.locator(".badge").first).to_have_text("suspended")
    assert requests.get(f"{server.url}/auth/check-key", headers={"x-api-key": victim}, timeout=10).json()["message"] \
        == "API key is suspended"
    page.get_by_role("link", name="Resume this key…").click()
    page.get_by_role("button", name="Resume key").click()
    expect(page.locator(".badge").first).to_have_text("active")
    page.get_by_role("link", name="Revoke this key…").click()
    expect(page.get_by_role("heading")).to_contain_text("Revoke key")
    page.get_by_role("button", name="Revoke key").click()
    expect(page.locator(".badge").first).to_have_text("revoked")
    expect(page.locator(".facts")).to_contain_text("by ops@example.com")

    eventually(lambda: check(server, victim) == 401, 1.0, "the revoked key refused")  # at once within one server
    for _ in range(4):
        answer = requests.get(f"{server.url}/auth/check-key", headers={"x-api-key": victim}, timeout=10)
        assert answer.status_code == 401
        assert answer.json()["message"] == "API key has been revoked"

    page.get_by_role("link", name="Audit log").click()
    expect(page.locator("table tbody")).to_contain_text("revoke")

    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(f"{server.url}/admin/login")
    page.goto(f"{server.url}/admin/")
    expect(page).to_have_url(f"{server.url}/admin/login?next=/admin/")
    page.close()


def test_a_wrong_password_is_refused_and_the_page_works_on_a_phone(server, browser: Browser) -> None:
    page = browser.new_page(viewport={"width": 390, "height": 844})
    page.goto(f"{server.url}/admin/login")
    page.get_by_label("Email").fill("ops@example.com")
    page.get_by_label("Password").fill("not the password")
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_role("alert")).to_have_text("Invalid email or password")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_label("Password").press("Enter")
    expect(page.locator("table.keys")).to_be_visible()
    width = page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390, "the page itself must not scroll sideways; the table scrolls in its box"
    page.close()


# Where the browser tests save docs/admin.md's screenshots when asked (SCREENSHOTS_DIR=docs).
SCREENSHOTS = os.environ.get("SCREENSHOTS_DIR")


def log_in(page, server) -> None:
    """Open the admin and log in."""
    page.goto(f"{server.url}/admin/login")
    page.get_by_label("Email").fill("ops@example.com")
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_role("button", name="Log in").click()
    expect(page.locator("table.keys")).to_be_visible()


def check(server, key: str) -> int:
    """The status check-key answers for a key."""
    return requests.get(f"{server.url}/auth/check-key", headers={"x-api-key": key}, timeout=10).status_code


def oldest_key(server, key: str) -> dict:
    """The oldest of the keys of a key's user, as GET /auth/keys lists it."""
    return requests.get(f"{server.url}/auth/keys", headers={"x-api-key": key}, timeout=10).json()["data"][-1]


def seed_history(server, key: str) -> int:
    """Give a key the requests of the 29 days before today, for the screenshots; return how many in all."""
    key_id = oldest_key(server, key)["id"]
    today = date.today()
    days = [(key_id, (today - timedelta(days=back)).isoformat(), 900 + 37 * (back % 7) * (30 - back))
            for back in range(1, 30)]
    with closing(sqlite3.connect(server.database_url.removeprefix("sqlite:///"))) as connection, connection:
        connection.executemany(
            "INSERT INTO key_request_counts (key_id, day, requests) VALUES (?, ?, ?) "
            "ON CONFLICT (key_id, day) DO UPDATE SET requests = excluded.requests", days,
        )
    return sum(requests for _, _, requests in days)


def test_the_key_table_fits_a_laptop_and_stacks_on_a_phone(server, browser: Browser, tmp_path) -> None:
    busy = create_key(server, "Margaret Hamilton-Longname", "margaret.hamilton@apollo-guidance.example.com")
    for n in range(5):
        create_key(server, f"User Number {n}", f"user.number.{n}@a-rather-long-domain-name.example")
    requests.post(f"{server.url}/auth/keys", headers={"x-api-key": busy}, json={"name": "nightly", "expires_in_days": 5},
                  timeout=10)
    requests.post(f"{server.url}/auth/keys/rotate", headers={"x-api-key": busy}, json={"grace_hours": 24}, timeout=10)
    for _ in range(20):
        check(server, busy)
    seeded = seed_history(server, busy)
    eventually(lambda: (row := oldest_key(server, busy))["last_used_at"] and row["requests_30d"] >= seeded + 20,
               what="the workers' batched usage writes (LAST_USED_FLUSH_SECONDS)")

    laptop = browser.new_page(viewport={"width": 1366, "height": 900})
    log_in(laptop, server)
    wrap = laptop.locator(".table-wrap").first
    assert wrap.evaluate("box => box.scrollWidth <= box.clientWidth"), "the table scrolls sideways at 1366 px"
    last_used = laptop.get_by_role("columnheader", name="Last used")
    box = last_used.bounding_box()
    assert box is not None and box["x"] + box["width"] <= 1366
    expect(laptop.locator(".badge.grace")).to_have_count(1)
    if SCREENSHOTS:
        laptop.screenshot(path=str(Path(SCREENSHOTS) / "admin-keys.png"), full_page=True)
    laptop.locator("table.keys tbody tr").filter(has_text="grace period").locator("a.mono").click()
    expect(laptop.locator("svg polyline.requests")).to_be_visible()
    expect(laptop.get_by_role("heading", name="Requests")).to_be_visible()
    if SCREENSHOTS:
        laptop.screenshot(path=str(Path(SCREENSHOTS) / "admin-key.png"), full_page=True)
    laptop.close()

    phone = browser.new_page(viewport={"width": 390, "height": 844})
    log_in(phone, server)
    assert phone.evaluate("document.documentElement.scrollWidth") <= 390
    assert phone.locator(".table-wrap").first.evaluate("box => box.scrollWidth <= box.clientWidth")
    rows = phone.locator("table.keys tbody tr")
    expect(rows).to_have_count(8)
    for index in range(8):
        for part in (rows.nth(index).locator("a.mono"), rows.nth(index).locator(".badge")):
            expect(part).to_be_visible()
            box = part.bounding_box()
            assert box is not None and 0 <= box["x"] and box["x"] + box["width"] <= 390
    if SCREENSHOTS:
        phone.screenshot(path=str(Path(SCREENSHOTS) / "admin-keys-phone.png"), full_page=True)
    phone.close()


def test_an_operator_issues_a_key_finds_it_whole_revokes_a_user_and_exports(server, browser: Browser) -> None:
    context = browser.new_context(viewport={"width": 1366, "height": 900}, accept_downloads=True)
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=server.url)
    page = context.new_page()
    log_in(page, server)

    page.get_by_role("link", name="Issue a key").click()
    page.get_by_label("Email", exact=True).fill("grace@example.com")
    page.get_by_label("Name (for a new user; default: from the email)").fill("Grace Hopper")
    page.get_by_label("Organisation (for a new user)").fill("Navy")
    page.get_by_label("Key name").fill("compiler")
    page.get_by_label("Expires in (days; empty: never)").fill("3")
    page.get_by_role("button", name="Issue key").click()
    secret = page.locator("#issued-key").inner_text().strip()
    assert secret.startswith("lvk_") and check(server, secret) == 200
    page.get_by_role("button", name="Copy").click()
    expect(page.get_by_role("button", name="Copied")).to_be_visible()
    assert page.evaluate("navigator.clipboard.readText()") == secret
    # Reloading shows the key's page, not the key, and issues nothing ("all 2" below).
    page.reload()
    expect(page.get_by_role("status")).to_contain_text("was shown already")
    assert secret not in page.content()

    second = requests.post(f"{server.url}/auth/keys", headers={"x-api-key": secret}, timeout=10).json()["data"]["api_key"]
    page.get_by_role("link", name="Keys", exact=True).click()
    page.get_by_label("Search").fill(secret)
    page.get_by_role("button", name="Apply").click()
    expect(page).to_have_url(re.compile(r"/admin/keys/\d+$"))
    expect(page.locator(".facts")).to_contain_text("compiler")
    assert secret not in page.url
    # An operator limits the key from its page: it is counted, and refused past the limit, at once.
    page.locator("#key-rate_limit").fill("1 per minute")
    page.get_by_role("button", name="Set this key's limits").click()
    expect(page.get_by_role("status")).to_contain_text("now: rate limit 1 per minute, quota none.")
    expect(page.locator(".limit-facts").first).to_contain_text("1 per minute")
    assert [check(server, secret), check(server, secret)] == [200, 429]

    page.get_by_role("link", name="Keys", exact=True).click()
    rows = page.locator("table.keys tbody tr")
    page.get_by_label("Status").select_option("expiring")
    page.get_by_label("Search").fill("")
    page.get_by_role("button", name="Apply").click()
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("compiler")

    with page.expect_download() as download:
        page.get_by_role("link", name="Export CSV").click()
    exported = Path(download.value.path()).read_text()
    assert exported.splitlines()[0].startswith("key_id,display_prefix,name,status")
    assert len(exported.splitlines()) == 2 and "grace@example.com" in exported and secret not in exported

    rows.first.locator("a.mono").click()
    page.get_by_role("link", name="Revoke all 2 active keys of Grace Hopper…").click()
    expect(page.get_by_role("heading")).to_have_text("Revoke all 2 active keys of Grace Hopper?")
    page.get_by_role("button", name="Revoke 2 keys").click()
    expect(page.get_by_role("status")).to_have_text("Revoked 2 keys of grace@example.com.")
    eventually(lambda: check(server, secret) == 401 and check(server, second) == 401, 1.0, "both keys refused")
    context.close()


def test_the_docs_page_renders_under_its_content_security_policy(server, browser: Browser) -> None:
    page = browser.new_page()
    refused: list[str] = []
    page.on("console", lambda message: refused.append(message.text) if "Content Security Policy" in message.text
            else None)
    try:
        page.goto(f"{server.url}/docs")
        expect(page.locator(".swagger-ui .info .title")).to_contain_text("livekit-auth")
        page.locator(".opblock-summary-path", has_text="/auth/create-key").click()  # draws its icons
        expect(page.locator(".opblock-body").first).to_be_visible()
        page.locator("button.try-out__btn").first.click()
        expect(page.locator("button.execute").first).to_be_visible()
        assert refused == []
    finally:
        page.close()
