"""Reading keys on one connection each worker holds open: one round trip per read.

A key check runs in front of every API call. A pooled connection per read costs a check-out
and a check-in, and on PostgreSQL a BEGIN and a ROLLBACK round trip around the SELECT; a
connection held open in autocommit mode costs the SELECT alone.
"""

import threading
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Engine, Executable, Row
from sqlalchemy.exc import DBAPIError


class KeyReader:
    """One held connection for the key look-ups of a worker, opened again after a failure."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.connection: Connection | None = None
        # gunicorn's sync workers read from one thread; the lock keeps threaded servers safe.
        self.lock = threading.Lock()

    def first(self, statement: Executable, parameters: dict[str, Any] | None = None) -> Row[Any] | None:
        """The first row a read returns, or None."""
        rows = self.all(statement, parameters)
        return rows[0] if rows else None

    def all(self, statement: Executable, parameters: dict[str, Any] | None = None) -> Sequence[Row[Any]]:
        """Every row a read returns.

        A held connection that has died since its last read (the server restarted, or dropped
        it while idle) is replaced and the read tried once more on a fresh one; any other
        failure is raised, and the next read starts on a fresh connection.
        """
        with self.lock:
            try:
                return self.read(statement, parameters)
            except DBAPIError as error:
                if not error.connection_invalidated:
                    raise
            return self.read(statement, parameters)

    def read(self, statement: Executable, parameters: dict[str, Any] | None) -> Sequence[Row[Any]]:
        """Run a read on the held connection, opening one first if none is held."""
        if self.connection is None:
            self.connection = self.open()
        try:
            return self.connection.execute(statement, parameters).all()
        except DBAPIError:
            self.let_go()
            raise

    def open(self) -> Connection:
        """A connection that runs each read on its own."""
        connection = self.engine.connect()
        if self.engine.dialect.name != "sqlite":
            # PostgreSQL would otherwise keep a transaction open for the connection's whole
            # life; SQLite's driver opens none for a SELECT.
            connection = connection.execution_options(isolation_level="AUTOCOMMIT")
        return connection

    def let_go(self) -> None:
        """Close the held connection, if any; the next read opens another."""
        connection, self.connection = self.connection, None
        if connection is not None:
            connection.close()

    def close(self) -> None:
        """Give the held connection back, as the app is torn down."""
        with self.lock:
            self.let_go()
