"""How a province-sized simulation scales: time, peak memory and entries per second.

Runs ``Scenario.province(members, days)`` (issue 7's run by default: 100,000 members for a
year; expect hours) on a fresh database, printing the progress bar, then the summary, the
wall time, the peak resident memory and the ledger entries written per second. Memory must
stay bounded as members and days grow (the simulation keeps member ids and a small
per-member state, never the journal)::

    python benchmarks/simulation_scale.py --members 10000 --days 30
    python benchmarks/simulation_scale.py --members 20000 --days 30 --db postgresql+psycopg://...
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from timebank.simulation import Scenario, simulate


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", type=int, default=100_000)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--db", help="an empty database URL (default: a new SQLite file)")
    parser.add_argument("--tracemalloc", action="store_true",
                        help="also trace Python allocations (slower; peak of Python objects)")
    args = parser.parse_args(argv)
    url = args.db or f"sqlite:///{Path(tempfile.mkdtemp()) / 'simulation_scale.db'}"
    scenario = Scenario.province(members=args.members, days=args.days)
    print(f"simulating {args.members:,} members for {args.days} days at {url}", flush=True)
    if args.tracemalloc:
        tracemalloc.start()
    started = time.perf_counter()
    summary = simulate(url, scenario, seed=args.seed, progress=sys.stderr,
                       workers=args.workers)
    seconds = time.perf_counter() - started
    print(summary.render())
    peak_rss_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    entries = summary.invariants.entries
    print(f"wall time {seconds:,.1f} s; peak RSS {peak_rss_mib:,.0f} MiB; "
          f"{entries:,} entries, {entries / seconds:,.0f} entries/s; "
          f"{summary.operations / seconds:,.0f} commands/s")
    if args.tracemalloc:
        _, peak = tracemalloc.get_traced_memory()
        print(f"peak traced Python memory {peak / 2**20:,.1f} MiB")
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
