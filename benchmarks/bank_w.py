"""Workload W through the time-bank API, beside the core path and the core ceiling measured
in the same run (issue 10, part 1).

    python benchmarks/bank_w.py --backend sqlite|postgres|both [--pg-url URL]
        [--rows-limit N] [--profile]

One programme holds W's accounts as a time bank has them: 20 stations (``s00``..``s19``),
10 care homes (``i0``..``i9``), 10,000 volunteers aged 70 (so their own care is redeemable),
an elder at each station whom the station's volunteers serve, and a "friend" relation from
every giver of W to their receiver (the policy lets members give to friends). Set-up is
untimed; it is built once per backend and copied for each contender.

W's transfers become the time bank's acts:

- deposit (station S -> volunteer V, a minutes, at t): a service of a minutes by V for the
  elder of S at S, from t - a to t, confirmed (weight 1,000 per mille: a minutes credited,
  one lot);
- redemption (V -> care home I): V's own care at I, a minutes at t, paid from V's lots first
  in, first out, after the age rule;
- gift (V -> W): a minutes from V's lots to W's, at t.

What the rules refuse (a redemption or gift beyond what the volunteer holds; a service
overlapping the same volunteer's previous one) is refused and counted, by reason.

Contenders, each on a fresh database:

- ``ceiling`` and ``core``: run_w.py's core ceiling and the library's ledger core on W;
- ``bank-bulk``: phase B as history imports of 1,000 rows (``method="bulk"``,
  ``skip_rejected=True``): one transaction per 1,000 rows;
- ``bank-rows``: the same with ``method="rows"`` on the first ``--rows-limit`` rows;
- on PostgreSQL, an untimed ANALYZE whenever the imported entries have doubled (what
  autovacuum keeps up; it is off on the machines here), its time taken off the phase's;
- ``bank-one``: phase O through the one-at-a-time API (``record_service`` then
  ``confirm_service``, ``redeem``, ``give``), each call its own transaction, after the bulk
  contender's phase B.

Rates are entries per second (accepted rows: each writes one entry) and rows per second
(accepted or refused). Results go to benchmarks/results/bank-W-<backend>-<date>.md; with
``--profile``, a pyinstrument profile of 10 bulk batches goes beside it.
"""

from __future__ import annotations

import argparse
import io
import re
import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from sqlalchemy import URL, create_engine, make_url, text

BENCHMARKS_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCHMARKS_DIR.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.append(str(REPO_ROOT))

from bank_scale import Analyzer  # noqa: E402
from run_w import (  # noqa: E402 - after the path set-up
    DEFAULT_PG_URL,
    PG_DATABASE_PREFIX,
    REGISTRY,
    RESULTS_DIR,
    Backend,
    Result,
    machine_info,
    run_contender,
    save_result,
)
from workload import Transfer, Workload, generate  # noqa: E402

from timebank import Ledger  # noqa: E402
from timebank.bank import Policy, ServiceType, TimeBank  # noqa: E402
from timebank.bank._io import HISTORY_COLUMNS  # noqa: E402

PROGRAMME = "w"
SECRET = b"benchmark-secret"
OPERATOR = "bench"
BATCH_ROWS = 1_000
DEFAULT_ROWS_LIMIT = 10_000
PROFILE_BATCHES = 10
POLICY = Policy(
    service_types={"care": ServiceType(name="Care", weight_permille=1000)},
    service_minutes_max=240,
    gift_relations=frozenset({"spouse", "parent", "child", "friend"}),
)
HEADER = ",".join(HISTORY_COLUMNS)


@dataclass
class Setup:
    """What the contenders need to know of the set-up: member ids by W account code."""

    members: dict[str, int] = field(default_factory=dict)
    elders: dict[str, int] = field(default_factory=dict)


@dataclass
class BankResult:
    name: str
    label: str
    rows: int
    seconds: float
    accepted: int
    refused: Counter[str]
    note: str = ""

    @property
    def entries_rate(self) -> float:
        return self.accepted / self.seconds

    @property
    def rows_rate(self) -> float:
        return self.rows / self.seconds


# ---- set-up --------------------------------------------------------------------------------


def station(code: str) -> str:
    return f"s{code[1:]}"


def institution(code: str) -> str:
    return f"i{code[1:]}"


def build(url: str, workload: Workload, policy: Policy = POLICY) -> Setup:
    """The programme (under ``policy``), its sites, members and relations (untimed)."""
    ledger = Ledger.open(url)
    bank = TimeBank(ledger, identity_secrets={PROGRAMME: SECRET})
    setup = Setup()
    try:
        bank.create_programme(PROGRAMME, "Workload W", policy=policy, root_region="w",
                              root_region_name="W", administrator=OPERATOR,
                              administrator_name="Benchmark administrator")
        for n in range(20):
            bank.add_site(PROGRAMME, f"s{n:02d}", f"Station {n}", kind="volunteer_station",
                          region="w", operator=OPERATOR)
        for n in range(10):
            bank.add_site(PROGRAMME, f"i{n}", f"Care home {n}", kind="institution",
                          region="w", operator=OPERATOR)
        for n in range(20):
            elder = bank.register_member(
                PROGRAMME, identity=f"E{n:02d}", display_name=f"Elder {n}",
                birth_date=date(1936, 1, 1), home_site=f"s{n:02d}", operator=OPERATOR,
                acts_as="recipient",
            )
            setup.elders[f"S{n:02d}"] = elder.id
        for n, code in enumerate(c for c in workload.account_codes if c.startswith("V")):
            member = bank.register_member(
                PROGRAMME, identity=f"ID{code}", display_name=code, birth_date=date(1956, 1, 1),
                home_site=f"s{n % 20:02d}", operator=OPERATOR,
            )
            setup.members[code] = member.id
        pairs = {(t.debit, t.credit) for t in workload.transfers if t.kind == "gift"}
        for giver, receiver in sorted(pairs):
            bank.relate(setup.members[receiver], setup.members[giver], "friend",
                        operator=OPERATOR)
    finally:
        bank.dispose()
    return setup


@contextmanager
def template(backend: Backend, pg_url: URL, directory: Path, workload: Workload,
             policy: Policy = POLICY) -> Iterator[tuple[Setup, Callable[[str], URL]]]:
    """Build the set-up once; yield it and a function giving each contender its own copy."""
    if backend == "sqlite":
        path = directory / "template.db"
        setup = build(f"sqlite:///{path}", workload, policy)

        def copy(name: str) -> URL:
            target = directory / f"{name}.db"
            shutil.copyfile(path, target)
            return make_url(f"sqlite:///{target}")

        yield setup, copy
        return
    admin = create_engine(pg_url, isolation_level="AUTOCOMMIT")
    source = f"{PG_DATABASE_PREFIX}bank_template"
    made: list[str] = []
    try:
        _recreate(admin, source, None)
        setup = build(pg_url.set(database=source).render_as_string(hide_password=False),
                      workload, policy)

        def clone(name: str) -> URL:
            database = f"{PG_DATABASE_PREFIX}{name}"
            _recreate(admin, database, source)
            made.append(database)
            return pg_url.set(database=database)

        yield setup, clone
    finally:
        with admin.connect() as conn:
            for database in (*made, source):
                conn.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        admin.dispose()


def _recreate(admin: object, database: str, source: str | None) -> None:
    with admin.connect() as conn:  # type: ignore[attr-defined]
        conn.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        suffix = f' TEMPLATE "{source}"' if source else ""
        conn.execute(text(f'CREATE DATABASE "{database}"{suffix}'))


# ---- the acts ------------------------------------------------------------------------------


def history_line(t: Transfer, setup: Setup) -> str:
    """Transfer ``t`` as a row of a history file."""
    when = t.occurred_at
    if t.kind == "deposit":
        volunteer = setup.members[t.credit]
        start = (when - timedelta(minutes=t.amount_minutes)).isoformat()
        return (f"w{t.index},service,{volunteer},{setup.elders[t.debit]},{station(t.debit)},"
                f"care,{start},{when.isoformat()},")
    if t.kind == "redemption":
        return (f"w{t.index},redemption,{setup.members[t.debit]},,{institution(t.credit)},"
                f"care,{when.isoformat()},,{t.amount_minutes}")
    return (f"w{t.index},gift,{setup.members[t.debit]},{setup.members[t.credit]},,,"
            f"{when.isoformat()},,{t.amount_minutes}")


REASONS = (
    ("short of minutes", re.compile(r"minutes available, not the")),
    ("overlapping service", re.compile(r"already has service")),
    # Under a policy with limits (set_based_spike.py's second scenario):
    ("over the storage cap", re.compile(r"fit under its storage cap")),
    ("over the yearly gift limit", re.compile(r"minutes a year allows")),
)


def reason_class(reason: str) -> str:
    for name, pattern in REASONS:
        if pattern.search(reason):
            return name
    return reason


def import_batches(bank: TimeBank, transfers: Sequence[Transfer], setup: Setup,
                   method: str) -> tuple[int, Counter[str]]:
    """Phase B as history imports of BATCH_ROWS rows; the file text is made in the timed
    phase (the library's input is the file)."""
    accepted = 0
    refused: Counter[str] = Counter()
    analyzer = Analyzer(bank)
    for start in range(0, len(transfers), BATCH_ROWS):
        chunk = transfers[start : start + BATCH_ROWS]
        text_ = "\n".join((HEADER, *(history_line(t, setup) for t in chunk))) + "\n"
        report = bank.import_history(PROGRAMME, io.StringIO(text_), operator=OPERATOR,
                                     batch_rows=BATCH_ROWS, method=method,  # type: ignore[arg-type]
                                     skip_rejected=True)
        accepted += report.applied
        refused.update(reason_class(r.reason) for r in report.rejected)
        analyzer.grown_to(accepted)
    UNTIMED.append(analyzer.seconds)
    return accepted, refused


#: Seconds of untimed work (ANALYZE) inside the last timed phase, taken off its time.
UNTIMED: list[float] = []


def one_at_a_time(bank: TimeBank, transfers: Sequence[Transfer], setup: Setup
                  ) -> tuple[int, Counter[str]]:
    """Phase O through the daily API: each call is its own transaction."""
    from timebank import TimebankError  # noqa: PLC0415

    accepted = 0
    refused: Counter[str] = Counter()
    for t in transfers:
        try:
            one_act(bank, t, setup)
        except TimebankError as refusal:
            refused[reason_class(_short(str(refusal)))] += 1
            continue
        accepted += 1
    return accepted, refused


def _short(reason: str) -> str:
    """The ledger's shortfall, worded as the import words it."""
    if "above its floor" in reason:
        return "minutes available, not the"
    return reason


def one_act(bank: TimeBank, t: Transfer, setup: Setup) -> None:
    key = f"o{t.index}"
    if t.kind == "deposit":
        service = bank.record_service(
            key, programme=PROGRAMME, volunteer_id=setup.members[t.credit],
            recipient_ids=[setup.elders[t.debit]], site=station(t.debit),
            service_type="care", started_at=t.occurred_at - timedelta(minutes=t.amount_minutes),
            ended_at=t.occurred_at, operator=OPERATOR,
        )
        bank.confirm_service(service.id, operator=OPERATOR)
    elif t.kind == "redemption":
        bank.redeem(key, programme=PROGRAMME, member_id=setup.members[t.debit],
                    site=institution(t.credit), service_type="care",
                    minutes=t.amount_minutes, operator=OPERATOR, occurred_at=t.occurred_at)
    else:
        bank.give(key, programme=PROGRAMME, giver_id=setup.members[t.debit],
                  receiver_id=setup.members[t.credit], minutes=t.amount_minutes,
                  operator=OPERATOR, occurred_at=t.occurred_at)


def timed_bank(url: URL, act: Callable[[TimeBank], tuple[int, Counter[str]]]
               ) -> tuple[float, int, Counter[str], TimeBank]:
    ledger = Ledger.open(url.render_as_string(hide_password=False))
    bank = TimeBank(ledger, identity_secrets={PROGRAMME: SECRET})
    UNTIMED.clear()
    started = time.perf_counter()
    accepted, refused = act(bank)
    return time.perf_counter() - started - sum(UNTIMED), accepted, refused, bank


def check(bank: TimeBank) -> str:
    report = bank.ledger.verify()
    trial = bank.ledger.trial_balance()
    problems = [] if report.ok else ["ledger.verify() failed"]
    total = trial.total_minutes
    if total != 0:
        problems.append(f"trial balance sums to {total}")
    return "; ".join(problems) or "ok"


# ---- phase Q through the bank ----------------------------------------------------------------


@dataclass
class Queries:
    lookups_seconds: float
    trial_seconds: float
    statement_seconds: float
    statement_lines: int


def queries(bank: TimeBank, workload: Workload, setup: Setup) -> Queries:
    """1,000 balance look-ups (members through ``member()``, sites' accounts through the
    ledger), the trial balance, the busiest volunteer's statement."""
    sites = {v.code: v for v in bank.sites(PROGRAMME)}
    started = time.perf_counter()
    total = 0
    for code in workload.lookups:
        if code.startswith("V"):
            total += bank.member(setup.members[code]).balance_minutes
        elif code.startswith("S"):
            issued = sites[station(code)].issued_account
            assert issued is not None, "a station issues minutes"
            total += bank.ledger.balance(issued).posted_minutes
        else:
            total += bank.ledger.balance(sites[institution(code)].redeemed_account).posted_minutes
    lookups = time.perf_counter() - started
    started = time.perf_counter()
    bank.ledger.trial_balance()
    trial = time.perf_counter() - started
    account = bank.member(setup.members[workload.busiest_volunteer()]).account
    started = time.perf_counter()
    lines = sum(1 for _ in bank.ledger.iter_statement(account))
    statement = time.perf_counter() - started
    return Queries(lookups, trial, statement, lines)


# ---- running ---------------------------------------------------------------------------------


def run_bank(backend: Backend, args: argparse.Namespace, workload: Workload, directory: Path
             ) -> tuple[list[BankResult], Queries | None, str | None]:
    results: list[BankResult] = []
    profile_text = None
    pg_url = make_url(args.pg_url)
    print(f"[{backend}] time bank: set-up (untimed)", flush=True)
    with template(backend, pg_url, directory, workload) as (setup, copy):
        rows = workload.phase_b[: args.rows_limit]
        print(f"[{backend}] bank-rows: {len(rows):,} rows", flush=True)
        seconds, accepted, refused, bank = timed_bank(
            copy("bank_rows"), lambda b: import_batches(b, rows, setup, "rows"))
        results.append(BankResult("bank-rows", "time bank, import method='rows' (prefix of W)",
                                  len(rows), seconds, accepted, refused, check(bank)))
        bank.dispose()
        print(f"[{backend}] bank-bulk: {len(workload.phase_b):,} rows", flush=True)
        url = copy("bank_bulk")
        seconds, accepted, refused, bank = timed_bank(
            url, lambda b: import_batches(b, workload.phase_b, setup, "bulk"))
        results.append(BankResult("bank-bulk", "time bank, import method='bulk'",
                                  len(workload.phase_b), seconds, accepted, refused))
        print(f"[{backend}] bank-one: {len(workload.phase_o):,} acts", flush=True)
        started = time.perf_counter()
        accepted, refused = one_at_a_time(bank, workload.phase_o, setup)
        seconds = time.perf_counter() - started
        results.append(BankResult("bank-one", "time bank, one act per call (after bank-bulk)",
                                  len(workload.phase_o), seconds, accepted, refused))
        if backend == "postgres":
            with bank.ledger.engine.begin() as conn:
                conn.execute(text("ANALYZE"))
        measured = queries(bank, workload, setup)
        results[1].note = results[2].note = check(bank)
        bank.dispose()
        if args.profile:
            profile_text = profile_bulk(copy("bank_profile"), workload, setup)
    return results, measured, profile_text


def profile_bulk(url: URL, workload: Workload, setup: Setup) -> str:
    from pyinstrument import Profiler  # noqa: PLC0415 - a tool of this script only

    transfers = workload.phase_b[: PROFILE_BATCHES * BATCH_ROWS]
    ledger = Ledger.open(url.render_as_string(hide_password=False))
    bank = TimeBank(ledger, identity_secrets={PROGRAMME: SECRET})
    profiler = Profiler(interval=0.0005)
    profiler.start()
    import_batches(bank, transfers, setup, "bulk")
    profiler.stop()
    bank.dispose()
    # An installed timebank lives under site-packages, whose frames pyinstrument hides by
    # default: without show_regex the profile names no frame of the library it profiles.
    return str(profiler.output_text(
        unicode=False, color=False, show_all=False,
        processor_options={"show_regex": r".*[\\/]timebank[\\/].*"},
    ))


def render(backend: Backend, core: Sequence[Result], results: Sequence[BankResult], *,
           measured: Queries | None, info: dict[str, str], argv: Sequence[str]) -> str:
    ceiling = next(r for r in core if r.name == "ceiling")
    core_path = next(r for r in core if r.name == "timebank")
    lines = [
        f"# Workload W through the time bank: {backend}",
        "",
        f"Command: `python benchmarks/bank_w.py {' '.join(argv)}`".rstrip(),
        "",
        "| contender | rows | s | entries | entries/s | rows/s | entries/s ÷ core ceiling B "
        "| entries/s ÷ core path B | refused (by reason) | check |",
        "|---|--:|--:|--:|--:|--:|--:|--:|---|---|",
    ]
    for label, rate, count, seconds in (
        ("Core ceiling, phase B", ceiling.b_rate, ceiling.b_count, ceiling.b_seconds),
        ("Core ceiling, phase O", ceiling.o_rate, ceiling.o_count, ceiling.o_seconds),
        ("ledger core (post_many), phase B", core_path.b_rate, core_path.b_count,
         core_path.b_seconds),
        ("ledger core (one transfer a call), phase O", core_path.o_rate, core_path.o_count,
         core_path.o_seconds),
    ):
        lines.append(
            f"| {label} | {count:,} | {seconds:.2f} | {count:,} | {rate:,.0f} | {rate:,.0f} "
            f"| {rate / ceiling.b_rate:.3f} | {rate / core_path.b_rate:.3f} | — | ok |"
        )
    for r in results:
        refused = ", ".join(f"{n:,} {reason}" for reason, n in r.refused.most_common()) or "—"
        lines.append(
            f"| {r.label} | {r.rows:,} | {r.seconds:.2f} | {r.accepted:,} "
            f"| {r.entries_rate:,.0f} | {r.rows_rate:,.0f} "
            f"| {r.entries_rate / ceiling.b_rate:.3f} | {r.entries_rate / core_path.b_rate:.3f} "
            f"| {refused} | {r.note or 'ok'} |"
        )
    one = next(r for r in results if r.name == "bank-one")
    lines += [
        "",
        f"- One at a time, against the core's phase O: bank-one {one.entries_rate:,.0f} "
        f"entries/s = {one.entries_rate / core_path.o_rate:.3f} of the core path's phase O "
        f"and {one.entries_rate / ceiling.o_rate:.3f} of the ceiling's phase O. A deposit "
        "there is two calls (record, then confirm), so two transactions.",
        "- Entries: accepted rows, one entry each. Rows: accepted and refused. Ratios divide "
        "by the baselines measured in this run.",
        "- check: `ledger.verify()` (every balance replayed from the postings) and a trial "
        "balance summing to 0, after the contender's phases.",
    ]
    if backend == "postgres":
        lines.append("- PostgreSQL: the imports' times leave out an ANALYZE run (untimed) "
                     "whenever their entries had doubled, as autovacuum would (it is off on "
                     "this server).")
    if measured is not None:
        lines += [
            f"- Phase Q on the bank-bulk database after bank-one: look-up mean "
            f"{measured.lookups_seconds / 1000 * 1e6:,.0f} µs (members through "
            f"`TimeBank.member()`, a member view of several reads; sites' accounts through "
            f"the ledger); trial balance {measured.trial_seconds * 1e3:,.1f} ms; statement of "
            f"the busiest volunteer {measured.statement_seconds * 1e3:,.1f} ms "
            f"({measured.statement_lines} lines).",
        ]
    lines += ["", "## Machine", "", *(f"- {k}: {v}" for k, v in info.items()), ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), required=True)
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    parser.add_argument("--rows-limit", type=int, default=DEFAULT_ROWS_LIMIT)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args(argv)
    backends: list[Backend] = ["sqlite", "postgres"] if args.backend == "both" else [args.backend]
    workload = generate()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    today = datetime.now(UTC).date().isoformat()
    for backend in backends:
        directory = Path(tempfile.mkdtemp(prefix="tbbank-"))
        try:
            core = [_core(name, backend, args, workload, directory) for name in ("ceiling",
                                                                                 "timebank")]
            results, measured, profile_text = run_bank(backend, args, workload, directory)
        finally:
            shutil.rmtree(directory, ignore_errors=True)
        report = render(backend, core, results, measured=measured,
                        info=machine_info(backend, make_url(args.pg_url)), argv=argv)
        # The row import's prefix is the only size: a shorter one is a trial.
        trial = args.rows_limit != DEFAULT_ROWS_LIMIT
        save_result(f"bank-W-{backend}", report, trial=trial)
        if profile_text is not None and not trial:
            profile_path = RESULTS_DIR / f"bank-W-{backend}-{today}-profile.txt"
            profile_path.write_text(profile_text, encoding="utf-8")
            print(f"profile written to {profile_path}")
    return 0


def _core(name: str, backend: Backend, args: argparse.Namespace, workload: Workload,
          directory: Path) -> Result:
    from run_w import postgres_database, sqlite_database  # noqa: PLC0415

    print(f"[{backend}] {name}", flush=True)
    database = (sqlite_database(directory, name) if backend == "sqlite"
                else postgres_database(make_url(args.pg_url), name))
    with database as url:
        return run_contender(name, REGISTRY[name], url, workload, naive_limit=10_000,
                             analyze=True)


if __name__ == "__main__":
    raise SystemExit(main())
