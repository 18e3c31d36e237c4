"""How the library's costs grow with the ledger (see /work/shared/BENCHMARK.md, "Growth").

    python benchmarks/growth.py --backend sqlite|postgres|both [--max-postings N] [--pg-url URL]

One fresh database per backend (an SQLite file with the library's defaults, or a new
PostgreSQL database ``tbbench_growth``, dropped afterwards), the 10,030 accounts of W with no
floors, then transfers drawn like W's from ``random.Random(42)``, as many as needed, posted by
``post_many`` in batches of 1,000. One volunteer is hot: every 25th transfer is a deposit to
V00000, so its history is about 2% of all postings and its statement has something to page.

At 10 thousand, 1 million and (with ``--max-postings 10000000``) 10 million postings the
filling stops and, with nothing posted in between, the script measures: balance look-ups,
balance as of a recorded instant, a statement page (the first one and one deep in V00000's
history), the trial balance, and the posting rate of the last batches before the checkpoint.
Every measured read is also checked against balances kept in Python while filling. Results go
to benchmarks/results/growth-<backend>-<date>.md.
"""

from __future__ import annotations

import argparse
import bisect
import gc
import random
import shutil
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from contender_timebank import account_type, command
from run_w import (
    DEFAULT_PG_URL,
    Backend,
    machine_info,
    postgres_database,
    save_result,
    sqlite_database,
)
from sqlalchemy import URL, Engine, make_url, text
from workload import (
    ACCOUNT_CODES,
    AMOUNT_MAX_MINUTES,
    AMOUNT_MIN_MINUTES,
    DEPOSIT_BELOW,
    INSTITUTIONS_COUNT,
    REDEMPTION_BELOW,
    SEED,
    STATIONS_COUNT,
    VOLUNTEERS_COUNT,
    Transfer,
    TransferKind,
    institution_code,
    station_code,
    volunteer_code,
)

import timebank
from timebank import AccountSpec, Ledger

CHECKPOINTS_POSTINGS = (10_000, 1_000_000, 10_000_000)
DEFAULT_MAX_POSTINGS = 1_000_000
POSTINGS_PER_TRANSFER = 2
BATCH_TRANSFERS = 1_000
HOT_CODE = "V00000"
# Every HOT_EVERY-th transfer is a deposit to HOT_CODE: 1/25 of the transfers, about 2% of
# the postings (each transfer posts twice, once on each side).
HOT_EVERY = 25
OPERATOR = "bench"
KEY_PREFIX = "g-"

LOOKUP_SEED = 7
LOOKUP_CALLS = 1_000
HOT_BALANCE_CALLS = 200
AS_OF_CALLS = 200
STATEMENT_CALLS = 50
PAGE_LINES = 100
TRIAL_CALLS = 3
RATE_BATCHES = 10
PROGRESS_BATCHES = 250  # 500,000 postings


# ---- the transfers -------------------------------------------------------------------------


def generate(start: datetime) -> Iterator[Transfer]:
    """W's draws, in W's order, without end; every HOT_EVERY-th transfer goes to HOT_CODE.

    A hot transfer makes the same first two draws as any other (so the kind-selecting
    ``random()`` is consumed alike) and then draws its station."""
    rng = random.Random(SEED)
    index = 0
    while True:
        r = rng.random()
        amount = rng.randint(AMOUNT_MIN_MINUTES, AMOUNT_MAX_MINUTES)
        kind: TransferKind
        if index % HOT_EVERY == HOT_EVERY - 1:
            kind, debit, credit = "deposit", station_code(rng.randrange(STATIONS_COUNT)), HOT_CODE
        elif r < DEPOSIT_BELOW:
            kind = "deposit"
            debit = station_code(rng.randrange(STATIONS_COUNT))
            credit = volunteer_code(rng.randrange(VOLUNTEERS_COUNT))
        elif r < REDEMPTION_BELOW:
            kind = "redemption"
            debit = volunteer_code(rng.randrange(VOLUNTEERS_COUNT))
            credit = institution_code(rng.randrange(INSTITUTIONS_COUNT))
        else:
            kind = "gift"
            giver = rng.randrange(VOLUNTEERS_COUNT)
            receiver = rng.randrange(VOLUNTEERS_COUNT)
            while receiver == giver:
                receiver = rng.randrange(VOLUNTEERS_COUNT)
            debit, credit = volunteer_code(giver), volunteer_code(receiver)
        yield Transfer(
            index=index,
            kind=kind,
            debit=debit,
            credit=credit,
            amount_minutes=amount,
            occurred_at=start + timedelta(minutes=index),
        )
        index += 1


# ---- filling -------------------------------------------------------------------------------


@dataclass
class Filler:
    """Posts the transfers and remembers what the measures need to aim at and to check."""

    ledger: Ledger
    transfers: Iterator[Transfer]
    posted: int = 0  # transfers
    seconds: float = 0.0  # wall time of the batches (command building included)
    balances: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ACCOUNT_CODES, 0))
    hot_entry_ids: list[int] = field(default_factory=list)
    # After each batch: a wall-clock instant between its recording and the next batch's,
    # the number of HOT_CODE postings so far, and HOT_CODE's balance then.
    instants: list[datetime] = field(default_factory=list)
    hot_counts: list[int] = field(default_factory=list)
    hot_balances: list[int] = field(default_factory=list)
    recent: deque[tuple[int, float]] = field(default_factory=lambda: deque(maxlen=RATE_BATCHES))
    # (postings, recent rate) every PROGRESS_BATCHES batches: the shape of the rate curve.
    progress: list[tuple[int, float]] = field(default_factory=list)

    def fill_to(self, transfers_total: int) -> None:
        while self.posted < transfers_total:
            size = min(BATCH_TRANSFERS, transfers_total - self.posted)
            batch = [next(self.transfers) for _ in range(size)]
            start = time.perf_counter()
            receipt = self.ledger.post_many([command(t, KEY_PREFIX) for t in batch])
            seconds = time.perf_counter() - start
            self.instants.append(datetime.now(UTC))
            self.seconds += seconds
            self.recent.append((size, seconds))
            self.posted += size
            self._remember(batch, receipt.entry_ids)
            if len(self.instants) % PROGRESS_BATCHES == 0:
                postings, rate = self.posted * POSTINGS_PER_TRANSFER, self.recent_rate()[0]
                self.progress.append((postings, rate))
                print(f"    {postings:,} postings, {self.seconds:.0f} s, {rate:,.0f} tr/s")

    def _remember(self, batch: Sequence[Transfer], entry_ids: Sequence[int]) -> None:
        for t, entry_id in zip(batch, entry_ids, strict=True):
            self.balances[t.debit] -= t.amount_minutes
            self.balances[t.credit] += t.amount_minutes
            if HOT_CODE in (t.debit, t.credit):
                self.hot_entry_ids.append(entry_id)
        self.hot_counts.append(len(self.hot_entry_ids))
        self.hot_balances.append(self.balances[HOT_CODE])

    def recent_rate(self) -> tuple[float, int]:
        """Transfers per second over the last RATE_BATCHES batches, and how many there were."""
        count = sum(size for size, _ in self.recent)
        return count / sum(seconds for _, seconds in self.recent), len(self.recent)


# ---- measuring -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    postings: int
    transfers: int
    hot_postings: int
    fill_seconds: float
    database_mb: float
    rate: float
    rate_batches: int
    lookup_us: float
    hot_balance_us: float
    as_of_us: float
    first_page_ms: float
    deep_page_ms: float
    deep_page_from: int  # the deep page starts after this many of HOT_CODE's postings
    trial_ms: float
    problems: tuple[str, ...]


def mean_seconds(action: Callable[[], object], calls: int) -> float:
    gc.collect()
    start = time.perf_counter()
    for _ in range(calls):
        action()
    return (time.perf_counter() - start) / calls


def lookup_codes() -> list[str]:
    """LOOKUP_CALLS account codes drawn with a fixed seed, the hot account first among them."""
    rng = random.Random(LOOKUP_SEED)
    drawn = [ACCOUNT_CODES[rng.randrange(len(ACCOUNT_CODES))] for _ in range(LOOKUP_CALLS - 1)]
    return [HOT_CODE, *drawn]


def measure(filler: Filler, engine: Engine, postings: int, codes: Sequence[str]) -> Checkpoint:
    ledger, problems = filler.ledger, []
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:  # untimed: the planner statistics autovacuum would keep
            conn.execute(text("ANALYZE"))

    looked_up: list[int] = []
    lookup = mean_seconds(lambda: looked_up.append(_lookup_sum(ledger, codes)), 1)
    if looked_up[0] != sum(filler.balances[c] for c in codes):
        problems.append("look-up sum differs")
    hot_balance = mean_seconds(lambda: ledger.balance(HOT_CODE), HOT_BALANCE_CALLS)

    as_of_us, as_of_problem = _measure_as_of(filler)
    problems.extend(as_of_problem)
    first_ms, deep_ms, deep_from, page_problems = _measure_pages(filler)
    problems.extend(page_problems)

    trial = mean_seconds(ledger.trial_balance, TRIAL_CALLS)
    report = ledger.trial_balance()
    if report.total_minutes != 0 or len(report.lines) != len(ACCOUNT_CODES):
        problems.append("trial balance does not sum to 0 over every account")
    rate, rate_batches = filler.recent_rate()
    return Checkpoint(
        postings=postings,
        transfers=filler.posted,
        hot_postings=len(filler.hot_entry_ids),
        fill_seconds=filler.seconds,
        database_mb=database_megabytes(engine),
        rate=rate,
        rate_batches=rate_batches,
        lookup_us=lookup / len(codes) * 1e6,
        hot_balance_us=hot_balance * 1e6,
        as_of_us=as_of_us,
        first_page_ms=first_ms,
        deep_page_ms=deep_ms,
        deep_page_from=deep_from,
        trial_ms=trial * 1e3,
        problems=tuple(problems),
    )


def _lookup_sum(ledger: Ledger, codes: Sequence[str]) -> int:
    return sum(ledger.balance(code).posted_minutes for code in codes)


def _measure_as_of(filler: Filler) -> tuple[float, list[str]]:
    """Mean µs of balance_as_of(HOT_CODE) at the end of the batch that reached the middle of
    its history; checked against the balance it had then."""
    middle = len(filler.hot_entry_ids) // 2
    batch = bisect.bisect_left(filler.hot_counts, middle)
    instant, expected = filler.instants[batch], filler.hot_balances[batch]
    results: list[int] = []

    def call() -> None:
        results.append(filler.ledger.balance_as_of(HOT_CODE, instant).posted_minutes)

    seconds = mean_seconds(call, AS_OF_CALLS)
    wrong = [] if set(results) == {expected} else [f"balance_as_of {results[0]} != {expected}"]
    return seconds * 1e6, wrong


def _measure_pages(filler: Filler) -> tuple[float, float, int, list[str]]:
    """Mean ms of HOT_CODE's first statement page and of a page from the middle of its
    history (a full page: at most len - PAGE_LINES - 1 lines in), and whether they hold the
    postings they should."""
    ledger, ids, problems = filler.ledger, filler.hot_entry_ids, []
    first = ledger.statement(HOT_CODE, limit=PAGE_LINES)
    if [line.entry_id for line in first.lines] != ids[:PAGE_LINES]:
        problems.append("first page differs")
    skip = max(0, min(len(ids) // 2, len(ids) - PAGE_LINES - 1))
    after = ids[skip]
    deep = ledger.statement(HOT_CODE, after=after, limit=PAGE_LINES)
    if [line.entry_id for line in deep.lines] != ids[skip + 1 : skip + 1 + PAGE_LINES]:
        problems.append("deep page differs")
    first_s = mean_seconds(lambda: ledger.statement(HOT_CODE, limit=PAGE_LINES), STATEMENT_CALLS)
    deep_s = mean_seconds(
        lambda: ledger.statement(HOT_CODE, after=after, limit=PAGE_LINES), STATEMENT_CALLS
    )
    return first_s * 1e3, deep_s * 1e3, skip + 1, problems


def database_megabytes(engine: Engine) -> float:
    if engine.dialect.name == "sqlite":
        path = str(engine.url.database)
        size = sum(
            Path(f"{path}{suffix}").stat().st_size
            for suffix in ("", "-wal")
            if Path(f"{path}{suffix}").exists()
        )
        return size / 1e6
    with engine.connect() as conn:
        size = conn.execute(text("SELECT pg_database_size(current_database())")).scalar_one()
    return int(size) / 1e6


# ---- running -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    checkpoints: tuple[Checkpoint, ...]
    progress: tuple[tuple[int, float], ...]  # (postings, posting rate) along the fill
    seconds: float = 0.0  # filling and measuring, all checkpoints


def run(url: URL, max_postings: int) -> Run:
    engine = timebank.make_engine(url.render_as_string(hide_password=False))
    try:
        timebank.upgrade(engine)
        ledger = Ledger(engine)
        ledger.open_accounts(
            AccountSpec(code=code, type=account_type(code), floor_minutes=None)
            for code in ACCOUNT_CODES
        )
        start = datetime(datetime.now(UTC).year, 1, 2, tzinfo=UTC)
        filler = Filler(ledger=ledger, transfers=generate(start))
        codes = lookup_codes()
        checkpoints: list[Checkpoint] = []
        for postings in checkpoints_up_to(max_postings):
            print(f"  filling to {postings:,} postings", flush=True)
            filler.fill_to(postings // POSTINGS_PER_TRANSFER)
            print(f"  measuring at {postings:,} postings ({filler.seconds:.0f} s)", flush=True)
            checkpoints.append(measure(filler, engine, postings, codes))
            print(render_table(checkpoints[-1:]), flush=True)
        return Run(checkpoints=tuple(checkpoints), progress=tuple(filler.progress))
    finally:
        engine.dispose()


def checkpoints_up_to(max_postings: int) -> tuple[int, ...]:
    return tuple(p for p in CHECKPOINTS_POSTINGS if p <= max_postings)


def run_backend(backend: Backend, args: argparse.Namespace) -> Run:
    started = time.perf_counter()
    if backend == "postgres":
        with postgres_database(make_url(args.pg_url), "growth") as url:
            result = run(url, args.max_postings)
    else:
        directory = Path(tempfile.mkdtemp(prefix="tbgrowth-"))
        try:
            with sqlite_database(directory, "growth") as url:
                result = run(url, args.max_postings)
        finally:
            shutil.rmtree(directory, ignore_errors=True)
    return replace(result, seconds=time.perf_counter() - started)


# ---- reporting -----------------------------------------------------------------------------


def render_table(checkpoints: Sequence[Checkpoint]) -> str:
    lines = [
        "| postings | transfers | V00000 postings | fill s | database MB "
        "| posting rate tr/s (last batches) | balance µs (1,000 accounts) | balance V00000 µs "
        "| balance_as_of V00000 µs | statement first page ms | statement deep page ms "
        "| trial balance ms | check |",
        "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for c in checkpoints:
        lines.append(
            f"| {c.postings:,} | {c.transfers:,} | {c.hot_postings:,} | {c.fill_seconds:,.1f} "
            f"| {c.database_mb:,.0f} | {c.rate:,.0f} ({c.rate_batches}) "
            f"| {c.lookup_us:,.1f} | {c.hot_balance_us:,.1f} | {c.as_of_us:,.1f} "
            f"| {c.first_page_ms:,.2f} | {c.deep_page_ms:,.2f} (after line {c.deep_page_from:,}) "
            f"| {c.trial_ms:,.1f} | {'; '.join(c.problems) or 'ok'} |"
        )
    return "\n".join(lines)


def _verdict(before: float, after: float, *, words: tuple[str, str] = ("falls", "grows")) -> str:
    """``words``: what it is called when the value goes down, and when it goes up."""
    ratio = after / before
    if 1 / 1.5 <= ratio <= 1.5:
        word = "flat"
    else:
        word = words[0] if ratio < 1 else words[1]
        if 1 / 3 <= ratio <= 3:
            word += " mildly"
    return f"{before:,.1f} → {after:,.1f}, x{after / before:.2f}: {word}"


def reading(checkpoints: Sequence[Checkpoint]) -> str:
    """One paragraph comparing the first and the last checkpoint, from the numbers alone."""
    if len(checkpoints) < 2:
        return "Only one checkpoint: nothing to compare."
    a, z = checkpoints[0], checkpoints[-1]
    growth = z.postings / a.postings
    worse = [
        ("balance look-up µs", a.lookup_us, z.lookup_us),
        ("balance of V00000 µs", a.hot_balance_us, z.hot_balance_us),
        ("balance_as_of µs", a.as_of_us, z.as_of_us),
        ("statement first page ms", a.first_page_ms, z.first_page_ms),
        ("statement deep page ms", a.deep_page_ms, z.deep_page_ms),
        ("trial balance ms", a.trial_ms, z.trial_ms),
    ]
    parts = [f"{name} {_verdict(x, y)}" for name, x, y in worse]
    parts.append(f"posting rate tr/s {_verdict(a.rate, z.rate, words=('falls', 'rises'))}")
    return (
        f"From {a.postings:,} to {z.postings:,} postings (x{growth:,.0f}; V00000's history "
        f"x{z.hot_postings / a.hot_postings:,.0f}, {a.hot_postings:,} → {z.hot_postings:,}): "
        + "; ".join(parts)
        + ". Verdicts are mechanical (flat: within x1.5 either way, a margin for a shared, "
        "noisy machine; mildly: within x3); a cost bounded by an index probe grows at "
        "most with the depth of the B-tree and with caches the larger database no longer fits."
    )


def render_report(backend: Backend, result: Run, info: dict[str, str], argv: Sequence[str]) -> str:
    checkpoints = result.checkpoints
    notes = [
        f"Transfers drawn like W's from random.Random({SEED}); every {HOT_EVERY}th is a deposit "
        f"to {HOT_CODE}. Posted by post_many in batches of {BATCH_TRANSFERS:,} (one transaction "
        "each, every check on; building the TransferCommands is inside the timed batch).",
        f"Posting rate: transfers per second over the last {RATE_BATCHES} batches before the "
        "checkpoint (fewer at the first checkpoint, which has only that many batches, and "
        "includes the warm-up).",
        f"Balance: mean over {LOOKUP_CALLS:,} `balance` calls on accounts drawn with seed "
        f"{LOOKUP_SEED} ({HOT_CODE} among them), and over {HOT_BALANCE_CALLS} calls on "
        f"{HOT_CODE} alone. balance_as_of: mean over {AS_OF_CALLS} calls on {HOT_CODE} at the "
        "instant its history was half as long.",
        f"Statement: mean over {STATEMENT_CALLS} calls of `statement('{HOT_CODE}', "
        f"limit={PAGE_LINES})` for the first page, and with `after=` the entry id of a posting "
        "in the middle of its history for the deep page. Trial balance: mean of "
        f"{TRIAL_CALLS} calls over the {len(ACCOUNT_CODES):,} accounts.",
        "Check: every measured read is compared with balances kept in Python while filling.",
    ]
    if backend == "postgres":
        notes.append("PostgreSQL: ANALYZE (untimed) before measuring at each checkpoint.")
    if result.progress:
        curve = ", ".join(f"{p / 1e6:g}M: {rate:,.0f}" for p, rate in result.progress)
        notes.append(
            f"Posting rate along the fill (tr/s over the last {RATE_BATCHES} batches, every "
            f"{PROGRESS_BATCHES * BATCH_TRANSFERS * POSTINGS_PER_TRANSFER:,} postings): {curve}."
        )
    body = [
        f"# Growth: {backend}",
        "",
        f"Command: `python benchmarks/growth.py {' '.join(argv)}`".rstrip(),
        "",
        render_table(checkpoints),
        "",
        *(f"- {note}" for note in notes),
        f"- Run time for this backend: {result.seconds:,.0f} s (filling and measuring).",
        "",
        "## Reading",
        "",
        reading(checkpoints),
        "",
        "## Machine",
        "",
        *(f"- {key}: {value}" for key, value in info.items()),
        "",
    ]
    return "\n".join(body)


def report_stem(backend: Backend, max_postings: int) -> str:
    """growth-<backend> for the default run; a run to another size says which, so that it
    does not overwrite the default run's file."""
    if max_postings == DEFAULT_MAX_POSTINGS:
        return f"growth-{backend}"
    return f"growth-{backend}-{_size_label(max_postings)}"


def _size_label(postings: int) -> str:
    if postings % 1_000_000 == 0:
        return f"{postings // 1_000_000}M"
    return f"{postings // 1_000}k"


# ---- command line --------------------------------------------------------------------------


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Measure how costs grow with the ledger.")
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), required=True)
    parser.add_argument(
        "--max-postings",
        type=int,
        default=DEFAULT_MAX_POSTINGS,
        choices=CHECKPOINTS_POSTINGS,
        help="the last checkpoint (default 1,000,000)",
    )
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL, help="an existing database to admin")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    backends: list[Backend] = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    for backend in backends:
        print(f"[{backend}] up to {args.max_postings:,} postings", flush=True)
        result = run_backend(backend, args)
        info = machine_info(backend, make_url(args.pg_url))
        report = render_report(backend, result, info, argv)
        save_result(report_stem(backend, args.max_postings), report)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
