"""Models and migrations agree; schema checks name the fix; the demo and the CLI run."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Engine, create_engine, inspect, text

import timebank
from tests.bankworld import POLICY, PROGRAMME, build
from tests.clocks import Clock
from tests.dbdump import dump
from timebank.cli import EXIT_INVALID
from timebank.cli import main as cli_main
from timebank.migrate import _config
from timebank.schema import include_object_for, metadata
from timebank.sealing import audit


def test_models_and_migrations_agree(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        timebank.upgrade(engine)
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn,
                opts={
                    "compare_type": True,
                    "include_object": include_object_for(conn.dialect.name),
                },
            )
            assert compare_metadata(context, metadata) == []
    finally:
        engine.dispose()


def test_new_database_is_created_at_head(db_url: str) -> None:
    ledger = timebank.Ledger.open(db_url)
    try:
        assert timebank.current_revision(ledger.engine) == timebank.head_revision()
        tables = set(inspect(ledger.engine).get_table_names())
        assert {"tb_accounts", "tb_entries", "tb_postings", "tb_holds"} <= tables
    finally:
        ledger.dispose()


def test_unmigrated_database_is_refused_with_the_fix(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        with pytest.raises(timebank.SchemaError, match=r"timebank\.upgrade\(engine\)"):
            timebank.Ledger(engine)
        assert timebank.current_revision(engine) is None
    finally:
        engine.dispose()


@pytest.fixture
def at_head(sqlite_url: str) -> Iterator[Engine]:
    """An engine on an SQLite file migrated to head, disposed after the test."""
    engine = create_engine(sqlite_url)
    try:
        timebank.upgrade(engine)
        yield engine
    finally:
        engine.dispose()


def _set_revision(engine: Engine, sql: str) -> None:
    with engine.begin() as conn:
        conn.execute(text(sql))


def test_database_behind_head_is_refused_not_migrated(at_head: Engine, sqlite_url: str) -> None:
    # pretend the schema is at an older revision
    _set_revision(at_head, "UPDATE alembic_version SET version_num = '0000'")
    with pytest.raises(timebank.SchemaError, match="is at schema revision 0000") as info:
        timebank.Ledger.open(sqlite_url)
    assert "timebank db upgrade --db URL" in str(info.value)
    assert isinstance(info.value, RuntimeError)


def test_cli_migrate(sqlite_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli_main(["migrate", "--db", sqlite_url]) == 0
    assert timebank.head_revision() in capsys.readouterr().out


def test_demo_creates_its_file_in_the_current_folder_and_refuses_to_run_twice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # The command as a user runs it, with no --db: the file lands in the current folder.
    result = subprocess.run(
        [sys.executable, "-m", "timebank.cli", "demo"], cwd=tmp_path, capture_output=True,
        text=True, check=False,
    )
    assert result.returncode == 0, result.stderr
    db = tmp_path / "timebank-demo.db"
    assert db.is_file()
    out = result.stdout
    assert str(db) in out
    assert "30 days, 300 members, 8 stations, 2 institutions" in out
    assert "(0 accepted)" in out  # every deliberately bad command was refused
    assert "Station " in out
    assert "Clearing between counties" in out
    assert "Guarantee exposure at the end of 2026-03-31" in out
    assert "invariants, checked again after the reports: ok" in out
    # Once run (one demo is the suite's slowest command: the refusal runs in-process).
    assert cli_main(["demo", "--db", str(db)]) == EXIT_INVALID
    refused = capsys.readouterr()
    assert "DatabaseNotEmptyError" in refused.err
    assert "Pass --db with a new file to start afresh" in refused.err


def test_upgrading_part_1_gives_pooled_expired_minutes_their_lots(db_url: str) -> None:
    """Part 1 (revision 0005) moved expired minutes to a region pool without pool lots; 0006
    creates them from the expiry entries, so a pool's balance is its lots' again."""
    clock = Clock()
    world = build(db_url, clock)
    try:
        policy = POLICY.model_copy(update={"lot_expiry_days": 1, "expired_to": "pool"})
        world.bank.set_policy(PROGRAMME, policy, effective_from=clock.now, operator="admin")
        clock.advance(hours=3)
        service = world.serve("s1", "wang", "grandma", minutes=60)
        world.bank.confirm_service(service, operator="conf-sw")
        clock.advance(days=2)
        assert world.bank.expire(PROGRAMME, as_of=clock.now, operator="admin") == 1
        engine = world.engine
        world.bank.ledger.dispose()
        command.downgrade(_config(engine), "0005")
        with engine.connect() as conn:
            assert "tb_pool_lots" not in inspect(conn).get_table_names()
        timebank.upgrade(engine)
        reopened = timebank.TimeBank(timebank.Ledger(engine, clock=clock),
                                     identity_secrets={})
        assert reopened.pool_lots_total(PROGRAMME, "xinyuan") == 60
        pool = reopened.region(PROGRAMME, "xinyuan").pool_account
        assert reopened.ledger.balance(pool).posted_minutes == 60
    finally:
        world.bank.dispose()


def test_upgrading_to_0014_fills_the_clearing_rows_of_past_redemptions(db_url: str) -> None:
    """0014 creates the clearing rows of every redemption already recorded from its lot
    uses: the clearing report and the audit read the same before and after."""
    clock = Clock()
    world = build(db_url, clock)
    try:
        bank, members = world.bank, world.members
        for key, name, hours in (("s1", "wang", 30), ("s2", "li", 20), ("s3", "wang", 3)):
            service = world.serve(key, name, "grandma", minutes=60, ago=timedelta(hours=hours))
            bank.confirm_service(service, operator="conf-sw")
        for key, name, minutes in (("r1", "wang", 90), ("r2", "li", 45)):
            bank.redeem(key, programme=PROGRAMME, member_id=members[name], site="sunrise",
                        service_type="shopping", minutes=minutes, operator="sunrise-op")
        period = {"start": date(2026, 11, 1), "end": date(2026, 12, 1), "level": "site"}
        before = bank.clearing(PROGRAMME, **period)  # type: ignore[arg-type]
        assert before.redeemed_minutes == 135
        engine = world.engine
        with engine.connect() as conn:
            rows = sorted(conn.execute(text("SELECT * FROM tb_redemption_origins")).all())
        assert len(rows) == 2
        bank.ledger.dispose()
        command.downgrade(_config(engine), "0013")
        with engine.connect() as conn:
            assert "tb_redemption_origins" not in inspect(conn).get_table_names()
        timebank.upgrade(engine)
        with engine.connect() as conn:
            assert sorted(conn.execute(text("SELECT * FROM tb_redemption_origins")).all()) == rows
        reopened = timebank.TimeBank(timebank.Ledger(engine, clock=clock), identity_secrets={})
        assert reopened.clearing(PROGRAMME, **period) == before  # type: ignore[arg-type]
        assert audit(reopened.ledger).ok
    finally:
        world.bank.dispose()


def test_every_revision_downgrades_and_upgrades_again(db_url: str) -> None:
    engine = create_engine(db_url)
    try:
        timebank.upgrade(engine)
        command.downgrade(_config(engine), "base")
        assert timebank.current_revision(engine) is None
        timebank.upgrade(engine)
        assert timebank.current_revision(engine) == timebank.head_revision()
    finally:
        engine.dispose()


def test_the_head_the_library_checks_is_alembics_head() -> None:
    from alembic.script import ScriptDirectory  # noqa: PLC0415

    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head == timebank.migrate.HEAD_REVISION, (
        "a new migration moves timebank.migrate.HEAD_REVISION to its revision"
    )


def test_importing_timebank_and_its_cli_loads_no_alembic() -> None:
    code = ("import importlib, pkgutil, sys, timebank, timebank.cli\n"
            "for m in pkgutil.iter_modules(timebank.cli.__path__, 'timebank.cli.'):\n"
            "    if not m.name.endswith('__main__'):\n"
            "        importlib.import_module(m.name)\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] == 'alembic'))")
    found = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           check=True)
    assert found.stdout.strip() == "[]"


def test_an_unknown_revision_is_refused_and_changes_nothing(sqlite_url: str) -> None:
    engine = create_engine(sqlite_url)
    try:
        timebank.upgrade(engine, "0014")
        before = dump(engine)
        with pytest.raises(timebank.InvalidInputError, match="cannot upgrade to 'nowhere'"):
            timebank.upgrade(engine, "nowhere")
        assert dump(engine) == before
        assert timebank.current_revision(engine) == "0014"
    finally:
        engine.dispose()
    assert cli_main(["db", "upgrade", "--db", sqlite_url, "--revision", "nowhere"]) == (
        EXIT_INVALID
    )


def test_a_database_a_newer_timebank_migrated_is_refused_and_changes_nothing(
    at_head: Engine,
) -> None:
    _set_revision(at_head, "UPDATE alembic_version SET version_num = '9999'")
    before = dump(at_head)
    with pytest.raises(timebank.SchemaError, match="revision 9999, which this timebank"):
        timebank.upgrade(at_head)
    assert dump(at_head) == before


def test_a_database_at_two_revisions_is_refused(at_head: Engine, sqlite_url: str) -> None:
    _set_revision(at_head, "INSERT INTO alembic_version (version_num) VALUES ('other')")
    before = dump(at_head)
    with pytest.raises(timebank.SchemaError, match="several schema revisions"):
        timebank.current_revision(at_head)
    with pytest.raises(timebank.SchemaError):
        timebank.Ledger.open(sqlite_url)
    assert dump(at_head) == before
