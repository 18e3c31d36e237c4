"""timebank.testing: its strategies against the bank, its state machine, its pytest plugin."""

from __future__ import annotations

import ast
import importlib.metadata
import itertools
import os
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.stateful import rule, run_state_machine_as_test

from timebank import InvalidAmountError, InvalidInputError, Ledger, TimebankError
from timebank.bank import ServiceView, TimeBank
from timebank.schema import metadata
from timebank.testing import commands as cmd
from timebank.testing import plugin
from timebank.testing.machine import TimeBankMachine
from timebank.testing.strategies import (
    Invalid,
    MemberArgs,
    ServiceArgs,
    commands,
    hostile_strings,
    invalid_amounts,
    invalid_services,
    members,
    naive_datetimes,
    policies,
    services,
)
from timebank.testing.world import (
    ADMIN,
    INSTITUTION,
    RECORDER,
    REDEEMER,
    ManualClock,
    World,
    copy_sqlite,
    sqlite_world,
)

FEW = settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
_names = itertools.count()


@pytest.fixture
def world_maker() -> Iterator[Any]:
    """``make() -> World``: a fresh world per Hypothesis example (a template copy)."""
    with tempfile.TemporaryDirectory(prefix="tb_toolkit_") as directory:
        made: list[World] = []

        def make() -> World:
            world = sqlite_world(Path(directory) / f"w{next(_names)}.db")
            made.append(world)
            return world

        try:
            yield make
        finally:
            for world in made:
                world.bank.dispose()


def rows(world: World) -> dict[str, list[tuple[Any, ...]]]:
    with world.engine.connect() as conn:
        return {
            t.name: [tuple(r) for r in conn.execute(sa.select(t).order_by(*t.primary_key.columns))]
            for t in metadata.sorted_tables
        }


# --- strategies ------------------------------------------------------------------------------


def test_valid_services_are_recorded_and_confirmed(world_maker: Any) -> None:
    @FEW
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        world = world_maker()
        args: ServiceArgs = data.draw(services(world))
        view = world.bank.record_service("key-1", **args)
        assert view.status == "pending"
        assert view.raw_minutes <= world.policy.service_minutes_max
        assert view.credited_minutes >= 1
        confirmed = world.bank.confirm_service(view.id, operator="confirmer-a"
                                               if view.site == "station-a" else "staff-b")
        assert world.bank.member(args["volunteer_id"]).balance_minutes == (
            confirmed.credited_minutes
        )

    check()


def test_invalid_services_are_refused_with_their_error_and_change_nothing(
    world_maker: Any,
) -> None:
    world = world_maker()
    before = rows(world)

    @settings(FEW, max_examples=40)
    @given(data=st.data())
    def check(data: st.DataObject) -> None:
        case: Invalid[ServiceArgs] = data.draw(invalid_services(world))
        with pytest.raises(case.error):
            world.bank.record_service("bad", **case.value)
        assert rows(world) == before, case.why

    check()


def test_members_register_and_keep_their_data(world_maker: Any) -> None:
    world = world_maker()

    @FEW
    @given(args=members())
    def check(args: MemberArgs) -> None:
        args = {**args, "identity": f"{next(_names)}-{args['identity']}"}
        view = world.bank.register_member(
            world.programme, **args, home_site="station-b", operator=RECORDER["station-b"]
        )
        assert (view.acts_as, view.home_site) == (args["acts_as"], "station-b")
        data = world.bank.personal_data(view.id)
        assert (data.display_name, data.birth_date, data.sex) == (
            args["display_name"], args["birth_date"], args["sex"]
        )

    check()


def test_policies_are_accepted_and_stored_exactly(world_maker: Any) -> None:
    bank = world_maker().bank

    @settings(FEW, max_examples=10)
    @given(policy=policies())
    def check(policy: Any) -> None:
        code = f"p{next(_names)}"
        bank.create_programme(code, "Generated", policy=policy, root_region="root",
                              root_region_name="Root", administrator="boss",
                              administrator_name="Boss")
        assert bank.policy(code).policy == policy

    check()


def test_invalid_amounts_are_refused_before_anything_moves(world_maker: Any) -> None:
    world = world_maker()
    world.serve("ann", "dora", minutes=120)
    before = rows(world)
    ann = world.members["ann"]

    @settings(FEW, max_examples=30)
    @given(amount=invalid_amounts(), how=st.sampled_from(["redeem", "donate", "give", "book"]))
    def check(amount: Any, how: str) -> None:
        b, p = world.bank, world.programme
        calls = {
            "redeem": lambda: b.redeem("k", programme=p, member_id=ann, site=INSTITUTION,
                                       service_type="care", minutes=amount, operator=REDEEMER),
            "donate": lambda: b.donate("k", programme=p, member_id=ann, minutes=amount,
                                       operator="recorder-a"),
            "give": lambda: b.give("k", programme=p, giver_id=ann,
                                   receiver_id=world.members["bob"], minutes=amount,
                                   operator="recorder-a"),
            "book": lambda: b.book("k", programme=p, member_id=ann, site=INSTITUTION,
                                   service_type="care", minutes=amount,
                                   scheduled_at=world.clock.now, operator=REDEEMER),
        }
        with pytest.raises(InvalidAmountError):
            calls[how]()
        assert rows(world) == before

    check()


def test_naive_datetimes_are_refused(world_maker: Any) -> None:
    world = world_maker()
    before = rows(world)

    @FEW
    @given(moment=naive_datetimes())
    def check(moment: Any) -> None:
        with pytest.raises(InvalidInputError):
            world.bank.expire(world.programme, as_of=moment, operator=ADMIN)
        with pytest.raises(InvalidInputError):
            world.bank.redeem("k", programme=world.programme, member_id=world.members["ann"],
                              site=INSTITUTION, service_type="care", minutes=1,
                              operator=REDEEMER, occurred_at=moment)
        assert rows(world) == before

    check()


def test_hostile_strings_are_stored_exactly_or_refused(world_maker: Any) -> None:
    world = world_maker()

    @settings(FEW, max_examples=25)
    @given(text=hostile_strings())
    def check(text: str) -> None:
        before = rows(world)
        try:
            view = world.bank.register_member(
                world.programme, identity=f"h{next(_names)}", display_name=text,
                birth_date=date(1950, 1, 1),
                home_site="station-a", operator="recorder-a",
            )
        except TimebankError:
            assert rows(world) == before
        else:
            assert world.bank.personal_data(view.id).display_name == text

    check()


def test_commands_are_well_formed(world_maker: Any) -> None:
    world = world_maker()
    runner = cmd.Runner(world)

    @settings(FEW, max_examples=40)
    @given(command=commands(kinds=("record", "confirm")))
    def check(command: cmd.Command) -> None:
        result = runner.run(command)  # records and confirmations are always accepted
        assert result is None or isinstance(result, ServiceView)

    check()
    assert world.balance("ann") + world.balance("bob") + world.balance("cai") > 0


def test_runner_plays_a_hand_written_sequence(world_maker: Any) -> None:
    world = world_maker()
    runner = cmd.Runner(world)
    runner.run(cmd.Record("ann", "dora", "station-a", "care", 90))
    runner.run(cmd.Confirm(0))
    assert world.balance("ann") == 180
    runner.run(cmd.Redeem("ann", 60))
    runner.run(cmd.Give("ann", "bob", 20))
    runner.run(cmd.Book("ann", 30, hours_ahead=2))
    assert world.member("ann").held_minutes == 30
    runner.run(cmd.Cancel(0))
    runner.run(cmd.Donate("bob", 20))
    assert (world.balance("ann"), world.balance("bob")) == (100, 0)


# --- the state machine -----------------------------------------------------------------------


MACHINE_SETTINGS = settings(
    max_examples=10, stateful_step_count=25, deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def test_machine_runs_against_the_bank() -> None:
    run_state_machine_as_test(TimeBankMachine, settings=MACHINE_SETTINGS)


class CountingBank:
    """A stand-in for station software: forwards to the bank and counts the calls."""

    def __init__(self, bank: TimeBank) -> None:
        self.bank = bank
        self.calls = 0

    def __getattr__(self, name: str) -> Any:
        self.calls += 1
        return getattr(self.bank, name)


class WrappedMachine(TimeBankMachine):
    def make_bank(self) -> TimeBank:
        self.wrapper = CountingBank(self.world.bank)
        return self.wrapper  # type: ignore[return-value]

    @rule(minutes=st.integers(1, 30))
    def dora_redeems(self, minutes: int) -> None:
        self.execute(cmd.Redeem("dora", minutes))

    def teardown(self) -> None:
        assert self.wrapper.calls >= 0
        super().teardown()


def test_machine_subclass_drives_a_wrapper_and_adds_rules() -> None:
    run_state_machine_as_test(WrappedMachine, settings=settings(MACHINE_SETTINGS, max_examples=4))


# --- the pytest plugin -----------------------------------------------------------------------

PROJECT_TEST = '''
import pytest

from timebank import AccountNotFoundError
from timebank.testing.world import PROGRAMME


def test_empty_bank(timebank_sqlite, timebank_clock):
    assert timebank_sqlite.ledger.clock() == timebank_clock.now
    assert timebank_sqlite.ledger.trial_balance().total_minutes == 0


def test_world(timebank_world, timebank_member_factory, timebank_service_factory):
    eve = timebank_member_factory("eve")
    service = timebank_service_factory("ann", "dora", minutes=30, service_type="care")
    assert service.status == "confirmed"
    assert timebank_world.balance("ann") == 60
    assert timebank_world.bank.member(eve).programme == PROGRAMME


def test_postgres(timebank_postgres):
    assert timebank_postgres.ledger.trial_balance().total_minutes == 0


# Each test's database is its own copy: what one writes, the next does not see.
def first_to_write(bank):
    with pytest.raises(AccountNotFoundError):
        bank.ledger.account("probe")
    bank.ledger.open_account("probe", "member")


@pytest.mark.parametrize("run", [1, 2])
def test_sqlite_written(run, timebank_sqlite):
    first_to_write(timebank_sqlite)


@pytest.mark.parametrize("run", [1, 2])
def test_postgres_written(run, timebank_postgres):
    first_to_write(timebank_postgres)
'''

#: Counts the plugin's migrations and names its PostgreSQL template, in a file the test reads.
COUNTING_CONFTEST = '''
import os

import pytest

from timebank.testing import plugin

_migrate = plugin._migrate


def _counted(url):
    with open(os.environ["MIGRATIONS_LOG"], "a") as log:
        log.write(url.split("://")[0].split("+")[0] + "\\n")
    _migrate(url)


plugin._migrate = _counted


@pytest.fixture(autouse=True)
def _name_the_template(request):
    server = os.environ.get(plugin.POSTGRES_URL_ENV)
    if server and "timebank_postgres" in request.fixturenames:
        name = request.getfixturevalue("_timebank_postgres_templates")(server)
        with open(os.environ["MIGRATIONS_LOG"], "a") as log:
            log.write("template " + name + "\\n")
'''


def run_project(tmp_path: Path, *options: str) -> subprocess.CompletedProcess[str]:
    """A small project (one test file, no conftest) run by ``python -m pytest``."""
    (tmp_path / "pytest.ini").write_text("[pytest]\nfilterwarnings = error\n")
    (tmp_path / "test_station.py").write_text(textwrap.dedent(PROJECT_TEST))
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-rA", *options],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def check_project(result: subprocess.CompletedProcess[str]) -> None:
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "PASSED test_station.py::test_empty_bank" in output, output
    assert "PASSED test_station.py::test_world" in output, output
    assert "PASSED test_station.py::test_sqlite_written[2]" in output, output
    if os.environ.get(plugin.POSTGRES_URL_ENV):
        assert "PASSED test_station.py::test_postgres" in output, output
        assert "PASSED test_station.py::test_postgres_written[2]" in output, output
    else:
        assert "SKIPPED" in output, output
        assert plugin.POSTGRES_URL_ENV in output, output


def test_plugin_fixtures_work_in_a_project_without_conftest(tmp_path: Path) -> None:
    # ``no:timebank`` keeps the entry point (once installed) from registering it twice.
    check_project(run_project(tmp_path, "-p", "no:timebank", "-p", "timebank.testing.plugin"))


def test_entry_point_registers_the_plugin(tmp_path: Path) -> None:
    entry_points = importlib.metadata.entry_points(group="pytest11")
    found = [ep for ep in entry_points if ep.name == "timebank"]
    if not found:
        pytest.fail(
            "the pytest11 entry point 'timebank' is not installed: add\n"
            '  [project.entry-points.pytest11]\n  timebank = "timebank.testing.plugin"\n'
            "to pyproject.toml and reinstall (pip install -e '.[dev]')",
            pytrace=False,
        )
    assert found[0].value == "timebank.testing.plugin"
    check_project(run_project(tmp_path))


def test_the_plugin_migrates_once_a_session_and_drops_its_template(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Three tests on SQLite and three on PostgreSQL: one migration each, every test on a
    copy (the project's own tests check each starts empty); the template database is gone
    when the session ends."""
    (tmp_path / "conftest.py").write_text(COUNTING_CONFTEST)
    log = tmp_path / "migrations.log"
    monkeypatch.setenv("MIGRATIONS_LOG", str(log))
    check_project(run_project(tmp_path, "-p", "no:timebank", "-p", "timebank.testing.plugin"))
    lines = log.read_text().splitlines()
    migrations = sorted(line for line in lines if not line.startswith("template "))
    server = os.environ.get(plugin.POSTGRES_URL_ENV)
    assert migrations == (["postgresql", "sqlite"] if server else ["sqlite"])
    if not server:
        return
    templates = {line.removeprefix("template ") for line in lines if line.startswith("template ")}
    assert len(templates) == 1
    assert next(iter(templates)).startswith("timebank_template_")
    engine = sa.create_engine(server)
    try:
        with engine.connect() as conn:
            left = conn.execute(
                sa.text("SELECT count(*) FROM pg_database WHERE datname = :name"),
                {"name": templates.pop()},
            ).scalar_one()
    finally:
        engine.dispose()
    assert left == 0


def test_plugin_imports_only_pytest_and_its_fixtures_do_not_clash() -> None:
    code = (
        "import sys, timebank.testing.plugin as p\n"
        "assert 'hypothesis' not in sys.modules, 'the plugin imported hypothesis'\n"
        "print(sorted(n for n in vars(p) if n.startswith('timebank_')))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60, check=False)
    assert done.returncode == 0, done.stderr
    names = set(ast.literal_eval(done.stdout))
    assert names == {
        "timebank_clock", "timebank_sqlite", "timebank_postgres", "timebank_world",
        "timebank_member_factory", "timebank_service_factory",
    }
    conftest = (Path(__file__).parent / "conftest.py").read_text()
    assert not any(f"def {name}(" in conftest for name in names)


def test_a_copy_holds_what_the_write_ahead_log_still_holds(tmp_path: Path) -> None:
    """Templates are copied with SQLite's backup: a database still open, whose schema and
    rows sit in its log, not yet in its file, is copied whole."""
    source = tmp_path / "open.db"
    with Ledger.open(f"sqlite:///{source}") as ledger:
        ledger.open_account("kept", "member")
        copy_sqlite(source, tmp_path / "copy.db")
        with Ledger.open(f"sqlite:///{tmp_path / 'copy.db'}") as copied:
            assert copied.account("kept").code == "kept"


def test_manual_clock_only_moves_forward() -> None:
    clock = ManualClock()
    start = clock()
    assert clock.advance(hours=1) - start == timedelta(hours=1)
    with pytest.raises(ValueError, match="forward"):
        clock.advance(minutes=-1)
    with pytest.raises(ValueError, match="past"):
        clock.set(start)
