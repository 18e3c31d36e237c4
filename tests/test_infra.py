"""The test-database fixtures themselves: fresh, empty, isolated, dumpable, and the copies of a
migrated database equal to one migrated the ordinary way."""

from __future__ import annotations

import datetime as dt
import decimal
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from tests import _databases, bankworld
from tests._databases import (
    BACKENDS,
    MARIADB,
    POSTGRES,
    FreshDatabases,
    UrlFactory,
    backend_of,
    backend_params,
    backends,
    server_url,
)
from tests.clocks import Clock
from tests.dbdump import dump
from timebank import Ledger

# Exercises the module-level override helper with a fixture of another name.
any_server_url = backends(POSTGRES, MARIADB, name="any_server_url")

_metadata = sa.MetaData()
_things = sa.Table(
    "things",
    _metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("label", sa.String(50), nullable=True),
    sa.Column("amount", sa.Numeric(12, 2), nullable=False),
    sa.Column("at", sa.DateTime, nullable=True),
)


def _table_names(url: str) -> set[str]:
    engine = sa.create_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def _server_databases(backend: str) -> set[str]:
    query = (
        "SELECT datname FROM pg_database"
        if backend == POSTGRES
        else "SELECT schema_name FROM information_schema.schemata"
    )
    engine = sa.create_engine(server_url(backend), poolclass=NullPool)
    try:
        with engine.connect() as conn:
            return set(conn.exec_driver_sql(query).scalars())
    finally:
        engine.dispose()


def test_db_url_is_fresh_and_empty(db_url: str, db_backend: str) -> None:
    assert db_backend in BACKENDS
    assert backend_of(db_url) == db_backend
    assert _table_names(db_url) == set()
    assert dump(db_url) == {}


def test_create_insert_dump(db_url: str) -> None:
    engine = sa.create_engine(db_url)
    try:
        _metadata.create_all(engine)
        with engine.begin() as conn:
            conn.execute(
                _things.insert(),
                [
                    {"id": 2, "label": None, "amount": decimal.Decimal("1.50"), "at": None},
                    {"id": 1, "label": "b", "amount": decimal.Decimal("2"), "at": None},
                    {
                        "id": 3,
                        "label": "a",
                        "amount": decimal.Decimal("-3.25"),
                        "at": dt.datetime(2024, 5, 6, 7, 8, 9),
                    },
                ],
            )
        before = dump(engine)
        assert set(before) == {"things"}
        assert [row[0] for row in before["things"]] == [1, 2, 3]
        assert [row[1] for row in before["things"]] == ["b", None, "a"]
        # Deterministic: dumping again, by URL or over a connection, gives the same.
        assert dump(db_url) == before
        with engine.connect() as conn:
            assert dump(conn) == before

        # A change that is rolled back leaves the dump unchanged ...
        with engine.connect() as conn, conn.begin() as tx:
            conn.execute(_things.delete())
            assert dump(conn) == {"things": []}
            tx.rollback()
        assert dump(engine) == before

        # ... while a committed one does not.
        with engine.begin() as conn:
            conn.execute(_things.update().where(_things.c.id == 2).values(label="x"))
        assert dump(engine) != before
    finally:
        engine.dispose()


def test_dump_includes_alembic_version(sqlite_url: str) -> None:
    engine = sa.create_engine(sqlite_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(
                "CREATE TABLE alembic_version (version_num VARCHAR(32) NOT NULL PRIMARY KEY)"
            )
            conn.exec_driver_sql("INSERT INTO alembic_version VALUES ('abc123')")
        assert dump(engine) == {"alembic_version": [("abc123",)]}
    finally:
        engine.dispose()


@pytest.mark.parametrize("backend", backend_params(*BACKENDS))
def test_factory_gives_separate_databases(
    backend: str, fresh_db_url_factory: UrlFactory
) -> None:
    first = fresh_db_url_factory(backend)
    second = fresh_db_url_factory(backend)
    assert first != second
    engine = sa.create_engine(first)
    try:
        _metadata.create_all(engine)
    finally:
        engine.dispose()
    assert _table_names(first) == {"things"}
    assert _table_names(second) == set()


def test_named_fixtures(sqlite_url: str, postgres_url: str, mariadb_url: str) -> None:
    assert [backend_of(u) for u in (sqlite_url, postgres_url, mariadb_url)] == [
        "sqlite",
        "postgres",
        "mariadb",
    ]
    for url in (sqlite_url, postgres_url, mariadb_url):
        assert _table_names(url) == set()


def test_backends_override(any_server_url: str, request: pytest.FixtureRequest) -> None:
    backend = backend_of(any_server_url)
    assert backend in {"postgres", "mariadb"}
    assert request.node.get_closest_marker(backend) is not None
    assert _table_names(any_server_url) == set()


@pytest.mark.parametrize("backend", backend_params(POSTGRES, MARIADB))
def test_server_databases_are_dropped_even_if_in_use(backend: str, tmp_path: Path) -> None:
    databases = FreshDatabases(tmp_path)
    try:
        url = databases.create(backend)
        name = sa.make_url(url).database
        assert name is not None
        assert name in _server_databases(backend)
        # A test that forgets to finish a transaction must not make the drop hang.
        engine = sa.create_engine(url, poolclass=NullPool)
        conn = engine.connect()
        _metadata.create_all(conn)
        conn.execute(_things.insert(), {"id": 1, "amount": 1})
        databases.close()
        assert name not in _server_databases(backend)
    finally:
        databases.close()
    with pytest.raises(sa.exc.DBAPIError):
        conn.execute(sa.select(1))
    conn.invalidate()
    engine.dispose()


class _Refusing:
    """An admin connection whose DROP DATABASE fails with ``code`` ``failures`` times."""

    def __init__(self, code: int, failures: int) -> None:
        self.code, self.failures, self.calls = code, failures, 0

    def exec_driver_sql(self, statement: str) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            raise sa.exc.DBAPIError(statement, None, Exception(self.code, "can't rmdir"))


def test_a_mariadb_drop_that_cannot_rmdir_is_retried_then_left_with_a_warning(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("tests._databases.time.sleep", lambda _s: None)
    once = _Refusing(_databases._MARIADB_CANT_RMDIR, failures=1)
    _databases._drop_mariadb_database(once, "`tb_x`")  # type: ignore[arg-type]
    assert once.calls == 2
    always = _Refusing(_databases._MARIADB_CANT_RMDIR, failures=99)
    with pytest.warns(_databases.LeftDatabaseWarning, match="tb_x"):
        _databases._drop_mariadb_database(always, "`tb_x`")  # type: ignore[arg-type]
    assert always.calls == 3
    other = _Refusing(1044, failures=1)  # access denied: a real failure, raised
    with pytest.raises(sa.exc.DBAPIError):
        _databases._drop_mariadb_database(other, "`tb_x`")  # type: ignore[arg-type]


def _schema(engine: sa.Engine) -> dict[str, list[tuple[object, ...]]]:
    """Everything a migration makes, as each backend's catalogue states it."""
    queries = {
        "sqlite": {"objects": "SELECT type, name, tbl_name, sql FROM sqlite_master"},
        "postgresql": {
            "columns": "SELECT table_name, column_name, ordinal_position, data_type, "
            "column_default, is_nullable FROM information_schema.columns "
            "WHERE table_schema = 'public'",
            "constraints": "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) "
            "FROM pg_constraint WHERE connamespace = 'public'::regnamespace",
            "indexes": "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'",
            "triggers": "SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger "
            "WHERE NOT tgisinternal",
            "functions": "SELECT proname, pg_get_functiondef(oid) FROM pg_proc "
            "WHERE pronamespace = 'public'::regnamespace",
            "sequences": "SELECT sequencename, start_value, last_value FROM pg_sequences "
            "WHERE schemaname = 'public'",
        },
        "mysql": {
            "tables": "SELECT table_name FROM information_schema.tables "
            "WHERE table_schema = DATABASE()",
            "triggers": "SELECT trigger_name, event_object_table, action_timing, "
            "event_manipulation, action_order, action_statement, sql_mode, "
            "character_set_client, collation_connection "
            "FROM information_schema.triggers WHERE trigger_schema = DATABASE()",
            "routines": "SELECT routine_name, routine_type, routine_definition "
            "FROM information_schema.routines WHERE routine_schema = DATABASE()",
            "events": "SELECT event_name, event_definition FROM information_schema.events "
            "WHERE event_schema = DATABASE()",
        },
    }[engine.dialect.name]
    with engine.connect() as conn:
        schema = {k: sorted(tuple(r) for r in conn.exec_driver_sql(q)) for k, q in queries.items()}
        if engine.dialect.name == "sqlite":
            # Alembic's batch rebuilds list a table's constraints in an order that varies
            # from one migration to the next: compare the lines, not their order.
            schema["objects"] = [
                (*row[:3], sorted(line.rstrip(", ") for line in str(row[3]).splitlines()))
                for row in schema["objects"]
            ]
        if engine.dialect.name == "mysql":
            schema["create"] = [
                tuple(conn.exec_driver_sql(f"SHOW CREATE TABLE `{name}`").one())
                for (name,) in schema["tables"]
            ]
    return schema


@pytest.mark.parametrize("backend", backend_params(*BACKENDS))
def test_a_migrated_copy_is_a_migrated_database(
    backend: str, fresh_db_url_factory: UrlFactory
) -> None:
    """The copies ``migrated=True`` gives are what migrating an empty database gives: the
    same tables, columns, constraints, indexes, triggers, functions, sequences and rows."""
    made, copied = fresh_db_url_factory(backend), fresh_db_url_factory(backend, migrated=True)
    assert made != copied
    Ledger.open(made).dispose()
    engines = [sa.create_engine(url, poolclass=NullPool) for url in (made, copied)]
    try:
        assert _schema(engines[1]) == _schema(engines[0])
        assert "tb_postings" in str(_schema(engines[1]))
        assert dump(engines[1]) == dump(engines[0])
        assert dump(engines[1])["alembic_version"]  # rows migrations write came too
        # A copy is a database of its own: writing to it leaves the next copy as it was.
        with Ledger.open(copied) as ledger:
            ledger.open_account("member:copy", "member")
        assert dump(fresh_db_url_factory(backend, migrated=True)) == dump(engines[0])
    finally:
        for engine in engines:
            engine.dispose()


@pytest.mark.parametrize("backend", backend_params(*BACKENDS))
def test_a_copied_world_is_the_built_world(backend: str, fresh_db_url_factory: UrlFactory) -> None:
    """``bankworld.fresh`` copies a world built once (the bank modules' starting point): the
    copy has the schema and every row building it gives, and the same members."""
    built = bankworld.build(fresh_db_url_factory(backend), Clock())
    copied = bankworld.fresh(fresh_db_url_factory(backend), Clock())
    try:
        assert copied.members == built.members
        assert _schema(copied.engine) == _schema(built.engine)
        assert dump(copied.engine) == dump(built.engine)
        assert len(dump(copied.engine)["tb_members"]) == len(built.members)
    finally:
        built.bank.dispose()
        copied.bank.dispose()
