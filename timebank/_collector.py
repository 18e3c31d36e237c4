"""Python's cyclic garbage collector, paused while the library builds many objects that all
survive the build.

A collection runs after every few hundred new container objects, and each full one walks
every object of the process (an embedding application's too). While a bulk import judges a
batch, or a trial balance builds a line per account, everything made is kept until the
batch is written or the lines are returned: a collection then can free nothing. A trial
balance of a million accounts on SQLite took 2.67 s paused against 4.37 s with the collector
running (``benchmarks/results/trial-balance-sqlite-2026-11-30.md``); W's bulk import rose from
0.090 to 0.095 of the core ceiling on SQLite and from 0.197 to 0.206 on PostgreSQL
(``bank-W-*-2026-11-29-late.md`` against ``bank-W-*-2026-11-30.md``).

Reference counting still frees what is dropped; only the search for cycles waits, and, the
collector being one per process, it waits in every thread while a batch is built.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def paused() -> Iterator[None]:
    """Disable the collector for the block, and enable it again after, however the block
    ends. A collector the application disabled before the block stays disabled; one it
    disables during the block (from another thread) is enabled again at the block's end.
    Threads share the one collector: a thread that enters while another holds it paused
    leaves it alone, so the first to leave enables it again (harmless: only the saving is
    lost)."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
