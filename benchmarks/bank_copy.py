"""The bulk history import on PostgreSQL against a plain COPY of the rows it writes (issue 10,
part 2).

    python benchmarks/bank_copy.py [--pg-url URL]

Two databases cloned from one set-up (bank_w.py's: W's stations, care homes, 10,000
volunteers and their relations):

1. ``import``: phase B of W (100,000 rows) through ``import_history(method="bulk",
   batch_rows=1000, skip_rejected=True)``: every check, balances and lots materialised, one
   transaction per 1,000 rows. Timed, less the untimed ANALYZE run whenever the imported
   entries double (what autovacuum keeps up; it is off on the machines here).
2. ``plain``: the rows that import wrote (entries, postings, services and their recipients
   and confirmations, lots, lot uses, redemptions, gifts), read out of the first database
   with ``COPY ... TO STDOUT`` beforehand (untimed), written with ``COPY ... FROM STDIN``
   into the same tables: no check, no balance update, one transaction. Timed twice: with
   the tables' constraints and triggers as they are, and with none
   (``session_replication_role = replica``: no foreign-key checks, no triggers).

The ratio is the import's rate over the plain COPY's, rows of W per second either way.
Results go to benchmarks/results/bank-copy-postgres-<date>.md.
"""

from __future__ import annotations

import argparse
import io
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from sqlalchemy import URL, create_engine, make_url, text

BENCHMARKS_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCHMARKS_DIR.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.append(str(REPO_ROOT))

from bank_w import import_batches, template, timed_bank  # noqa: E402
from run_w import DEFAULT_PG_URL, machine_info, save_result  # noqa: E402
from workload import generate  # noqa: E402

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


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    args = parser.parse_args(argv)
    pg_url = make_url(args.pg_url)
    workload = generate()
    rows = workload.phase_b
    with template("postgres", pg_url, Path(tempfile.mkdtemp()), workload) as (setup, copy):
        imported_url = copy("copy_import")
        print("import (timed)", flush=True)
        seconds, accepted, refused, bank = timed_bank(
            imported_url, lambda b: import_batches(b, rows, setup, "bulk"))
        bank.dispose()
        print("reading the written rows out (untimed)", flush=True)
        written = read_out(imported_url)
        plain = {}
        for replica in (False, True):
            target = copy(f"copy_plain_{int(replica)}")
            print(f"plain COPY, replica={replica} (timed)", flush=True)
            plain[replica] = write_in(target, written, replica=replica)
    total_rows = sum(count for count, _ in written.values())
    megabytes = sum(len(data) for _, data in written.values()) / 1e6
    rate = len(rows) / seconds
    lines = [
        "# Bulk import against plain COPY: postgres",
        "",
        f"Command: `python benchmarks/bank_copy.py {' '.join(argv)}`".rstrip(),
        "",
        "| run | s | W rows/s | import ÷ this |",
        "|---|--:|--:|--:|",
        f"| import_history(method='bulk'), 100 transactions of 1,000 rows | {seconds:.2f} "
        f"| {rate:,.0f} | 1.000 |",
    ]
    for replica, label in ((False, "constraints and triggers on"),
                           (True, "replica role: no triggers, no foreign keys")):
        plain_rate = len(rows) / plain[replica]
        lines.append(f"| plain COPY of the same rows, one transaction, {label} "
                     f"| {plain[replica]:.2f} | {plain_rate:,.0f} | {rate / plain_rate:.3f} |")
    lines += [
        "",
        "- The import's time leaves out the ANALYZE run (untimed) whenever its entries had "
        "doubled, as autovacuum would (it is off on this server).",
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
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
