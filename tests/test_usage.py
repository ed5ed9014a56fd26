"""Usage per key: every check counted per key and day, batched, shown in the API and the admin."""

from datetime import date, timedelta

import pytest
from sqlalchemy import select

from livekit_auth.admin.charts import daily_chart
from livekit_auth.extensions import db
from livekit_auth.apikeys.usage import UsageRecorder
from livekit_auth.apikeys.models import KeyRequestCount


def listed(api, key: str) -> dict:
    """The calling key as GET /auth/keys lists it (a check itself)."""
    return api.get("/auth/keys", key).json["data"][0]


def test_every_check_counts_towards_requests_30d(api) -> None:
    key = api.new_key()
    for _ in range(3):
        assert api.get("/auth/check-key", key).status_code == 200
    api.get("/auth/check-key", "lvk_wrong")  # refused: counts for no key
    assert listed(api, key)["requests_30d"] == 4  # three checks, and the listing itself


def test_requests_30d_covers_the_last_thirty_days(api, frozen_clock) -> None:
    key = api.new_key()
    api.get("/auth/check-key", key)
    frozen_clock.advance(days=29)
    assert listed(api, key)["requests_30d"] == 2
    frozen_clock.advance(days=1)
    assert listed(api, key)["requests_30d"] == 2  # the first day's check has left the window


def request_counts(app) -> dict[tuple[int, date], int]:
    """The stored counts, by key and day."""
    with app.app_context():
        rows = db.session.execute(select(KeyRequestCount.key_id, KeyRequestCount.day, KeyRequestCount.requests))
        return {(key_id, day): requests for key_id, day, requests in rows}


def test_counts_are_kept_in_memory_and_added_up_across_workers_in_batches(app, api, frozen_clock) -> None:
    key = api.new_key()
    api.get("/auth/check-key", key)
    known = next(iter(app.extensions["keyring"].cache.entries.values()))
    with app.app_context():
        workers = [UsageRecorder(db.engine, 60, flush_seconds=30) for _ in range(2)]
    for _ in range(5):
        for worker in workers:
            worker.note(known, frozen_clock.current)
    assert request_counts(app) == {(known.id, frozen_clock.current.date()): 1}  # nothing written yet
    for worker in workers:
        worker.flush()
    assert request_counts(app) == {(known.id, frozen_clock.current.date()): 11}


@pytest.mark.slow
def test_the_background_writer_adds_the_counts(app, api, frozen_clock, batched_usage) -> None:
    recorder = batched_usage(0.1)
    key = api.new_key()
    for _ in range(7):
        api.get("/auth/check-key", key)
    recorder.wait_for_what_was_noted()
    assert list(request_counts(app).values()) == [7]


@pytest.mark.slow
def test_the_admin_shows_requests_per_key_in_the_list_and_a_chart_on_its_page(client, admin, api) -> None:
    key = api.new_key(user_email="busy@example.com")
    for _ in range(12):
        api.get("/auth/check-key", key)
    page = client.get("/admin/").get_data(as_text=True)
    assert 'data-label="Requests (30 d)">12</td>' in page
    key_id = listed(api, key)["id"]
    detail = client.get(f"/admin/keys/{key_id}").get_data(as_text=True)
    assert "13 checks passed in the last 30 days" in detail
    assert 'polyline class="requests"' in detail


def days(count: int) -> list[date]:
    """count days up to today."""
    return [date(2026, 1, 30) - timedelta(days=back) for back in range(count - 1, -1, -1)]


def test_the_chart_has_round_gridlines_and_labelled_days() -> None:
    chart = daily_chart(days(30), [("used", "keys used", [3, 7, 12] + [5] * 27)])
    assert not chart.logarithmic
    assert [label for _, label in chart.gridlines] == ["0", "5", "10", "15"]
    assert [label for _, label in chart.day_labels] == ["Jan 01", "Jan 16", "Jan 30"]
    assert len(chart.lines[0].points.split()) == 30


def test_a_day_that_dwarfs_the_rest_switches_to_a_logarithmic_scale() -> None:
    counts = [4, 6, 5, 3] * 7 + [2, 50_000]
    chart = daily_chart(days(30), [("requests", "checks passed", counts)])
    assert chart.logarithmic
    assert [label for _, label in chart.gridlines] == ["0", "1", "10", "100", "1,000", "10,000", "100,000"]
    heights = [float(point.split(",")[1]) for point in chart.lines[0].points.split()]
    assert chart.bottom - heights[0] > 15  # a day of four is clear of the axis (0.01 px on a linear scale)
