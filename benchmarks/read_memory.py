"""Peak memory and time of reading a ledger's postings, whole and in chunks.

Issue 6 asks that analysis and exports read "in chunks so a ledger of millions of postings
fits in bounded memory". This script posts phase B of workload W (../shared/BENCHMARK.md) to
an SQLite file, at two sizes, and measures with tracemalloc (which sees numpy's and pandas'
buffers too) the peak of:

- ``analysis.postings()``: the whole table as one DataFrame (the baseline: grows with the
  ledger);
- ``analysis.iter_postings(chunk_rows=10_000)``: the same rows, one chunk at a time, summed;
- ``TimeBank.export("postings", ...)``: the CSV export, written to a sink that keeps nothing.

Run: ``python benchmarks/read_memory.py [--transfers 50000 100000]``.
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path

from contender_timebank import TimebankContender
from sqlalchemy import create_engine
from workload import generate

from timebank import Ledger, configure_sqlite
from timebank.analysis import iter_postings, postings
from timebank.bank import TimeBank


class _Sink:
    """A text stream that counts what it is given and keeps nothing."""

    def __init__(self) -> None:
        self.characters = 0

    def write(self, text: str) -> int:
        self.characters += len(text)
        return len(text)


def _measure(fn: Callable[[], object]) -> tuple[float, float, object]:
    gc.collect()
    tracemalloc.start()
    started = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - started
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    return peak / 2**20, seconds, result


def run(transfers: int, folder: Path) -> list[tuple[str, int, float, float]]:
    url = f"sqlite:///{folder / f'w{transfers}.db'}"
    engine = create_engine(url)
    configure_sqlite(engine)
    contender = TimebankContender()
    contender.setup(engine)
    contender.phase_b(engine, generate().phase_b[:transfers])
    ledger = Ledger(engine)
    bank = TimeBank(ledger, identity_secrets={})
    rows = transfers * 2

    def chunked() -> int:
        return sum(int(chunk["amount_minutes"].abs().sum()) for chunk in iter_postings(
            engine, chunk_rows=10_000))

    results = []
    for name, fn in (
        ("analysis.postings() (whole)", lambda: len(postings(engine))),
        ("analysis.iter_postings(10k)", chunked),
        ("export postings CSV", lambda: bank.export("postings", _Sink())),  # type: ignore[arg-type]
    ):
        peak, seconds, _ = _measure(fn)
        results.append((name, rows, peak, seconds))
    ledger.dispose()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--transfers", type=int, nargs="+", default=[50_000, 100_000])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        print(f"{'read':32} {'postings':>9} {'peak MiB':>9} {'seconds':>8}")
        for transfers in args.transfers:
            for name, rows, peak, seconds in run(transfers, Path(folder)):
                print(f"{name:32} {rows:>9,} {peak:>9.1f} {seconds:>8.2f}")


if __name__ == "__main__":
    main()
