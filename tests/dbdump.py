"""A deterministic dump of every row in a database, to prove nothing changed.

Typical use::

    before = dump(engine)
    with pytest.raises(SomeRefusal):
        refused_operation()
    assert dump(engine) == before
"""

from __future__ import annotations

import datetime as dt
import decimal
import json
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, Connection, Engine
from sqlalchemy.pool import NullPool

Row = tuple[Any, ...]


def dump(engine_or_url: Engine | Connection | URL | str) -> dict[str, list[Row]]:
    """Every table (``alembic_version`` included) mapped to its rows, in a stable order.

    Rows are tuples in the table's column order, holding the values the driver returned
    (no SQLAlchemy type conversion, so nothing can be lost or re-parsed), normalised to
    comparable Python values: ``memoryview``/``bytearray`` become ``bytes``, JSON
    documents become canonical JSON text, sets become sorted tuples. Rows are sorted by
    all columns; ``None`` sorts first and mixed types cannot break the sort.

    A URL is opened with a private engine that is disposed afterwards. A ``Connection`` is
    used as is (it sees its own uncommitted work) and left open; an ``Engine`` gets a new
    connection for the dump.
    """
    if isinstance(engine_or_url, Connection):
        return _dump(engine_or_url)
    if isinstance(engine_or_url, Engine):
        with engine_or_url.connect() as conn:
            return _dump(conn)
    engine = sa.create_engine(engine_or_url, poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return _dump(conn)
    finally:
        engine.dispose()


def _dump(conn: Connection) -> dict[str, list[Row]]:
    # Table names only (full reflection of every table costs more than reading the rows),
    # then SELECT * as text: every column, exactly what the driver returns, untyped.
    quote = conn.dialect.identifier_preparer.quote
    result: dict[str, list[Row]] = {}
    for name in sorted(sa.inspect(conn).get_table_names()):
        found = conn.exec_driver_sql(f"SELECT * FROM {quote(name)}")
        rows = [tuple(_normalise(v) for v in row) for row in found]
        rows.sort(key=_row_key)
        result[name] = rows
    return result


def _normalise(value: Any) -> Any:
    if isinstance(value, memoryview | bytearray):
        return bytes(value)
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, default=str)
    if isinstance(value, set | frozenset):
        return tuple(sorted(value, key=_value_key))
    return value


_NUMBERS = (bool, int, float, decimal.Decimal)


def _value_key(value: Any) -> tuple[int, str, Any]:
    """A sort key that never compares values of different kinds with each other."""
    if value is None:
        return (0, "", 0)
    if isinstance(value, _NUMBERS):
        return (1, "number", value)
    if isinstance(value, str | bytes | uuid.UUID | dt.date | dt.time | dt.timedelta):
        kind = type(value).__name__
        if isinstance(value, dt.datetime | dt.time):
            # Naive and aware datetimes refuse to compare with each other.
            kind += "/aware" if value.tzinfo is not None else "/naive"
        return (2, kind, value)
    return (3, type(value).__name__, repr(value))


def _row_key(row: Row) -> tuple[tuple[int, str, Any], ...]:
    return tuple(_value_key(v) for v in row)
