"""What the pytest plugin's empty-bank fixtures cost a test: a copy of a database migrated once
a session, against migrating a new database for each test (what they did before).

    python benchmarks/plugin_fixtures.py [--tests N] [--pg-url URL]

A throwaway project of ``--tests`` tests (20 by default) for each of four fixtures, run by
``python -m pytest`` in one session: the plugin's ``timebank_sqlite`` and
``timebank_postgres``, and beside them, defined in the project's conftest, the same banks
made the way before (``TimeBank.open`` on a new SQLite file; a new PostgreSQL database,
migrated). Each test opens one account. Each test's setup and teardown are timed by hooks
of the project's conftest; the first test of each plugin fixture pays for the session's one
migration.
Results go to benchmarks/results/plugin-fixtures-<date>.md.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import textwrap
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path

from run_w import DEFAULT_PG_URL, machine_info, save_result
from sqlalchemy import make_url

FIXTURES = ("timebank_sqlite", "migrated_sqlite", "timebank_postgres", "migrated_postgres")

CONFTEST = '''
import os
import time

import pytest

from timebank.testing import plugin


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_setup(item):
    started = time.perf_counter()
    yield
    _log("setup", item, time.perf_counter() - started)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_teardown(item):
    started = time.perf_counter()
    yield
    _log("teardown", item, time.perf_counter() - started)


def _log(phase, item, seconds):
    with open(os.environ["FIXTURE_LOG"], "a") as log:
        log.write(f"{phase} {item.module.__name__} {seconds}\\n")


@pytest.fixture
def migrated_sqlite(tmp_path, timebank_clock):
    """The plugin's timebank_sqlite as it was: a new file, migrated for the test."""
    bank = plugin._open(f"sqlite:///{tmp_path / 'timebank.db'}", timebank_clock)
    yield bank
    bank.dispose()


@pytest.fixture
def migrated_postgres(timebank_clock):
    """The plugin's timebank_postgres as it was: a new database, migrated for the test."""
    with plugin._fresh_postgres_database(plugin._postgres_server()) as url:
        bank = plugin._open(url, timebank_clock)
        yield bank
        bank.dispose()
'''

TEST = '''
import pytest


@pytest.mark.parametrize("number", range({tests}))
def test_{fixture}(number, {fixture}):
    {fixture}.ledger.open_account(f"member:{{number}}", "member")
'''


def run_project(directory: Path, tests: int, pg_url: str) -> dict[tuple[str, str], list[float]]:
    """Seconds of each test's setup and teardown, by (phase, fixture), in the order run."""
    (directory / "conftest.py").write_text(CONFTEST)
    for fixture in FIXTURES:
        (directory / f"test_{fixture}.py").write_text(
            textwrap.dedent(TEST.format(tests=tests, fixture=fixture)))
    log = directory / "fixtures.log"
    env = {**os.environ, "TIMEBANK_TEST_POSTGRES_URL": pg_url, "FIXTURE_LOG": str(log)}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
         "-p", "no:timebank", "-p", "timebank.testing.plugin", "-o", "addopts="],
        cwd=directory, env=env, capture_output=True, text=True, timeout=900, check=False)
    if done.returncode != 0:
        raise SystemExit(done.stdout + done.stderr)
    found: dict[tuple[str, str], list[float]] = defaultdict(list)
    for line in log.read_text().splitlines():
        phase, module, seconds = line.split()
        found[(phase, module.removeprefix("test_"))].append(float(seconds))
    return found


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests", type=int, default=20)
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        found = run_project(Path(tmp), args.tests, args.pg_url)
    lines = [
        "# The plugin's empty-bank fixtures: a copy of a migrated database against migrating",
        "",
        f"Command: `{' '.join(['python benchmarks/plugin_fixtures.py', *(argv or sys.argv[1:])])}`",
        "",
        "| fixture | tests | setup and teardown, all tests, s | first test's setup, s "
        "| the others' setup, mean ms | teardown, mean ms |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for fixture in FIXTURES:
        setup, teardown = found[("setup", fixture)], found[("teardown", fixture)]
        assert len(setup) == len(teardown) == args.tests, (fixture, len(setup))
        rest = setup[1:]
        lines.append(
            f"| `{fixture}` | {len(setup)} | {sum(setup) + sum(teardown):.2f} "
            f"| {setup[0]:.3f} | {1000 * sum(rest) / len(rest):.1f} "
            f"| {1000 * sum(teardown) / len(teardown):.1f} |")
    lines += [
        "",
        "- `timebank_*`: the plugin's fixtures (a copy of a database the session migrated "
        "once). `migrated_*`: the same bank made as the plugin made it before (a new database "
        "migrated for each test), in the same session.",
        "- Each test's setup and teardown timed by hooks of the project's conftest "
        "(`time.perf_counter`); the first test of each plugin fixture's setup includes the "
        "session's migration, the last teardown of `timebank_postgres` does not include the "
        "template's drop (at the session's end).",
        "",
        "## Machine",
        "",
        *(f"- {k}: {v}" for k, v in machine_info("postgres", make_url(args.pg_url)).items()),
        "",
    ]
    save_result("plugin-fixtures", "\n".join(lines), trial=args.tests != 20)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
