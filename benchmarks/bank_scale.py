"""A province grown to a million members and ten million postings through the time bank, and
how each cost grows on the way (issue 10, parts 3 and 4).

    python benchmarks/bank_scale.py --backend sqlite|postgres [--members N]
        [--checkpoints 10000,1000000,10000000] [--pg-url URL] [--sqlite-dir DIR] [--vacuum]

The programme: a province of 10 cities of 5 counties each, 4 stations a county (200) and 40
care homes, ``--members`` members (default 1,000,000) registered through
``register_members`` in calls of 10,000, and an elder at each station whom its volunteers
serve. Then history through ``import_history(method="bulk")``, 1,000 rows a batch (one
transaction each), drawn from ``random.Random(42)``: 65 % services (30 to 240 minutes at a
station, confirmed: a deposit and a lot), 35 % redemptions of care at a care home by a
member who has the minutes (the script keeps every member's balance in an array of 64-bit
integers: 8 MB a million members, the only memory that grows with the province). One
member is hot: every 25th row is a two-minute service of theirs, so their statement has
pages to turn.
A row every 6 seconds of service time from 1 September 2025: 5 million rows span a year.
The ledger's clock is simulated: each batch is recorded an hour after its last service, so
recording time runs with history, and a month of recording holds a month of history.

At 10 thousand, 1 million and 10 million postings (each row posts 2) filling stops and, with
nothing written in between, the script measures:

- balance look-up: ``ledger.balance`` of 1,000 members' accounts drawn with seed 7, p50
  and p99 of the single calls;
- balance as of a past instant: ``ledger.balance_as_of`` of the hot member at the end of
  the batch that reached half their history (mean of 200 calls, checked);
- statement pages: the hot member's first page and last page of 100 lines (mean of 50);
- a station's month: ``station_report`` of station s000 for the last 30 days recorded;
- a region's clearing: ``clearing`` at city level for those 30 days;
- what those 30 days held, as the two reports count it: services recorded at the station
  and redemptions in the programme. Early on few members have minutes to spend, so a
  month holds fewer redemptions at 1M postings than at 10M; the growth reading gives the
  reports' time per service and per redemption too;
- the trial balance of every account (one call: a million accounts);
- the posting rate: entries a second over the last 10 batches before the checkpoint;
- the control: the same balance look-ups (1,000 calls, p50 and p99) and the first
  statement page (50 calls) on a small ledger beside the province (1,000 accounts, one of
  300 postings; on the same server or in the same directory) that never grows. These
  machines are shared and their speed drifts by x2 within an hour; a look-up that grows
  with the province's history grows against the control, one that the machine slowed grows
  with it. The growth reading gives both ratios;
- how the two reports reach the history: every SELECT they run is EXPLAINed, and the table
  names the history tables (journal, postings, services, redemptions, lots, lot uses) some
  plan reads whole, "none" when every one is reached through an index.

Every balance read is checked against the array. Results (with database size per entry and
the peak resident memory) go to benchmarks/results/bank-scale-<backend>-<date>.md.
"""

from __future__ import annotations

import argparse
import gc
import io
import random
import re
import resource
import statistics
import sys
import tempfile
import time
from array import array
from collections import Counter
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager, ExitStack
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TypeVar

from sqlalchemy import URL, make_url, text

BENCHMARKS_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCHMARKS_DIR.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.append(str(REPO_ROOT))

from run_w import (  # noqa: E402 - after the path set-up
    DEFAULT_PG_URL,
    Backend,
    machine_info,
    postgres_database,
    save_result,
    sqlite_database,
)

from timebank import Ledger  # noqa: E402
from timebank.bank import NewMember, Policy, ServiceType, TimeBank  # noqa: E402
from timebank.bank._io import HISTORY_COLUMNS  # noqa: E402
from timebank.models import AccountSpec, TransferCommand  # noqa: E402
from timebank.testing.plans import query_plans  # noqa: E402

PROGRAMME = "prov"
SECRET = b"scale-secret"
OPERATOR = "admin"
CITIES = 10
COUNTIES_PER_CITY = 5
STATIONS_PER_COUNTY = 4
STATIONS = CITIES * COUNTIES_PER_CITY * STATIONS_PER_COUNTY  # 200
CARE_HOMES = 40
REGISTER_PER_CALL = 10_000
BATCH_ROWS = 1_000
HOT_EVERY = 25
HOT_SERVICE_MINUTES = 2  # a hot service every 150 s of service time
SERVICE_SHARE = 0.65
ROW_SECONDS = 6
HISTORY_START = datetime(2025, 9, 1, tzinfo=UTC)
RECORDED_AFTER = timedelta(hours=1)
LOOKUPS = 1_000
LOOKUP_SEED = 7
AS_OF_CALLS = 200
PAGE_CALLS = 50
PAGE_LINES = 100
RATE_BATCHES = 10
CONTROL_ACCOUNTS = 1_000
CONTROL_HOT_POSTINGS = 300
CHECKPOINTS = (10_000, 1_000_000, 10_000_000)
POLICY = Policy(
    service_types={"care": ServiceType(name="Care", weight_permille=1000)},
    service_minutes_max=240,
)
HEADER = ",".join(HISTORY_COLUMNS)
T = TypeVar("T")


def station_code(n: int) -> str:
    return f"s{n:03d}"


def county_of(station: int) -> str:
    county = station // STATIONS_PER_COUNTY
    return f"c{county // COUNTIES_PER_CITY}-k{county % COUNTIES_PER_CITY}"


# ---- set-up --------------------------------------------------------------------------------


def build(bank: TimeBank, members: int, analyzer: Analyzer) -> tuple[list[int], list[int]]:
    """The province, its sites and members; returns (member ids, elder ids by station)."""
    bank.create_programme(PROGRAMME, "Province", policy=POLICY, root_region="prov",
                          root_region_name="Province", administrator=OPERATOR,
                          administrator_name="Administrator")
    for city in range(CITIES):
        bank.add_region(PROGRAMME, f"c{city}", f"City {city}", level="city", parent="prov",
                        operator=OPERATOR)
        for county in range(COUNTIES_PER_CITY):
            bank.add_region(PROGRAMME, f"c{city}-k{county}", f"County {city}.{county}",
                            level="county", parent=f"c{city}", operator=OPERATOR)
    for n in range(STATIONS):
        bank.add_site(PROGRAMME, station_code(n), f"Station {n}", kind="volunteer_station",
                      region=county_of(n), operator=OPERATOR)
    for n in range(CARE_HOMES):
        bank.add_site(PROGRAMME, f"h{n:02d}", f"Care home {n}", kind="institution",
                      region=county_of(n * STATIONS // CARE_HOMES), operator=OPERATOR)
    elders = bank.register_members(PROGRAMME, [
        NewMember(identity=f"E{n}", display_name=f"Elder {n}", birth_date=date(1935, 1, 1),
                  home_site=station_code(n), acts_as="recipient")
        for n in range(STATIONS)
    ], operator=OPERATOR)
    ids: list[int] = []
    started = time.perf_counter()
    for first in range(0, members, REGISTER_PER_CALL):
        count = min(REGISTER_PER_CALL, members - first)
        ids += bank.register_members(PROGRAMME, [
            NewMember(identity=f"M{n}", display_name=f"Member {n}",
                      birth_date=date(1940 + n % 20, 1 + n % 12, 1 + n % 28),
                      home_site=station_code(n % STATIONS))
            for n in range(first, first + count)
        ], operator=OPERATOR)
        analyzer.grown_to(len(ids))
        if (first // REGISTER_PER_CALL) % 10 == 9 or first + count == members:
            rate = len(ids) / (time.perf_counter() - started)
            print(f"  registered {len(ids):,} members ({rate:,.0f}/s)", file=sys.stderr,
                  flush=True)
    return ids, elders


# ---- history -------------------------------------------------------------------------------


class Analyzer:
    """What autovacuum keeps up, on PostgreSQL, untimed. The machines here run PostgreSQL
    with autovacuum off, and a planner without statistics takes a seq scan for an index
    probe as the tables grow.

    By default ANALYZE whenever the tables have doubled since the last run. With ``vacuum``,
    ``VACUUM (ANALYZE)`` of the whole database whenever the history has grown by a fifth:
    roughly the insert threshold autovacuum applies to each history table
    (``autovacuum_vacuum_insert_scale_factor`` 0.2). Autovacuum's per-table thresholds
    would vacuum the accounts, which every posting rewrites, far more often; this is the
    closer of two simple approximations, not autovacuum. VACUUM prunes dead row versions
    and marks pages all-visible, which index-only scans need to skip the table."""

    def __init__(self, bank: TimeBank, *, vacuum: bool = False) -> None:
        self.engine = bank.ledger.engine
        self.vacuum = vacuum
        self.growth = 1.2 if vacuum else 2.0
        self.size = 0
        self.runs = 0
        self.seconds = 0.0

    @property
    def statement(self) -> str:
        return "VACUUM (ANALYZE)" if self.vacuum else "ANALYZE"

    def grown_to(self, size: int) -> None:
        if self.engine.dialect.name != "postgresql" or size < max(self.growth * self.size,
                                                                  10_000):
            return
        self.run()
        self.size = size

    def run(self) -> None:
        if self.engine.dialect.name != "postgresql":
            return
        started = time.perf_counter()
        # VACUUM runs outside a transaction block.
        with self.engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            conn.execute(text(self.statement))
        self.runs += 1
        self.seconds += time.perf_counter() - started


class SimulatedClock:
    """The ledger's clock during the run: history is recorded as it happens (an hour after
    each batch's last service), so reports over a month of recording time cover a month of
    history, as in a programme that has run for a year."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@dataclass
class Filler:
    """Draws rows, imports them in batches and keeps what the checks need."""

    bank: TimeBank
    members: list[int]
    elders: list[int]
    clock: SimulatedClock
    analyzer: Analyzer
    rng: random.Random = field(default_factory=lambda: random.Random(42))
    balances: array = field(default_factory=lambda: array("q"))  # type: ignore[type-arg]
    rows: int = 0
    entries: int = 0
    refused: int = 0
    seconds: float = 0.0
    batch_times: list[tuple[int, float]] = field(default_factory=list)  # (entries, s)
    hot_entries: int = 0
    hot_marks: list[tuple[datetime, int, int]] = field(default_factory=list)
    last_when: datetime = HISTORY_START
    reasons: Counter[str] = field(default_factory=Counter)

    def __post_init__(self) -> None:
        self.balances = array("q", bytes(8 * len(self.members)))

    def fill_to(self, postings: int) -> None:
        while self.entries * 2 < postings:
            self._batch()

    def _batch(self) -> None:
        lines, effects = [HEADER], {}
        for _ in range(BATCH_ROWS):
            line, effect = self._row()
            lines.append(line)
            effects[line.split(",", 1)[0]] = effect
        self.clock.now = self.last_when + RECORDED_AFTER
        started = time.perf_counter()
        report = self.bank.import_history(
            PROGRAMME, io.StringIO("\n".join(lines) + "\n"), operator=OPERATOR,
            batch_rows=BATCH_ROWS, skip_rejected=True,
        )
        seconds = time.perf_counter() - started
        self.reasons.update(re.sub(r"\d+", "N", r.reason) for r in report.rejected)
        for rejected in report.rejected:  # undo what the array assumed
            member, minutes, hot = effects.pop(rejected.key)
            self.balances[member] -= minutes
            self.hot_entries -= hot
        self.refused += len(report.rejected)
        self.entries += report.applied
        self.seconds += seconds
        self.batch_times.append((report.applied, seconds))
        self.analyzer.grown_to(len(self.members) + self.entries)
        self.hot_marks.append(
            (self.bank.ledger.clock(), self.hot_entries, self.balances[0])
        )
        if len(self.batch_times) % 100 == 0:
            print(f"  {self.entries * 2:,} postings, {self.entries / self.seconds:,.0f} "
                  "entries/s overall", file=sys.stderr, flush=True)

    def _row(self) -> tuple[str, tuple[int, int, int]]:
        """One history row and its effect on the array: (member index, minutes, hot)."""
        rng, n = self.rng, self.rows
        self.rows += 1
        when = HISTORY_START + timedelta(seconds=ROW_SECONDS * n)
        self.last_when = when
        amount = rng.randint(30, 240)
        hot = n % HOT_EVERY == 0
        if hot or rng.random() < SERVICE_SHARE:
            who = 0 if hot else rng.randrange(1, len(self.members))
            if hot:  # short services, so that the hot member's never overlap
                amount = HOT_SERVICE_MINUTES
            station = rng.randrange(STATIONS)
            start = when - timedelta(minutes=amount)
            self.balances[who] += amount
            self.hot_entries += hot
            return (f"r{n},service,{self.members[who]},{self.elders[station]},"
                    f"{station_code(station)},care,{start.isoformat()},{when.isoformat()},",
                    (who, amount, int(hot)))
        who = rng.randrange(1, len(self.members))
        amount = min(amount, self.balances[who])
        if amount < 1:  # nothing to spend: a service instead keeps the mix
            station = rng.randrange(STATIONS)
            amount = 60
            self.balances[who] += amount
            start = when - timedelta(minutes=amount)
            return (f"r{n},service,{self.members[who]},{self.elders[station]},"
                    f"{station_code(station)},care,{start.isoformat()},{when.isoformat()},",
                    (who, amount, 0))
        self.balances[who] -= amount
        home = rng.randrange(CARE_HOMES)
        return (f"r{n},redemption,{self.members[who]},,h{home:02d},care,{when.isoformat()},,"
                f"{amount}", (who, -amount, 0))

    def recent_rate(self) -> float:
        recent = self.batch_times[-RATE_BATCHES:]
        return sum(e for e, _ in recent) / sum(s for _, s in recent)


# ---- measuring -----------------------------------------------------------------------------


class Control:
    """A small ledger that never grows, measured beside the province at every checkpoint:
    what the machine gives a balance look-up and a statement page at that moment."""

    def __init__(self, url: URL) -> None:
        self.ledger = Ledger.open(url.render_as_string(hide_password=False))
        self.codes = [f"k{n}" for n in range(CONTROL_ACCOUNTS)]
        self.ledger.open_accounts(
            [AccountSpec(code="source", type="system", floor_minutes=None)]
            + [AccountSpec(code=code, type="member") for code in self.codes]
        )
        self.ledger.post_many(
            TransferCommand(idempotency_key=f"c{n}", code="deposit", debit="source",
                            credit=self.codes[0], amount_minutes=1, operator=OPERATOR)
            for n in range(CONTROL_HOT_POSTINGS)
        )

    def measure(self) -> tuple[float, float, float]:
        """Balance look-up p50 and p99 (µs) of every account; first page of the busy one
        (ms)."""
        singles = []
        gc.collect()
        for code in self.codes:
            started = time.perf_counter()
            self.ledger.balance(code)
            singles.append(time.perf_counter() - started)
        pages = timed_calls(lambda: self.ledger.statement(self.codes[0], limit=PAGE_LINES),
                            PAGE_CALLS)
        return (statistics.median(singles) * 1e6,
                statistics.quantiles(singles, n=100)[98] * 1e6,
                statistics.mean(pages) * 1e3)

    def dispose(self) -> None:
        self.ledger.dispose()


@dataclass(frozen=True)
class Checkpoint:
    postings: int
    entries: int
    refused: int
    hot_postings: int
    fill_seconds: float
    database_mb: float
    rss_mb: float
    rate: float
    lookup_p50_us: float
    lookup_p99_us: float
    control_p50_us: float
    control_p99_us: float
    control_page_ms: float
    as_of_us: float
    first_page_ms: float
    last_page_ms: float
    station_month_ms: float
    clearing_month_ms: float
    trial_ms: float
    accounts: int
    station_scans: tuple[str, ...]
    clearing_scans: tuple[str, ...]
    #: What the 30 days held, from the reports themselves: services recorded at the station
    #: and redemptions in the programme (the clearing's rows are their lots' origins).
    period_services: int
    period_redemptions: int
    problems: tuple[str, ...]


def timed_calls(action: Callable[[], object], calls: int) -> list[float]:
    gc.collect()
    out = []
    for _ in range(calls):
        started = time.perf_counter()
        action()
        out.append(time.perf_counter() - started)
    return out


def measure(filler: Filler, url: URL, codes: dict[int, str], control: Control) -> Checkpoint:
    bank, ledger, problems = filler.bank, filler.bank.ledger, []
    filler.analyzer.run()  # untimed: what autovacuum keeps
    sample = list(codes.items())[1:]
    seen: list[int] = []
    singles = []
    gc.collect()
    for index, code in sample:
        started = time.perf_counter()
        balance = ledger.balance(code).posted_minutes
        singles.append(time.perf_counter() - started)
        seen.append(balance - filler.balances[index])
    if any(seen):
        problems.append(f"{sum(1 for s in seen if s)} balances differ from the array")
    hot = codes[0]
    as_of_us = _as_of(filler, hot, problems)
    first_ms, last_ms = _pages(filler, hot, problems)
    control_p50_us, control_p99_us, control_page_ms = control.measure()
    month_start, month_end = _last_month(filler.clock.now)
    station = timed_calls(lambda: bank.station_report(PROGRAMME, station_code(0),
                                                      start=month_start, end=month_end), 5)
    clearing = timed_calls(lambda: bank.clearing(PROGRAMME, start=month_start, end=month_end,
                                                 level="city"), 5)
    station_scans, station_report = scanned_tables(bank, lambda: bank.station_report(
        PROGRAMME, station_code(0), start=month_start, end=month_end))
    clearing_scans, clearing_report = scanned_tables(bank, lambda: bank.clearing(
        PROGRAMME, start=month_start, end=month_end, level="city"))
    trial_calls = timed_calls(ledger.trial_balance, 1)
    trial = ledger.trial_balance()
    if trial.total_minutes != 0:
        problems.append("trial balance does not sum to 0")
    return Checkpoint(
        postings=filler.entries * 2,
        entries=filler.entries,
        refused=filler.refused,
        hot_postings=filler.hot_entries,
        fill_seconds=filler.seconds,
        database_mb=_database_mb(bank, url),
        rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        rate=filler.recent_rate(),
        lookup_p50_us=statistics.median(singles) * 1e6,
        lookup_p99_us=statistics.quantiles(singles, n=100)[98] * 1e6,
        control_p50_us=control_p50_us,
        control_p99_us=control_p99_us,
        control_page_ms=control_page_ms,
        as_of_us=as_of_us,
        first_page_ms=first_ms,
        last_page_ms=last_ms,
        station_month_ms=statistics.median(station) * 1e3,
        clearing_month_ms=statistics.median(clearing) * 1e3,
        trial_ms=trial_calls[0] * 1e3,
        accounts=len(trial.lines),
        station_scans=tuple(station_scans),
        clearing_scans=tuple(clearing_scans),
        period_services=station_report.services_recorded,
        period_redemptions=clearing_report.redemptions,
        problems=tuple(problems),
    )


#: Tables that grow with history: a report may read a period of them, never all of them.
HISTORY_TABLES = ("tb_entries", "tb_postings", "tb_services", "tb_redemptions", "tb_lot_uses",
                  "tb_lots", "tb_service_recipients")


def scanned_tables(bank: TimeBank, action: Callable[[], T]) -> tuple[list[str], T]:
    """Run ``action``, then ask the database for the plan of every statement it ran: the
    history tables some statement reads whole (a sequential scan), none when every one of
    them is reached through an index; and what the action returned."""
    sqlite = bank.ledger.engine.dialect.name == "sqlite"
    found: set[str] = set()
    returned: list[T] = []
    for query in query_plans(bank.ledger.engine, lambda: returned.append(action())):
        for table in HISTORY_TABLES:
            # SQLite: any SCAN reads the whole table, through an index or not (SEARCH is a
            # range). PostgreSQL: a sequential scan.
            pattern = rf"\bSCAN {table}\b" if sqlite else rf"Seq Scan on {table}\b"
            if re.search(pattern, query.plan):
                found.add(table)
    return sorted(found), returned[0]


def _as_of(filler: Filler, code: str, problems: list[str]) -> float:
    """balance_as_of of the hot member at the end of the batch that reached half their
    history, checked against the balance the array had then."""
    half = filler.hot_entries // 2
    instant, _, expected = next(m for m in filler.hot_marks if m[1] >= half)
    results: list[int] = []
    calls = timed_calls(
        lambda: results.append(filler.bank.ledger.balance_as_of(code, instant).posted_minutes),
        AS_OF_CALLS,
    )
    if set(results) != {expected}:
        problems.append(f"balance_as_of {results[0]} != {expected}")
    return statistics.mean(calls) * 1e6


def _pages(filler: Filler, code: str, problems: list[str]) -> tuple[float, float]:
    """The hot member's first page and last full page."""
    ledger = filler.bank.ledger
    ids = _entry_ids(filler, code)
    if len(ids) != filler.hot_entries:
        problems.append(f"the hot member has {len(ids)} postings, not {filler.hot_entries}")
    first = ledger.statement(code, limit=PAGE_LINES)
    if [line.entry_id for line in first.lines] != ids[:PAGE_LINES]:
        problems.append("first page differs")
    after = ids[-PAGE_LINES - 1] if len(ids) > PAGE_LINES else None
    last = ledger.statement(code, after=after, limit=PAGE_LINES)
    if [line.entry_id for line in last.lines] != ids[-PAGE_LINES:]:
        problems.append("last page differs")
    first_s = timed_calls(lambda: ledger.statement(code, limit=PAGE_LINES), PAGE_CALLS)
    last_s = timed_calls(lambda: ledger.statement(code, after=after, limit=PAGE_LINES),
                         PAGE_CALLS)
    return statistics.mean(first_s) * 1e3, statistics.mean(last_s) * 1e3


def _entry_ids(filler: Filler, code: str) -> list[int]:
    """The hot member's posted entries, read untimed (the reference for the pages)."""
    with filler.bank.ledger.engine.connect() as conn:
        return list(conn.execute(text(
            "SELECT p.entry_id FROM tb_postings p JOIN tb_accounts a ON a.id = p.account_id "
            "WHERE a.code = :code ORDER BY p.entry_id"), {"code": code}).scalars())


def _last_month(moment: datetime) -> tuple[date, date]:
    """The 30 days of recording up to ``moment``'s day, as report periods are given."""
    end = moment.date() + timedelta(days=1)
    return end - timedelta(days=30), end


def _database_mb(bank: TimeBank, url: URL) -> float:
    if url.get_backend_name() == "sqlite":
        path = str(url.database)
        return sum(Path(f"{path}{s}").stat().st_size for s in ("", "-wal")
                   if Path(f"{path}{s}").exists()) / 1e6
    with bank.ledger.engine.connect() as conn:
        size = conn.execute(text("SELECT pg_database_size(current_database())")).scalar_one()
    return int(size) / 1e6


# ---- running and reporting -----------------------------------------------------------------


@dataclass
class Run:
    members: int
    register_seconds: float
    checkpoints: list[Checkpoint]
    seconds: float
    reasons: Counter[str]
    analyze_runs: int
    analyze_seconds: float
    analyze_statement: str


def run(url: URL, control_url: URL, members: int, checkpoints_at: Sequence[int], *,
        vacuum: bool = False) -> Run:
    clock = SimulatedClock(HISTORY_START - timedelta(days=1))
    bank = TimeBank(Ledger.open(url.render_as_string(hide_password=False), clock=clock),
                    identity_secrets={PROGRAMME: SECRET})
    control = Control(control_url)
    started = time.perf_counter()
    try:
        print(f"registering {members:,} members", file=sys.stderr, flush=True)
        analyzer = Analyzer(bank, vacuum=vacuum)
        member_ids, elders = build(bank, members, analyzer)
        registered = time.perf_counter() - started - analyzer.seconds
        filler = Filler(bank, member_ids, elders, clock, analyzer)
        rng = random.Random(LOOKUP_SEED)
        sample = [0, *(rng.randrange(1, members) for _ in range(LOOKUPS))]
        codes = {i: bank.member(member_ids[i]).account for i in sample}
        checkpoints = []
        for target in checkpoints_at:
            filler.fill_to(target)
            print(f"checkpoint {filler.entries * 2:,} postings: measuring", file=sys.stderr,
                  flush=True)
            checkpoints.append(measure(filler, url, codes, control))
            print(f"  {checkpoints[-1]}", file=sys.stderr, flush=True)
    finally:
        bank.dispose()
        control.dispose()
    return Run(members, registered, checkpoints, time.perf_counter() - started, filler.reasons,
               analyzer.runs, analyzer.seconds, analyzer.statement)


def render(backend: Backend, result: Run, info: dict[str, str], argv: Sequence[str]) -> str:
    head = (
        "| postings | entries | refused | hot postings | fill s | posting rate entries/s "
        "| DB MB | bytes per entry | peak RSS MB | balance p50 µs | balance p99 µs "
        "| control: balance p50 / p99 µs, first page ms "
        "| balance as of µs | first page ms | last page ms | station month ms "
        "| city clearing ms | 30 days: services at the station, redemptions "
        "| trial balance ms (accounts) | history tables read whole "
        "| check |"
    )
    lines = [head, "|" + "--:|" * 19 + "---|---|"]
    for c in result.checkpoints:
        lines.append(
            f"| {c.postings:,} | {c.entries:,} | {c.refused:,} | {c.hot_postings:,} "
            f"| {c.fill_seconds:,.0f} | {c.rate:,.0f} | {c.database_mb:,.0f} "
            f"| {c.database_mb * 1e6 / max(c.entries, 1):,.0f} | {c.rss_mb:,.0f} "
            f"| {c.lookup_p50_us:,.0f} | {c.lookup_p99_us:,.0f} "
            f"| {c.control_p50_us:,.0f} / {c.control_p99_us:,.0f}, {c.control_page_ms:,.2f} "
            f"| {c.as_of_us:,.0f} "
            f"| {c.first_page_ms:,.2f} | {c.last_page_ms:,.2f} | {c.station_month_ms:,.1f} "
            f"| {c.clearing_month_ms:,.1f} | {c.period_services:,}, {c.period_redemptions:,} "
            f"| {c.trial_ms:,.0f} ({c.accounts:,}) "
            f"| station: {', '.join(c.station_scans) or 'none'}; clearing: "
            f"{', '.join(c.clearing_scans) or 'none'} "
            f"| {'; '.join(c.problems) or 'ok'} |"
        )
    return "\n".join([
        f"# A province through the time bank: {backend}",
        "",
        f"Command: `python benchmarks/bank_scale.py {' '.join(argv)}`".rstrip(),
        "",
        f"{result.members:,} members registered in {result.register_seconds:,.0f} s "
        f"({result.members / result.register_seconds:,.0f} a second, calls of "
        f"{REGISTER_PER_CALL:,}); whole run {result.seconds:,.0f} s"
        + (f", of which {result.analyze_runs} untimed {result.analyze_statement} runs took "
           f"{result.analyze_seconds:,.0f} s (autovacuum is off on this server: "
           + ("whenever the tables had grown by a fifth, and before each checkpoint)"
              if result.analyze_statement.startswith("VACUUM")
              else "whenever the tables had doubled, and before each checkpoint)")
           if result.analyze_runs else "") + ".",
        "",
        *lines,
        "",
        "Refused rows, by reason: "
        + ("; ".join(f"{n:,} x {why}" for why, n in result.reasons.most_common()) or "none")
        + ".",
        "",
        growth_reading(result.checkpoints),
        "",
        "## Machine",
        "",
        *(f"- {k}: {v}" for k, v in info.items()),
        "",
    ])


def growth_reading(checkpoints: Sequence[Checkpoint]) -> str:
    if len(checkpoints) < 2:
        return ""
    a, b = checkpoints[0], checkpoints[-1]
    parts = []
    for label, before, after in (
        ("balance p50", a.lookup_p50_us, b.lookup_p50_us),
        ("balance p99", a.lookup_p99_us, b.lookup_p99_us),
        ("balance as of", a.as_of_us, b.as_of_us),
        ("first page", a.first_page_ms, b.first_page_ms),
        ("last page", a.last_page_ms, b.last_page_ms),
        ("station month", a.station_month_ms, b.station_month_ms),
        ("city clearing", a.clearing_month_ms, b.clearing_month_ms),
        ("trial balance", a.trial_ms, b.trial_ms),
        ("posting rate", a.rate, b.rate),
    ):
        parts.append(f"{label} x{after / before:.2f}")
    machine = [
        ("balance p50", a.control_p50_us, b.control_p50_us),
        ("balance p99", a.control_p99_us, b.control_p99_us),
        ("first page", a.control_page_ms, b.control_page_ms),
    ]
    against = [
        ("balance p50", a.lookup_p50_us / a.control_p50_us, b.lookup_p50_us / b.control_p50_us),
        ("balance p99", a.lookup_p99_us / a.control_p99_us, b.lookup_p99_us / b.control_p99_us),
        ("first page", a.first_page_ms / a.control_page_ms, b.first_page_ms / b.control_page_ms),
        ("last page", a.last_page_ms / a.control_page_ms, b.last_page_ms / b.control_page_ms),
    ]
    # The month's activity is not the same at every checkpoint: early on few members have
    # minutes to redeem, so the reports are also read per unit of what they cover.
    per_row = [
        ("station month per service", a.station_month_ms / max(a.period_services, 1),
         b.station_month_ms / max(b.period_services, 1)),
        ("city clearing per redemption", a.clearing_month_ms / max(a.period_redemptions, 1),
         b.clearing_month_ms / max(b.period_redemptions, 1)),
    ]
    return (f"From {a.postings:,} to {b.postings:,} postings: " + "; ".join(parts) + ". "
            "The 30 days held: services at the station "
            f"x{b.period_services / max(a.period_services, 1):.2f}, redemptions "
            f"x{b.period_redemptions / max(a.period_redemptions, 1):.2f}; per unit: "
            + "; ".join(f"{label} x{after / before:.2f}" for label, before, after in per_row)
            + ". "
            "The control, which never grows, moved: "
            + "; ".join(f"{label} x{after / before:.2f}" for label, before, after in machine)
            + "; against it the province's "
            + "; ".join(f"{label} x{after / before:.2f}" for label, before, after in against)
            + ".")


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("sqlite", "postgres"), required=True)
    parser.add_argument("--members", type=int, default=1_000_000)
    parser.add_argument(
        "--checkpoints", default=",".join(str(c) for c in CHECKPOINTS),
        help="postings at which to measure (a smaller run: --checkpoints 10000,100000)",
    )
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    parser.add_argument("--sqlite-dir", default=None)
    parser.add_argument(
        "--vacuum", action="store_true",
        help="PostgreSQL: VACUUM (ANALYZE) whenever the tables grew by a fifth, as autovacuum "
             "would, instead of ANALYZE whenever they doubled",
    )
    args = parser.parse_args(argv)
    backend: Backend = args.backend
    checkpoints_at = sorted(int(c) for c in args.checkpoints.split(","))
    directory = Path(args.sqlite_dir or tempfile.mkdtemp(prefix="tbscale-"))
    def database(name: str) -> AbstractContextManager[URL]:
        if backend == "sqlite":
            return sqlite_database(directory, name)
        return postgres_database(make_url(args.pg_url), name)

    with ExitStack() as stack:
        url = stack.enter_context(database("scale"))
        control_url = stack.enter_context(database("scale_control"))
        result = run(url, control_url, args.members, checkpoints_at, vacuum=args.vacuum)
    report = render(backend, result, machine_info(backend, make_url(args.pg_url)), argv)
    top = checkpoints_at[-1]
    size = f"{top // 1_000_000}M" if top >= 1_000_000 else f"{top // 1_000}k"
    # The file names its size: a smaller run does not overwrite the 10M run's file.
    save_result(f"bank-scale-{backend}-{size}", report)
    return 0 if all(not c.problems for c in result.checkpoints) else 1


if __name__ == "__main__":
    raise SystemExit(main())
