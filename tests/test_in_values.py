"""``in_values``: a list of values as one parameter, read back exactly, and on PostgreSQL
planned as the constant array it is.

On PostgreSQL a list of integers travels as the text of an array, which the server reads in
C (psycopg dumps such a list element by element in Python). Sent typed as text, the cast to
an array stayed in the plan unfolded and was evaluated again for every row a filter
compared: a bulk import's server time went up seven times in a trial. The PostgreSQL test
below fails on that form (its plan), and if the list goes as a list again (its parameter)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from timebank._db import in_values, pg_integer_array

#: Strings array syntax treats specially: separators, braces, quotes, backslashes, the word
#: NULL, spaces at either end, the empty string, non-ASCII. (No two differ only in case:
#: MariaDB's default collation would find both.)
AWKWARD = [
    "a",
    "b,c",
    "{x}",
    "NULL",
    " padded ",
    'q"uote',
    "back\\slash",
    '\\"',
    "\\\\\"\\",
    "",
    "it's",
    "tab\tand\nnewline",
    "ü中",
]


def _table(conn: sa.Connection) -> sa.Table:
    table = sa.Table(
        "tb_test_in_values",
        sa.MetaData(),
        sa.Column("id", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("key", sa.String(64)),
    )
    table.create(conn)
    conn.execute(table.insert(), [{"id": n, "key": k} for n, k in enumerate(AWKWARD)])
    return table


def test_the_values_found_are_exactly_those_listed(db_url: str) -> None:
    engine = sa.create_engine(db_url)
    try:
        with engine.begin() as conn:
            table = _table(conn)

            def keys(values: list[str]) -> list[str]:
                query = sa.select(table.c.key).where(in_values(conn, table.c.key, values))
                return sorted(conn.execute(query).scalars())

            def ids(values: list[int]) -> list[int]:
                query = sa.select(table.c.id).where(in_values(conn, table.c.id, values))
                return sorted(conn.execute(query).scalars())

            assert keys(AWKWARD) == sorted(AWKWARD)
            for one in AWKWARD:
                assert keys([one]) == [one], one
            assert keys(["NULL", "absent", "b"]) == ["NULL"]
            assert ids([0, 3, 5, 10**12, -1]) == [0, 3, 5]
            assert ids([]) == []
            assert keys([]) == []
    finally:
        engine.dispose()


def test_the_array_text_of_integers_only() -> None:
    assert pg_integer_array([1, -2, 30]) == "{1,-2,30}"
    assert pg_integer_array([]) == "{}"
    assert pg_integer_array(["a", "b"]) is None, "psycopg sends strings as array text already"
    assert pg_integer_array([1, "a"]) is None
    assert pg_integer_array([True, False]) is None, "bools are not integers here"


def _explained(conn: sa.Connection, query: sa.Select[tuple[int]]) -> tuple[str, dict[str, object]]:
    compiled = query.compile(conn)
    driver = conn.connection.driver_connection
    assert driver is not None
    with driver.cursor() as cursor:
        cursor.execute("EXPLAIN " + str(compiled), compiled.params)
        plan = "\n".join(str(row[0]) for row in cursor.fetchall())
    return plan, dict(compiled.params)


@pytest.mark.postgres
def test_postgres_sends_integers_as_array_text_planned_as_a_constant(postgres_url: str) -> None:
    engine = sa.create_engine(postgres_url)
    try:
        with engine.begin() as conn:
            table = _table(conn)
            query = sa.select(table.c.id).where(in_values(conn, table.c.id, [1, 2, 3]))
            plan, params = _explained(conn, query)
            assert list(params.values()) == ["{1,2,3}"], "one parameter, the array's text"
            assert "'{1,2,3}'::bigint[]" in plan, plan
            assert "cstring" not in plan, plan
            assert "::text" not in plan, plan
            _plan, params = _explained(
                conn, sa.select(table.c.id).where(in_values(conn, table.c.key, ["a", "b"]))
            )
            assert list(params.values()) == [["a", "b"]], "strings bound as a list, as before"
            flags = sa.select(table.c.id).where(in_values(conn, sa.literal(True), [True]))
            assert list(flags.compile(conn).params.values())[-1] == [True], "bools as a list"
    finally:
        engine.dispose()
