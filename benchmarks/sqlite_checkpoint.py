"""SQLite: how often the write-ahead log is copied back into the file, SQLite's default of
1,000 pages against the library's ``SQLITE_WAL_AUTOCHECKPOINT_PAGES``, for the time bank's
bulk import and for the core ceiling.

    python benchmarks/sqlite_checkpoint.py [--rounds N]

W's phase B (100,000 rows in batches of 1,000, a transaction each) through
``import_history(method="bulk")`` into copies of bank_w.py's set-up, and the core ceiling's
phase B (run_w.py's: plain Core executemany, a commit every 1,000 transfers) into new files,
each with ``PRAGMA wal_autocheckpoint`` at 1,000 and at the library's value, every other
setting as the library makes it. ``--rounds`` rounds (3 by default), each running the four
in turn, the order of the two settings swapped every round. The setting in force is read back
from the connection after each run. Results go to benchmarks/results/sqlite-checkpoint-<date>.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from unittest import mock

from sqlalchemy import URL, Engine, event, make_url

BENCHMARKS_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCHMARKS_DIR.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.append(str(REPO_ROOT))

import run_w  # noqa: E402
from bank_w import (  # noqa: E402
    PROGRAMME,
    SECRET,
    UNTIMED,
    Setup,
    import_batches,
    template,
)
from run_w import (  # noqa: E402
    DEFAULT_PG_URL,
    REGISTRY,
    machine_info,
    run_contender,
    save_result,
    sqlite_database,
)
from workload import PHASE_B_COUNT, Workload, generate  # noqa: E402

from timebank import Ledger, make_engine  # noqa: E402
from timebank._db import SQLITE_FILE_PRAGMAS, SQLITE_WAL_AUTOCHECKPOINT_PAGES  # noqa: E402
from timebank.bank import TimeBank  # noqa: E402

SQLITE_DEFAULT_PAGES = 1_000
SETTINGS = (SQLITE_DEFAULT_PAGES, SQLITE_WAL_AUTOCHECKPOINT_PAGES)


def with_pages(pages: int) -> tuple[str, ...]:
    """The library's settings of a file with the checkpoint at ``pages``."""
    return tuple(
        f"wal_autocheckpoint = {pages}" if p.startswith("wal_autocheckpoint") else p
        for p in SQLITE_FILE_PRAGMAS
    )


def in_force(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one())


def import_seconds(url: URL, pages: int, workload: Workload, setup: Setup
                   ) -> tuple[float, int]:
    """W's phase B imported into ``url`` with the checkpoint at ``pages``: seconds, entries."""
    engine = make_engine(url.render_as_string(hide_password=False))

    @event.listens_for(engine, "connect")
    def _pages(dbapi_connection: object, _record: object) -> None:
        # After the library's own listener, which was registered first.
        dbapi_connection.execute(f"PRAGMA wal_autocheckpoint = {pages}")  # type: ignore[attr-defined]

    bank = TimeBank(Ledger(engine), identity_secrets={PROGRAMME: SECRET})
    try:
        UNTIMED.clear()
        started = time.perf_counter()
        accepted, _refused = import_batches(bank, workload.phase_b, setup, "bulk")
        seconds = time.perf_counter() - started - sum(UNTIMED)
        assert in_force(engine) == pages
        return seconds, accepted
    finally:
        bank.dispose()
        engine.dispose()


def ceiling_seconds(directory: Path, name: str, pages: int, workload: Workload) -> float:
    with (
        mock.patch.object(run_w, "SQLITE_FILE_PRAGMAS", with_pages(pages)),
        sqlite_database(directory, name) as url,
    ):
        result = run_contender(name, REGISTRY["ceiling"], url, workload, naive_limit=10_000,
                               analyze=True)
        engine = run_w.baseline_engine(url)
        try:
            assert in_force(engine) == pages
        finally:
            engine.dispose()
    assert result.b_count == PHASE_B_COUNT
    return result.b_seconds


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args(argv)
    workload = generate()
    rows: list[tuple[int, int, float, int, float]] = []
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        with template("sqlite", make_url(DEFAULT_PG_URL), directory, workload) as (setup, copy):
            for number in range(args.rounds):
                order = SETTINGS if number % 2 == 0 else SETTINGS[::-1]
                for pages in order:
                    name = f"r{number}p{pages}"
                    print(f"round {number + 1}: {pages} pages", flush=True)
                    seconds, accepted = import_seconds(copy(name), pages, workload, setup)
                    ceiling = ceiling_seconds(directory, f"ceiling_{name}", pages, workload)
                    rows.append((number + 1, pages, seconds, accepted, ceiling))
    report = render(rows, machine_info("sqlite", make_url(DEFAULT_PG_URL)), argv)
    save_result("sqlite-checkpoint", report, trial=args.rounds != 3)
    return 0


def render(rows: list[tuple[int, int, float, int, float]], info: dict[str, str],
           argv: Sequence[str] | None) -> str:
    command = " ".join(["python benchmarks/sqlite_checkpoint.py", *(argv or sys.argv[1:])])
    lines = [
        "# SQLite: the write-ahead log's checkpoint size, for the bulk import and the ceiling",
        "",
        f"Command: `{command}`",
        "",
        "| round | wal_autocheckpoint (pages) | import of W's phase B, s | entries a second "
        "| core ceiling's phase B, s | transfers a second | import ÷ ceiling |",
        "|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for number, pages, seconds, accepted, ceiling in rows:
        rate, ceiling_rate = accepted / seconds, PHASE_B_COUNT / ceiling
        lines.append(f"| {number} | {pages:,} | {seconds:.2f} | {rate:,.0f} | {ceiling:.2f} "
                     f"| {ceiling_rate:,.0f} | {rate / ceiling_rate:.3f} |")
    lines += ["", "Medians:", ""]
    for pages in SETTINGS:
        mine = [r for r in rows if r[1] == pages]
        imported = statistics.median(r[2] for r in mine)
        ceiling = statistics.median(r[4] for r in mine)
        ratio = statistics.median((r[3] / r[2]) / (PHASE_B_COUNT / r[4]) for r in mine)
        lines.append(f"- {pages:,} pages: import {imported:.2f} s, ceiling {ceiling:.2f} s, "
                     f"import ÷ ceiling {ratio:.3f}")
    lines += ["", "## Machine", "", *(f"- {k}: {v}" for k, v in info.items()), ""]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
