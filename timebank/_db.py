"""Engines, SQLite defaults, and the one place where database errors are classified."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event, exc
from sqlalchemy.engine import make_url
from sqlalchemy.pool import ConnectionPoolEntry

#: Milliseconds an SQLite writer waits for the file lock before giving up.
SQLITE_BUSY_TIMEOUT_MS = 30_000

#: Page cache of each SQLite connection, in KiB.
SQLITE_CACHE_KIB = 65_536

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
            cursor.execute("PRAGMA journal_mode = WAL")
            # WAL + NORMAL is durable against application crashes; only an OS crash can
            # lose the last commits, never corrupt the file.
            cursor.execute("PRAGMA synchronous = NORMAL")
            # 64 MiB of page cache instead of 2: the indexes of a growing ledger stay warm.
            cursor.execute(f"PRAGMA cache_size = -{SQLITE_CACHE_KIB}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get(WRITE_OPTION, False)
        # Straight to the driver: this runs once per operation, on the hot path.
        conn.connection.driver_connection.execute(  # type: ignore[union-attr]
            "BEGIN IMMEDIATE" if write else "BEGIN"
        )

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
