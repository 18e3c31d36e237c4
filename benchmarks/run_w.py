"""Run workload W against the registered contenders and write a markdown table of the results.

    python benchmarks/run_w.py --backend sqlite|postgres|both [--pg-url URL]
        [--sqlite-dir DIR] [--only ceiling,naive,timebank] [--naive-limit N]

Each contender gets a fresh database of its own: a new SQLite file (busy_timeout and the
library's own settings of a file, ``timebank._db.SQLITE_FILE_PRAGMAS``) or a new PostgreSQL
database ``tbbench_<name>``, dropped afterwards. Phases B and O are timed as a whole, phase Q
by its three parts. The machines are noisy, so what counts is the ratio to the baselines
measured in the same run; the absolute numbers are there for context. Results go to
benchmarks/results/W-<backend>-<date>.md.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import sqlalchemy
from baselines import CoreCeiling, NaiveOrm
from contender_timebank import TimebankContender
from sqlalchemy import URL, Engine, create_engine, event, make_url, text
from workload import PHASE_B_COUNT, PHASE_O_COUNT, Transfer, Workload, generate
from workload import expected_balances as reference_balances

import timebank
from timebank._db import SQLITE_FILE_PRAGMAS

BENCHMARKS_DIR = Path(__file__).resolve().parent
RESULTS_DIR = BENCHMARKS_DIR / "results"


def save_result(stem: str, report: str, *, trial: bool = False) -> Path | None:
    """Print ``report`` and write it to results/<stem>-<today>.md, unless it is a ``trial``
    (a run with other arguments than the defaults), which must not overwrite the day's
    result."""
    print(report)
    if trial:
        print("a trial run (arguments other than the defaults): no result file written")
        return None
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / f"{stem}-{datetime.now(UTC).date()}.md"
    path.write_text(report, encoding="utf-8")
    print(f"written to {path}", flush=True)
    return path
# The contender modules import the library; make the repository root importable when this file
# is run as ``python benchmarks/run_w.py`` (then sys.path[0] is benchmarks/, not the root).
REPO_ROOT = BENCHMARKS_DIR.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.append(str(REPO_ROOT))

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
DEFAULT_NAIVE_LIMIT = 10_000
SQLITE_BUSY_TIMEOUT_MS = 5_000
PG_DATABASE_PREFIX = "tbbench_"

Backend = Literal["sqlite", "postgres"]


class Contender(Protocol):
    """What the runner drives. Every phase returns once its work is committed."""

    def setup(self, engine: Engine) -> None:
        """Untimed: create the contender's schema and the 10,030 accounts at balance 0."""

    def phase_b(self, engine: Engine, transfers: Sequence[Transfer]) -> None:
        """Post ``transfers``, one entry each, one transaction per 1,000."""

    def phase_o(self, engine: Engine, transfers: Sequence[Transfer]) -> None:
        """Post ``transfers``, each in its own transaction."""

    def phase_q(self, engine: Engine, workload: Workload) -> None:
        """All of phase Q: q_lookups, q_trial_balance, q_statement, in that order."""

    def q_lookups(self, engine: Engine, codes: Sequence[str]) -> int:
        """One balance look-up per code (one query each); the sum of the balances read."""
        ...

    def q_trial_balance(self, engine: Engine) -> int:
        """The balances of all accounts; their sum."""
        ...

    def q_statement(self, engine: Engine, code: str) -> int:
        """The full statement of one account, in time order; its number of lines."""
        ...


def baseline_engine(url: URL) -> Engine:
    """An engine for the baselines; on SQLite with the library's settings of a file."""
    engine = create_engine(url)
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_pragmas)
    return engine


def _sqlite_pragmas(dbapi_connection: Any, _connection_record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")  # first: WAL may wait
        for pragma in SQLITE_FILE_PRAGMAS:
            cursor.execute(f"PRAGMA {pragma}")
    finally:
        cursor.close()


@dataclass(frozen=True)
class ContenderSpec:
    label: str
    make: Callable[[], Contender]
    make_engine: Callable[[URL], Engine] = baseline_engine
    # True when the contender must reproduce the reference balances exactly (the baselines).
    # A contender that refuses overdrafts will differ, and the table says so without failing.
    exact: bool = True
    # True when phases B and O run on a prefix of W (see --naive-limit).
    limited: bool = False


REGISTRY: dict[str, ContenderSpec] = {
    "ceiling": ContenderSpec(label="Core ceiling", make=CoreCeiling),
    "naive": ContenderSpec(label="naive ORM", make=NaiveOrm, limited=True),
}


def _timebank_engine(url: URL) -> Engine:
    return timebank.make_engine(url.render_as_string(hide_password=False))


# The core run has no floors, so it must reproduce the reference balances exactly.
REGISTRY["timebank"] = ContenderSpec(
    label="timebank (post_many / transfer)",
    make=TimebankContender,
    make_engine=_timebank_engine,
)


@dataclass(frozen=True)
class Result:
    name: str
    label: str
    limited: bool
    b_count: int
    b_seconds: float
    o_count: int
    o_seconds: float
    lookups_count: int
    lookups_seconds: float
    trial_seconds: float
    statement_seconds: float
    statement_lines: int
    check: str

    @property
    def b_rate(self) -> float:
        return self.b_count / self.b_seconds

    @property
    def o_rate(self) -> float:
        return self.o_count / self.o_seconds


@dataclass(frozen=True)
class Timed:
    seconds: float
    value: int


def timed(action: Callable[[], int | None]) -> Timed:
    gc.collect()
    start = time.perf_counter()
    value = action()
    seconds = time.perf_counter() - start
    return Timed(seconds=seconds, value=0 if value is None else value)


# ---- databases -----------------------------------------------------------------------------


@contextmanager
def sqlite_database(directory: Path, name: str) -> Iterator[URL]:
    path = directory / f"tbbench_{name}.db"
    _remove_sqlite_files(path)
    yield make_url(f"sqlite:///{path}")


def _remove_sqlite_files(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


@contextmanager
def postgres_database(admin_url: URL, name: str) -> Iterator[URL]:
    database = f"{PG_DATABASE_PREFIX}{name}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{database}"'))
        try:
            yield admin_url.set(database=database)
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
    finally:
        admin.dispose()


def recreate_database(pg_url: str, name: str) -> str:
    """A new empty PostgreSQL database ``PG_DATABASE_PREFIX + name`` (dropped first if it is
    there), left for the next run to drop; its URL."""
    admin = create_engine(make_url(pg_url), isolation_level="AUTOCOMMIT")
    database = f"{PG_DATABASE_PREFIX}{name}"
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{database}"'))
    finally:
        admin.dispose()
    return make_url(pg_url).set(database=database).render_as_string(hide_password=False)


# ---- running -------------------------------------------------------------------------------


def naive_limits(limit: int) -> tuple[int, int]:
    """Phase B and phase O transfer counts for a prefix run of ``limit`` phase-B transfers."""
    if not 1 <= limit <= PHASE_B_COUNT:
        raise ValueError(f"--naive-limit must be in 1..{PHASE_B_COUNT}, got {limit}")
    return limit, max(1, round(PHASE_O_COUNT * limit / PHASE_B_COUNT))


def run_contender(
    name: str,
    spec: ContenderSpec,
    url: URL,
    workload: Workload,
    *,
    naive_limit: int,
    analyze: bool,
) -> Result:
    b_count, o_count = naive_limits(naive_limit) if spec.limited else (PHASE_B_COUNT, PHASE_O_COUNT)
    b_transfers = workload.phase_b[:b_count]
    o_transfers = workload.phase_o[:o_count]
    statement_code = workload.busiest_volunteer()
    contender = spec.make()
    engine = spec.make_engine(url)
    try:
        print(f"  {name}: setup", flush=True)
        contender.setup(engine)
        print(f"  {name}: phase B ({b_count:,} transfers)", flush=True)
        b = timed(lambda: contender.phase_b(engine, b_transfers))
        print(f"  {name}: phase O ({o_count:,} transfers)", flush=True)
        o = timed(lambda: contender.phase_o(engine, o_transfers))
        if analyze and engine.dialect.name == "postgresql":
            analyze_database(engine)
        print(f"  {name}: phase Q", flush=True)
        lookups = timed(lambda: contender.q_lookups(engine, workload.lookups))
        trial = timed(lambda: contender.q_trial_balance(engine))
        statement = timed(lambda: contender.q_statement(engine, statement_code))
    finally:
        engine.dispose()
    check = verify(
        posted=(*b_transfers, *o_transfers),
        workload=workload,
        statement_code=statement_code,
        lookups=lookups,
        trial=trial,
        statement=statement,
    )
    if spec.exact and check != "ok":
        raise SystemExit(f"{name}: results differ from the reference: {check}")
    return Result(
        name=name,
        label=spec.label,
        limited=b_count < PHASE_B_COUNT,
        b_count=b_count,
        b_seconds=b.seconds,
        o_count=o_count,
        o_seconds=o.seconds,
        lookups_count=len(workload.lookups),
        lookups_seconds=lookups.seconds,
        trial_seconds=trial.seconds,
        statement_seconds=statement.seconds,
        statement_lines=statement.value,
        check=check,
    )


def analyze_database(engine: Engine) -> None:
    """Untimed, before phase Q: refresh the planner statistics, as autovacuum would have done
    in a steady state. Right after a bulk load PostgreSQL has none, and then plans the statement
    join as a hash join over the whole journal (about 20 ms instead of about 1 ms on W)."""
    with engine.begin() as conn:
        conn.execute(text("ANALYZE"))


def verify(
    *,
    posted: Sequence[Transfer],
    workload: Workload,
    statement_code: str,
    lookups: Timed,
    trial: Timed,
    statement: Timed,
) -> str:
    """Compare the query checksums with the reference computed from the posted transfers."""
    balances = reference_balances(posted)
    expected_lookups = sum(balances[code] for code in workload.lookups)
    expected_lines = sum(1 for t in posted if statement_code in (t.debit, t.credit))
    problems = []
    if lookups.value != expected_lookups:
        problems.append(f"look-up sum {lookups.value} != {expected_lookups}")
    if trial.value != 0:
        problems.append(f"trial balance sums to {trial.value}, not 0")
    if statement.value != expected_lines:
        problems.append(f"statement has {statement.value} lines, not {expected_lines}")
    return "; ".join(problems) or "ok"


def run_backend(
    backend: Backend, names: Sequence[str], args: argparse.Namespace, workload: Workload
) -> tuple[list[Result], dict[str, str]]:
    results: list[Result] = []
    pg_url = make_url(args.pg_url)
    sqlite_dir, remove_dir = _sqlite_directory(args.sqlite_dir)
    try:
        for name in names:
            print(f"[{backend}] {name}", flush=True)
            database = (
                sqlite_database(sqlite_dir, name)
                if backend == "sqlite"
                else postgres_database(pg_url, name)
            )
            with database as url:
                result = run_contender(
                    name,
                    REGISTRY[name],
                    url,
                    workload,
                    naive_limit=args.naive_limit,
                    analyze=args.analyze,
                )
                results.append(result)
                if backend == "sqlite" and remove_dir:
                    _remove_sqlite_files(Path(str(url.database)))
    finally:
        if remove_dir:
            shutil.rmtree(sqlite_dir, ignore_errors=True)
    return results, machine_info(backend, pg_url)


def _sqlite_directory(option: str | None) -> tuple[Path, bool]:
    """The directory for the SQLite files, and whether it is a temporary one to remove."""
    if option is None:
        return Path(tempfile.mkdtemp(prefix="tbbench-")), True
    directory = Path(option)
    directory.mkdir(parents=True, exist_ok=True)
    return directory, False


# ---- reporting -----------------------------------------------------------------------------


def machine_info(backend: Backend, pg_url: URL) -> dict[str, str]:
    info = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu count": str(os.cpu_count()),
        "python": platform.python_version(),
        "sqlalchemy": sqlalchemy.__version__,
    }
    if backend == "sqlite":
        info["sqlite"] = sqlite3.sqlite_version
    else:
        import psycopg  # noqa: PLC0415  (only needed, and only installed, for PostgreSQL runs)

        info["psycopg"] = psycopg.__version__
        engine = create_engine(pg_url)
        try:
            with engine.connect() as conn:
                for setting in ("server_version", "fsync", "synchronous_commit", "shared_buffers"):
                    value = conn.execute(text(f"SHOW {setting}")).scalar()
                    info[f"postgresql {setting}"] = str(value)
        finally:
            engine.dispose()
    return info


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _ratio(numerator: float, baseline: Result | None, rate: Callable[[Result], float]) -> str:
    return "—" if baseline is None else f"{numerator / rate(baseline):.3f}"


def render_table(results: Sequence[Result]) -> str:
    by_name = {r.name: r for r in results}
    ceiling, naive = by_name.get("ceiling"), by_name.get("naive")
    lines = [
        "| contender | B transfers | B s | B rate (tr/s) | O transfers | O s | O rate (tr/s) "
        "| look-up mean µs | trial balance ms | statement ms (lines) "
        "| B / ceiling B | O / ceiling O | B / naive B | check |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for r in results:
        label = f"{r.label} (prefix of W)" if r.limited else r.label
        lines.append(
            f"| {label} | {r.b_count:,} | {r.b_seconds:.2f} | {r.b_rate:,.0f} "
            f"| {r.o_count:,} | {r.o_seconds:.2f} | {r.o_rate:,.0f} "
            f"| {r.lookups_seconds / r.lookups_count * 1e6:,.1f} | {r.trial_seconds * 1e3:,.1f} "
            f"| {r.statement_seconds * 1e3:,.2f} ({r.statement_lines}) "
            f"| {_ratio(r.b_rate, ceiling, lambda c: c.b_rate)} "
            f"| {_ratio(r.o_rate, ceiling, lambda c: c.o_rate)} "
            f"| {_ratio(r.b_rate, naive, lambda c: c.b_rate)} | {r.check} |"
        )
    return "\n".join(lines)


def render_report(
    backend: Backend,
    results: Sequence[Result],
    info: dict[str, str],
    argv: Sequence[str],
    *,
    analyze: bool,
) -> str:
    notes = [
        "Rates are transfers per second. Ratios divide this row's rate by the baseline's rate "
        "measured in the same run; only ratios compare across machines.",
        "Phase Q: look-up mean over 1,000 single-account balance queries; one trial balance of "
        "all 10,030 accounts; the full statement of the busiest volunteer of W.",
    ]
    if backend == "postgres":
        notes.append(
            "PostgreSQL: the runner ran ANALYZE (untimed) before phase Q, as autovacuum would "
            "in a steady state."
            if analyze
            else "PostgreSQL: no ANALYZE before phase Q (--no-analyze): no statistics."
        )
    for r in results:
        if r.limited:
            notes.append(
                f"{r.label} ran on a prefix of W: the first {r.b_count:,} transfers of phase B "
                f"and the first {r.o_count:,} of phase O (--naive-limit); its rates stay "
                "comparable, its phase Q ran on the smaller ledger that prefix leaves."
            )
    body = [
        f"# Workload W: {backend}",
        "",
        f"Command: `python benchmarks/run_w.py {' '.join(argv)}`".rstrip(),
        "",
        render_table(results),
        "",
        *(f"- {note}" for note in notes),
        "",
        "## Machine",
        "",
        *(f"- {key}: {value}" for key, value in info.items()),
        "",
    ]
    return "\n".join(body)


# ---- command line --------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Run workload W (see /work/shared/BENCHMARK.md).")
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), required=True)
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL, help="an existing database to admin")
    parser.add_argument("--sqlite-dir", default=None, help="where the SQLite files go (kept)")
    parser.add_argument(
        "--only",
        default=",".join(REGISTRY),
        help=f"comma-separated contenders among: {', '.join(REGISTRY)}",
    )
    parser.add_argument(
        "--naive-limit",
        type=int,
        default=DEFAULT_NAIVE_LIMIT,
        help="phase-B transfers the naive ORM posts (phase O scaled alike)",
    )
    parser.add_argument(
        "--no-analyze",
        dest="analyze",
        action="store_false",
        help="on PostgreSQL, skip the untimed ANALYZE before phase Q",
    )
    args = parser.parse_args(argv)
    names = [name.strip() for name in args.only.split(",") if name.strip()]
    unknown = [name for name in names if name not in REGISTRY]
    if unknown or not names:
        parser.error(f"unknown contenders {unknown}; registered: {', '.join(REGISTRY)}")
    try:
        naive_limits(args.naive_limit)
    except ValueError as exc:
        parser.error(str(exc))
    args.names = names
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    backends: list[Backend] = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    workload = generate()
    for backend in backends:
        results, info = run_backend(backend, args.names, args, workload)
        report = render_report(backend, results, info, argv, analyze=args.analyze)
        save_result(f"W-{backend}", report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
