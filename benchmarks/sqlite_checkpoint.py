"""SQLite: how often the write-ahead log is copied back into the file, SQLite's default of
1,000 pages (the library's) against 10,000 (tried, not kept), for the time bank's bulk import
and for the core ceiling.

    python benchmarks/sqlite_checkpoint.py [--rounds N]

W's phase B (100,000 rows in batches of 1,000, a transaction each) through
``import_history(method="bulk")`` into copies of bank_w.py's set-up, and the core ceiling's
phase B (baselines.py's: plain Core executemany, a commit every 1,000 transfers) into new
files, each with ``PRAGMA wal_autocheckpoint`` at 1,000 and at 10,000 pages, every other
setting as the library makes it. Each run is timed up to a final
``PRAGMA wal_checkpoint(TRUNCATE)``, so that the log left unwritten at the end (up to ten
times more at 10,000) is paid inside the timing; the setting is read back from the engine
that ran. ``--rounds`` rounds (5 by default), each running the four in turn, the order of the
two settings swapped every round. Results go to
benchmarks/results/sqlite-checkpoint-<date>.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from sqlalchemy import URL, Engine, event, make_url

BENCHMARKS_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCHMARKS_DIR.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.append(str(REPO_ROOT))

from bank_w import (  # noqa: E402
    PROGRAMME,
    SECRET,
    UNTIMED,
    Setup,
    import_batches,
    template,
)
from baselines import CoreCeiling  # noqa: E402
from run_w import (  # noqa: E402
    DEFAULT_PG_URL,
    baseline_engine,
    machine_info,
    save_result,
    sqlite_database,
)
from workload import PHASE_B_COUNT, Workload, generate  # noqa: E402

from timebank import Ledger, make_engine  # noqa: E402
from timebank.bank import TimeBank  # noqa: E402

SETTINGS = (1_000, 10_000)  # SQLite's default, kept by the library; the candidate
DEFAULT_ROUNDS = 5


def set_pages(engine: Engine, pages: int) -> None:
    """Every connection ``engine`` opens copies its log back every ``pages`` pages (after
    the listeners registered before this one, the library's among them)."""

    @event.listens_for(engine, "connect")
    def _pages(dbapi_connection: Any, _record: object) -> None:
        dbapi_connection.execute(f"PRAGMA wal_autocheckpoint = {pages}")


def checkpoint(engine: Engine) -> int:
    """Copy the whole log back into the file; the setting in force on that connection."""
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        return int(conn.exec_driver_sql("PRAGMA wal_autocheckpoint").scalar_one())


def import_seconds(url: URL, pages: int, workload: Workload, setup: Setup) -> tuple[float, int]:
    """W's phase B imported into ``url``, timed with the final checkpoint: seconds, entries."""
    engine = make_engine(url.render_as_string(hide_password=False))
    set_pages(engine, pages)
    bank = TimeBank(Ledger(engine), identity_secrets={PROGRAMME: SECRET})
    try:
        UNTIMED.clear()
        started = time.perf_counter()
        accepted, _refused = import_batches(bank, workload.phase_b, setup, "bulk")
        in_force = checkpoint(engine)
        seconds = time.perf_counter() - started - sum(UNTIMED)
        assert in_force == pages, (in_force, pages)
        return seconds, accepted
    finally:
        bank.dispose()
        engine.dispose()


def ceiling_seconds(directory: Path, name: str, pages: int, workload: Workload) -> float:
    """The core ceiling's phase B into a new file, timed with the final checkpoint."""
    with sqlite_database(directory, name) as url:
        engine = baseline_engine(url)
        set_pages(engine, pages)
        try:
            ceiling = CoreCeiling()
            ceiling.setup(engine)
            checkpoint(engine)
            started = time.perf_counter()
            ceiling.phase_b(engine, workload.phase_b)
            in_force = checkpoint(engine)
            seconds = time.perf_counter() - started
            assert in_force == pages, (in_force, pages)
            return seconds
        finally:
            engine.dispose()


Row = tuple[int, int, float, int, float]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS)
    args = parser.parse_args(argv)
    workload = generate()
    rows: list[Row] = []
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
    save_result("sqlite-checkpoint", report, trial=args.rounds != DEFAULT_ROUNDS)
    return 0


def render(rows: list[Row], info: dict[str, str], argv: Sequence[str] | None) -> str:
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
    low, high = SETTINGS
    lines += ["", "Within each round, 10,000 pages against 1,000 (time ÷ time):", ""]
    for number in sorted({r[0] for r in rows}):
        by_pages = {r[1]: r for r in rows if r[0] == number}
        lines.append(f"- round {number}: import {by_pages[high][2] / by_pages[low][2]:.3f}, "
                     f"ceiling {by_pages[high][4] / by_pages[low][4]:.3f}")
    lines += ["", "Medians:", ""]
    for pages in SETTINGS:
        mine = [r for r in rows if r[1] == pages]
        imported = statistics.median(r[2] for r in mine)
        ceiling = statistics.median(r[4] for r in mine)
        ratio = statistics.median((r[3] / r[2]) / (PHASE_B_COUNT / r[4]) for r in mine)
        lines.append(f"- {pages:,} pages: import {imported:.2f} s, ceiling {ceiling:.2f} s, "
                     f"import ÷ ceiling {ratio:.3f}")
    lines += [
        "",
        "- Each time includes a final `PRAGMA wal_checkpoint(TRUNCATE)`: the log still "
        "unwritten at the end is written inside the timing.",
        "- The ceiling: `baselines.CoreCeiling` phase B alone (its set-up untimed), on an "
        "engine with the library's settings of a file.",
        "",
        "## Machine",
        "",
        *(f"- {k}: {v}" for k, v in info.items()),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
