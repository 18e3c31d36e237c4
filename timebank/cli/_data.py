"""Data in and out (export, import), the sealed chain (seal, digest, audit), and
simulations (demo, simulate)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TextIO, cast, get_args

import click

from timebank import errors
from timebank._demo import run_demo
from timebank.bank._io import EXPORT_COLUMNS, ExportFormat, ExportTable
from timebank.cli import EXIT_DATABASE, EXIT_INTERNAL, EXIT_REFUSED
from timebank.cli._app import common
from timebank.cli._output import emit, note
from timebank.cli._progress import reading, writing
from timebank.cli._root import root
from timebank.cli._state import STATE, as_url
from timebank.sealing import ENTRIES_PER_BLOCK, Digest, audit, digest, seal
from timebank.simulation import Scenario
from timebank.simulation import simulate as run

#: Where ``timebank demo`` writes when --db is not given (never TIMEBANK_DATABASE_URL: a
#: demonstration must not land in a real bank's database).
DEMO_DB = "timebank-demo.db"


@root.command()
@common(json_output=False)
@click.argument("table", type=click.Choice(list(EXPORT_COLUMNS)))
@click.option("--programme", "-p", envvar="TIMEBANK_PROGRAMME", show_envvar=True,
              help="Only this programme's rows [default: every row].")
@click.option("--format", "fmt", type=click.Choice(get_args(ExportFormat)), default="csv",
              show_default=True)
@click.option("--output", "-O", "output", default="-", show_default=True,
              help="A file to write, or - for stdout.")
def export(table: str, programme: str | None, fmt: ExportFormat, output: str) -> None:
    """Export TABLE (entries, postings, members, lots) as CSV or JSON Lines, streamed.
    Members carry no personal data.

    \b
    Example:
      timebank export postings -p nj --format jsonl -O postings.jsonl
    """
    bank = STATE.bank()
    if output == "-":
        rows = bank.export(cast(ExportTable, table), sys.stdout, format=fmt, programme=programme)
    else:  # a bar on the terminal would mix with rows on stdout: only with -O
        with _replacing(Path(output)) as out, writing(out, f"exporting {table}") as tracked:
            rows = bank.export(cast(ExportTable, table), tracked, format=fmt,
                               programme=programme)
    note(f"{rows:,} {table} rows exported")


@contextmanager
def _replacing(path: Path) -> Iterator[TextIO]:
    """A new file written beside ``path`` and renamed over it only once complete: a failed
    export leaves an earlier file as it was."""
    partial = path.with_name(f".{path.name}.partial")
    try:
        out = partial.open("w", encoding="utf-8", newline="")
    except OSError as error:
        raise click.BadParameter(f"cannot write {path}: {error.strerror}") from None
    try:
        with out:
            yield out
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)


@root.command("import")
@common()
@click.argument("source", type=click.File("r", encoding="utf-8"))
@click.option("--programme", "-p", required=True, envvar="TIMEBANK_PROGRAMME",
              show_envvar=True)
@click.option("--operator", "-o", required=True, envvar="TIMEBANK_OPERATOR", show_envvar=True,
              help="Records the imported services and redemptions.")
@click.option("--confirm-operator", help="Confirms the imported services [default: --operator].")
@click.option("--batch-rows", type=click.IntRange(min=1),
              help="Commit every N rows (a batch with a rejected row is rolled back whole) "
              "[default: the whole file or nothing].")
@click.option("--skip-rejected", is_flag=True,
              help="Commit a batch's accepted rows even when others were rejected.")
@click.option("--method", type=click.Choice(["bulk", "rows"]), default="bulk", show_default=True,
              help="bulk: judged in memory, written in many-row statements; rows: each row "
              "through the one-at-a-time API.")
def import_(source: TextIO, programme: str, operator: str, confirm_operator: str | None,  # noqa: PLR0917 - one per option
            batch_rows: int | None, skip_rejected: bool, method: str) -> None:
    """Import a programme's history (services, redemptions, gifts) from a CSV file (- for
    stdin); a row already imported (same key, same content) is not written again. Exits 4
    when any row is rejected.

    \b
    Example:
      timebank import history.csv -p nj -o migration --batch-rows 10000
    """
    bank = STATE.bank()
    with reading(source, f"importing {source.name}") as tracked:
        result = bank.import_history(
            programme, tracked, operator=operator, confirm_operator=confirm_operator,
            batch_rows=batch_rows, skip_rejected=skip_rejected,
            method="rows" if method == "rows" else "bulk",
        )
    emit(result, text=_import_text(result.model_dump(mode="json")))
    if not result.ok:
        STATE.exit_code = EXIT_REFUSED


def _import_text(report: dict[str, object]) -> str:
    lines = [f"{key}: {value}" for key, value in report.items() if key != "rejected"]
    rejected = report.get("rejected") or []
    assert isinstance(rejected, list)
    lines += [f"rejected line {row['line']}: {row['reason']}" for row in rejected]
    return "\n".join(lines)


@root.command()
@common(json_output=False, db=False)
@click.option("--db", default=DEMO_DB, show_default=True,
              help="A new SQLite file, or the URL of an empty database.")
@click.option("--seed", type=int, default=7, show_default=True)
def demo(db: str, seed: int) -> None:
    """Simulate a month of a small province into a new database, then print a station
    report, clearing between counties, the guarantee exposure and the invariant checks.

    \b
    Example:
      timebank demo --db demo.db
    """
    if not run_demo(as_url(db), click.echo, seed=seed, progress=sys.stderr):
        note("timebank: internal: the demo's invariant checks failed (see above)")
        STATE.exit_code = EXIT_INTERNAL


@root.command("seal")
@common()
@click.option("--entries-per-block", type=click.IntRange(1, ENTRIES_PER_BLOCK),
              default=ENTRIES_PER_BLOCK, show_default=True)
def seal_command(entries_per_block: int) -> None:
    """Seal every entry not yet sealed into the hash chain (run it daily, or after each
    batch; cheap, and posting never waits for it).

    \b
    Example:
      timebank seal && timebank digest -O digest-$(date +%F).json
    """
    blocks = seal(STATE.bank().ledger, entries_per_block=entries_per_block)
    emit(blocks, title="blocks sealed")


@root.command("digest")
@common(json_output=False)
@click.option("--output", "-O", default="-", show_default=True,
              help="A file to write, or - for stdout.")
def digest_command(output: str) -> None:
    """Print the latest seal's digest (JSON, no personal data) for a third party to keep:
    `timebank audit --digest FILE` then detects any rewrite of what it covers.

    \b
    Example:
      timebank digest -O /mnt/region-archive/nj-2026-11-29.json
    """
    kept = digest(STATE.bank().ledger)
    if kept is None:
        raise errors.BankObjectNotFoundError("seal", "yet: run `timebank seal` first")
    if output == "-":
        click.echo(kept.to_json())
    else:
        with _replacing(Path(output)) as out:
            out.write(kept.to_json() + "\n")
        note(f"digest of block {kept.block} written to {output}")


@root.command("audit")
@common()
@click.option("--digest", "digest_file", type=click.File("r", encoding="utf-8"),
              help="A digest kept elsewhere (from `timebank digest`) to check against.")
def audit_command(digest_file: TextIO | None) -> None:
    """Check everything: the sealed chain (and a kept digest), every balance replayed from
    its postings and holds, every lot, every member's and pool's balance against their open
    lots, the zero sum. Names what disagrees; exits 8 when anything does.

    \b
    Example:
      timebank audit --digest /mnt/region-archive/nj-2026-11-29.json
    """
    kept = None if digest_file is None else Digest.from_json(digest_file.read())
    report = audit(STATE.bank().ledger, kept=kept)
    emit(report, text=report.render())
    if not report.ok:
        note(f"timebank: database: the audit found {report.problem_count} problems (see above)")
        STATE.exit_code = EXIT_DATABASE


@root.command()
@common(db=False)
@click.option("--db", required=True,
              help="A new SQLite file, or the URL of an empty database (never taken from "
              "TIMEBANK_DATABASE_URL: a simulation must not land in a real bank).")
@click.option("--preset", type=click.Choice(["small-province", "province"]),
              default="small-province", show_default=True,
              help="small-province: 8 stations, 300 members; province: 220 stations.")
@click.option("--members", type=click.IntRange(2, 10_000_000), help="[default: the preset's]")
@click.option("--days", type=click.IntRange(1, 3_660), help="[default: the preset's]")
@click.option("--seed", type=int, default=7, show_default=True)
@click.option("--workers", type=click.IntRange(1, 64), default=1, show_default=True,
              help="Stations working at once (PostgreSQL or MariaDB; 1 is deterministic).")
def simulate(
    *, db: str, preset: str, members: int | None, days: int | None, seed: int,
             workers: int) -> None:
    """Simulate a province's time bank into an empty database (--db), with a progress bar,
    then check the invariants. The same seed and options write the same ledger.

    \b
    Example:
      timebank simulate --db sim.db --preset province --members 20000 --days 30
    """
    scenario = Scenario.small_province() if preset == "small-province" else Scenario.province()
    changes = {k: v for k, v in (("members", members), ("days", days)) if v is not None}
    scenario = scenario.model_copy(update=changes)
    Scenario.model_validate(scenario.model_dump())  # the bounds of the changed fields
    STATE.db = db
    if workers > 1 and STATE.parsed().get_backend_name() == "sqlite":
        raise errors.InvalidInputError(  # before the file is created
            "--workers above 1 needs PostgreSQL or MariaDB (SQLite writes one at a time)"
        )
    STATE.engine().dispose()  # a URL this installation cannot use fails here, creating nothing
    summary = run(STATE.url, scenario, seed=seed, progress=sys.stderr, workers=workers)
    emit(summary, text=summary.render())
    if not summary.ok:
        note("timebank: internal: the simulation's invariant checks failed (see above)")
        STATE.exit_code = EXIT_INTERNAL
