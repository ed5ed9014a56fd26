"""Time the admin pages on a database that already holds many keys (e.g. one make bench seeded).

    python -m bench.admin_pages sqlite:////path/to/bench.db
    python -m bench.admin_pages postgresql://postgres@127.0.0.1/livekit_auth_bench_1000000

It creates (or replaces) the admin perf@example.com in that database, logs in through the test
client, and prints the best of three timings for each page: the first view computes the
overview, later ones use the cached counts.
"""

import re
import sys
import time

from sqlalchemy import delete

from livekit_auth import clock, create_app
from livekit_auth.admin import queries
from livekit_auth.admin.accounts import hash_password
from livekit_auth.admin.models import Admin
from livekit_auth.config import database_url
from livekit_auth.extensions import db

EMAIL, PASSWORD = "perf@example.com", "admin pages perf password"
PAGES = [
    ("list, page 1", "/admin/"),
    ("search by email prefix", "/admin/?q=user12345"),
    ("search by name prefix", "/admin/?q=bench%20user%2099999"),
    ("search by key prefix lvk_A", "/admin/?q=lvk_A"),
    ("status=active", "/admin/?status=active"),
    ("status=revoked", "/admin/?status=revoked"),
    ("sort=last_used", "/admin/?sort=last_used"),
    ("page 200", "/admin/?page=200"),
    ("a key's page", "/admin/keys/500000"),
    ("audit log", "/admin/audit"),
]


def main() -> None:
    """Log in and time every page."""
    app = create_app({"SQLALCHEMY_DATABASE_URI": database_url(sys.argv[1], ""), "RATELIMIT_ENABLED": False})
    with app.app_context():
        db.session.execute(delete(Admin).where(Admin.email == EMAIL))
        db.session.add(Admin(email=EMAIL, password_hash=hash_password(PASSWORD), created_at=clock.now()))
        db.session.commit()
    client = app.test_client()
    form = client.get("/admin/login").get_data(as_text=True)
    token = re.search(r'name="csrf_token"[^>]*value="([^"]+)"', form).group(1)
    client.post("/admin/login", data={"email": EMAIL, "password": PASSWORD, "csrf_token": token})
    queries.forget_overview()
    started = time.perf_counter()
    assert client.get("/admin/").status_code == 200
    print(f"{'first view (computes the overview)':36} {(time.perf_counter() - started) * 1000:8.1f} ms")
    for label, path in PAGES:
        timings = []
        for _ in range(3):
            started = time.perf_counter()
            response = client.get(path)
            timings.append((time.perf_counter() - started) * 1000)
            assert response.status_code in (200, 404), (path, response.status_code)
        print(f"{label:36} {min(timings):8.1f} ms")


if __name__ == "__main__":
    main()
