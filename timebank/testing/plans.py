"""The query plans of what an action ran: to test that a read stays on its indexes.

    from timebank.testing.plans import query_plans

    found = query_plans(bank.ledger.engine, lambda: bank.station_report(...))
    assert not any("SCAN tb_postings" in p.plan for p in found)

:func:`query_plans` records every SELECT the action runs through the engine (SQLAlchemy's
``before_cursor_execute`` event; statements sent on the driver's own cursor, as the
library's batch write path sends its inserts, are not seen), then asks the database to plan
each one again with the same parameters: ``EXPLAIN QUERY PLAN`` on SQLite, ``EXPLAIN`` on
PostgreSQL, MariaDB and MySQL. Plans are the database's own words, one line per plan node;
what counts as reading a table whole differs by database (SQLite's ``SCAN t``,
PostgreSQL's ``Seq Scan on t``, MariaDB's ``type=ALL``), so the caller judges them.

A plan depends on the statistics the database holds: on PostgreSQL and MariaDB a small
table is often read whole because that is cheapest, so tests of plans are deterministic on
SQLite (whose plans depend on the schema and the query alone while nobody runs ANALYZE),
and on the other databases belong to runs at scale.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, event

__all__ = ["QueryPlan", "query_plans"]

#: A read: SELECT, a WITH ahead of it, or a parenthesised SELECT of a UNION.
_READ = re.compile(r"\s*(\(\s*)*(SELECT|WITH)\b", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class QueryPlan:
    """One SELECT an action ran, and how the database plans it."""

    statement: str
    plan: str


def query_plans(engine: Engine, action: Callable[[], object]) -> list[QueryPlan]:
    """Run ``action``; return each SELECT it ran on ``engine``, in order, with its plan.

    The plans are asked for after the action, on a connection of their own: the action
    runs exactly as it would untested. Only reads are planned (statements that start with
    SELECT or WITH, or a parenthesised SELECT): what this judges is how reads reach their
    tables."""
    statements: list[tuple[str, Any]] = []

    def remember(_conn: object, _cursor: object, statement: str, parameters: Any,
                 _context: object, many: bool) -> None:
        if not many and _READ.match(statement):
            statements.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", remember)
    try:
        action()
    finally:
        event.remove(engine, "before_cursor_execute", remember)
    prefix = "EXPLAIN QUERY PLAN " if engine.dialect.name == "sqlite" else "EXPLAIN "
    found = []
    with engine.connect() as conn:
        for statement, parameters in statements:
            result = conn.exec_driver_sql(prefix + statement, parameters)
            lines = [_line(engine.dialect.name, row._mapping) for row in result]
            found.append(QueryPlan(statement, "\n".join(lines)))
    return found


def _line(dialect: str, row: Any) -> str:
    if dialect in ("sqlite", "postgresql"):
        return str(list(row.values())[-1])  # SQLite's detail; PostgreSQL's QUERY PLAN
    # MariaDB and MySQL: a row per table read, in columns (table, type, key, rows, Extra...).
    return " ".join(f"{key}={value}" for key, value in row.items() if value not in (None, ""))
