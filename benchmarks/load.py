"""Sustained concurrent load on PostgreSQL: the simulation's mix of time-bank commands, run
by many worker threads (each station's day of work is one task; 16 workers by default, each
with its own connection), for several minutes.

Reports business operations and ledger entries per second, the latency of each operation
(one database transaction, retries included: p50, p99, max), the retries the library made
and why (serialization failures, deadlocks, lock timeouts, unique-key races), the refusals
by reason, and the audit at the end (the chain sealed, every balance, lot and the zero
sum). Deadlocks must be 0: every writer locks rows in one canonical order.

    python benchmarks/load.py --db postgresql+psycopg://postgres@127.0.0.1:5432/load
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url

import timebank.bank.api as bank_api
import timebank.ledger as ledger_module
import timebank.simulation.run as simulation_run
from timebank import Ledger, audit, seal
from timebank._db import is_retryable
from timebank.simulation import Scenario, simulate

LOCK = threading.Lock()
LATENCIES: list[float] = []
SLOWEST: Counter[str] = Counter()  # operation -> its slowest time (ms)
RETRIES: Counter[str] = Counter()
PHASE: dict[str, float] = {}
REASONS = {"40001": "serialization failure", "40P01": "deadlock",
           "55P03": "lock not available"}


def instrument() -> None:
    """Time every business operation (``TimeBank._act``: one transaction, retries included)
    and count the retries the library makes, by reason."""
    original_act = bank_api.TimeBank._act

    def timed_act(self: bank_api.TimeBank, fn: Callable[[Any], Any]) -> Any:
        started = time.perf_counter()
        try:
            return original_act(self, fn)
        finally:
            elapsed = time.perf_counter() - started
            # The act's lambda is defined in the public method: its name says which.
            operation = fn.__qualname__.split(".<locals>")[0].removeprefix("TimeBank.")
            with LOCK:
                LATENCIES.append(elapsed)
                SLOWEST[operation] = max(SLOWEST[operation], round(elapsed * 1000))

    def counted_retryable(error: sa_exc.DBAPIError) -> bool:
        retry = is_retryable(error)
        if retry:
            code = getattr(error.orig, "sqlstate", None) or "other"
            with LOCK:
                RETRIES[REASONS.get(str(code), str(code))] += 1
        return retry

    original_race = bank_api._unique_race

    def counted_race(error: sa_exc.IntegrityError) -> bool:
        race = original_race(error)
        if race:
            with LOCK:
                RETRIES["unique-key race"] += 1
        return race

    original_build = simulation_run.__dict__["build"]

    def build_then_measure(*args: Any, **kwargs: Any) -> Any:
        world = original_build(*args, **kwargs)
        with LOCK:  # the load is the days' work: the programme's set-up is not timed
            LATENCIES.clear()
            RETRIES.clear()
            SLOWEST.clear()
            PHASE["days_started"] = time.perf_counter()
        return world

    # The modules call these by the names they imported: replace them there.
    bank_api.TimeBank._act = timed_act  # type: ignore[method-assign]
    for module, name, replacement in (
        (bank_api, "is_retryable", counted_retryable),
        (ledger_module, "is_retryable", counted_retryable),
        (bank_api, "_unique_race", counted_race),
        (simulation_run, "build", build_then_measure),
    ):
        setattr(module, name, replacement)


def fresh_database(url: str) -> None:
    """Drop and create the database ``url`` names (PostgreSQL), so each run starts empty."""
    parsed = make_url(url)
    admin = create_engine(parsed.set(database="postgres"), isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{parsed.database}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{parsed.database}"'))
    admin.dispose()


def seal_while(url: str, every: float, stop: threading.Event) -> None:
    """Seal every ``every`` seconds until ``stop``; counts the blocks and the time taken."""
    while not stop.wait(every):
        if "days_started" not in PHASE:
            continue  # the simulation is still creating the schema and the programme
        try:
            with Ledger.open(url) as ledger:
                started = time.perf_counter()
                blocks = seal(ledger)
                PHASE["seal_seconds"] = PHASE.get("seal_seconds", 0.0) + (
                    time.perf_counter() - started)
                PHASE["seal_blocks"] = PHASE.get("seal_blocks", 0.0) + len(blocks)
        except Exception as error:  # noqa: BLE001 - reported, the load goes on
            print(f"sealer: {type(error).__name__}: {error}", file=sys.stderr)


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", required=True, help="a PostgreSQL URL (recreated empty)")
    parser.add_argument("--workers", type=int, default=16)
    parser.add_argument("--members", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--seal-every", type=float, default=5.0,
                        help="seconds between seals while the load runs (0: no sealer)")
    args = parser.parse_args(argv)
    if make_url(args.db).get_backend_name() != "postgresql":
        parser.error("--db must be a PostgreSQL URL")
    fresh_database(args.db)
    instrument()
    scenario = Scenario.province(members=args.members, days=args.days)
    print(f"load: {args.workers} workers, {args.members:,} members, {args.days} days, "
          f"PostgreSQL", flush=True)
    started = time.perf_counter()
    stop = threading.Event()
    sealer = threading.Thread(target=seal_while, args=(args.db, args.seal_every, stop))
    if args.seal_every > 0:
        sealer.start()  # sealing runs beside the posting: it must not slow it down
    try:
        summary = simulate(args.db, scenario, seed=args.seed, progress=sys.stderr,
                           workers=args.workers)
    finally:
        stop.set()
        if sealer.is_alive():
            sealer.join()
    ended = time.perf_counter()
    seconds = ended - PHASE["days_started"]
    print(summary.render())
    with Ledger.open(args.db) as ledger:
        sealing = time.perf_counter()
        blocks = seal(ledger)
        sealed_in = time.perf_counter() - sealing
        report = audit(ledger)
    entries = summary.invariants.entries
    ms = [x * 1000 for x in LATENCIES]
    print(f"set-up {PHASE['days_started'] - started:,.1f} s (not measured); the days: "
          f"{seconds:,.1f} s, {summary.operations:,} commands ({summary.operations / seconds:,.0f}"
          f"/s), {entries:,} entries ({entries / seconds:,.0f}/s)")
    print(f"transactions of the days: {len(ms):,}; latency p50 {statistics.median(ms):.1f} ms, "
          f"p99 {percentile(ms, 0.99):.1f} ms, max {max(ms):.1f} ms")
    print(f"slowest by operation (ms): {dict(SLOWEST.most_common(6))}")
    print(f"retries: {dict(RETRIES) or 'none'}; deadlocks: {RETRIES.get('deadlock', 0)}")
    print(f"refusals: {summary.refusals}")
    print(f"sealed while loading: {PHASE.get('seal_blocks', 0):.0f} blocks in "
          f"{PHASE.get('seal_seconds', 0.0):.1f} s of sealing; at the end {len(blocks)} more "
          f"in {sealed_in:.1f} s")
    print(report.render())
    ok = summary.ok and report.ok and RETRIES.get("deadlock", 0) == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
