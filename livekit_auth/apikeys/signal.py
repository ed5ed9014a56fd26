"""A number in memory the workers of one gunicorn server share, to hear of key changes at once.

gunicorn.conf.py creates the file before it forks the workers and names it in
LIVEKIT_AUTH_KEY_SIGNAL. A worker that commits a key change adds one to the number; every
worker compares it with the one it saw last on each key check, a read of shared memory, and
asks the database for the keys' version as soon as it moved. So a key revoked through one
worker is refused by every worker of the server on the very next request. Processes without
the file (the flask CLI, another server) are heard through the database poll alone, within
KEY_CACHE_POLL_SECONDS.
"""

import fcntl
import mmap
import os
import struct
from typing import Any

from sqlalchemy import event
from sqlalchemy.orm import Session

SIGNAL_FILE_VARIABLE = "LIVEKIT_AUTH_KEY_SIGNAL"
COUNTER = struct.Struct("=Q")  # gunicorn.conf.py writes its 8 bytes
PENDING = "key_signal"  # the session.info entry of a change waiting for its commit


class KeySignal:
    """The shared number, mapped into this process."""

    def __init__(self, path: str) -> None:
        self.path = path
        with open(path, "r+b") as handle:
            self.memory = mmap.mmap(handle.fileno(), COUNTER.size)

    def read(self) -> int:
        """The number as it is now."""
        return COUNTER.unpack_from(self.memory)[0]

    def send(self) -> None:
        """Move the number by one.

        The file lock makes each send a move of its own: two sends that raced to one value
        would let a worker that read it after the first commit miss the second. Sends are
        rare (key changes), so the file is opened for each.
        """
        with open(self.path, "r+b") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # released as the file closes
            COUNTER.pack_into(self.memory, 0, (self.read() + 1) % 2**64)


def signal_from_environment() -> KeySignal | None:
    """This server's signal, when gunicorn.conf.py made one."""
    path = os.environ.get(SIGNAL_FILE_VARIABLE)
    return KeySignal(path) if path else None


def send_after_commit(session: Session, signal: KeySignal | None) -> None:
    """Send the signal once the session's transaction commits, and not if it rolls back.

    Sending before the commit could let another worker re-read the key before the change
    is visible, and keep the old state in its cache.
    """
    if signal is not None:
        session.info[PENDING] = signal


@event.listens_for(Session, "after_commit")
def send_pending_signal(session: Session) -> None:
    """Send the signal a committed key change asked for."""
    signal = session.info.pop(PENDING, None)
    if signal is not None:
        signal.send()


@event.listens_for(Session, "after_rollback")
def drop_pending_signal(session: Session, *_: Any) -> None:
    """Forget the signal of a change that was rolled back."""
    session.info.pop(PENDING, None)
