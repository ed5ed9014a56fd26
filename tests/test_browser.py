"""The admin pages in a real browser: Debian's Chromium driven by Playwright, on real gunicorn."""

import os
import subprocess
import time
import sys
from pathlib import Path

import pytest
import requests

from .support import REQUIRE_SERVICES, live_server

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
PASSWORD = "browser test passphrase"

if not os.path.exists(CHROMIUM):
    if REQUIRE_SERVICES:
        pytest.fail(f"{CHROMIUM} is missing: .ci/run installs Debian's chromium", pytrace=False)
    pytest.skip(f"no browser at {CHROMIUM}: apt-get install chromium", allow_module_level=True)

from playwright.sync_api import Browser, expect, sync_playwright  # noqa: E402


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
        subprocess.run(
            [str(Path(sys.executable).parent / "flask"), "--app", "wsgi", "admin", "create",
             "--email", "ops@example.com", "--password-stdin"],
            input=PASSWORD + "\n", text=True, check=True, capture_output=True,
            cwd=Path(__file__).resolve().parent.parent,
            env={**os.environ, "DATABASE_URL": database, "SECRET_KEY": "live-server-test-secret"},
        )
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

    rows.first.locator("a.mono").click()
    page.get_by_role("link", name="Revoke this key…").click()
    expect(page.get_by_role("heading")).to_contain_text("Revoke key")
    page.get_by_role("button", name="Revoke key").click()
    expect(page.locator(".badge").first).to_have_text("revoked")
    expect(page.locator(".facts")).to_contain_text("by ops@example.com")

    time.sleep(0.6)  # every worker drops its cached keys within 0.5 s of a change
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
