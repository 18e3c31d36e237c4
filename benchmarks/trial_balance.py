"""The trial balance of a ledger of a million accounts: what the garbage collector's pause buys.

    python benchmarks/trial_balance.py [--backend sqlite|postgres|both] [--accounts N]

A ledger of N member accounts (1,000,000 by default, a province's; opened untimed) is read
three ways, each three times in turn, in one process:

1. ``ledger.trial_balance()``: the library, which pauses Python's cyclic garbage collector
   while it builds a line per account (every line made is kept);
2. the same call with the pause replaced by nothing: the collector runs as it would
   without the pause (the baseline of the same run);
3. the rows alone: the same query, every row fetched with ``.all()`` and no line built, the
   collector running (what fetching the rows costs any caller).

Medians of the three repetitions go to benchmarks/results/trial-balance-<backend>-<date>.md.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from unittest import mock

from run_w import DEFAULT_PG_URL, machine_info, save_result
from sqlalchemy import create_engine, make_url, select, text

import timebank._collector
from timebank import Ledger
from timebank.limits import ACCOUNTS_PER_BATCH_MAX
from timebank.models import AccountSpec
from timebank.schema import accounts

REPEATS = 3
DEFAULT_ACCOUNTS = 1_000_000
BASELINE = "the same, the collector running (baseline)"
PG_DATABASE = "timebank_bench_trial"


def open_ledger(backend: str, pg_url: str, directory: Path) -> Ledger:
    if backend == "sqlite":
        return Ledger.open(f"sqlite:///{directory / 'trial.db'}")
    url = make_url(pg_url)
    _admin(pg_url, f'DROP DATABASE IF EXISTS "{PG_DATABASE}" WITH (FORCE)')
    _admin(pg_url, f'CREATE DATABASE "{PG_DATABASE}"')
    return Ledger.open(url.set(database=PG_DATABASE).render_as_string(hide_password=False))


def _admin(pg_url: str, statement: str) -> None:
    engine = create_engine(make_url(pg_url), isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(statement))
    finally:
        engine.dispose()


def fill(ledger: Ledger, count: int) -> None:
    for start in range(0, count, ACCOUNTS_PER_BATCH_MAX):
        stop = min(count, start + ACCOUNTS_PER_BATCH_MAX)
        ledger.open_accounts(
            AccountSpec(code=f"member:{n:08d}", type="member") for n in range(start, stop)
        )
        if ledger.engine.dialect.name == "postgresql":
            # As autovacuum would (it is off on the machines here): without statistics,
            # open_accounts' look-up of each chunk of 1,000 codes took seconds at 200,000
            # accounts, and the untimed fill ran for minutes.
            with ledger.engine.connect() as conn:
                conn.execute(text("ANALYZE tb_accounts"))
                conn.commit()


def rows_alone(ledger: Ledger) -> int:
    c = accounts.c
    with ledger.engine.connect() as conn:
        rows = conn.execute(
            select(c.code, c.type, c.posted_minutes).order_by(c.code)
        ).all()
    return len(rows)


def library(ledger: Ledger) -> int:
    return len(ledger.trial_balance().lines)


def collector_running(ledger: Ledger) -> int:
    with mock.patch.object(timebank._collector, "paused", contextlib.nullcontext):
        return len(ledger.trial_balance().lines)


WAYS: dict[str, Callable[[Ledger], int]] = {
    "`ledger.trial_balance()` (collector paused while the lines are built)": library,
    BASELINE: collector_running,
    "the rows alone, `.all()`, no lines, the collector running": rows_alone,
}


def measure(ledger: Ledger, count: int) -> dict[str, float]:
    seconds: dict[str, list[float]] = {name: [] for name in WAYS}
    for _ in range(REPEATS):
        for name, way in WAYS.items():
            started = time.perf_counter()
            got = way(ledger)
            seconds[name].append(time.perf_counter() - started)
            assert got == count, f"{name}: {got} lines, not {count}"
    return {name: statistics.median(values) for name, values in seconds.items()}


def run(backend: str, count: int, pg_url: str) -> str:
    with tempfile.TemporaryDirectory() as directory:
        ledger = open_ledger(backend, pg_url, Path(directory))
        try:
            started = time.perf_counter()
            print(f"[{backend}] opening {count:,} accounts (untimed)", flush=True)
            fill(ledger, count)
            filled = time.perf_counter() - started
            print(f"[{backend}] measuring", flush=True)
            medians = measure(ledger, count)
        finally:
            ledger.dispose()
            if backend == "postgres":
                _admin(pg_url, f'DROP DATABASE IF EXISTS "{PG_DATABASE}" WITH (FORCE)')
    baseline = medians[BASELINE]
    lines = [
        f"# Trial balance of {count:,} accounts: {backend}",
        "",
        f"Command: `python benchmarks/trial_balance.py --backend {backend} --accounts {count}`",
        "",
        "| read | median ms (of 3) | ÷ collector running |",
        "|---|--:|--:|",
        *(
            f"| {name} | {value * 1e3:,.0f} | {value / baseline:.2f} |"
            for name, value in medians.items()
        ),
        "",
        f"- {count:,} member accounts, opened untimed in {filled:.0f} s; the three reads ran "
        "in turn, three times.",
        "",
        "## Machine",
        "",
        *(f"- {k}: {v}" for k, v in machine_info(backend, make_url(pg_url)).items()),  # type: ignore[arg-type]
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument("--accounts", type=int, default=DEFAULT_ACCOUNTS)
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    backends = ("sqlite", "postgres") if args.backend == "both" else (args.backend,)
    for backend in backends:
        report = run(backend, args.accounts, args.pg_url)
        save_result(f"trial-balance-{backend}", report, trial=args.accounts != DEFAULT_ACCOUNTS)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
