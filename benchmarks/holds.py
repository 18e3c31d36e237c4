"""Resolving a hold on a station's account as the holds grow.

    python benchmarks/holds.py [--backend sqlite|postgres|both] [--step RESOLVED LIVE ...]

A station's account holds every booking made there. When a hold resolves, the accounts whose
soonest pending expiry it was look the next one up. At each step (resolved holds on the
station's account, half on each side, and live bookings elsewhere: pending holds between two
other accounts, most expiring before the station's; both inserted directly), the time of
``void_hold`` of a booking whose expiry is the station's soonest, RESOLVES times, with:

1. the library: an account's holds by (account, status, expiry) on either side, read one
   side at a time;
2. the baseline, in the same database: the code before migration 0016, its indexes by account
   alone and its look-up of the next expiry with the two sides in one condition (OR),
   which is copied below and patched in for the baseline's rounds.

The two run in turn first. Only the next expiry's look-up differs on this path: releasing
expired holds, rewritten the same way, is not timed here (no hold falls due).

Only a run with the default arguments writes benchmarks/results/holds-<backend>-<date>.md.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock

from run_w import DEFAULT_PG_URL, machine_info, recreate_database, save_result
from sqlalchemy import Connection, Engine, func, make_url, or_, select, text

import timebank._accounts
from timebank import Ledger
from timebank._accounts import LockedAccount
from timebank.schema import UTCDateTime, accounts, holds

RESOLVES = 200
T0 = datetime(2026, 1, 1, tzinfo=UTC)
#: (resolved holds on the station's account, live bookings elsewhere), grown in this order.
DEFAULT_STEPS = ((1_000, 1_000), (1_000_000, 1_000), (1_000_000, 100_000))
LIBRARY = "library: by (account, status, expiry)"
BASELINE = "baseline: by account alone (before 0016)"
_NEW = "ix_tb_holds_{side}_account_id_status_expires_at"
_OLD = "ix_tb_holds_{side}_account_id"


def open_ledger(backend: str, pg_url: str, directory: Path) -> Ledger:
    if backend == "sqlite":
        path = directory / "holds.db"
        path.unlink(missing_ok=True)
        return Ledger.open(f"sqlite:///{path}")
    return Ledger.open(recreate_database(pg_url, "holds"))


def _series(engine: Engine) -> tuple[str, str, str]:
    """(WITH clause, FROM source, instant of row n: :t0 and n seconds, stored as the library
    stores it) for a series of n = 1 .. :n."""
    if engine.dialect.name == "postgresql":
        at = "CAST(:t0 AS timestamp) + g.n * interval '1 second'"
        return "", "generate_series(1, :n) AS g(n)", at
    return (
        "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < :n) ",
        "g",
        ":t0 + g.n * 1000000",  # SQLite: integer microseconds since the epoch
    )


def _stored(engine: Engine, instant: datetime) -> Any:
    """``instant`` as the library stores it on ``engine``'s database."""
    return UTCDateTime().process_bind_param(instant, engine.dialect)


def _insert_holds(conn: Connection, select_list: str, values: dict[str, Any]) -> None:
    """Insert :n holds, one a row of ``select_list`` (the columns below, over g.n and
    ``{at}``, the instant :t0 plus n seconds)."""
    with_, source, at = _series(conn.engine)
    conn.execute(
        text(
            f"{with_}INSERT INTO tb_holds (idempotency_key, code, debit_account_id, "
            "credit_account_id, amount_minutes, status, operator, memo, created_at, expires_at, "
            "resolved_at, resolution_key, resolved_by, resolution_memo) "
            f"SELECT {select_list.format(at=at)} FROM {source}"
        ),
        values,
    )


def add_history(engine: Engine, station_id: int, member_id: int, first: int, count: int) -> None:
    """``count`` voided holds between the station and a member, half on each side, numbered
    from ``first``."""
    if count <= 0:
        return
    values = {"n": count, "first": first, "t0": _stored(engine, T0), "station": station_id,
              "member": member_id}
    with engine.begin() as conn:
        _insert_holds(conn, (
            "'old' || (g.n + :first), 'booking', "
            "CASE WHEN g.n % 2 = 0 THEN :station ELSE :member END, "
            "CASE WHEN g.n % 2 = 0 THEN :member ELSE :station END, 10, 'voided', 'bench', '', "
            "{at}, {at}, {at}, 'old-void' || (g.n + :first), 'bench', ''"
        ), values)
    analyze(engine)


def add_pending(engine: Engine, debit_id: int, credit_id: int, first: int, count: int) -> None:
    """``count`` live bookings elsewhere: pending holds of a minute between two other
    accounts, expiring a second apart from an hour from now (most before the station's
    bookings, which expire a day from now), with the accounts' held minutes and expiry hint
    kept as the library keeps them."""
    if count <= 0:
        return
    soon = datetime.now(UTC) + timedelta(hours=1, seconds=first)
    values = {"n": count, "first": first, "t0": _stored(engine, soon),
              "created": _stored(engine, T0),
              "debit": debit_id, "credit": credit_id}
    soonest = (
        select(func.min(holds.c.expires_at))
        .where(holds.c.status == "pending", holds.c.debit_account_id == debit_id)
        .scalar_subquery()
    )
    with engine.begin() as conn:
        _insert_holds(conn, (
            "'live' || (g.n + :first), 'booking', :debit, :credit, 1, 'pending', 'bench', "
            "'', :created, {at}, NULL, NULL, NULL, NULL"
        ), values)
        conn.execute(accounts.update().where(accounts.c.id == debit_id).values(
            held_out_minutes=accounts.c.held_out_minutes + count, version=accounts.c.version + 1,
            next_hold_expiry_at=soonest))
        conn.execute(accounts.update().where(accounts.c.id == credit_id).values(
            held_in_minutes=accounts.c.held_in_minutes + count, version=accounts.c.version + 1,
            next_hold_expiry_at=soonest))
    analyze(engine)


def analyze(engine: Engine) -> None:
    """PostgreSQL: statistics as autovacuum would keep them (it is off here). SQLite: none,
    as the library never runs ANALYZE there."""
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(text("ANALYZE tb_holds"))


def use_indexes(engine: Engine, old: bool) -> None:
    """The baseline's single-column indexes, or the library's."""
    drop, make = (_NEW, _OLD) if old else (_OLD, _NEW)
    columns = "{side}_account_id" if old else "{side}_account_id, status, expires_at"
    with engine.begin() as conn:
        for side in ("debit", "credit"):
            conn.execute(text(
                f"CREATE INDEX {make.format(side=side)} ON tb_holds ({columns.format(side=side)})"
            ))
            conn.execute(text(f"DROP INDEX {drop.format(side=side)}"))
    analyze(engine)


def refresh_next_expiry_before_0016(
    conn: Connection, targets: Sequence[LockedAccount], *, leaving: int | None = None
) -> None:
    """``timebank._accounts.refresh_next_expiry`` as it was before migration 0016."""
    for account in targets:
        conditions = [
            holds.c.status == "pending",
            or_(holds.c.debit_account_id == account.id, holds.c.credit_account_id == account.id),
        ]
        if leaving is not None:
            conditions.append(holds.c.id != leaving)
        soonest = conn.execute(select(func.min(holds.c.expires_at)).where(*conditions)).scalar()
        if soonest != account.next_hold_expiry_at:
            account.next_hold_expiry_at = soonest
            account.expiry_dirty = True


def resolve_times(ledger: Ledger, tag: str) -> list[float]:
    """Book RESOLVES holds from the station, then void each, soonest first: each void makes
    the station look its next pending expiry up."""
    now = datetime.now(UTC)
    ids = [
        ledger.hold(
            f"{tag}-{n}", debit="station", credit="member", amount_minutes=1, code="booking",
            operator="bench", expires_at=now + timedelta(days=1, minutes=n),
        ).id
        for n in range(RESOLVES)
    ]
    seconds = []
    for n, hold_id in enumerate(ids):
        started = time.perf_counter()
        ledger.void_hold(hold_id, idempotency_key=f"{tag}-void-{n}", operator="bench")
        seconds.append(time.perf_counter() - started)
    return seconds


def timed(ledger: Ledger, tag: str, *, old: bool) -> list[float]:
    if not old:
        return resolve_times(ledger, tag)
    use_indexes(ledger.engine, old=True)
    try:
        with mock.patch.object(
            timebank._accounts, "refresh_next_expiry", refresh_next_expiry_before_0016
        ):
            return resolve_times(ledger, tag)
    finally:
        use_indexes(ledger.engine, old=False)


def run(backend: str, steps: Sequence[tuple[int, int]], pg_url: str) -> str:
    lines = [
        f"# Resolving a hold as the holds grow: {backend}",
        "",
        f"Command: `python benchmarks/holds.py {' '.join(sys.argv[1:])}`".rstrip(),
        "",
        f"`void_hold` of a booking whose expiry is the station's soonest, {RESOLVES} times "
        "per row; ms. History: voided holds between the station and the member the bookings "
        "are for, half on each side; live bookings elsewhere: pending holds between two other "
        "accounts. Both inserted directly (SQL), the accounts' held minutes kept.",
        "",
        "| resolved holds on the account | live bookings elsewhere | code | p50 ms | p99 ms "
        "| mean ms |",
        "|--:|--:|---|--:|--:|--:|",
    ]
    with tempfile.TemporaryDirectory() as directory:
        ledger = open_ledger(backend, pg_url, Path(directory))
        try:
            ids = {
                code: ledger.open_account(code, "site", floor_minutes=None).id
                for code in ("station", "member", "other-a", "other-b")
            }
            history = pending = 0
            for step, (want_history, want_pending) in enumerate(steps):
                print(f"[{backend}] {want_history:,} resolved, {want_pending:,} live", flush=True)
                add_history(ledger.engine, ids["station"], ids["member"], history,
                            want_history - history)
                add_pending(ledger.engine, ids["other-a"], ids["other-b"], pending,
                            want_pending - pending)
                history, pending = want_history, want_pending
                # In turn first, so neither always finds the other's pages in the cache.
                order = ((LIBRARY, False), (BASELINE, True))
                for label, old in order if step % 2 == 0 else order[::-1]:
                    tag = f"h{history}-p{pending}-{int(old)}"
                    ms = [s * 1000 for s in timed(ledger, tag, old=old)]
                    p99 = statistics.quantiles(ms, n=100)[98]
                    lines.append(
                        f"| {history:,} | {pending:,} | {label} | {statistics.median(ms):.3f} "
                        f"| {p99:.3f} | {statistics.fmean(ms):.3f} |"
                    )
        finally:
            ledger.dispose()
    lines += ["", "## Machine", ""]
    info = machine_info(backend, make_url(pg_url))  # type: ignore[arg-type]
    lines += [f"- {k}: {v}" for k, v in info.items()]
    return "\n".join(lines) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), default="both")
    parser.add_argument(
        "--step", type=int, nargs=2, action="append", metavar=("RESOLVED", "LIVE"),
        help="resolved holds on the station's account and live bookings elsewhere, in order",
    )
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    steps = [tuple(step) for step in args.step] if args.step else list(DEFAULT_STEPS)
    backends = ("sqlite", "postgres") if args.backend == "both" else (args.backend,)
    trial = args.step is not None
    for backend in backends:
        save_result(f"holds-{backend}", run(backend, steps, args.pg_url), trial=trial)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
