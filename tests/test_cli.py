"""The ``timebank`` command: a whole station day from an empty database, JSON parsed, every
error family's exit code, and refusals that change nothing.

Commands run in this process (``timebank.cli.main`` with the environment, folder, stdin and
output streams a subprocess would have): a new interpreter for every command, about a second
each, cost this file two minutes of the suite. The exit codes of every error family, the
database on PostgreSQL and the terminal's colour and progress bars run as the installed
console script in a subprocess, the way operators and scripts run it."""

from __future__ import annotations

import dataclasses
import json
import os
import pty
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import click
import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, text

import timebank
from tests._databases import SQLITE, backends
from tests.dbdump import dump
from timebank.cli import (
    EXIT_CONFLICT,
    EXIT_DATABASE,
    EXIT_INVALID,
    EXIT_NOT_FOUND,
    EXIT_PERMISSION,
    EXIT_REFUSED,
    EXIT_SCHEMA,
    EXIT_USAGE,
    main,
)
from timebank.cli._commands import root

db_url = backends(SQLITE)

SCRIPT = Path(sys.executable).parent / "timebank"
COMMAND = [str(SCRIPT)] if SCRIPT.is_file() else [sys.executable, "-m", "timebank.cli"]
SECRET = "a-secret-of-at-least-16-bytes"
ZONE = ZoneInfo("Asia/Shanghai")

POLICY_TOML = """\
timezone = "Asia/Shanghai"
confirmations_required = 1
gift_yearly_limit_minutes = 600
grant_rules = [{ min_age = 80 }]

[service_types.chat]
name = "Keeping company"
weight_permille = 1000

[service_types.body_care]
name = "Body care"
weight_permille = 2000
"""


@dataclass
class Cli:
    """The real command in a folder of its own, with its database in the environment: in
    this process, or with ``in_process=False`` the console script in a subprocess."""

    cwd: Path
    env: dict[str, str]
    in_process: bool = True

    def __call__(self, *args: str, stdin: str | None = None, code: int = 0
                 ) -> subprocess.CompletedProcess[str]:
        if self.in_process:
            result = self._run_here(list(args), stdin)
        else:
            result = subprocess.run(
                [*COMMAND, *args], input=stdin, env=self.env, cwd=self.cwd, capture_output=True,
                text=True, timeout=300, check=False,
            )
        assert result.returncode == code, (args, result.returncode, result.stdout, result.stderr)
        return result

    def _run_here(self, args: list[str], stdin: str | None) -> subprocess.CompletedProcess[str]:
        """``main(args)`` as the console script runs it: this Cli's environment (TIMEBANK_
        variables only its own), its folder as the current one, stdin and stdout/stderr pipes
        of text. Unlike a process it has no timeout, and a warning is an error (pytest's
        ``filterwarnings``), so the command exits 1 on one."""
        overrides: dict[str, str | None] = {
            name: None for name in os.environ if name.startswith("TIMEBANK_")
        }
        overrides |= {name: value for name, value in self.env.items()
                      if os.environ.get(name) != value}
        here = Path.cwd()
        with CliRunner().isolation(input=stdin, env=overrides) as (out, err, _):
            os.chdir(self.cwd)
            try:
                returncode = main(args)
            except SystemExit as exit_:  # pragma: no cover - main returns its code
                code = exit_.code
                returncode = 0 if code is None else code if isinstance(code, int) else 1
            finally:
                os.chdir(here)
                sys.stdout.flush()
                sys.stderr.flush()
            stdout, stderr = out.getvalue().decode(), err.getvalue().decode()
        return subprocess.CompletedProcess(["timebank", *args], returncode, stdout, stderr)

    def json(self, *args: str, stdin: str | None = None) -> Any:
        result = self(*args, "--json", stdin=stdin)
        return json.loads(result.stdout)  # the whole of stdout is one document

    def fails(self, code: int, *args: str, stdin: str | None = None) -> dict[str, Any]:
        """Run a command that must fail with ``code``: nothing on stdout, one JSON line on
        stderr (with ``--json``) naming the error; returns that error."""
        result = self(*args, "--json", stdin=stdin, code=code)
        assert result.stdout == ""
        *notes, line = result.stderr.strip().splitlines()
        assert all(n.startswith("idempotency key: cli-") for n in notes), notes
        error: dict[str, Any] = json.loads(line)["error"]
        assert error["exit_code"] == code
        return error


def environment(url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TIMEBANK_")}
    # Each command is a new interpreter: let it keep compiled modules between runs.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env |= {"TIMEBANK_DATABASE_URL": url, "TIMEBANK_IDENTITY_SECRET": SECRET,
            "NO_COLOR": "1", **extra}
    return env


@pytest.fixture
def cli(tmp_path: Path, db_url: str) -> Cli:
    """The command on a new empty database (an SQLite file)."""
    return Cli(tmp_path, environment(db_url))


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An SQLite file set up once by the command (:func:`set_up`), copied by ``ready``."""
    folder = tmp_path_factory.mktemp("template")
    path = folder / "bank.db"
    set_up(Cli(folder, environment(f"sqlite:///{path}")))
    return path


@pytest.fixture
def ready(tmp_path: Path, template: Path) -> tuple[Cli, str]:
    """The command on a copy of the set-up bank (SQLite), and that copy's URL: the tests
    of errors and refusals start from it rather than repeat the set-up's dozen commands."""
    path = tmp_path / "bank.db"
    shutil.copyfile(template, path)
    url = f"sqlite:///{path}"
    (tmp_path / "policy.toml").write_text(POLICY_TOML)
    return Cli(tmp_path, environment(url)), url


def moment(hours_ago: float) -> str:
    """A moment of today's work, in UTC with its offset."""
    return (datetime.now(UTC) - timedelta(hours=hours_ago)).replace(microsecond=0).isoformat()


def set_up(cli: Cli) -> None:
    """Programme nj: county gulou (under city nj-city) with station st1 and care home home1;
    desk1 records and confirms at st1, nurse1 redeems at home1; admin acts for the root."""
    (cli.cwd / "policy.toml").write_text(POLICY_TOML)
    upgraded = cli.json("db", "upgrade")
    assert upgraded["revision"] == upgraded["head"] == timebank.head_revision()
    assert upgraded["from_revision"] is None
    assert cli.json("db", "check")["up_to_date"] is True
    programme = cli.json(
        "programme", "create", "nj", "--name", "Nanjing", "--policy", "policy.toml",
        "--root-region", "js", "--root-region-name", "Jiangsu", "--administrator", "admin",
        "--administrator-name", "Wang Fang",
    )
    assert programme == {"code": "nj", "name": "Nanjing", "root_region": "js",
                         "expired_account": "nj:expired", "policy_version": 1}
    cli("region", "add", "-p", "nj", "-o", "admin", "nj-city", "--name", "Nanjing city",
        "--level", "city", "--parent", "js")
    cli("region", "add", "-p", "nj", "-o", "admin", "gulou", "--name", "Gulou", "--level",
        "county", "--parent", "nj-city")
    cli("site", "add", "-p", "nj", "-o", "admin", "st1", "--name", "Hunan Road", "--region",
        "gulou")
    home = cli.json("site", "add", "-p", "nj", "-o", "admin", "home1", "--name", "Sunrise",
                    "--kind", "institution", "--region", "gulou")
    assert home["kind"] == "institution"
    cli("operator", "add", "-p", "nj", "desk1", "--name", "Li Na", "--role", "recorder",
        "--role", "confirmer", "--site", "st1", "--by", "admin")
    cli("operator", "add", "-p", "nj", "nurse1", "--name", "Zhou Min", "--role", "redeemer",
        "--site", "home1", "--by", "admin")
    people = [("320102196001011234", "Wang Wei", "1960-01-01"),
              ("320102194001015678", "Li Hua", "1940-01-01"),
              ("32010219620202999X", "Zhao Min", "1962-02-02")]
    for number, (identity, name, born) in enumerate(people, start=1):
        member = cli.json("member", "register", "-p", "nj", "-o", "desk1", "--name", name,
                          "--birth-date", born, "--home-site", "st1", stdin=identity + "\n")
        assert member["id"] == number
    cli("member", "relate", "-o", "desk1", "1", "spouse", "3")


def test_a_station_day_from_an_empty_database(cli: Cli) -> None:
    set_up(cli)
    found = cli.json("member", "find", "-p", "nj", stdin="320102194001015678\n")
    assert found["id"] == 2
    # Morning: two services recorded, one with its own key, one with a generated key.
    first = cli.json("record", "-p", "nj", "-o", "desk1", "-k", "svc-1", "--volunteer", "1",
                     "--recipient", "2", "--site", "st1", "--type", "chat",
                     "--start", moment(5), "--end", moment(3.5))
    assert (first["id"], first["status"], first["credited_minutes"]) == (1, "pending", 90)
    naive_start = (datetime.now(ZONE) - timedelta(hours=3)).replace(tzinfo=None, microsecond=0)
    result = cli("record", "-p", "nj", "-o", "desk1", "--volunteer", "1", "--recipient", "2",
                 "--site", "st1", "--type", "chat", "--start", naive_start.isoformat(),
                 "--end", (naive_start + timedelta(minutes=30)).isoformat(), "--json")
    second = json.loads(result.stdout)
    assert second["idempotency_key"].startswith("cli-record-")
    assert f"idempotency key: {second['idempotency_key']}" in result.stderr
    # Without an offset the time is the programme's (Asia/Shanghai).
    started = datetime.fromisoformat(second["started_at"])
    assert started == naive_start.replace(tzinfo=ZONE)
    # The same key again replays the first record: no second service.
    again = cli.json("record", "-p", "nj", "-o", "desk1", "-k", "svc-1", "--volunteer", "1",
                     "--recipient", "2", "--site", "st1", "--type", "chat",
                     "--start", first["started_at"], "--end", first["ended_at"])
    assert again == first
    confirmed = cli.json("confirm", "1", "-o", "desk1")
    assert (confirmed["status"], confirmed["deposit_entry_id"]) == ("confirmed", 1)
    assert cli.json("confirm", "1", "-o", "desk1") == confirmed  # a replay changes nothing
    rejected = cli.json("reject", "2", "-o", "desk1", "--reason", "recipient was away")
    assert rejected["status"] == "rejected"
    assert cli.json("balance", "1")["balance_minutes"] == 90
    midday(cli)
    evening(cli)


def midday(cli: Cli) -> None:
    """Gift to a spouse, redemption at the care home, a booking, a donation, a grant."""
    # Gift to a spouse, redemption at the care home, a booking completed, a donation, a grant.
    gift = cli.json("gift", "-p", "nj", "-o", "desk1", "-k", "gift-1", "--from", "1",
                    "--to", "3", "--minutes", "20")
    assert gift["minutes"] == 20
    redemption = cli.json("redeem", "-p", "nj", "-o", "nurse1", "-k", "red-1", "--member", "1",
                          "--site", "home1", "--type", "body_care", "--minutes", "30")
    assert redemption["minutes"] == 30
    booking = cli.json("book", "-p", "nj", "-o", "nurse1", "-k", "book-1", "--member", "1",
                       "--site", "home1", "--type", "body_care", "--minutes", "25",
                       "--at", moment(-20))
    assert booking["status"] == "booked"
    balance = cli.json("balance", "1")
    assert (balance["balance_minutes"], balance["held_minutes"]) == (40, 25)
    assert balance["available_minutes"] == 15
    done = cli.json("complete", str(booking["id"]), "-o", "nurse1", "--minutes", "20")
    assert (done["status"], done["redeemed_minutes"]) == ("completed", 20)
    donation = cli.json("donate", "-p", "nj", "-o", "desk1", "-k", "don-1", "--member", "3",
                        "--minutes", "10")
    assert donation["minutes"] == 10
    granted = cli.json("grant", "-p", "nj", "-o", "admin", "-k", "grant-1", "--region",
                       "gulou", "--member", "2", "--minutes", "10")
    assert granted["minutes"] == 10
    shown = cli.json("show", "pool-move", str(granted["id"]))
    assert shown == granted


def evening(cli: Cli) -> None:
    """Balances, statement, reports, clearing, exposure, export: what the day left."""
    balances = {m: cli.json("balance", str(m))["balance_minutes"] for m in (1, 2, 3)}
    assert balances == {1: 20, 2: 10, 3: 10}
    today = datetime.now(ZONE).date()
    period = ["--from", str(today.replace(day=1)), "--to", str(today + timedelta(days=1))]
    statement = cli.json("statement", "1", *period)
    assert statement["closing_balance_minutes"] == 20
    assert [e["amount_minutes"] for e in statement["entries"]] == [90, -20, -30, -20]
    station = cli.json("report", "station", "-p", "nj", "st1", *period)
    assert (station["services_recorded"], station["services_confirmed"]) == (2, 1)
    assert station["deposited_minutes"] == 90
    clearing = cli.json("clearing", "-p", "nj", *period)
    assert clearing["redeemed_minutes"] == 50
    assert clearing["positions"] == [{"debtor": "st1", "creditor": "home1", "minutes": 50}]
    exposure = cli.json("exposure", "-p", "nj")
    assert exposure["total_minutes"] == sum(balances.values())
    assert exposure["pool_minutes"] == 0  # donated 10, granted 10
    lots = cli.json("lots", "1")
    assert sum(lot["remaining_minutes"] for lot in lots) == 20
    exported = cli("export", "postings", "-p", "nj")
    lines = exported.stdout.splitlines()
    assert lines[0].startswith("entry_id,")
    # Six two-legged entries: deposit, gift, redemption, completed booking, donation, grant
    # (a booking itself is a hold, not an entry).
    assert len(lines) - 1 == 2 * 6
    assert "12 postings rows exported" in exported.stderr
    # People get tables (no colour codes: stdout is not a terminal).
    table = cli("balance", "1").stdout
    assert "balance_minutes" in table
    assert "\x1b[" not in table


@pytest.mark.postgres
def test_the_command_on_postgresql(tmp_path: Path, postgres_url: str) -> None:
    """The same command on PostgreSQL: the schema made, a programme set up, read as JSON,
    and a refusal's exit code (the station day above runs on an SQLite file; the library
    under it is tested on all three databases)."""
    (tmp_path / "policy.toml").write_text(POLICY_TOML)
    cli = Cli(tmp_path, environment(postgres_url), in_process=False)
    assert cli.json("db", "upgrade")["revision"] == timebank.head_revision()
    cli("programme", "create", "nj", "--name", "Nanjing", "--policy", "policy.toml",
        "--root-region", "js", "--root-region-name", "Jiangsu", "--administrator", "admin",
        "--administrator-name", "Wang Fang")
    shown = cli.json("programme", "show", "nj")
    assert (shown["code"], shown["policy_version"]) == ("nj", 1)
    assert "postgresql" in cli.json("db", "current")["database"]
    cli.fails(EXIT_NOT_FOUND, "balance", "1")


def test_each_error_family_has_its_exit_code(ready: tuple[Cli, str], tmp_path: Path) -> None:
    cli = dataclasses.replace(ready[0], in_process=False)  # the exit codes a process gives
    record = ["record", "-p", "nj", "-o", "desk1", "-k", "svc-x", "--volunteer", "1",
              "--recipient", "2", "--site", "st1", "--type", "chat",
              "--start", moment(3), "--end", moment(2)]
    cli(*record)
    cli("confirm", "1", "-o", "desk1")
    redeem = ["redeem", "-p", "nj", "-o", "nurse1", "--member", "1", "--site", "home1",
              "--type", "chat"]
    invalid = cli.fails(EXIT_INVALID, *redeem, "--minutes", "0")
    assert invalid["type"] == "InvalidAmountError"
    refused = cli.fails(EXIT_REFUSED, *redeem, "--minutes", "61")
    assert (refused["type"], refused["family"]) == ("LimitExceededError", "refused")
    missing = cli.fails(EXIT_NOT_FOUND, "balance", "99")
    assert missing["message"] == "no member 99"
    denied = cli.fails(EXIT_PERMISSION, *redeem, "--minutes", "10", "-o", "desk1")
    assert denied["type"] == "PermissionDeniedError"
    other = [*record[:-4], "--start", moment(6), "--end", moment(5)]
    conflict = cli.fails(EXIT_CONFLICT, *other)
    assert conflict["type"] == "IdempotencyConflictError"
    # The database unavailable: a server that is not there, on PostgreSQL's URL form.
    nowhere = "postgresql+psycopg://nobody@127.0.0.1:9/none?connect_timeout=2"
    down = cli.fails(EXIT_DATABASE, "balance", "1", "--db", nowhere)
    assert down["family"] == "database"
    absent = cli.fails(EXIT_SCHEMA, "balance", "1", "--db", str(tmp_path / "absent.db"))
    assert "timebank db upgrade" in absent["message"]
    assert not (tmp_path / "absent.db").exists()  # reading never creates a database
    usage = cli("balance", code=EXIT_USAGE)
    assert "Missing argument" in usage.stderr
    # Without --json: one line on stderr, no traceback; with --debug, the traceback too.
    plain = cli("balance", "99", code=EXIT_NOT_FOUND)
    assert plain.stderr == "timebank: not found: BankObjectNotFoundError: no member 99\n"
    debug = cli("balance", "99", "--debug", code=EXIT_NOT_FOUND)
    assert "Traceback (most recent call last)" in debug.stderr


def test_refusals_change_nothing(ready: tuple[Cli, str]) -> None:
    cli, db_url = ready
    cli("record", "-p", "nj", "-o", "desk1", "-k", "svc-1", "--volunteer", "1", "--recipient",
        "2", "--site", "st1", "--type", "chat", "--start", moment(3), "--end", moment(2))
    cli("confirm", "1", "-o", "desk1")
    cli("freeze", "3", "-o", "admin", "--reason", "identity under review")
    before = dump(db_url)
    refusals = [
        (EXIT_REFUSED, ["redeem", "-p", "nj", "-o", "nurse1", "--member", "1", "--site",
                        "home1", "--type", "chat", "--minutes", "500"]),
        (EXIT_REFUSED, ["gift", "-p", "nj", "-o", "desk1", "--from", "1", "--to", "3",
                        "--minutes", "10"]),  # the receiver is frozen
        (EXIT_REFUSED, ["gift", "-p", "nj", "-o", "desk1", "--from", "1", "--to", "2",
                        "--minutes", "10"]),  # not a relation the policy allows
        (EXIT_CONFLICT, ["record", "-p", "nj", "-o", "desk1", "-k", "svc-1", "--volunteer",
                         "1", "--recipient", "2", "--site", "st1", "--type", "body_care",
                         "--start", moment(3), "--end", moment(2)]),
        (EXIT_REFUSED, ["reject", "1", "-o", "desk1", "--reason", "too late"]),
        (EXIT_PERMISSION, ["reverse", "1", "-o", "desk1", "--reason", "recorded twice"]),
        (EXIT_INVALID, ["programme", "create", "nj", "--name", "Nanjing", "--policy",
                        "bad.json", "--root-region", "js", "--root-region-name", "Jiangsu",
                        "--administrator", "admin", "--administrator-name", "Wang Fang"]),
    ]
    (cli.cwd / "bad.json").write_text('{"service_types": {}}')
    for code, args in refusals:
        cli.fails(code, *args)
        assert dump(db_url) == before, args


def test_identity_is_read_from_stdin_never_from_the_command_line(ready: tuple[Cli, str]
                                                                 ) -> None:
    cli, db_url = ready
    usage = cli("member", "register", "-p", "nj", "-o", "desk1", "--name", "X",
                "--birth-date", "1950-01-01", "--home-site", "st1", "--identity", "123",
                code=EXIT_USAGE)
    assert "No such option '--identity'" in usage.stderr
    no_line = cli("member", "register", "-p", "nj", "-o", "desk1", "--name", "X",
                  "--birth-date", "1950-01-01", "--home-site", "st1", stdin="",
                  code=EXIT_USAGE)
    assert "expected one line on stdin" in no_line.stderr
    rows = json.dumps(dump(db_url), default=str)
    assert "320102196001011234" not in rows  # only its keyed hash is stored
    no_secret = Cli(cli.cwd, environment(db_url, TIMEBANK_IDENTITY_SECRET=""))
    error = no_secret.fails(EXIT_INVALID, "member", "find", "-p", "nj", stdin="x\n")
    assert "TIMEBANK_IDENTITY_SECRET" in error["message"]
    secret_file = cli.cwd / "secret"
    secret_file.write_text(SECRET + "\n")
    from_file = Cli(cli.cwd, environment(db_url, TIMEBANK_IDENTITY_SECRET="",
                                         TIMEBANK_IDENTITY_SECRET_FILE=str(secret_file)))
    assert from_file.json("member", "find", "-p", "nj", stdin="320102196001011234\n")["id"] == 1


def test_import_and_simulate(ready: tuple[Cli, str], tmp_path: Path) -> None:
    cli, _ = ready
    header = ",".join(timebank.bank.HISTORY_COLUMNS)
    row = {"kind": "service", "key": "old-1", "member": "1", "recipient": "2",
           "site": "st1", "service_type": "chat", "started_at": "2025-01-02T09:00:00+08:00",
           "ended_at": "2025-01-02T10:00:00+08:00"}
    line = ",".join(row.get(column, "") for column in timebank.bank.HISTORY_COLUMNS)
    (tmp_path / "history.csv").write_text(f"{header}\n{line}\n")
    report = cli.json("import", "history.csv", "-p", "nj", "-o", "desk1")
    assert (report["applied"], report["rejected"]) == (1, [])
    assert cli.json("import", "history.csv", "-p", "nj", "-o", "desk1")["already_present"] == 1
    bad = line.replace("old-1", "old-2").replace(",1,2,st1", ",1,99,st1")
    assert bad != line.replace("old-1", "old-2")
    (tmp_path / "bad.csv").write_text(f"{header}\n{bad}\n")
    rejected = cli("import", "bad.csv", "-p", "nj", "-o", "desk1", "--json", code=EXIT_REFUSED)
    assert json.loads(rejected.stdout)["rejected"][0]["line"] == 2
    # One good row after the bad one: rolled back with it, unless --skip-rejected; the rows
    # method judges alike.
    good = line.replace("old-1", "old-3").replace("09:00:00", "11:00:00").replace(
        "10:00:00", "12:00:00")
    (tmp_path / "mixed.csv").write_text(f"{header}\n{bad}\n{good}\n")
    for method in ("rows", "bulk"):
        kept = json.loads(cli("import", "mixed.csv", "-p", "nj", "-o", "desk1", "--json",
                              "--method", method, code=EXIT_REFUSED).stdout)
        assert (kept["applied"], kept["rolled_back"]) == (0, 1)
    skipped = json.loads(cli("import", "mixed.csv", "-p", "nj", "-o", "desk1", "--json",
                             "--skip-rejected", code=EXIT_REFUSED).stdout)
    assert (skipped["applied"], skipped["rolled_back"], len(skipped["rejected"])) == (1, 0, 1)
    sim = Cli(tmp_path, environment(f"sqlite:///{tmp_path / 'sim.db'}"))
    # Never into TIMEBANK_DATABASE_URL (a real bank's): --db is required.
    assert "Missing option '--db'" in sim("simulate", code=EXIT_USAGE).stderr
    result = sim("simulate", "--db", "sim.db", "--members", "30", "--days", "3", "--json")
    summary = json.loads(result.stdout)
    assert (summary["members"], summary["days"], summary["invariants"]["ok"]) == (30, 3, True)
    assert "3/3 days" in result.stderr  # the progress bar, on stderr
    not_empty = sim("simulate", "--db", "sim.db", "--members", "30", "--days", "3",
                    code=EXIT_INVALID)
    assert "DatabaseNotEmptyError" in not_empty.stderr


def test_colour_only_on_a_terminal(tmp_path: Path, sqlite_url: str) -> None:
    env = environment(sqlite_url, TERM="xterm-256color", COLUMNS="120")
    env.pop("NO_COLOR")
    subprocess.run([*COMMAND, "db", "upgrade"], env=env, check=True, capture_output=True)
    leader, follower = pty.openpty()
    try:
        process = subprocess.run([*COMMAND, "db", "current"], env=env, stdout=follower,
                                 stderr=subprocess.PIPE, check=True, timeout=60)
        assert process.returncode == 0
        on_terminal = os.read(leader, 65536).decode()
    finally:
        os.close(leader)
        os.close(follower)
    assert "\x1b[" in on_terminal  # colour and styles on a terminal
    piped = subprocess.run([*COMMAND, "db", "current"], env=env, capture_output=True,
                           text=True, check=True)
    assert "up_to_date" in piped.stdout
    assert "\x1b[" not in piped.stdout


# --- in process: help on every command, and the shape of the command tree ---------------


def _commands(group: click.Group, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    for name, command in group.commands.items():
        yield (*path, name)
        if isinstance(command, click.Group):
            yield from _commands(command, (*path, name))


@pytest.mark.parametrize("path", sorted(_commands(root)), ids=" ".join)
def test_help_everywhere(path: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*path, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"Usage: timebank {' '.join(path)}")
    command: Any = root
    for name in path:
        command = command.commands[name]
    if not isinstance(command, click.Group) and path not in {("migrate",)}:
        assert "--json" in out or path in {("export",), ("demo",), ("digest",)}
        has_example = "Example" in out
        shows_only = path[-1] in {"show", "list", "need", "attributes", "beneficiary",
                                  "unfreeze", "lots", "inactive", "demographics", "exposure"}
        assert has_example or shows_only, path


def test_root_help_groups_commands_and_lists_exit_codes(capsys: pytest.CaptureFixture[str]
                                                         ) -> None:
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for heading in ("Database:", "Set-up:", "Daily work:", "Reading:", "Data:", "Audit:",
                    "Simulation:"):
        assert heading in out
    for code in range(10):
        assert f"\n    {code}  " in out
    assert "migrate" not in out  # the old name still works, unlisted


def test_migrate_is_kept_as_the_old_name_of_db_upgrade(
    sqlite_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["migrate", "--db", sqlite_url]) == 0
    assert timebank.head_revision() in capsys.readouterr().out


def test_db_check_names_the_fix_when_behind(sqlite_url: str,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["db", "upgrade", "--db", sqlite_url, "--revision", "0007"]) == 0
    capsys.readouterr()
    assert main(["db", "check", "--db", sqlite_url, "--json"]) == EXIT_SCHEMA
    captured = capsys.readouterr()
    assert json.loads(captured.out)["revision"] == "0007"
    assert "timebank db upgrade" in captured.err
    assert main(["balance", "1", "--db", sqlite_url]) == EXIT_SCHEMA
    assert "is at schema revision 0007" in capsys.readouterr().err


def test_seal_digest_and_audit_find_a_ledger_edited_behind_its_back(
    ready: tuple[Cli, str],
) -> None:
    cli, db_url = ready
    cli("record", "-p", "nj", "-o", "desk1", "-k", "svc-1", "--volunteer", "1", "--recipient",
        "2", "--site", "st1", "--type", "chat", "--start", moment(3), "--end", moment(2))
    cli("confirm", "1", "-o", "desk1")
    assert cli("digest", code=EXIT_NOT_FOUND).stderr.startswith("timebank: not found:")
    [block] = cli.json("seal")
    assert (block["block"], block["entries"]) == (1, 1)
    assert cli.json("seal") == []
    cli("digest", "-O", "kept.json")
    report = cli.json("audit", "--digest", "kept.json")
    assert (report["ok"], report["blocks"], report["entries_sealed"]) == (True, 1, 1)
    engine = create_engine(db_url)
    try:
        with engine.begin() as conn:  # a balance "corrected" by hand
            conn.execute(text("UPDATE tb_accounts SET posted_minutes = posted_minutes + 5 "
                              "WHERE type = 'member'"))
    finally:
        engine.dispose()
    broken = cli("audit", "--digest", "kept.json", code=EXIT_DATABASE)
    assert "audit: " in broken.stdout
    assert "nj:member:" in broken.stdout  # the account that disagrees, named
    assert "the audit found" in broken.stderr


def test_long_imports_and_exports_draw_a_bar_on_a_terminal(ready: tuple[Cli, str],
                                                          tmp_path: Path) -> None:
    cli, _ = ready
    header = ",".join(timebank.bank.HISTORY_COLUMNS)
    rows = [f"old-{n},service,1,2,st1,chat,2025-01-0{1 + n % 9}T{8 + n % 10:02d}:00:00+08:00,"
            f"2025-01-0{1 + n % 9}T{8 + n % 10:02d}:30:00+08:00," for n in range(3)]
    (tmp_path / "history.csv").write_text("\n".join([header, *rows]) + "\n")
    leader, follower = pty.openpty()
    try:
        env = cli.env | {"TERM": "xterm", "COLUMNS": "100"}
        for args in (["import", "history.csv", "-p", "nj", "-o", "desk1"],
                     ["export", "postings", "-O", "postings.csv"]):
            subprocess.run([*COMMAND, *args], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                           stderr=follower, check=True, timeout=60)
        drawn = os.read(leader, 65536).decode(errors="replace")
    finally:
        os.close(leader)
        os.close(follower)
    assert "importing history.csv" in drawn
    assert "exporting postings" in drawn
    assert len((tmp_path / "postings.csv").read_text().splitlines()) == 1 + 2 * 3
    # Not on a terminal: no bar, only the note.
    quiet = cli("export", "postings", "-O", "again.csv")
    assert quiet.stderr == "6 postings rows exported\n"


def test_user_text_prints_as_typed_never_as_markup(ready: tuple[Cli, str]) -> None:
    cli, _ = ready
    shown = cli("freeze", "2", "-o", "admin", "--reason", "see [/] ticket [bold]x[/bold] :smile:")
    assert "see [/] ticket [bold]x[/bold] :smile:" in shown.stdout
    added = cli("site", "add", "-p", "nj", "-o", "admin", "st7", "--name", "Road [/] 7",
                "--region", "gulou")
    assert "Road [/] 7" in added.stdout
    assert "Road [/] 7" in cli("site", "list", "-p", "nj").stdout


def test_values_no_command_can_take_are_refused_with_their_family(
    tmp_path: Path, sqlite_url: str, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Edge cases of the command's own parsing, run in process (the same code as the
    console script) to keep the suite quick."""
    monkeypatch.setenv("TIMEBANK_DATABASE_URL", sqlite_url)
    assert main(["db", "upgrade"]) == 0
    (tmp_path / "latin.toml").write_bytes(b"\xff\xfe = 1")
    (tmp_path / "empty.db").write_bytes(b"")
    cases = [
        (EXIT_USAGE, ["balance", str(2**63)], "not in the range"),
        (EXIT_USAGE, ["balance", "1", "--db", "foo://x"], "not a database URL"),
        (EXIT_USAGE, ["balance", "1", "--db", "postgresql://u@h:abc/x"], "not a database URL"),
        (EXIT_DATABASE, ["balance", "1", "--db", "oracle://u@h/x"], "is not installed"),
        (EXIT_USAGE, ["programme", "create", "x", "--name", "X", "--policy",
                      str(tmp_path / "latin.toml"), "--root-region", "r",
                      "--root-region-name", "R", "--administrator", "a",
                      "--administrator-name", "A"], "is not UTF-8 text"),
        (EXIT_INVALID, ["statement", "1", "--from", "9999-12-15"], "give --to too"),
        (EXIT_INVALID, ["db", "upgrade", "--revision", "nope"], "nope"),
        (EXIT_SCHEMA, ["balance", "1", "--db", str(tmp_path / "empty.db")], "no database at"),
        (EXIT_INVALID, ["simulate", "--db", str(tmp_path / "w.db"), "--workers", "2"],
         "needs PostgreSQL or MariaDB"),
    ]
    for code, args, message in cases:
        assert main(args) == code, args
        assert message in capsys.readouterr().err, args
    assert (tmp_path / "empty.db").stat().st_size == 0  # a read never writes a database
    assert not (tmp_path / "w.db").exists()
    # With --json a usage error is the same one-line JSON object as any other error.
    assert main(["statement", "1", "--from", "2026-13-01", "--json"]) == EXIT_USAGE
    captured = capsys.readouterr()
    assert captured.out == ""
    error = json.loads(captured.err)["error"]
    assert (error["family"], error["exit_code"]) == ("usage", EXIT_USAGE)
    assert "is not a day" in error["message"]


def test_a_failed_export_leaves_the_earlier_file(ready: tuple[Cli, str]) -> None:
    cli, _ = ready
    cli("export", "members", "-O", "members.csv")
    before = (cli.cwd / "members.csv").read_text()
    assert before.count("\n") == 4  # the header and three members
    cli("export", "members", "-p", "nope", "-O", "members.csv", code=EXIT_NOT_FOUND)
    assert (cli.cwd / "members.csv").read_text() == before
    assert sorted(p.name for p in cli.cwd.iterdir() if "partial" in p.name) == []
