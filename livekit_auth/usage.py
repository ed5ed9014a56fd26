"""Recording when keys are used, without a database write per request.

A worker notes a key's use at most once per LAST_USED_INTERVAL_SECONDS and writes the notes
in one transaction every LAST_USED_FLUSH_SECONDS from a background thread (or at once, when
that is 0). Each write only moves last_used_at forward and only when the stored time is older
than the interval, so several workers together still write a key at most once per interval.
Recording is best effort: a busy or absent database costs the record, never a request.
"""

import atexit
import logging
import threading
from datetime import datetime, timedelta

from sqlalchemy import Engine, bindparam, or_, update
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import DBAPIError

from .key_cache import KnownKey
from .models import ApiKey, KeyUseDay

logger = logging.getLogger(__name__)


class UsageRecorder:
    """One worker's pending notes of key use, and the thread that writes them."""

    def __init__(self, engine: Engine, interval_seconds: float, flush_seconds: float) -> None:
        self.engine = engine
        self.interval = timedelta(seconds=interval_seconds)
        self.flush_seconds = flush_seconds
        self.pending: dict[int, tuple[datetime, bool]] = {}
        self.lock = threading.Lock()
        self.writer: threading.Thread | None = None
        self.stopping = threading.Event()

    def note(self, key: KnownKey, now: datetime) -> None:
        """Note a use of key, unless this worker noted one within the interval."""
        if key.last_used_at is not None and now - key.last_used_at < self.interval:
            return
        first_today = key.last_used_at is None or key.last_used_at.date() != now.date()
        key.last_used_at = now
        with self.lock:
            self.pending[key.id] = (now, first_today)
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
        self.flush()

    def flush(self) -> None:
        """Write every pending note in one transaction."""
        with self.lock:
            notes, self.pending = self.pending, {}
        if not notes:
            return
        updates = [
            {"key_id": key_id, "used_at": used_at, "threshold": used_at - self.interval}
            for key_id, (used_at, _) in notes.items()
        ]
        days = [
            {"day": used_at.date(), "key_id": key_id}
            for key_id, (used_at, first_today) in notes.items()
            if first_today
        ]
        statement = (
            update(ApiKey)
            .where(ApiKey.id == bindparam("key_id"))
            .where(or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at < bindparam("threshold")))
            .values(last_used_at=bindparam("used_at"))
        )
        try:
            with self.engine.begin() as connection:
                connection.execute(statement, updates)
                if days:
                    dialect_insert = (
                        postgresql_insert if connection.dialect.name == "postgresql" else sqlite_insert
                    )
                    connection.execute(dialect_insert(KeyUseDay).on_conflict_do_nothing(), days)
        except DBAPIError as error:
            # The database is away, or a key was deleted meanwhile: this batch is lost, the
            # writer carries on.
            logger.warning("last use of %d keys not recorded: %s", len(notes), type(error).__name__)
