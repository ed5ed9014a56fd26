"""Reading keys on one connection each worker holds open: one round trip per read, and no more.

A key check runs in front of every API call. A pooled connection per read costs a check-out
and a check-in, and on PostgreSQL a BEGIN and a ROLLBACK round trip around the SELECT; a
connection held open in autocommit mode costs the SELECT alone.

Each read is compiled once and then run on the driver's own cursor. SQLAlchemy's execution of
a statement (its context, events and result object) costs five times an indexed look-up in
SQLite; what the reader keeps of it is the types' conversion of the values read, the
parameters of the compiled statement, and its exceptions.
"""

import threading
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

from sqlalchemy import Compiled, Engine, PoolProxiedConnection, Select
from sqlalchemy.exc import DBAPIError

Row = tuple[Any, ...]


class PreparedRead(NamedTuple):
    """A select compiled for one database: its SQL, how to pass it parameters, how to read its columns.

    Parameters are passed as given, without their types' conversions: reads take strings and
    numbers only.
    """

    sql: str
    compiled: Compiled
    positions: tuple[str, ...] | None  # the parameters' order, for a driver that takes them by position
    conversions: tuple[tuple[int, Callable[[Any], Any]], ...]  # (column, its type's conversion)


class KeyReader:
    """One held connection for the key look-ups of a worker, opened again after a failure."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.connection: PoolProxiedConnection | None = None
        # The held connection's one cursor, used for every read: a new one per read costs
        # psycopg about a sixth of the read.
        self.cursor: Any = None
        self.prepared: dict[Select[Any], PreparedRead] = {}
        # gunicorn's sync workers read from one thread; the lock keeps threaded servers safe.
        self.lock = threading.Lock()

    def first(self, statement: Select[Any], parameters: Mapping[str, Any] | None = None) -> Row | None:
        """The first row a read returns, or None."""
        rows = self.all(statement, parameters)
        return rows[0] if rows else None

    def all(self, statement: Select[Any], parameters: Mapping[str, Any] | None = None) -> list[Row]:
        """Every row a read returns.

        A held connection that has died since its last read (the server restarted, or dropped
        it while idle) is replaced and the read tried once more on a fresh one; any other
        failure is raised, and the next read starts on a fresh connection.
        """
        with self.lock:
            read = self.prepared.get(statement) or self.prepare(statement)
            try:
                return self.read(read, parameters or {})
            except DBAPIError as error:
                if not error.connection_invalidated:
                    raise
            return self.read(read, parameters or {})

    def prepare(self, statement: Select[Any]) -> PreparedRead:
        """Compile a select for this database, once."""
        dialect = self.engine.dialect
        compiled = statement.compile(dialect=dialect)
        conversions = []
        for position, column in enumerate(statement.selected_columns):
            convert = column.type.dialect_impl(dialect).result_processor(dialect, None)
            if convert is not None:
                conversions.append((position, convert))
        positions = tuple(compiled.positiontup or ()) if dialect.positional else None
        read = self.prepared[statement] = PreparedRead(compiled.string, compiled, positions, tuple(conversions))
        return read

    def read(self, read: PreparedRead, parameters: Mapping[str, Any]) -> list[Row]:
        """Run a read on the held connection, opening one first if none is held."""
        values = read.compiled.construct_params(dict(parameters))
        arguments = values if read.positions is None else tuple(values[name] for name in read.positions)
        try:
            if self.connection is None:
                self.connection = self.open()
                self.cursor = self.connection.cursor()
            self.cursor.execute(read.sql, arguments)
            rows = self.cursor.fetchall()
        except self.engine.dialect.loaded_dbapi.Error as error:
            raise self.failure(error, read, arguments) from error
        if not read.conversions:
            return rows
        converted = []
        for row in rows:
            columns = list(row)
            for position, convert in read.conversions:
                if columns[position] is not None:  # NULL reads as None in every type read here
                    columns[position] = convert(columns[position])
            converted.append(tuple(columns))
        return converted

    def failure(self, error: Exception, read: PreparedRead, arguments: Any) -> DBAPIError:
        """Let the connection go after a driver's error, and the error as SQLAlchemy would raise it.

        A connection that failed as it was being opened (set to autocommit, say) counts as lost.
        """
        dialect = self.engine.dialect
        held = self.connection
        lost = held is None or self.cursor is None or dialect.is_disconnect(error, held.dbapi_connection, self.cursor)
        self.let_go(lost)
        return DBAPIError.instance(
            read.sql, arguments, error, dialect.loaded_dbapi.Error,
            connection_invalidated=lost, dialect=dialect,
        )

    def open(self) -> PoolProxiedConnection:
        """A connection of the worker's own, outside the pool, that runs each read on its own."""
        connection = self.engine.raw_connection()
        connection.detach()  # held for the worker's life, and closed, not pooled, when let go
        if self.engine.dialect.name != "sqlite":
            # PostgreSQL would otherwise keep a transaction open for the connection's whole
            # life; SQLite's driver opens none for a SELECT.
            try:
                self.engine.dialect.set_isolation_level(connection.dbapi_connection, "AUTOCOMMIT")
            except self.engine.dialect.loaded_dbapi.Error:
                connection.close()
                raise
        return connection

    def let_go(self, lost: bool = False) -> None:
        """Close the held connection, if any; the next read opens another.

        A lost connection is invalidated rather than closed: closing would first roll it back,
        which fails on a dead socket, and the pool would log that failure's traceback.
        """
        connection, self.connection, self.cursor = self.connection, None, None
        if connection is None:
            return
        dbapi_connection = connection.dbapi_connection
        try:
            if lost:
                connection.invalidate()
                if dbapi_connection is not None:
                    dbapi_connection.close()
            else:
                connection.close()
        except self.engine.dialect.loaded_dbapi.Error:
            pass  # a connection already broken has nothing left to close

    def close(self) -> None:
        """Close the held connection, as the worker exits or the app is torn down."""
        with self.lock:
            self.let_go()
