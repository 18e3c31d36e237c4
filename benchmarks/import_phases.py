"""Where the set-based import's time goes: its phases and statements, batch range by range.

    python benchmarks/import_phases.py --backend postgres|sqlite [--pg-url URL]
        [--batches N] [--window K]

Phase B of W (``--batches`` batches of 1,000 rows, all 100 by default) through
``import_history(method="bulk")`` with the set-based engine (``_set_history``), on a copy of
bank_w.py's set-up. Every phase of a batch (the first part's reading and judging in Python,
staging, locking, the refusal rounds, numbering, the refusals' reasons, the lots' rounds,
the writes) and every statement the engine sends is timed with ``time.perf_counter``, and
the totals are reported per window of ``--window`` batches (20 by default): W's mix changes
as it goes (more redemptions accepted later, each taking more lots). The timers wrap the
engine's methods, so the import runs a little slower than untimed; bank_copy.py gives the
untimed figure. Results go to benchmarks/results/import-phases-<backend>-<date>.md.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import make_url

BENCHMARKS_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCHMARKS_DIR.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.append(str(REPO_ROOT))

from bank_w import BATCH_ROWS, import_batches, template, timed_bank  # noqa: E402
from run_w import DEFAULT_PG_URL, Backend, machine_info, save_result  # noqa: E402
from workload import generate  # noqa: E402

from timebank.bank import _io_api, _set_history  # noqa: E402

PHASES = ("stage", "lock_accounts", "decide", "number", "refusals", "take_lots", "write")
#: Statements are named by their first words.
NAME_CHARS = 60


class Timers:
    """Seconds per phase and per statement, per window of batches."""

    def __init__(self, window: int) -> None:
        self.window = window
        self.batch = 0
        self.seconds: dict[int, dict[str, float]] = defaultdict(lambda: defaultdict(float))

    def add(self, name: str, seconds: float) -> None:
        self.seconds[(self.batch - 1) // self.window][name] += seconds

    @contextmanager
    def timing(self, name: str) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self.add(name, time.perf_counter() - started)


def statement_name(sql: str) -> str:
    return "statement: " + " ".join(sql.split())[:NAME_CHARS]


@contextmanager
def instrumented(timers: Timers) -> Iterator[None]:
    """The set-based engine chosen, its methods timed; everything restored afterwards."""
    engine = _set_history._Engine
    saved: dict[str, Any] = {name: getattr(engine, name) for name in (*PHASES, "run", "rows")}
    apply_saved = _set_history.apply_batch
    plan_saved = _set_history._Plan.__init__

    def phase(name: str, method: Callable[..., Any]) -> Callable[..., Any]:
        def timed(self: Any, *args: Any, **kwargs: Any) -> Any:
            with timers.timing(f"phase: {name}"):
                return method(self, *args, **kwargs)
        return timed

    def statement(method: Callable[..., Any]) -> Callable[..., Any]:
        def timed(self: Any, sql: str, *args: Any, **kwargs: Any) -> Any:
            with timers.timing(statement_name(sql)):
                return method(self, sql, *args, **kwargs)
        return timed

    def plan(self: Any, *args: Any, **kwargs: Any) -> None:
        with timers.timing("phase: first part, reading (members locked, keys, facts)"):
            plan_saved(self, *args, **kwargs)

    def apply(*args: Any, **kwargs: Any) -> Any:
        timers.batch += 1
        with timers.timing("batch, all of it"):
            return apply_saved(*args, **kwargs)

    default = _io_api.BULK_ENGINE
    try:
        _io_api.BULK_ENGINE = "set"
        for name in PHASES:
            setattr(engine, name, phase(name, saved[name]))
        engine.run = statement(saved["run"])  # type: ignore[method-assign]
        engine.rows = statement(saved["rows"])  # type: ignore[method-assign]
        _set_history._Plan.__init__ = plan  # type: ignore[method-assign]
        _set_history.apply_batch = apply
        _io_api.BULK_ENGINES["set"] = (_set_history.supported, apply)
        yield
    finally:
        _io_api.BULK_ENGINE = default
        for name, method in saved.items():
            setattr(engine, name, method)
        _set_history._Plan.__init__ = plan_saved  # type: ignore[method-assign]
        _set_history.apply_batch = apply_saved
        _io_api.BULK_ENGINES["set"] = (_set_history.supported, apply_saved)


def render(backend: Backend, argv: Sequence[str], timers: Timers, *, seconds: float,
           accepted: int, pg_url: str) -> str:
    windows = sorted(timers.seconds)
    names = sorted({n for w in windows for n in timers.seconds[w]},
                   key=lambda n: -sum(timers.seconds[w][n] for w in windows))
    heads = [f"batches {w * timers.window + 1}-{(w + 1) * timers.window}" for w in windows]
    lines = [
        f"# The set-based import's phases and statements: {backend}",
        "",
        f"Command: `python benchmarks/import_phases.py {' '.join(argv)}`".rstrip(),
        "",
        f"The import took {seconds:.2f} s with the timers ({accepted:,} rows accepted). "
        "Milliseconds per batch, averaged over each window; phases include their "
        "statements; the first part's judging in Python is the batch's time less its phases.",
        "",
        "| what | " + " | ".join(heads) + " |",
        "|---|" + "--:|" * len(heads),
    ]
    for name in names:
        cells = [f"{1000 * timers.seconds[w][name] / timers.window:.1f}" for w in windows]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += ["", "## Machine", "", *(f"- {k}: {v}" for k, v in
                                      machine_info(backend, make_url(pg_url)).items()), ""]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("postgres", "sqlite"), required=True)
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    parser.add_argument("--batches", type=int, default=100)
    parser.add_argument("--window", type=int, default=20)
    args = parser.parse_args(argv)
    backend: Backend = args.backend
    workload = generate()
    timers = Timers(args.window)
    with tempfile.TemporaryDirectory() as directory, template(
        backend, make_url(args.pg_url), Path(directory), workload
    ) as (setup, copy):
        rows = workload.phase_b[: args.batches * BATCH_ROWS]
        with instrumented(timers):
            seconds, accepted, _refused, bank = timed_bank(
                copy("phases"), lambda b: import_batches(b, rows, setup, "bulk"))
        bank.dispose()
    trial = (args.batches, args.window, args.pg_url) != (100, 20, DEFAULT_PG_URL)
    save_result(f"import-phases-{backend}",
                render(backend, argv, timers, seconds=seconds, accepted=accepted,
                       pg_url=args.pg_url), trial=trial)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
