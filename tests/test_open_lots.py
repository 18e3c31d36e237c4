"""A member's (or a pool's) open lots are read through a partial index of open lots
(migration 0013, PostgreSQL and SQLite), so first in, first out reads no spent lot however
long the member's history. On PostgreSQL a statement prepared once may run on a generic plan,
which knows no bound value: the condition that matches the index must be in the SQL text,
not a parameter. MariaDB has no partial indexes and keeps the full index."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event, inspect

from tests.bankworld import PROGRAMME, World, opened

OPEN_INDEXES = {
    "tb_lots": "ix_tb_lots_open_member_id_earned_on",
    "tb_pool_lots": "ix_tb_pool_lots_open_region_id_earned_on",
}


@pytest.fixture
def world(db_url: str) -> Iterator[World]:
    yield from opened(db_url)


@pytest.fixture
def pg_world(postgres_url: str) -> Iterator[World]:
    yield from opened(postgres_url)


def test_the_open_lot_indexes_are_partial_where_the_database_allows(
    world: World, db_backend: str
) -> None:
    schema = inspect(world.engine)
    for table, name in OPEN_INDEXES.items():
        present = {ix["name"] for ix in schema.get_indexes(table)}
        assert (name in present) == (db_backend != "mariadb"), (table, present)


def _redemption_lot_reads(world: World) -> list[tuple[str, dict[str, Any]]]:
    """The statements a redemption runs to find the member's lots, with their parameters."""
    service = world.serve("s1", "wang", "grandma", minutes=60, ago=timedelta(hours=3))
    world.bank.confirm_service(service, operator="conf-sw")
    seen: list[tuple[str, dict[str, Any]]] = []

    def remember(_c: object, _cur: object, statement: str, params: Any, _x: object,
                 _m: bool) -> None:
        if re.search(r"FROM tb_lots\b", statement) and "remaining_minutes >" in statement:
            seen.append((statement, dict(params)))

    event.listen(world.engine, "before_cursor_execute", remember)
    try:
        world.bank.redeem("r1", programme=PROGRAMME, member_id=world.members["wang"],
                          site="sunrise", service_type="body_care", minutes=20,
                          operator="sunrise-op")
    finally:
        event.remove(world.engine, "before_cursor_execute", remember)
    assert seen, "the redemption read no open lots: nothing was checked"
    return seen


def _generic_plan(world: World, statement: str, params: dict[str, Any]) -> str:
    """PostgreSQL's generic plan of ``statement`` (psycopg's %(name)s placeholders become
    $n), as a statement prepared once and run many times may get; sequential scans off, so
    that on the test's tiny tables the plan shows which index fits."""
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        names.append(match.group(1))
        return f"${len(names)}"

    prepared = re.sub(r"%\((\w+)\)s", number, statement)
    values = ", ".join(str(int(params[name])) for name in names)
    with world.engine.connect() as conn:
        conn.exec_driver_sql("SET plan_cache_mode = force_generic_plan")
        conn.exec_driver_sql("SET enable_seqscan = off")
        conn.exec_driver_sql(f"PREPARE lots_read AS {prepared}".replace("%", "%%"))
        rows = conn.exec_driver_sql(f"EXPLAIN EXECUTE lots_read({values})").all()
        conn.rollback()
    return "\n".join(row[0] for row in rows)


def test_first_in_first_out_finds_open_lots_on_a_generic_plan(pg_world: World) -> None:
    for statement, params in _redemption_lot_reads(pg_world):
        plan = _generic_plan(pg_world, statement, params)
        assert OPEN_INDEXES["tb_lots"] in plan, f"{statement}\n{plan}"


def test_a_bound_zero_would_miss_the_index_on_a_generic_plan(pg_world: World) -> None:
    """Why the 0 is written into the SQL: as a parameter, the generic plan cannot know the
    partial index applies (this proves the test above can fail)."""
    statement, params = _redemption_lot_reads(pg_world)[0]
    bound = statement.replace("remaining_minutes > 0", "remaining_minutes > %(zero)s")
    assert bound != statement
    plan = _generic_plan(pg_world, bound, {**params, "zero": 0})
    assert OPEN_INDEXES["tb_lots"] not in plan, plan
