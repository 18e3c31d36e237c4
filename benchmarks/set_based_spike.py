"""Spike for issue 10: can the bulk import's sequential rules be decided by set-based SQL?

    python benchmarks/set_based_spike.py --backend postgres|sqlite|both [--pg-url URL]

The bulk engine (``timebank/bank/_bulk_history.py``) judges every row in Python because some
of its rules look sequential: a service is refused when it overlaps a service of the same
volunteer accepted before it; a redemption or gift is refused when the member holds fewer
minutes than it takes, and a refused row does not count for the rows after it (gifts credit
their receiver, so members depend on each other); and minutes are taken from lots first in,
first out, a gift's pieces becoming the receiver's lots with the dates they were earned on.

This script decides exactly those three rules for W's 100,000 rows of phase B, batch by
batch (1,000 rows, one transaction each), in SQL on the database, and checks every decision
against a sequential reference in Python and against what the library's bulk import of the
same rows wrote (which rows it refused, its lots, its lot uses):

- overlaps, first (they depend on services alone): a service overlapping a stored one is
  refused; then, in rounds, one that overlaps no earlier service of the batch still
  standing is accepted and one that overlaps an accepted one refused;
- refusals: the other rows are assumed accepted; running balances (window sums) find each
  member's first overdraft; an overdraft is final when nothing before it can still change (no
  gift into the member from a giver whose own balance is still in doubt: a recursive query
  follows the gifts); final ones are refused and the round runs again, until none is left;
- lots: each member's events (a deposit's lot, a gift's lots arriving, minutes out) are taken
  in rounds: in a round every member passes its next arrival, if its lots exist, then takes
  its run of minutes out up to the following arrival from its open lots, matched by two
  running sums (the lots' and what is taken): their overlaps are the lot uses; a gift's uses
  become the receiver's lots.

Only these rules: the spike trusts everything else W's rows satisfy (sites, permissions,
service shapes, roles, eligibility, relations, caps, keys), writes only its own four tables
(balances, services, lots, lot uses) and makes none of an import's other rows (entries,
postings, recipients, confirmations, redemptions, gifts, clearing rows). It answers how many
rounds the sequential part takes and how long, beside the library's bulk import of the same
rows in the same run (all of the work, on its own copy of bank_w.py's set-up). Results go to
benchmarks/results/set-based-spike-<backend>-<date>.md; the exit status is 1 if any decision
differs.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import URL, make_url

BENCHMARKS_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCHMARKS_DIR.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.append(str(REPO_ROOT))

from bank_w import (  # noqa: E402
    BATCH_ROWS,
    POLICY,
    Setup,
    import_batches,
    template,
    timed_bank,
)
from run_w import DEFAULT_PG_URL, Backend, machine_info, save_result  # noqa: E402
from workload import Workload, generate  # noqa: E402

from timebank._db import SQLITE_BUSY_TIMEOUT_MS, SQLITE_CACHE_KIB  # noqa: E402

#: (seq, kind, member, other, minutes, day, started, ended): kind d deposit (a service from
#: minute ``started`` to ``ended`` of W), r redemption, g gift.
Row = tuple[int, str, int, int | None, int, int, int | None, int | None]
#: (member, earned day, created by row, piece, minutes, remaining)
Lot = tuple[int, int, int, int, int, int]

_SCHEMA = {
    "postgresql": """
CREATE TABLE sp_balance (member int PRIMARY KEY, minutes bigint NOT NULL);
CREATE TABLE sp_lot (id bigserial PRIMARY KEY, member int NOT NULL, minutes int NOT NULL,
    remaining int NOT NULL CHECK (remaining >= 0 AND remaining <= minutes),
    earned int NOT NULL, created_seq int NOT NULL, piece int NOT NULL,
    parent bigint REFERENCES sp_lot);
CREATE TABLE sp_use (seq int NOT NULL, lot bigint NOT NULL REFERENCES sp_lot,
    minutes int NOT NULL);
CREATE TABLE sp_service (seq int PRIMARY KEY, volunteer int NOT NULL, started int NOT NULL,
    ended int NOT NULL);
CREATE TEMP TABLE stg (seq int PRIMARY KEY, kind char(1) NOT NULL, member int NOT NULL,
    other int, minutes int NOT NULL, day int NOT NULL, started int, ended int,
    refused boolean NOT NULL DEFAULT false, accepted boolean NOT NULL DEFAULT false);
CREATE TEMP TABLE ev (member int NOT NULL, seq int NOT NULL, kind char(1) NOT NULL,
    minutes int NOT NULL, day int NOT NULL, PRIMARY KEY (member, seq));
CREATE TEMP TABLE prog (member int PRIMARY KEY, p int NOT NULL, last int NOT NULL);
CREATE TEMP TABLE done_gift (seq int PRIMARY KEY);
CREATE TEMP TABLE seg_use (seq int NOT NULL, member int NOT NULL, lot bigint NOT NULL,
    part int NOT NULL, kind char(1) NOT NULL);
""",
    "sqlite": """
CREATE TABLE sp_balance (member INTEGER PRIMARY KEY, minutes INTEGER NOT NULL);
CREATE TABLE sp_lot (id INTEGER PRIMARY KEY, member INTEGER NOT NULL, minutes INTEGER NOT NULL,
    remaining INTEGER NOT NULL CHECK (remaining >= 0 AND remaining <= minutes),
    earned INTEGER NOT NULL, created_seq INTEGER NOT NULL, piece INTEGER NOT NULL,
    parent INTEGER REFERENCES sp_lot);
CREATE TABLE sp_use (seq INTEGER NOT NULL, lot INTEGER NOT NULL REFERENCES sp_lot,
    minutes INTEGER NOT NULL);
CREATE TABLE sp_service (seq INTEGER PRIMARY KEY, volunteer INTEGER NOT NULL,
    started INTEGER NOT NULL, ended INTEGER NOT NULL);
CREATE TEMP TABLE stg (seq INTEGER PRIMARY KEY, kind TEXT NOT NULL, member INTEGER NOT NULL,
    other INTEGER, minutes INTEGER NOT NULL, day INTEGER NOT NULL, started INTEGER,
    ended INTEGER, refused INTEGER NOT NULL DEFAULT 0, accepted INTEGER NOT NULL DEFAULT 0);
CREATE TEMP TABLE ev (member INTEGER NOT NULL, seq INTEGER NOT NULL, kind TEXT NOT NULL,
    minutes INTEGER NOT NULL, day INTEGER NOT NULL, PRIMARY KEY (member, seq));
CREATE TEMP TABLE prog (member INTEGER PRIMARY KEY, p INTEGER NOT NULL, last INTEGER NOT NULL);
CREATE TEMP TABLE done_gift (seq INTEGER PRIMARY KEY);
CREATE TEMP TABLE seg_use (seq INTEGER NOT NULL, member INTEGER NOT NULL, lot INTEGER NOT NULL,
    part INTEGER NOT NULL, kind TEXT NOT NULL);
""",
}
_INDEXES = """
CREATE INDEX sp_lot_open ON sp_lot (member, earned, created_seq, piece) WHERE remaining > 0;
CREATE INDEX stg_gifts ON stg (member, seq) WHERE kind = 'g';
CREATE INDEX stg_services ON stg (member, seq) WHERE kind = 'd';
CREATE INDEX sp_service_volunteer ON sp_service (volunteer, ended);
"""

# Services first (whether one is accepted depends on services alone): one overlapping a
# stored service is refused; then, in rounds, a service that overlaps no earlier service of
# the batch still standing is accepted, and one that overlaps an accepted one refused.
_OVERLAPS_STORED = """
UPDATE stg SET refused = true
WHERE kind = 'd' AND EXISTS (
    SELECT 1 FROM sp_service v
    WHERE v.volunteer = stg.member AND v.started < stg.ended AND v.ended > stg.started)
"""
_OVERLAP_ROUND = (
    """
    UPDATE stg SET accepted = true
    WHERE kind = 'd' AND NOT refused AND NOT accepted AND NOT EXISTS (
        SELECT 1 FROM stg e
        WHERE e.kind = 'd' AND NOT e.refused AND e.member = stg.member AND e.seq < stg.seq
          AND e.started < stg.ended AND e.ended > stg.started)
    """,
    """
    UPDATE stg SET refused = true
    WHERE kind = 'd' AND NOT refused AND NOT accepted AND EXISTS (
        SELECT 1 FROM stg e
        WHERE e.kind = 'd' AND e.accepted AND e.member = stg.member AND e.seq < stg.seq
          AND e.started < stg.ended AND e.ended > stg.started)
    """,
)
_SERVICES = """
INSERT INTO sp_service (seq, volunteer, started, ended)
SELECT seq, member, started, ended FROM stg WHERE kind = 'd' AND NOT refused
"""
#: Emptied after every batch.
_SCRATCH = ("stg", "ev", "prog", "done_gift", "seg_use")

# One round of refusals: the overdrafts that nothing before them can change are refused.
_REFUSAL_ROUND = """
WITH RECURSIVE legs AS (
    SELECT seq, member, CASE kind WHEN 'd' THEN minutes ELSE -minutes END AS delta,
           kind <> 'd' AS debit
    FROM stg WHERE NOT refused
    UNION ALL
    SELECT seq, other, minutes, false FROM stg WHERE kind = 'g' AND NOT refused
), run AS (
    SELECT l.seq, l.member, l.debit,
           coalesce(b.minutes, 0) + sum(l.delta) OVER (
               PARTITION BY l.member ORDER BY l.seq ROWS UNBOUNDED PRECEDING) AS after
    FROM legs l LEFT JOIN sp_balance b ON b.member = l.member
), overdraft AS (
    SELECT member, min(seq) AS seq FROM run WHERE debit AND after < 0 GROUP BY member
), doubt(member, seq) AS (
    -- From its first overdraft on, a member's balance is in doubt, and so is the balance
    -- of whoever it gives to from then on.
    SELECT member, seq FROM overdraft
    UNION
    SELECT s.other, s.seq FROM doubt d
    JOIN stg s ON s.kind = 'g' AND NOT s.refused AND s.member = d.member AND s.seq >= d.seq
), first_doubt AS (
    SELECT member, min(seq) AS seq FROM doubt GROUP BY member
)
UPDATE stg SET refused = true
WHERE seq IN (SELECT o.seq FROM overdraft o
              JOIN first_doubt f ON f.member = o.member AND f.seq = o.seq)
"""
_BALANCES = """
INSERT INTO sp_balance (member, minutes)
SELECT member, sum(delta) FROM (
    SELECT member, CASE kind WHEN 'd' THEN minutes ELSE -minutes END AS delta
    FROM stg WHERE NOT refused
    UNION ALL
    SELECT other, minutes FROM stg WHERE kind = 'g' AND NOT refused
) AS x WHERE true GROUP BY member
ON CONFLICT (member) DO UPDATE SET minutes = sp_balance.minutes + excluded.minutes
"""
# Each member's events: d a deposit's lot arrives, i a gift's lots arrive (once the giver has
# taken them), o minutes go out (a redemption, a gift).
_EVENTS = (
    """
    INSERT INTO ev (member, seq, kind, minutes, day)
    SELECT member, seq, CASE kind WHEN 'd' THEN 'd' ELSE 'o' END, minutes, day
    FROM stg WHERE NOT refused
    UNION ALL
    SELECT other, seq, 'i', minutes, day FROM stg WHERE kind = 'g' AND NOT refused
    """,
    "INSERT INTO prog (member, p, last) SELECT member, -1, max(seq) FROM ev GROUP BY member",
)
_NEXT = """
SELECT member, seq, kind, minutes, day FROM (
    SELECT e.member, e.seq, e.kind, e.minutes, e.day,
           row_number() OVER (PARTITION BY e.member ORDER BY e.seq) AS n
    FROM ev e JOIN prog p ON p.member = e.member AND e.seq > p.p
) AS x WHERE n = 1 AND (kind = 'd' OR (kind = 'i' AND seq IN (SELECT seq FROM done_gift)))
"""
_LOT_ROUND = (
    # 1. The arrivals next in line: a deposit's lot is made; a gift whose giver has taken its
    #    lots is passed. Either way the member's progress moves past it.
    f"""
    INSERT INTO sp_lot (member, minutes, remaining, earned, created_seq, piece)
    SELECT member, minutes, minutes, day, seq, 0 FROM ({_NEXT}) AS a WHERE kind = 'd'
    """,
    f"""
    UPDATE prog SET p = a.seq FROM ({_NEXT}) AS a WHERE prog.member = a.member
    """,
    # 2. Each member's run of minutes out up to its next arrival, from its open lots first
    #    in, first out: where the running sums of the lots and of the minutes out overlap.
    """
    INSERT INTO seg_use (seq, member, lot, part, kind)
    WITH stop AS (
        SELECT p.member, p.p,
               coalesce(min(e.seq) FILTER (WHERE e.kind <> 'o'), 2147483647) AS stop
        FROM prog p JOIN ev e ON e.member = p.member AND e.seq > p.p
        GROUP BY p.member, p.p
    ), outs AS (
        SELECT e.member, e.seq, e.minutes,
               sum(e.minutes) OVER (PARTITION BY e.member ORDER BY e.seq
                                    ROWS UNBOUNDED PRECEDING) - e.minutes AS lo
        FROM ev e JOIN stop s ON s.member = e.member AND e.seq > s.p AND e.seq < s.stop
        WHERE e.kind = 'o'
    ), open AS (
        SELECT l.id, l.member, l.remaining,
               sum(l.remaining) OVER (PARTITION BY l.member
                                      ORDER BY l.earned, l.created_seq, l.piece
                                      ROWS UNBOUNDED PRECEDING) - l.remaining AS lo
        FROM sp_lot l
        WHERE l.remaining > 0 AND l.member IN (SELECT member FROM outs)
    )
    SELECT o.seq, o.member, l.id,
           CASE WHEN o.lo + o.minutes < l.lo + l.remaining
                THEN o.lo + o.minutes ELSE l.lo + l.remaining END
           - CASE WHEN o.lo > l.lo THEN o.lo ELSE l.lo END,
           s.kind
    FROM outs o
    JOIN open l ON l.member = o.member
         AND l.lo < o.lo + o.minutes AND o.lo < l.lo + l.remaining
    JOIN stg s ON s.seq = o.seq
    """,
    """
    UPDATE sp_lot SET remaining = remaining - u.taken
    FROM (SELECT lot, sum(part) AS taken FROM seg_use GROUP BY lot) AS u
    WHERE sp_lot.id = u.lot
    """,
    "INSERT INTO sp_use (seq, lot, minutes) SELECT seq, lot, part FROM seg_use",
    # 3. A gift's pieces become the receiver's lots, earned when their sources were.
    """
    INSERT INTO sp_lot (member, minutes, remaining, earned, created_seq, piece, parent)
    SELECT s.other, u.part, u.part, l.earned, u.seq,
           row_number() OVER (PARTITION BY u.seq ORDER BY l.earned, l.created_seq, l.piece),
           l.id
    FROM seg_use u JOIN stg s ON s.seq = u.seq JOIN sp_lot l ON l.id = u.lot
    WHERE u.kind = 'g'
    """,
    "INSERT INTO done_gift (seq) SELECT DISTINCT seq FROM seg_use WHERE kind = 'g'",
    """
    UPDATE prog SET p = x.p
    FROM (SELECT member, max(seq) AS p FROM seg_use GROUP BY member) AS x
    WHERE prog.member = x.member
    """,
    "CLEAR seg_use",
)
_LEFT = "SELECT count(*) FROM prog WHERE p < last"
#: More rounds than this in one batch means a member made no progress: a bug, not data.
_ROUNDS_MAX = 100


def rows_of(workload: Workload) -> list[Row]:
    """Phase B as rows; members are volunteer numbers, days the UTC dates' ordinals (the
    lots' earned_on under bank_w.py's policy), times minutes since W's first transfer (a
    deposit is a service that ends when it is recorded, as bank_w.py imports it)."""
    first = workload.phase_b[0].occurred_at
    out: list[Row] = []
    for t in workload.phase_b:
        day = POLICY.local_date(t.occurred_at).toordinal()
        minute = int((t.occurred_at - first).total_seconds()) // 60
        a = t.amount_minutes
        if t.kind == "deposit":
            out.append((t.index, "d", int(t.credit[1:]), None, a, day, minute - a, minute))
        elif t.kind == "redemption":
            out.append((t.index, "r", int(t.debit[1:]), None, a, day, None, None))
        else:
            out.append((t.index, "g", int(t.debit[1:]), int(t.credit[1:]), a, day, None, None))
    return out


@dataclass
class Outcome:
    refused: set[int]
    balances: dict[int, int]
    lots: list[Lot]
    uses: list[tuple[int, int]]  # (seq, minutes)


def reference(rows: Sequence[Row]) -> Outcome:
    """The two rules applied row by row, as the bulk engine's judge applies them."""
    balances: dict[int, int] = {}
    open_lots: dict[int, list[list[int]]] = {}
    made: list[list[int]] = []
    refused: set[int] = set()
    uses: list[tuple[int, int]] = []
    busy: dict[int, list[tuple[int, int]]] = {}

    def add(lot: list[int]) -> None:
        made.append(lot)
        held = open_lots.setdefault(lot[0], [])
        held.append(lot)
        held.sort(key=lambda held_lot: (held_lot[1], held_lot[2], held_lot[3]))

    for seq, kind, member, other, minutes, day, started, ended in rows:
        if kind == "d":
            assert started is not None
            assert ended is not None
            spans = busy.setdefault(member, [])
            if any(a < ended and b > started for a, b in spans):
                refused.add(seq)
                continue
            spans.append((started, ended))
            balances[member] = balances.get(member, 0) + minutes
            add([member, day, seq, 0, minutes, minutes])
            continue
        if balances.get(member, 0) < minutes:
            refused.add(seq)
            continue
        balances[member] -= minutes
        left, piece = minutes, 0
        for lot in open_lots[member]:
            if left == 0:
                break
            part = min(left, lot[5])
            if part == 0:
                continue
            lot[5] -= part
            left -= part
            uses.append((seq, part))
            if kind == "g":
                assert other is not None
                piece += 1
                add([other, lot[1], seq, piece, part, part])
        assert left == 0, "the balance said the lots hold enough"
        if kind == "g":
            assert other is not None
            balances[other] = balances.get(other, 0) + minutes
    lots: list[Lot] = [(a, b, c, d, e, f) for a, b, c, d, e, f in made]
    return Outcome(refused, balances, lots, uses)


@dataclass
class Measured:
    seconds: float
    refusal_seconds: float
    overlap_rounds: list[int]
    refusal_rounds: list[int]
    lot_rounds: list[int]
    outcome: Outcome


class _Db:
    """The statements the spike runs, on a PostgreSQL or an SQLite connection."""

    def __init__(self, backend: Backend, url: URL) -> None:
        self.backend = backend
        if backend == "postgres":
            import psycopg  # noqa: PLC0415 - PostgreSQL runs only

            self.pg = psycopg.connect(url.set(drivername="postgresql").render_as_string(
                hide_password=False))
        else:
            assert url.database
            self.lite = sqlite3.connect(url.database, isolation_level=None)
            for pragma in (f"busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}", "journal_mode = WAL",
                           "synchronous = NORMAL", f"cache_size = -{SQLITE_CACHE_KIB}"):
                self.lite.execute(f"PRAGMA {pragma}")

    def close(self) -> None:
        (self.pg if self.backend == "postgres" else self.lite).close()

    def run(self, sql: str) -> int:
        """Execute; the number of rows it changed. ``CLEAR t`` empties a scratch table:
        TRUNCATE on PostgreSQL (a DELETE would leave its dead rows for every later batch to
        scan, and nothing vacuums temporary tables), DELETE on SQLite."""
        if sql.startswith("CLEAR "):
            table = sql.removeprefix("CLEAR ")
            sql = f"TRUNCATE {table}" if self.backend == "postgres" else f"DELETE FROM {table}"
        if self.backend == "postgres":
            return self.pg.execute(sql).rowcount
        # sqlite3 reports no rowcount for a statement that starts with WITH.
        before = self.lite.total_changes
        self.lite.execute(sql)
        return self.lite.total_changes - before

    def one(self, sql: str) -> Any:
        if self.backend == "postgres":
            found = self.pg.execute(sql).fetchone()
        else:
            found = self.lite.execute(sql).fetchone()
        assert found is not None
        return found[0]

    def all(self, sql: str) -> list[tuple[Any, ...]]:
        if self.backend == "postgres":
            return [tuple(r) for r in self.pg.execute(sql).fetchall()]
        return [tuple(r) for r in self.lite.execute(sql).fetchall()]

    def begin(self) -> None:
        if self.backend == "sqlite":
            self.lite.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        if self.backend == "postgres":
            self.pg.commit()
        else:
            self.lite.execute("COMMIT")

    def stage(self, rows: Iterable[Row]) -> None:
        columns = "seq, kind, member, other, minutes, day, started, ended"
        if self.backend == "postgres":
            with self.pg.cursor() as cursor, cursor.copy(
                f"COPY stg ({columns}) FROM STDIN"
            ) as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            marks = ", ".join("?" * len(columns.split(", ")))
            self.lite.executemany(f"INSERT INTO stg ({columns}) VALUES ({marks})", rows)

    def set_up(self) -> None:
        self.begin()
        for statement in (_SCHEMA["postgresql" if self.backend == "postgres" else "sqlite"]
                          + _INDEXES).split(";"):
            if statement.strip():
                self.run(statement)
        self.commit()


def decide(backend: Backend, url: URL, rows: Sequence[Row]) -> Measured:
    """The spike: every batch staged, its refusals and lots decided in SQL, committed."""
    db = _Db(backend, url)
    try:
        db.set_up()
        refusal_rounds: list[int] = []
        overlap_rounds: list[int] = []
        lot_rounds: list[int] = []
        refusal_seconds = 0.0
        refused: set[int] = set()
        started = time.perf_counter()
        for start in range(0, len(rows), BATCH_ROWS):
            db.begin()
            db.stage(rows[start : start + BATCH_ROWS])
            if start == 0:
                db.run("ANALYZE stg")
            began = time.perf_counter()
            db.run(_OVERLAPS_STORED)
            overlap_rounds.append(_until_none(lambda: sum(db.run(s) for s in _OVERLAP_ROUND)))
            db.run(_SERVICES)
            refusal_rounds.append(_until_none(lambda: db.run(_REFUSAL_ROUND)))
            refusal_seconds += time.perf_counter() - began
            refused.update(int(seq) for (seq,) in db.all("SELECT seq FROM stg WHERE refused"))
            db.run(_BALANCES)
            for statement in _EVENTS:
                db.run(statement)
            lot_rounds.append(_lot_rounds(db))
            for table in _SCRATCH:
                db.run(f"CLEAR {table}")
            db.commit()
        seconds = time.perf_counter() - started
        outcome = Outcome(
            refused=refused,
            balances={int(m): int(b) for m, b in db.all("SELECT member, minutes FROM sp_balance")},
            lots=[(int(a), int(b), int(c), int(d), int(e), int(f)) for a, b, c, d, e, f in db.all(
                "SELECT member, earned, created_seq, piece, minutes, remaining FROM sp_lot")],
            uses=[(int(s), int(m)) for s, m in db.all("SELECT seq, minutes FROM sp_use")],
        )
        return Measured(seconds, refusal_seconds, overlap_rounds, refusal_rounds, lot_rounds,
                        outcome)
    finally:
        db.close()


def _until_none(one_round: Callable[[], int]) -> int:
    """Run rounds until one changes nothing; how many ran (the last included)."""
    for count in range(1, _ROUNDS_MAX + 1):
        if one_round() == 0:
            return count
    raise AssertionError(f"rows still changing after {_ROUNDS_MAX} rounds")


def _lot_rounds(db: _Db) -> int:
    count = 0
    while db.one(_LEFT):
        count += 1
        if count > _ROUNDS_MAX:
            raise AssertionError(f"members still behind after {_ROUNDS_MAX} lot rounds")
        for statement in _LOT_ROUND:
            db.run(statement)
    return count


def agreement(spike: Outcome, ref: Outcome) -> dict[str, bool]:
    def held(balances: dict[int, int]) -> dict[int, int]:
        return {member: minutes for member, minutes in balances.items() if minutes}

    return {
        "refused rows": spike.refused == ref.refused,
        "balances": held(spike.balances) == held(ref.balances),
        "lots (member, day earned, made by row, piece, minutes, left)":
            sorted(spike.lots) == sorted(ref.lots),
        "lot uses (row, minutes)": sorted(spike.uses) == sorted(ref.uses),
    }


def library_agreement(url: URL, setup: Setup, spike: Outcome, rows: Sequence[Row]
                      ) -> dict[str, bool]:
    """The spike's decisions against what the library's bulk import wrote for the same rows:
    which rows it refused, its lots (member, day earned, minutes, left) and lot uses."""
    from sqlalchemy import create_engine, select, union_all  # noqa: PLC0415

    from timebank.bank.schema import gifts, lot_uses, lots, redemptions, services  # noqa: PLC0415

    volunteer = {member_id: int(code[1:]) for code, member_id in setup.members.items()}
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            kept = union_all(
                select(services.c.idempotency_key).where(services.c.status == "confirmed"),
                select(redemptions.c.idempotency_key),
                select(gifts.c.idempotency_key),
            )
            accepted = {int(key[1:]) for (key,) in conn.execute(kept)}
            stored = [
                (volunteer[m], day.toordinal(), minutes, left)
                for m, day, minutes, left in conn.execute(select(
                    lots.c.member_id, lots.c.earned_on, lots.c.minutes, lots.c.remaining_minutes))
            ]
            used = [
                (int(key[1:]), minutes)
                for table in (redemptions, gifts)
                for key, minutes in conn.execute(
                    select(table.c.idempotency_key, lot_uses.c.minutes)
                    .join(lot_uses, lot_uses.c.entry_id == table.c.entry_id))
            ]
    finally:
        engine.dispose()
    return {
        "refused rows": spike.refused == {r[0] for r in rows} - accepted,
        "lots (member, day earned, minutes, left)":
            sorted(stored) == sorted((m, d, n, left) for m, d, _c, _p, n, left in spike.lots),
        "lot uses (row, minutes)": sorted(used) == sorted(spike.uses),
    }


def run(backend: Backend, pg_url: URL, workload: Workload) -> str:
    rows = rows_of(workload)
    began = time.perf_counter()
    ref = reference(rows)
    reference_seconds = time.perf_counter() - began
    with tempfile.TemporaryDirectory(prefix="tbspike-") as directory, template(
        backend, pg_url, Path(directory), workload
    ) as (setup, copy):
        print(f"[{backend}] library bulk import (timed)", flush=True)
        imported_url = copy("spike_import")
        imported, accepted, _refused, bank = timed_bank(
            imported_url, lambda b: import_batches(b, workload.phase_b, setup, "bulk"))
        bank.dispose()
        print(f"[{backend}] set-based spike (timed)", flush=True)
        measured = decide(backend, copy("spike_sql"), rows)
        library = library_agreement(imported_url, setup, measured.outcome, rows)
    checks = {"the reference": agreement(measured.outcome, ref),
              "what the library's import wrote": library}
    return render(backend, pg_url, measured, checks=checks,
                  library=(imported, accepted), reference_seconds=reference_seconds,
                  reference=ref)


def render(backend: Backend, pg_url: URL, m: Measured, *, checks: dict[str, dict[str, bool]],
           library: tuple[float, int], reference_seconds: float, reference: Outcome) -> str:
    imported, accepted = library

    def rounds(counts: list[int]) -> str:
        return f"mean {sum(counts) / len(counts):.2f}, max {max(counts)}"

    def agreed(found: dict[str, bool]) -> str:
        return "; ".join(f"{name} {'same' if same else 'DIFFERENT'}"
                         for name, same in found.items())

    lines = [
        f"# Set-based spike of the import's sequential rules: {backend}",
        "",
        f"Command: `python benchmarks/set_based_spike.py --backend {backend}`",
        "",
        "| run, W's 100,000 rows of phase B in 100 transactions of 1,000 | s |",
        "|---|--:|",
        f"| the library's bulk import: every rule, every table ({accepted:,} rows accepted) "
        f"| {imported:.2f} |",
        "| the spike, all of it: staging, overlaps, refusals, balances, services, lots and lot "
        f"uses, commits | {m.seconds:.2f} |",
        f"| of which deciding overlaps and refusals | {m.refusal_seconds:.2f} |",
        "| the same three rules in Python, in memory, nothing written (the reference) "
        f"| {reference_seconds:.3f} |",
        "",
        f"- Rounds per batch (the last of each finds nothing to change): overlaps "
        f"{rounds(m.overlap_rounds)}; refusals {rounds(m.refusal_rounds)}; lots "
        f"{rounds(m.lot_rounds)}.",
        f"- The spike refused {len(m.outcome.refused):,} rows and made {len(m.outcome.lots):,} "
        f"lots and {len(m.outcome.uses):,} lot uses; the reference "
        f"{len(reference.refused):,}, {len(reference.lots):,} and {len(reference.uses):,}.",
        *(f"- Against {name}: {agreed(found)}." for name, found in checks.items()),
        "",
        "## Machine",
        "",
        *(f"- {key}: {value}" for key, value in machine_info(backend, pg_url).items()),
        "",
    ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--backend", choices=("sqlite", "postgres", "both"), required=True)
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    args = parser.parse_args(argv)
    backends: list[Backend] = (["sqlite", "postgres"] if args.backend == "both"
                               else [args.backend])
    workload = generate()
    failed = False
    for backend in backends:
        report = run(backend, make_url(args.pg_url), workload)
        save_result(f"set-based-spike-{backend}", report)
        failed |= "DIFFERENT" in report
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
