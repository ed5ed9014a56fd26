"""Recording when keys are used, without a database write per request.

A worker notes a key's use at most once per LAST_USED_INTERVAL_SECONDS and writes the notes
in one transaction every LAST_USED_FLUSH_SECONDS from a background thread (or at once, when
that is 0). Each write only moves last_used_at forward and only when the stored time is older
than the interval, so several workers together still write a key at most once per interval.
A key's first use of a day adds one to that day's count of keys used. Every use is also
counted in memory, per key and day, and each batch adds those counts to the keys' daily
request counts (the record of quotas), as it adds the checks of valid keys refused, by
outcome. Recording is best effort: a busy or absent database costs the record, never a
request.
"""

import atexit
import logging
import threading
from collections import defaultdict
from datetime import date, datetime, time, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, Update, bindparam, or_, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import InstrumentedAttribute

from .cache import KnownKey
from .models import ApiKey, KeyRefusalCount, KeyRequestCount, KeyUseCount

logger = logging.getLogger(__name__)


def recording_update(*conditions: Any) -> Update:
    """Set a key's last_used_at to :used_at, where the key is :key_id and the conditions hold."""
    return (
        update(ApiKey)
        .where(ApiKey.id == bindparam("key_id"), *conditions)
        .values(last_used_at=bindparam("used_at"))
    )


# A use on a day the key was not used yet; its row count is how many keys a batch used for
# the first time that day.
FIRST_USE_OF_DAY = recording_update(
    or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < bindparam("day_start"))
)
# Any other use, once the stored one is older than the interval.
LATER_USE = recording_update(ApiKey.last_used_at < bindparam("threshold"))


def add_up(connection: Connection, total: InstrumentedAttribute[int], rows: list[dict[str, Any]]) -> None:
    """Add each row's number to a counting column, creating the rows that are missing.

    The table's primary key tells the rows apart; each row names it and the number to add.
    """
    insert = postgresql_insert if connection.dialect.name == "postgresql" else sqlite_insert
    table = total.class_.__table__
    statement = insert(table)
    connection.execute(statement.on_conflict_do_update(
        index_elements=list(table.primary_key.columns),
        set_={total.key: total + statement.excluded[total.key]},
    ), rows)


class UsageRecorder:
    """One worker's pending notes of key use, and the thread that writes them."""

    def __init__(self, engine: Engine, interval_seconds: float, flush_seconds: float) -> None:
        self.engine = engine
        self.interval = timedelta(seconds=interval_seconds)
        self.flush_seconds = flush_seconds
        self.pending: dict[int, tuple[datetime, bool]] = {}
        self.requests: defaultdict[tuple[int, date], int] = defaultdict(int)
        self.refusals: defaultdict[tuple[int, date, str], int] = defaultdict(int)
        self.lock = threading.Lock()
        self.writer: threading.Thread | None = None
        self.stopping = threading.Event()

    def note(self, key: KnownKey, now: datetime) -> None:
        """Count a use of key, and note its time unless this worker noted one within the interval."""
        last_used_at = key.last_used_at
        with self.lock:
            self.requests[key.id, now.date()] += 1
            if last_used_at is None or now - last_used_at >= self.interval:
                key.last_used_at = now
                self.pending[key.id] = (now, last_used_at is None or last_used_at.date() < now.date())
        self.written()

    def note_refusal(self, key_id: int, outcome: str, now: datetime) -> None:
        """Count a check of a valid key refused for its limits, its scopes or its suspension."""
        with self.lock:
            self.refusals[key_id, now.date(), outcome] += 1
        self.written()

    def written(self) -> None:
        """Have what was noted written: at once, when flush_seconds is 0, or by the writer."""
        if self.flush_seconds <= 0:
            self.flush()
        elif self.writer is None:
            self.start_writer()

    def start_writer(self) -> None:
        """Start the background writer in this process (after gunicorn forked it)."""
        self.writer = threading.Thread(target=self.write_periodically, name="usage-writer", daemon=True)
        self.writer.start()
        atexit.register(self.stop)

    def write_periodically(self) -> None:
        """Flush every flush_seconds until stopped."""
        while not self.stopping.wait(self.flush_seconds):
            self.flush()

    def stop(self) -> None:
        """Stop the writer and write what is left, as the worker exits."""
        self.stopping.set()
        atexit.unregister(self.stop)
        self.flush()

    def flush(self) -> None:
        """Write the pending notes of last use, then the requests counted, each batch in key order."""
        with self.lock:
            notes, self.pending = self.pending, {}
            requests, self.requests = self.requests, defaultdict(int)
            refusals, self.refusals = self.refusals, defaultdict(int)
        self.write_uses(notes)
        self.write_counts(KeyRequestCount.requests, [
            {"key_id": key_id, "day": day, "requests": number} for (key_id, day), number in sorted(requests.items())
        ], "requests")
        self.write_counts(KeyRefusalCount.refusals, [
            {"key_id": key_id, "day": day, "outcome": outcome, "refusals": number}
            for (key_id, day, outcome), number in sorted(refusals.items())
        ], "refusals")

    def write_uses(self, notes: dict[int, tuple[datetime, bool]]) -> None:
        """Record last use, and the day's count of keys used, in one transaction."""
        if not notes:
            return
        # What this worker saw decides which statement a note takes: its own first use of a key
        # on a day is counted, unless another worker's already was.
        first_uses: dict[date, list[dict[str, Any]]] = defaultdict(list)
        later_uses: list[dict[str, Any]] = []
        for key_id, (used_at, first_of_day) in sorted(notes.items()):
            use = {
                "key_id": key_id,
                "used_at": used_at,
                "day_start": datetime.combine(used_at.date(), time.min, used_at.tzinfo),
                "threshold": used_at - self.interval,
            }
            (first_uses[used_at.date()] if first_of_day else later_uses).append(use)
        try:
            with self.engine.begin() as connection:
                for day, uses in first_uses.items():
                    counted = connection.execute(FIRST_USE_OF_DAY, uses).rowcount
                    if counted:  # a day's count of keys used
                        add_up(connection, KeyUseCount.keys_used, [{"day": day, "keys_used": counted}])
                    if counted < len(uses):
                        later_uses += uses  # some were used today already: record them as later uses
                if later_uses:
                    connection.execute(LATER_USE, later_uses)
        except DBAPIError as error:
            # The database is away, or a key was deleted meanwhile: this batch is lost, the
            # writer carries on.
            logger.warning("last use of %d keys not recorded: %s", len(notes), type(error).__name__)

    def write_counts(self, total: InstrumentedAttribute[int], counts: list[dict[str, Any]], what: str) -> None:
        """Add counts (requests per key and day, refusals per key, day and outcome) in key order.

        In a transaction of their own, apart from last use, so that a key deleted meanwhile
        (which fails the batch) costs no last-use records.
        """
        if not counts:
            return
        try:
            with self.engine.begin() as connection:
                add_up(connection, total, counts)
        except DBAPIError as error:
            logger.warning("%s of %d keys not counted: %s", what, len(counts), type(error).__name__)
