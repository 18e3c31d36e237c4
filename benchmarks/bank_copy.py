"""The bulk history import against a plain write of the rows it writes (issue 10, part 2).

    python benchmarks/bank_copy.py [--backend postgres|sqlite] [--pg-url URL]

Two databases cloned from one set-up (bank_w.py's: W's stations, care homes, 10,000
volunteers and their relations):

1. ``import``: phase B of W (100,000 rows) through ``import_history(method="bulk",
   batch_rows=1000, skip_rejected=True)``: every check, balances and lots materialised, one
   transaction per 1,000 rows. Twice, each into its own copy: with the engine
   ``method="bulk"`` runs, and with the set-based engine (``_set_history``, issue 10's
   design), whose accepted and refused rows and rows written per table must be the same
   (else the exit status is 1). Timed, less the untimed ANALYZE run whenever the imported
   entries double (what autovacuum keeps up; it is off on the machines here).
2. ``plain``: the rows that import wrote (entries, postings, services and their recipients
   and confirmations, lots, lot uses, redemptions, gifts), read out of the first database
   with ``COPY ... TO STDOUT`` beforehand (untimed), written with ``COPY ... FROM STDIN``
   into the same tables: no check, no balance update, one transaction. Timed twice: with
   the tables' constraints and triggers as they are, and with none
   (``session_replication_role = replica``: no foreign-key checks, no triggers).

3. ``staged``: the same rows put into staging tables of the same columns beforehand
   (untimed), then ``INSERT INTO t SELECT * FROM staging`` table by table, constraints and
   triggers on, one transaction: the floor of an import that makes its rows in the database
   with set-based SQL (issue 10's design; see set_based_spike.py), which never formats them
   in Python.

The ratio is the import's rate over the plain COPY's, rows of W per second either way.
Results go to benchmarks/results/bank-copy-postgres-<date>.md.

With ``--backend sqlite`` (copies of a set-up SQLite file), the same comparison against a
plain ``executemany`` of ``INSERT INTO t (columns) VALUES (?, ...)`` per table (and the same
``INSERT ... SELECT`` from staging tables, here temporary ones), on a sqlite3
connection with the library's pragmas (``SQLITE_FILE_PRAGMAS``), the rows read
out beforehand with ``SELECT`` (untimed), in one transaction timed with its COMMIT: once with
``foreign_keys = ON``, once with ``OFF``. SQLite checks CHECK, NOT NULL and UNIQUE always and
fires triggers always, so foreign keys off is the nearest it has to no checks. The core
ceiling's phase B (bank_w.py's) runs in the same run: each write's entries per second over
the ceiling's. Results go to benchmarks/results/bank-copy-sqlite-<date>.md.
"""

from __future__ import annotations

import argparse
import io
import re
import shutil
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

from sqlalchemy import URL, create_engine, make_url, text

BENCHMARKS_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCHMARKS_DIR.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.append(str(REPO_ROOT))

from bank_w import _core, import_batches, template, timed_bank  # noqa: E402
from run_w import DEFAULT_PG_URL, Backend, machine_info, save_result  # noqa: E402
from workload import Workload, generate  # noqa: E402

from timebank._db import SQLITE_BUSY_TIMEOUT_MS, SQLITE_FILE_PRAGMAS  # noqa: E402
from timebank.bank import _io_api  # noqa: E402

Written = TypeVar("Written")

#: In the order their foreign keys allow.
TABLES = (
    "tb_entries",
    "tb_postings",
    "tb_services",
    "tb_service_recipients",
    "tb_confirmations",
    "tb_lots",
    "tb_lot_uses",
    "tb_redemptions",
    "tb_redemption_origins",
    "tb_gifts",
)


def read_out(url: URL) -> dict[str, tuple[int, bytes]]:
    """Each table's rows as COPY text, and how many."""
    engine = create_engine(url)
    out: dict[str, tuple[int, bytes]] = {}
    try:
        with engine.connect() as conn:
            driver = conn.connection.driver_connection
            assert driver is not None
            for table in TABLES:
                buffer = io.BytesIO()
                with driver.cursor() as cursor, cursor.copy(
                    f"COPY {table} TO STDOUT"
                ) as copy:
                    for data in copy:
                        buffer.write(data)
                count = conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one()
                out[table] = (int(count), buffer.getvalue())
    finally:
        engine.dispose()
    return out


def write_in(url: URL, rows: dict[str, tuple[int, bytes]], *, replica: bool) -> float:
    """COPY the rows into the same tables in one transaction; the seconds it took."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            driver = conn.connection.driver_connection
            assert driver is not None
            started = time.perf_counter()
            with conn.begin():
                if replica:
                    conn.execute(text("SET LOCAL session_replication_role = replica"))
                for table in TABLES:
                    with driver.cursor() as cursor, cursor.copy(
                        f"COPY {table} FROM STDIN"
                    ) as copy:
                        copy.write(rows[table][1])
            return time.perf_counter() - started
    finally:
        engine.dispose()


def staged_in(url: URL, rows: dict[str, tuple[int, bytes]]) -> float:
    """COPY the rows into unlogged staging tables (untimed), then INSERT ... SELECT them
    into the same tables in one transaction; the seconds that took."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            driver = conn.connection.driver_connection
            assert driver is not None
            with conn.begin():
                for table in TABLES:
                    conn.execute(text(f"CREATE UNLOGGED TABLE stage_{table} (LIKE {table})"))
                    with driver.cursor() as cursor, cursor.copy(
                        f"COPY stage_{table} FROM STDIN"
                    ) as copy:
                        copy.write(rows[table][1])
                    conn.execute(text(f"ANALYZE stage_{table}"))
            started = time.perf_counter()
            with conn.begin():
                for table in TABLES:
                    conn.execute(text(f"INSERT INTO {table} SELECT * FROM stage_{table}"))
            return time.perf_counter() - started
    finally:
        engine.dispose()


@dataclass
class Compared(Generic[Written]):
    """The import's run and the plain writes of what it wrote (with checks and without, and
    from staging tables)."""

    seconds: float
    accepted: int
    refused: Counter[str]
    written: Written
    plain: dict[bool, float]  # checked -> seconds
    staged: float  # INSERT ... SELECT from staging tables, constraints on
    set_seconds: float  # the same import through the set-based engine
    set_agreed: bool  # which rows it accepted and refused, and the rows it wrote, alike


def compare(backend: Backend, pg_url: URL, directory: Path, workload: Workload, *,
            read: Callable[[URL], Written],
            write: Callable[[URL, Written, bool], float],
            stage: Callable[[URL, Written], float],
            counts: Callable[[Written], dict[str, int]]) -> Compared[Written]:
    """The timed import into one copy of the set-up (the engine ``method="bulk"`` runs), and
    into another through the set-based engine; what the first wrote read out (untimed), then
    written plainly into two fresh copies, with the database's checks and without, and into
    a third by INSERT ... SELECT from staging tables, with the checks."""
    rows = workload.phase_b
    with template(backend, pg_url, directory, workload) as (setup, copy):
        imported_url = copy("copy_import")
        print(f"import, engine {_io_api.BULK_ENGINE} (timed)", flush=True)
        seconds, accepted, refused, bank = timed_bank(
            imported_url, lambda b: import_batches(b, rows, setup, "bulk"))
        bank.dispose()
        print("import, the set-based engine (timed)", flush=True)
        default, _io_api.BULK_ENGINE = _io_api.BULK_ENGINE, "set"
        try:
            set_url = copy("copy_import_set")
            set_seconds, set_accepted, set_refused, bank = timed_bank(
                set_url, lambda b: import_batches(b, rows, setup, "bulk"))
            bank.dispose()
        finally:
            _io_api.BULK_ENGINE = default
        print("reading the written rows out (untimed)", flush=True)
        written = read(imported_url)
        set_agreed = (set_accepted, set_refused, counts(read(set_url))) == (
            accepted, refused, counts(written))
        plain = {}
        for checked in (True, False):
            target = copy(f"copy_plain_{int(checked)}")
            print(f"plain write, checks={checked} (timed)", flush=True)
            plain[checked] = write(target, written, checked)
        print("INSERT ... SELECT from staging tables (timed)", flush=True)
        staged = stage(copy("copy_staged"), written)
    return Compared(seconds, accepted, refused, written, plain, staged, set_seconds, set_agreed)


def set_engine_lines(run: Compared[Any], rows: int, plain: float, plain_name: str
                     ) -> list[str]:
    """What the set-based engine did with the same rows, beside the default engine."""
    return [
        f"- The set-based engine (`_set_history`, issue 10's design) imported the same rows "
        f"in {run.set_seconds:.2f} s ({rows / run.set_seconds:,.0f} W rows/s): "
        f"{plain / run.set_seconds:.3f} of {plain_name}, against "
        f"{plain / run.seconds:.3f} for the engine `method=\"bulk\"` runs "
        f"(`{_io_api.BULK_ENGINE}`); "
        + ("it accepted and refused the same rows and wrote as many rows to every table."
           if run.set_agreed else "**it disagreed with that engine** (accepted or refused "
           "other rows, or wrote other numbers of rows): the exit status is 1."),
    ]


def report_head(title: str, argv: Sequence[str], seconds: float, rate: float) -> list[str]:
    """The report's title, command, and the table's head with the import's row."""
    return [
        title,
        "",
        f"Command: `python benchmarks/bank_copy.py {' '.join(argv)}`".rstrip(),
        "",
        "| run | s | W rows/s | import ÷ this |",
        "|---|--:|--:|--:|",
        f"| import_history(method='bulk'), 100 transactions of 1,000 rows | {seconds:.2f} "
        f"| {rate:,.0f} | 1.000 |",
    ]


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("postgres", "sqlite"), default="postgres")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    args = parser.parse_args(argv)
    if args.backend == "sqlite":
        return main_sqlite(args, argv)
    pg_url = make_url(args.pg_url)
    workload = generate()
    rows = workload.phase_b
    run = compare("postgres", pg_url, Path(tempfile.mkdtemp()), workload, read=read_out,
                  write=lambda url, written, checked: write_in(url, written, replica=not checked),
                  stage=staged_in,
                  counts=lambda written: {t: count for t, (count, _) in written.items()})
    seconds, accepted, refused, written = run.seconds, run.accepted, run.refused, run.written
    plain = {not checked: s for checked, s in run.plain.items()}  # replica -> seconds
    total_rows = sum(count for count, _ in written.values())
    megabytes = sum(len(data) for _, data in written.values()) / 1e6
    rate = len(rows) / seconds
    lines = report_head("# Bulk import against plain COPY: postgres", argv, seconds, rate)
    for replica, label in ((False, "constraints and triggers on"),
                           (True, "replica role: no triggers, no foreign keys")):
        plain_rate = len(rows) / plain[replica]
        lines.append(f"| plain COPY of the same rows, one transaction, {label} "
                     f"| {plain[replica]:.2f} | {plain_rate:,.0f} | {rate / plain_rate:.3f} |")
    staged_rate = len(rows) / run.staged
    lines.append("| INSERT ... SELECT of the same rows from staging tables, one transaction, "
                 f"constraints and triggers on | {run.staged:.2f} | {staged_rate:,.0f} "
                 f"| {rate / staged_rate:.3f} |")
    lines += [
        "",
        "- The import's time leaves out the ANALYZE run (untimed) whenever its entries had "
        "doubled, as autovacuum would (it is off on this server).",
        *set_engine_lines(run, len(rows), run.plain[True], "the plain COPY with constraints on"),
        f"- The import accepted {accepted:,} of {len(rows):,} rows of W and refused "
        f"{sum(refused.values()):,} ({', '.join(f'{n:,} {r}' for r, n in refused.items())}).",
        f"- It wrote {total_rows:,} rows ({megabytes:,.0f} MB as COPY text): "
        + ", ".join(f"{t} {written[t][0]:,}" for t in TABLES)
        + "; the plain COPY writes exactly these, and updates no balance.",
        "",
        "## Machine",
        "",
        *(f"- {k}: {v}" for k, v in machine_info("postgres", pg_url).items()),
        "",
    ]
    save_result("bank-copy-postgres", "\n".join(lines))
    return 0 if run.set_agreed else 1


# ---- SQLite ------------------------------------------------------------------------------

#: A table's column names and its rows, as sqlite3 returns them.
SqliteRows = tuple[list[str], list[tuple[Any, ...]]]


def sqlite_path(url: URL) -> str:
    assert url.database, url
    return url.database


def sqlite_read_out(url: URL) -> dict[str, SqliteRows]:
    """Each table's columns and rows, in primary-key order (tb_postings has no rowid)."""
    out: dict[str, SqliteRows] = {}
    with closing(sqlite3.connect(sqlite_path(url))) as conn:
        for table in TABLES:
            info = conn.execute(f"PRAGMA table_info({table})").fetchall()
            columns = [str(row[1]) for row in info]
            key = [str(row[1]) for row in sorted(info, key=lambda r: int(r[5])) if row[5]]
            rows = conn.execute(f"SELECT {', '.join(columns)} FROM {table} "
                                f"ORDER BY {', '.join(key or ['rowid'])}").fetchall()
            count = conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
            assert count == len(rows), (table, count, len(rows))
            out[table] = (columns, rows)
    return out


def sqlite_triggers(url: URL) -> list[tuple[str, str, str]]:
    """The triggers on TABLES: name, table, and the event (INSERT, UPDATE, DELETE)."""
    with closing(sqlite3.connect(sqlite_path(url))) as conn:
        found = conn.execute("SELECT name, tbl_name, sql FROM sqlite_master "
                             "WHERE type = 'trigger' ORDER BY tbl_name, name").fetchall()
    event = re.compile(r"\bTRIGGER\s+(?:IF\s+NOT\s+EXISTS\s+)?\S+\s+"
                       r"(?:(?:BEFORE|AFTER|INSTEAD\s+OF)\s+)?(INSERT|UPDATE|DELETE)\b",
                       re.IGNORECASE)
    triggers = []
    for name, table, sql in found:
        if table in TABLES:
            match = event.search(sql)
            triggers.append((str(name), str(table), match.group(1).upper() if match else "?"))
    return triggers


def sqlite_write_in(url: URL, rows: dict[str, SqliteRows], *, foreign_keys: bool) -> float:
    """executemany the rows into the same tables in one transaction, on a sqlite3 connection
    with the library's pragmas; the seconds it took, COMMIT included."""
    with closing(sqlite3.connect(sqlite_path(url), isolation_level=None)) as conn:
        for pragma in (f"busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}",
                       f"foreign_keys = {'ON' if foreign_keys else 'OFF'}",
                       *SQLITE_FILE_PRAGMAS):
            conn.execute(f"PRAGMA {pragma}")
        assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == int(foreign_keys)
        started = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        for table in TABLES:
            columns, data = rows[table]
            conn.executemany(f"INSERT INTO {table} ({', '.join(columns)}) "
                             f"VALUES ({', '.join('?' * len(columns))})", data)
        conn.execute("COMMIT")
        return time.perf_counter() - started


def sqlite_staged_in(url: URL, rows: dict[str, SqliteRows]) -> float:
    """The rows into temporary staging tables (untimed), then INSERT ... SELECT into the same
    tables in one transaction, foreign keys on, with the library's pragmas; the seconds that
    took, COMMIT included."""
    with closing(sqlite3.connect(sqlite_path(url), isolation_level=None)) as conn:
        for pragma in (f"busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}", "foreign_keys = ON",
                       *SQLITE_FILE_PRAGMAS):
            conn.execute(f"PRAGMA {pragma}")
        for table in TABLES:
            columns, data = rows[table]
            names = ", ".join(columns)
            conn.execute(f"CREATE TEMP TABLE stage_{table} AS SELECT {names} FROM {table} "
                         "WHERE 0")
            conn.executemany(f"INSERT INTO stage_{table} ({names}) "
                             f"VALUES ({', '.join('?' * len(columns))})", data)
        started = time.perf_counter()
        conn.execute("BEGIN IMMEDIATE")
        for table in TABLES:
            names = ", ".join(rows[table][0])
            conn.execute(f"INSERT INTO {table} ({names}) SELECT {names} FROM stage_{table}")
        conn.execute("COMMIT")
        return time.perf_counter() - started


def main_sqlite(args: argparse.Namespace, argv: Sequence[str]) -> int:
    pg_url = make_url(args.pg_url)
    workload = generate()
    rows = workload.phase_b
    directory = Path(tempfile.mkdtemp(prefix="tbcopy-"))
    try:
        ceiling = _core("ceiling", "sqlite", args, workload, directory)
        run = compare(
            "sqlite", pg_url, directory, workload,
            read=lambda url: (sqlite_read_out(url), sqlite_triggers(url)),
            write=lambda url, read, checked: sqlite_write_in(url, read[0], foreign_keys=checked),
            stage=lambda url, read: sqlite_staged_in(url, read[0]),
            counts=lambda read: {t: len(data) for t, (_, data) in read[0].items()})
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    seconds, accepted, refused, plain = run.seconds, run.accepted, run.refused, run.plain
    written, triggers = run.written
    counts = {table: len(data) for table, (_, data) in written.items()}
    total_rows = sum(counts.values())
    entries = counts["tb_entries"]
    rate = len(rows) / seconds
    lines = report_head("# Bulk import against plain executemany: sqlite", argv, seconds, rate)
    for foreign_keys, label in (
        (True, "foreign_keys = ON: every constraint checked"),
        (False, "foreign_keys = OFF: no foreign-key checks (CHECK, NOT NULL, UNIQUE still "
                "checked)"),
    ):
        plain_rate = len(rows) / plain[foreign_keys]
        lines.append(f"| plain executemany of the same rows, one transaction, {label} "
                     f"| {plain[foreign_keys]:.2f} | {plain_rate:,.0f} "
                     f"| {rate / plain_rate:.3f} |")
    staged_rate = len(rows) / run.staged
    lines.append("| INSERT ... SELECT of the same rows from temporary staging tables, one "
                 f"transaction, foreign_keys = ON | {run.staged:.2f} | {staged_rate:,.0f} "
                 f"| {rate / staged_rate:.3f} |")
    on_insert = [name for name, _, event in triggers if event == "INSERT"]
    events = sorted({event for _, _, event in triggers})
    lines += [
        "",
        f"- Against the core ceiling's phase B run in this run ({ceiling.b_count:,} entries "
        f"in {ceiling.b_seconds:.2f} s, {ceiling.b_rate:,.0f} entries/s; 100 transactions, "
        "no checks), entries/s ÷ ceiling: "
        f"import {entries / seconds / ceiling.b_rate:.3f}, "
        f"plain executemany with foreign keys {entries / plain[True] / ceiling.b_rate:.3f}, "
        f"without {entries / plain[False] / ceiling.b_rate:.3f}, "
        f"INSERT ... SELECT from staging {entries / run.staged / ceiling.b_rate:.3f} "
        f"(entries: the {entries:,} rows of tb_entries written); the set-based engine's "
        f"import {entries / run.set_seconds / ceiling.b_rate:.3f}.",
        *set_engine_lines(run, len(rows), run.plain[True],
                          "the plain executemany with foreign keys"),
        "- The plain writes: `INSERT INTO t (columns) VALUES (?, ...)` through sqlite3's "
        "executemany, table by table in foreign-key order, between BEGIN IMMEDIATE and COMMIT "
        "(timed with the COMMIT), on a sqlite3 connection with the library's pragmas "
        f"({', '.join(SQLITE_FILE_PRAGMAS)}).",
        "- SQLite has no replica role: foreign_keys = OFF is the nearest it has to writing "
        "with no checks; CHECK, NOT NULL, UNIQUE and primary keys are checked either way, and "
        "triggers fire either way. Triggers on these tables: "
        + (f"{len(triggers)} ({', '.join(name for name, _, _ in triggers)}), on "
           f"{' and '.join(events)}; "
           + (f"on INSERT: {', '.join(on_insert)}, which fire in both plain writes."
              if on_insert else "none on INSERT, so none fires in these writes.")
           if triggers else "none."),
        f"- The import accepted {accepted:,} of {len(rows):,} rows of W and refused "
        f"{sum(refused.values()):,} ({', '.join(f'{n:,} {r}' for r, n in refused.items())}).",
        f"- It wrote {total_rows:,} rows: "
        + ", ".join(f"{t} {counts[t]:,}" for t in TABLES)
        + "; the plain executemany writes exactly these, and updates no balance.",
        "",
        "## Machine",
        "",
        *(f"- {k}: {v}" for k, v in machine_info("sqlite", pg_url).items()),
        "",
    ]
    # --pg-url is the only other argument (unused here): any other value makes a trial.
    save_result("bank-copy-sqlite", "\n".join(lines), trial=args.pg_url != DEFAULT_PG_URL)
    return 0 if run.set_agreed else 1


if __name__ == "__main__":
    raise SystemExit(main())
