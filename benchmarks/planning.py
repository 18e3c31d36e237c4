"""PostgreSQL without statistics: bulk statements planned each time against prepared plans.

    python benchmarks/planning.py [--calls N] [--accounts-per-call N] [--batches N]

psycopg prepares a statement after its fifth execution on a connection, and the server may
then keep one generic plan for it until the table's statistics change. With autovacuum off
(as on the machines here; set off per table below whatever the server says), a plan made
while a table was empty is never replaced. The library runs its bulk statements with
preparation off (``timebank._db.planned_each_time``). Two workloads, each in a fresh
database, each run twice: as the library runs them, and with that block replaced by nothing
(the baseline: psycopg's default, what the library did before):

1. ``Ledger.open_accounts``: ``--calls`` calls of ``--accounts-per-call`` new accounts;
   every call looks its codes up 1,000 at a time. The time of each call.
2. The time-bank bulk import of W's first ``--batches`` batches of 1,000 rows
   (``import_history(method='bulk')``), twice: with no ANALYZE, and with an untimed ANALYZE
   whenever the entries have doubled, as ``bank_w.py`` runs it (what autovacuum would keep
   up): what planning each time costs where the prepared plans were good. The whole time.

Only a run with the default arguments writes benchmarks/results/planning-postgres-<date>.md.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from unittest import mock

from bank_scale import Analyzer
from bank_w import BATCH_ROWS, HEADER, OPERATOR, PROGRAMME, SECRET, history_line, template
from run_w import DEFAULT_PG_URL, machine_info, recreate_database, save_result
from sqlalchemy import create_engine, make_url, text
from workload import generate

import timebank._entries
import timebank.bank._set_history
from timebank import Ledger
from timebank import _admin as admin_module
from timebank.bank import TimeBank
from timebank.models import AccountSpec

DEFAULTS = {"calls": 4, "accounts_per_call": 20_000, "batches": 60}
REPEATS = 2
LIBRARY = "library (bulk statements planned each time)"
BASELINE = "baseline: prepared after five runs (psycopg's default)"


@contextlib.contextmanager
def prepared_plans(*modules: object) -> Iterator[None]:
    """The library's block replaced by nothing in ``modules``: psycopg prepares as usual."""
    with contextlib.ExitStack() as stack:
        for module in modules:
            stack.enter_context(mock.patch.object(module, "planned_each_time", unplanned))
        yield


def unplanned(_conn: object) -> contextlib.AbstractContextManager[None]:
    return contextlib.nullcontext()


def no_autovacuum(url: str) -> None:
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            tables = conn.execute(
                text("SELECT tablename FROM pg_tables WHERE tablename LIKE 'tb\\_%'")
            ).scalars()
            for table in list(tables):
                conn.execute(text(f'ALTER TABLE "{table}" SET (autovacuum_enabled = false)'))
    finally:
        engine.dispose()


def open_accounts(pg_url: str, calls: int, per_call: int) -> list[float]:
    url = recreate_database(pg_url, "planning_accounts")
    Ledger.open(url).dispose()
    no_autovacuum(url)
    ledger = Ledger.open(url)
    seconds = []
    try:
        for call in range(calls):
            first = call * per_call
            started = time.perf_counter()
            ledger.open_accounts(
                AccountSpec(code=f"member:{n:08d}", type="member")
                for n in range(first, first + per_call)
            )
            seconds.append(time.perf_counter() - started)
    finally:
        ledger.dispose()
    return seconds


def bulk_import(
    url: str, lines: Sequence[str], batches: int, *, analyze: bool
) -> tuple[float, int]:
    """Seconds (less the untimed ANALYZE runs) and entries of the import."""
    no_autovacuum(url)
    bank = TimeBank(Ledger.open(url), identity_secrets={PROGRAMME: SECRET})
    analyzer = Analyzer(bank)
    applied = 0
    try:
        started = time.perf_counter()
        for batch in range(batches):
            chunk = lines[batch * BATCH_ROWS : (batch + 1) * BATCH_ROWS]
            report = bank.import_history(
                PROGRAMME, io.StringIO("\n".join((HEADER, *chunk)) + "\n"), operator=OPERATOR,
                batch_rows=BATCH_ROWS, method="bulk", skip_rejected=True,
            )
            applied += report.applied
            if analyze:
                analyzer.grown_to(applied)
        return time.perf_counter() - started - analyzer.seconds, applied
    finally:
        bank.dispose()


def run(args: argparse.Namespace) -> str:
    pg_url = args.pg_url
    lines_out = [
        "# PostgreSQL without statistics: bulk statements planned each time",
        "",
        f"Command: `python benchmarks/planning.py {' '.join(sys.argv[1:])}`",
        "",
        f"Autovacuum off on every table, no ANALYZE; each contender in a fresh database, the two "
        f"alternating, {REPEATS} rounds.",
        "",
        f"## 1. `open_accounts`: {args.calls} calls of {args.accounts_per_call:,} new accounts",
        "",
        "| contender | round | " + " | ".join(f"call {n + 1} s" for n in range(args.calls))
        + " | total s |",
        "|---|--:|" + "--:|" * (args.calls + 1),
    ]
    contenders: dict[str, Callable[[], contextlib.AbstractContextManager[None]]] = {
        LIBRARY: contextlib.nullcontext,
        BASELINE: lambda: prepared_plans(admin_module),
    }
    for round_ in range(REPEATS):
        for name, patched in contenders.items():
            print(f"open_accounts: {name}, round {round_ + 1}", flush=True)
            with patched():
                seconds = open_accounts(pg_url, args.calls, args.accounts_per_call)
            cells = " | ".join(f"{s:.2f}" for s in seconds)
            lines_out.append(f"| {name} | {round_ + 1} | {cells} | {sum(seconds):.2f} |")
    lines_out += [
        "",
        f"## 2. Bulk import of W's first {args.batches} batches of {BATCH_ROWS:,} rows",
        "",
        "| contender | statistics | round | s | entries | entries/s |",
        "|---|---|--:|--:|--:|--:|",
    ]
    import_contenders: dict[str, Callable[[], contextlib.AbstractContextManager[None]]] = {
        LIBRARY: contextlib.nullcontext,
        BASELINE: lambda: prepared_plans(timebank._entries, timebank.bank._set_history),
    }
    workload = generate()
    with tempfile.TemporaryDirectory() as directory, template(
        "postgres", make_url(pg_url), Path(directory), workload
    ) as (setup, clone):
        lines = [history_line(t, setup) for t in workload.phase_b[: args.batches * BATCH_ROWS]]
        for analyze, statistics in ((False, "none"), (True, "ANALYZE when doubled")):
            for round_ in range(REPEATS):
                for name, patched in import_contenders.items():
                    print(f"bulk import: {name}, {statistics}, round {round_ + 1}", flush=True)
                    url = clone("planning_import").render_as_string(hide_password=False)
                    with patched():
                        elapsed, applied = bulk_import(url, lines, args.batches, analyze=analyze)
                    lines_out.append(
                        f"| {name} | {statistics} | {round_ + 1} | {elapsed:.2f} | {applied:,} "
                        f"| {applied / elapsed:,.0f} |"
                    )
    lines_out += ["", "## Machine", ""]
    lines_out += [f"- {k}: {v}" for k, v in machine_info("postgres", make_url(pg_url)).items()]
    return "\n".join(lines_out) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=DEFAULTS["calls"])
    parser.add_argument("--accounts-per-call", type=int, default=DEFAULTS["accounts_per_call"])
    parser.add_argument("--batches", type=int, default=DEFAULTS["batches"])
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    report = run(args)
    trial = any(getattr(args, k) != v for k, v in DEFAULTS.items())
    save_result("planning-postgres", report, trial=trial)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
