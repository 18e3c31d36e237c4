"""The hot path's small tools: which parameters go to PostgreSQL in binary."""

from __future__ import annotations

from timebank._bulk import binary_parameters

SQL = (
    "UPDATE t SET a = v.a FROM unnest(%(ids)s::bigint[], %(codes)s::text[], "
    "%(at)s::timestamp[], %(on)s::date[], %(flags)s::boolean[]) AS v(id, a, at, on_, f) "
    "WHERE t.n = %(n)s AND t.s LIKE '%%(ids)s::bigint[]'"
)


def test_typed_arrays_go_in_binary_through_psycopg() -> None:
    assert binary_parameters(SQL, "psycopg") == (
        "UPDATE t SET a = v.a FROM unnest(%(ids)b::bigint[], %(codes)b::text[], "
        "%(at)b::timestamp[], %(on)b::date[], %(flags)s::boolean[]) AS v(id, a, at, on_, f) "
        "WHERE t.n = %(n)s AND t.s LIKE '%%(ids)s::bigint[]'"
    )


def test_other_drivers_get_the_statement_as_it_is() -> None:
    assert binary_parameters(SQL, "psycopg2") == SQL
