"""Engines, SQLite defaults, and the one place where database errors are classified."""

from __future__ import annotations

import json
import os
import threading
import weakref
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    String,
    any_,
    bindparam,
    cast,
    create_engine,
    event,
    exc,
    func,
    literal_column,
    select,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.engine import make_url
from sqlalchemy.pool import ConnectionPoolEntry, QueuePool
from sqlalchemy.sql.sqltypes import NullType

#: Milliseconds an SQLite writer waits for the file lock before giving up.
SQLITE_BUSY_TIMEOUT_MS = 30_000

#: Page cache of each SQLite connection, in KiB.
SQLITE_CACHE_KIB = 65_536

#: The settings of every connection to an SQLite file (the benchmarks' plain writers use
#: them too, so that they compare code with code, not settings with settings).
SQLITE_FILE_PRAGMAS = (
    "journal_mode = WAL",
    # WAL + NORMAL is durable against application crashes; only an OS crash can lose the
    # last commits, never corrupt the file. Those are the commits since the log was last
    # copied back into the file (the only sync under NORMAL), so the copy stays at SQLite's
    # default of every 1,000 pages: every 10,000 took a tenth off W's bulk import (and as
    # much off plain writes) but would widen that window tenfold
    # (benchmarks/sqlite_checkpoint.py).
    "synchronous = NORMAL",
    # 64 MiB of page cache instead of 2: the indexes of a growing ledger stay warm.
    f"cache_size = -{SQLITE_CACHE_KIB}",
)

#: Execution option that makes the SQLite "begin" listener take the write lock up front.
WRITE_OPTION = "timebank_write"


def make_engine(url: str, **engine_kwargs: Any) -> Engine:
    """An engine with the library's defaults (for SQLite: WAL, busy timeout, BEGIN IMMEDIATE)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = create_engine(parsed, **engine_kwargs)
        configure_sqlite(engine)
        return engine
    if parsed.get_backend_name() in ("mysql", "mariadb"):
        # InnoDB's default REPEATABLE READ takes gap locks on inserts into unique indexes,
        # which deadlock concurrent writers; READ COMMITTED keeps only record locks, and
        # every check of the ledger runs on rows it has locked anyway.
        engine_kwargs.setdefault("isolation_level", "READ COMMITTED")
    return create_engine(parsed, **engine_kwargs)


#: Batches of at least this many entries have their statements planned at each execution
#: on PostgreSQL (:func:`planned_each_time`); smaller ones keep psycopg's prepared plans.
PLANNED_EACH_TIME_MIN = 64


@contextmanager
def planned_each_time(conn: Connection) -> Iterator[None]:
    """On PostgreSQL through psycopg 3, no statement of the block is prepared: the server
    plans each one with its parameters and the tables as they are at that moment.

    psycopg prepares a statement after its fifth execution on a connection, and the server
    may then keep one generic plan for it. A generic plan made while a table was nearly
    empty scans that table, and stays until the table's statistics change, which with
    autovacuum off, or until it runs, is never: opening 20,000 accounts beside 60,000 took
    41 s instead of 1.3 (each look-up of 1,000 codes compared every row with every code;
    ``benchmarks/results/planning-postgres-2026-11-30.md``). Bulk statements do enough work
    for planning each time to cost little (a bulk import 2 to 10 % with fresh statistics);
    the small statements of one operation keep their prepared plans. Elsewhere this does
    nothing.
    """
    driver: Any = conn.connection.driver_connection if conn.dialect.driver == "psycopg" else None
    if driver is None:
        yield
        return
    saved = driver.prepare_threshold
    driver.prepare_threshold = None  # psycopg: neither prepare nor use prepared statements
    try:
        yield
    finally:
        driver.prepare_threshold = saved


def in_values(conn: Connection, column: Any, values: list[Any]) -> Any:
    """``column IN values``, the list sent as one parameter where the database can take
    one (an array on PostgreSQL, a JSON array on SQLite): a list of a thousand bound
    parameters costs more to build and to parse than the query's own work, and SQLite
    takes at most 32,766. Unlike ``IN (subquery)``, the planner sees how many values
    there are, and probes an index for a few where it would scan a table for many."""
    name = conn.dialect.name
    if name == "postgresql":
        literal = pg_integer_array(values) if conn.dialect.driver == "psycopg" else None
        if literal is not None:
            # Untyped: psycopg sends a str as "unknown", so the server reads the parameter
            # as the array itself. Typed as text it stays a cast of text the planner does
            # not fold, evaluated again for every row a filter compares (7 times the
            # server time of a bulk import, in a trial).
            array = cast(bindparam(None, literal, type_=NullType()), postgresql.ARRAY(column.type))
            return column == any_(array)
        return column == any_(bindparam(None, values, type_=postgresql.ARRAY(column.type)))
    if name == "sqlite":
        listed: Any = select(literal_column("value")).select_from(
            func.json_each(bindparam(None, json.dumps(values), type_=String()))
        )
        return column.in_(listed)
    return column.in_(values)


def pg_integer_array(values: list[Any]) -> str | None:
    """``values`` as the text of a PostgreSQL array (``{1,2,3}``) when they are all
    integers (not bools); None otherwise.

    The server reads the text in C, where psycopg dumps a list of integers element by
    element in Python: 0.46 ms for a thousand as text, 0.12 ms in binary, against 0.08 ms to
    join them here (measured on this project's machine); a bulk batch sends a dozen such
    lists. A list of strings psycopg already sends as the text of an array, untyped."""
    if all(type(v) is int for v in values):
        return "{" + ",".join(map(str, values)) + "}"
    return None


def in_listed(conn: Connection, column: Any, query: Any) -> Any:
    """``column IN (query)``; where a list goes as one parameter, the query's values are
    read first and sent as that list (:func:`in_values`), so the planner sees how many.
    Elsewhere (MariaDB) the subquery stays: a million values would be a statement of
    megabytes."""
    if conn.dialect.name in ("postgresql", "sqlite"):
        return in_values(conn, column, list(conn.execute(query).scalars()))
    return column.in_(query)


def configure_sqlite(engine: Engine) -> None:
    """Apply timebank's SQLite defaults to an engine (idempotent per engine).

    The sqlite3 driver's own transaction handling is switched off so that we emit BEGIN
    ourselves: ``BEGIN IMMEDIATE`` for writes takes the write lock at the start, so two
    writers queue on the busy timeout instead of failing when a read lock would upgrade.
    """
    if engine.dialect.name != "sqlite" or getattr(engine, "_timebank_sqlite", False):
        return
    database = engine.url.database or ""
    file_backed = database not in ("", ":memory:") and not database.startswith("file::memory:")

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys = ON")
        if file_backed:
            for pragma in SQLITE_FILE_PRAGMAS:
                cursor.execute(f"PRAGMA {pragma}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get(WRITE_OPTION, False)
        statement = "BEGIN IMMEDIATE" if write else "BEGIN"
        driver = conn.connection.driver_connection
        # Straight to the driver: this runs once per operation, on the hot path. SQLAlchemy
        # does not wrap errors raised here, so a lock timeout is wrapped as its own would
        # be, and the façade retries it like any other "database is locked".
        try:
            driver.execute(statement)  # type: ignore[union-attr]
        except conn.dialect.loaded_dbapi.Error as error:
            raise exc.DBAPIError.instance(
                statement, (), error, conn.dialect.loaded_dbapi.Error
            ) from error

    engine._timebank_sqlite = True  # type: ignore[attr-defined]


class KeyRace(Exception):
    """An idempotency key (or account code) was claimed by a concurrent writer: roll back and
    run again, this time looking the key up first."""


# --- error classification -----------------------------------------------------------------

_PG_RETRYABLE = {"40001", "40P01", "55P03"}  # serialization failure, deadlock, lock not available
_MYSQL_RETRYABLE = {1205, 1213}  # lock wait timeout, deadlock


def is_retryable(error: exc.DBAPIError) -> bool:
    """Serialization failures, deadlocks and SQLite lock timeouts: safe to run again."""
    orig = error.orig
    sqlstate = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    if sqlstate in _PG_RETRYABLE:
        return True
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int) and args[0] in _MYSQL_RETRYABLE:
        return True
    message = str(orig).lower()
    return "database is locked" in message or "database table is locked" in message


def violated(error: exc.IntegrityError, name: str) -> bool:
    """Whether the constraint (or column) called ``name`` is what the database refused."""
    orig = error.orig
    diag = getattr(orig, "diag", None)
    constraint = getattr(diag, "constraint_name", None)
    if constraint:
        return name in constraint
    return name in str(orig)


class HeldConnections:
    """Connections kept checked out between operations, for SQLite files.

    Each operation of the façade used to check a connection out of SQLAlchemy's pool and
    wrap it in a new ``Connection``: about 50 µs, a tenth of a one-entry write on SQLite.
    A file database's connections never go stale (no server, no network), so the façade
    keeps up to ``keep`` of them ready, each used by one thread at a time. A connection
    goes back only when it is clean (not invalidated, no transaction open); otherwise it
    is closed and the next operation opens a fresh one.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._keep = self.keep_for(engine)
        self._idle: list[Connection] = []
        self._mutex = threading.Lock()
        self._closed = False
        self._pid = os.getpid()

    @classmethod
    def of(cls, engine: Engine) -> HeldConnections:
        """The one set of kept connections of ``engine``, shared by every ledger on it, so
        ``keep_for``'s bound holds however many ledgers wrap the engine."""
        with _HELD_MUTEX:
            held = _HELD.get(engine)
            if held is None or held._closed:
                held = _HELD[engine] = cls(engine)
            return held

    @staticmethod
    def keep_for(engine: Engine) -> int:
        """How many to keep: none but for SQLite files on a queue pool (other pools recycle,
        ping or share connections per thread, and a server's connections can go stale while
        held), and always one fewer than the pool can give, so the application's own
        ``engine.connect()`` never waits on connections the ledger is only keeping."""
        pool = engine.pool
        if engine.dialect.name != "sqlite" or not isinstance(pool, QueuePool):
            return 0
        overflow = getattr(pool, "_max_overflow", 0)
        if overflow < 0:  # unlimited
            return pool.size()
        return max(0, min(pool.size(), pool.size() + overflow - 1))

    @contextmanager
    def connection(self, *, write: bool) -> Iterator[Connection]:
        """A connection for one operation of the library's own (it never escapes)."""
        conn = self._take()
        ok = False
        try:
            yield conn.execution_options(**{WRITE_OPTION: write})
            ok = True
        finally:
            self._give_back(conn, ok)

    def _take(self) -> Connection | Any:
        with self._mutex:
            if self._pid != os.getpid():
                # A forked child must not touch its parent's SQLite connections: forget them.
                self._idle, self._pid = [], os.getpid()
            conn = self._idle.pop() if self._idle else None
        return conn if conn is not None else self._engine.connect()

    def _give_back(self, conn: Connection, ok: bool) -> None:
        # Kept only after an operation that ended normally and left nothing open, by
        # SQLAlchemy's account and the driver's: a failed COMMIT can leave SQLite inside a
        # transaction SQLAlchemy thinks is over. After a refusal or an error, the pool takes
        # the connection back and resets it.
        clean = ok and not (conn.closed or conn.invalidated or conn.in_transaction())
        if clean:
            driver = conn.connection.driver_connection
            clean = not getattr(driver, "in_transaction", False)
        with self._mutex:
            keep = clean and not self._closed and len(self._idle) < self._keep
            if keep and self._pid == os.getpid():
                self._idle.append(conn)
                return
        conn.close()

    def close(self) -> None:
        """Close the idle connections; those in use close when their operation ends."""
        with self._mutex:
            self._closed = True
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


_HELD: weakref.WeakKeyDictionary[Engine, HeldConnections] = weakref.WeakKeyDictionary()
_HELD_MUTEX = threading.Lock()
