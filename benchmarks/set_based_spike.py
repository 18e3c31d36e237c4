"""Spike for issue 10: can the bulk import's sequential rules be decided by set-based SQL?

    python benchmarks/set_based_spike.py --backend postgres|sqlite|both [--limits | --pool]
        [--pg-url URL]

The bulk engine (``timebank/bank/_bulk_history.py``) judges every row in Python because some
of its rules look sequential: whether a row is refused depends on the rows accepted before
it (a service overlapping one accepted before it; a deposit over the storage cap, or the part
of it that goes to the region's pool; a gift past its giver's yearly limit, or one its
receiver has no room for under the cap; a redemption or gift its member holds too few
minutes for), members depend on each other through gifts, and minutes are taken from lots
first in, first out, a gift's pieces becoming the receiver's lots with the dates they were
earned on.

This script decides exactly those rules for W's 100,000 rows of phase B, batch by batch
(1,000 rows, one transaction each), in SQL on the database, and checks every decision against
a sequential reference in Python and against what the library's bulk import of the same rows
under the same policy wrote (which rows it refused, how many for each reason, its lots, its
lot uses, its pool lots). By default the policy is bank_w.py's, which has no cap and no gift
limit; with ``--limits`` it has both (a cap of 600 minutes, refused over it; 240 minutes a year
to give), which W's rows run into thousands of times; with ``--pool`` the cap of 600 minutes
sends what does not fit to the pool.

- Refusals, in rounds: every row still standing is checked against the rows before it still
  standing (running sums: balances, what a giver has given that year), in the engine's
  order of checks; a deposit keeps what fits under a cap that diverts, and fails while what
  it keeps no longer fits what stands before it. A failing row is final when nothing before
  it can still change: no failing row earlier touches its members, directly or through gifts
  between members (a recursive query follows them, both ways: a receiver's room counts).
  Final ones are refused with their reason (a deposit's share mended), and the round runs
  again until nothing fails.
- Lots, in rounds: each member's events (a deposit's lot, a gift's lots arriving, minutes
  out) are taken in order: in a round every member passes its next arrival, if its lots
  exist, then takes its run of minutes out up to the following arrival from its open lots,
  matched by two running sums (the lots' and what is taken): their overlaps are the lot
  uses; a gift's uses become the receiver's lots.

Only these rules: the spike trusts everything else W's rows satisfy (sites, permissions,
service shapes and credits, roles, eligibility, relations, keys and replays), writes only
its own tables (balances, what members gave, services, lots, lot uses, pool lots) and makes
none of an import's other rows (entries, postings, recipients, confirmations, redemptions,
gifts, clearing rows). It answers
how many rounds the sequential part takes and how long, beside the library's bulk import of
the same rows in the same run (all of the work, on its own copy of bank_w.py's set-up).
Results go to benchmarks/results/set-based-spike[-limits|-pool]-<backend>-<date>.md; the exit
status is 1 if any decision differs.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

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

from timebank._db import SQLITE_BUSY_TIMEOUT_MS, SQLITE_FILE_PRAGMAS  # noqa: E402
from timebank.bank import Policy  # noqa: E402

#: (seq, kind, member, other, minutes, day, year, started, ended): kind d deposit (a service
#: from minute ``started`` to ``ended`` of W), r redemption, g gift.
Row = tuple[int, str, int, int | None, int, int, int, int | None, int | None]
#: (member, earned day, created by row, piece, minutes, remaining)
Lot = tuple[int, int, int, int, int, int]

# The spike's tables, once for both databases: {int} and the rest are each one's types.
_SCHEMA = """
CREATE TABLE sp_balance (member {int} PRIMARY KEY, minutes {big} NOT NULL);
CREATE TABLE sp_lot (id {serial} PRIMARY KEY, member {int} NOT NULL, minutes {int} NOT NULL,
    remaining {int} NOT NULL CHECK (remaining >= 0 AND remaining <= minutes),
    earned {int} NOT NULL, created_seq {int} NOT NULL, piece {int} NOT NULL,
    parent {big} REFERENCES sp_lot);
CREATE TABLE sp_use (seq {int} NOT NULL, lot {big} NOT NULL REFERENCES sp_lot,
    minutes {int} NOT NULL);
CREATE TABLE sp_service (seq {int} PRIMARY KEY, volunteer {int} NOT NULL,
    started {int} NOT NULL, ended {int} NOT NULL);
CREATE TABLE sp_given (member {int} NOT NULL, year {int} NOT NULL, minutes {big} NOT NULL,
    PRIMARY KEY (member, year));
CREATE TABLE sp_pool (seq {int} PRIMARY KEY, minutes {int} NOT NULL, day {int} NOT NULL);
CREATE TEMP TABLE stg (seq {int} PRIMARY KEY, kind {char} NOT NULL, member {int} NOT NULL,
    other {int}, minutes {int} NOT NULL, day {int} NOT NULL, year {int} NOT NULL,
    started {int}, ended {int}, refused {bool} NOT NULL DEFAULT {false}, reason TEXT,
    kept {int});
CREATE TEMP TABLE ev (member {int} NOT NULL, seq {int} NOT NULL, kind {char} NOT NULL,
    minutes {int} NOT NULL, day {int} NOT NULL, PRIMARY KEY (member, seq));
CREATE TEMP TABLE prog (member {int} PRIMARY KEY, p {int} NOT NULL, last {int} NOT NULL);
CREATE TEMP TABLE done_gift (seq {int} PRIMARY KEY);
CREATE TEMP TABLE seg_use (seq {int} NOT NULL, member {int} NOT NULL, lot {big} NOT NULL,
    part {int} NOT NULL, kind {char} NOT NULL);
"""
_TYPES = {
    "postgres": {"int": "int", "big": "bigint", "serial": "bigserial", "char": "char(1)",
                 "bool": "boolean", "false": "false"},
    # INTEGER PRIMARY KEY, spelled so, is SQLite's rowid: ids drawn as PostgreSQL's sequence
    # draws them.
    "sqlite": {"int": "INTEGER", "big": "INTEGER", "serial": "INTEGER", "char": "TEXT",
               "bool": "INTEGER", "false": "0"},
}
_INDEXES = """
CREATE INDEX sp_lot_open ON sp_lot (member, earned, created_seq, piece) WHERE remaining > 0;
CREATE INDEX stg_gifts ON stg (member, seq) WHERE kind = 'g';
CREATE INDEX stg_received ON stg (other, seq) WHERE kind = 'g';
CREATE INDEX stg_services ON stg (member, seq) WHERE kind = 'd';
CREATE INDEX sp_service_volunteer ON sp_service (volunteer, ended);
"""

_SERVICES = """
INSERT INTO sp_service (seq, volunteer, started, ended)
SELECT seq, member, started, ended FROM stg WHERE kind = 'd' AND NOT refused
"""
#: Emptied after every batch.
_SCRATCH = ("stg", "ev", "prog", "done_gift", "seg_use")


def _refusal_round(scenario: Scenario) -> str:
    """One round of refusals. Every row still standing is checked against the rows before it
    that still stand, in the engine's order of checks: a service overlapping a stored one or
    an earlier one of the batch, then one over the storage cap (``cap``, refused); a gift past
    its giver's yearly limit, then one the receiver has no room for under the cap; a
    redemption or gift its member holds too few minutes for. Where the cap diverts, a deposit
    is not refused: it keeps what fits (``kept``), and one whose ``kept`` no longer fits what
    stands before it fails until mended. A failing row is refused (or its ``kept`` mended)
    when nothing before it can still change: no failing row earlier touches its members (the
    member, and a gift's receiver) or reaches them through gifts between members."""
    cap, gift_limit = scenario.cap, scenario.gift_limit
    diverts = cap is not None and scenario.cap_excess == "pool"

    def limit(value: int | None) -> str:
        return "NULL" if value is None else str(value)

    def room(before: str) -> str:
        return f"CASE WHEN {limit(cap)} > {before} THEN {limit(cap)} - {before} ELSE 0 END"

    return f"""
WITH RECURSIVE legs AS (
    SELECT seq, member, CASE kind WHEN 'd' THEN kept ELSE -minutes END AS delta
    FROM stg WHERE NOT refused
    UNION ALL
    SELECT seq, other, minutes FROM stg WHERE kind = 'g' AND NOT refused
), run AS MATERIALIZED (
    SELECT l.seq, l.member, coalesce(b.minutes, 0) + coalesce(sum(l.delta) OVER (
               PARTITION BY l.member ORDER BY l.seq
               ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS before
    FROM legs l LEFT JOIN sp_balance b ON b.member = l.member
), standing AS MATERIALIZED (
    -- The rows still standing, a gift with what its giver has given that year before it.
    SELECT s.seq, s.kind, s.member, s.other, s.minutes, s.kept, s.started, s.ended,
           CASE WHEN s.kind = 'g' THEN coalesce(g.minutes, 0) + coalesce(sum(s.minutes) OVER (
               PARTITION BY s.member, s.year, s.kind ORDER BY s.seq
               ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) END AS given_before
    FROM stg s LEFT JOIN sp_given g ON s.kind = 'g' AND g.member = s.member AND g.year = s.year
    WHERE NOT s.refused
), failing AS MATERIALIZED (
    SELECT s.seq, s.member, s.other, s.kind, {room("a.before")} AS room, CASE
        WHEN s.kind = 'd' AND (
            EXISTS (SELECT 1 FROM sp_service v WHERE v.volunteer = s.member
                    AND v.started < s.ended AND v.ended > s.started)
            OR EXISTS (SELECT 1 FROM stg e WHERE e.kind = 'd' AND NOT e.refused
                       AND e.member = s.member AND e.seq < s.seq
                       AND e.started < s.ended AND e.ended > s.started))
            THEN 'overlapping service'
        WHEN s.kind = 'd' AND {limit(cap)} IS NOT NULL AND {str(diverts).lower()}
             AND s.kept <> CASE WHEN s.minutes < {room("a.before")} THEN s.minutes
                                ELSE {room("a.before")} END
            THEN 'keeps another amount'
        WHEN s.kind = 'd' AND {limit(cap)} IS NOT NULL AND NOT {str(diverts).lower()}
             AND s.minutes > {room("a.before")}
            THEN 'over the storage cap'
        WHEN s.kind = 'g' AND {limit(gift_limit)} IS NOT NULL
             AND s.given_before + s.minutes > {limit(gift_limit)}
            THEN 'over the yearly gift limit'
        WHEN s.kind = 'g' AND {limit(cap)} IS NOT NULL AND s.minutes > {room("r.before")}
            THEN 'over the storage cap'
        WHEN s.kind <> 'd' AND a.before < s.minutes THEN 'short of minutes'
    END AS reason
    FROM standing s
    JOIN run a ON a.seq = s.seq AND a.member = s.member
    LEFT JOIN run r ON s.kind = 'g' AND r.seq = s.seq AND r.member = s.other
), touched AS MATERIALIZED (
    SELECT seq, member FROM failing WHERE reason IS NOT NULL
    UNION ALL
    SELECT seq, other FROM failing WHERE reason IS NOT NULL AND kind = 'g'
), doubt(member, seq) AS (
    -- From a failing row on, its members' minutes are in doubt, and so are those of whoever
    -- exchanges a gift with them from then on (either way: a receiver's room counts).
    SELECT member, min(seq) FROM touched GROUP BY member
    UNION
    SELECT CASE WHEN s.member = d.member THEN s.other ELSE s.member END, s.seq
    FROM doubt d
    JOIN stg s ON s.kind = 'g' AND NOT s.refused AND s.seq >= d.seq
              AND (s.member = d.member OR s.other = d.member)
), first_doubt AS MATERIALIZED (
    SELECT member, min(seq) AS seq FROM doubt GROUP BY member
), settled AS (
    -- Failing rows none of whose members is in doubt before them.
    SELECT t.seq FROM touched t JOIN first_doubt d ON d.member = t.member
    GROUP BY t.seq HAVING max(CASE WHEN d.seq < t.seq THEN 1 ELSE 0 END) = 0
)
UPDATE stg
SET refused = f.reason <> 'keeps another amount',
    reason = CASE WHEN f.reason = 'keeps another amount' THEN NULL ELSE f.reason END,
    kept = CASE WHEN f.reason = 'keeps another amount'
                THEN CASE WHEN f.minutes < f.room THEN f.minutes ELSE f.room END
                ELSE stg.kept END
FROM (SELECT x.seq, x.reason, x.room, s.minutes
      FROM failing x JOIN settled USING (seq) JOIN stg s ON s.seq = x.seq) AS f
WHERE stg.seq = f.seq
"""


#: What a deposit could not keep under the cap, to its region's pool.
_POOL = """
INSERT INTO sp_pool (seq, minutes, day)
SELECT seq, minutes - kept, day FROM stg WHERE kind = 'd' AND NOT refused AND kept < minutes
"""
_GIVEN = """
INSERT INTO sp_given (member, year, minutes)
SELECT member, year, sum(minutes) FROM stg WHERE kind = 'g' AND NOT refused GROUP BY member, year
ON CONFLICT (member, year) DO UPDATE SET minutes = sp_given.minutes + excluded.minutes
"""
_BALANCES = """
INSERT INTO sp_balance (member, minutes)
SELECT member, sum(delta) FROM (
    SELECT member, CASE kind WHEN 'd' THEN kept ELSE -minutes END AS delta
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
    SELECT member, seq, CASE kind WHEN 'd' THEN 'd' ELSE 'o' END,
           CASE kind WHEN 'd' THEN kept ELSE minutes END, day
    FROM stg WHERE NOT refused AND (kind <> 'd' OR kept > 0)
    UNION ALL
    SELECT other, seq, 'i', minutes, day FROM stg WHERE kind = 'g' AND NOT refused
    """,
    # A member's progress: the last row of the batch it has passed (none yet: the row
    # before the batch's first).
    """
    INSERT INTO prog (member, p, last)
    SELECT member, (SELECT min(seq) FROM stg) - 1, max(seq) FROM ev GROUP BY member
    """,
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
    ), outs AS MATERIALIZED (
        SELECT e.member, e.seq, e.minutes,
               sum(e.minutes) OVER (PARTITION BY e.member ORDER BY e.seq
                                    ROWS UNBOUNDED PRECEDING) - e.minutes AS lo
        FROM ev e JOIN stop s ON s.member = e.member AND e.seq > s.p AND e.seq < s.stop
        WHERE e.kind = 'o'
    ), open AS MATERIALIZED (
        SELECT l.id, l.member, l.remaining,
               sum(l.remaining) OVER (PARTITION BY l.member
                                      ORDER BY l.earned, l.created_seq, l.piece
                                      ROWS UNBOUNDED PRECEDING) - l.remaining AS lo
        FROM sp_lot l JOIN prog p ON p.member = l.member
        -- Only lots that have arrived: a giver may have made a lot for a gift this member
        -- has not passed yet.
        WHERE l.remaining > 0 AND l.created_seq <= p.p
          AND l.member IN (SELECT member FROM outs)
    )
    SELECT o.seq, o.member, l.id,
           CASE WHEN o.lo + o.minutes < l.lo + l.remaining
                THEN o.lo + o.minutes ELSE l.lo + l.remaining END
           - CASE WHEN o.lo > l.lo THEN o.lo ELSE l.lo END,
           s.kind
    -- The open lots first: SQLite then searches the minutes out by member instead of
    -- scanning every open lot for each of them (0.24 s against 0.94 s over W, in a trial).
    FROM open l
    JOIN outs o ON o.member = l.member
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


@dataclass(frozen=True)
class Scenario:
    """The policy the rows are judged under: bank_w.py's, or with its limits set."""

    name: str
    cap: int | None = None  # storage cap in minutes
    gift_limit: int | None = None  # minutes a member may give a calendar year
    #: A deposit over the cap: refused, or what does not fit goes to the region's pool.
    cap_excess: Literal["refuse", "pool"] = "refuse"

    def policy(self) -> Policy:
        return POLICY.model_copy(update={"storage_cap_minutes": self.cap,
                                         "gift_yearly_limit_minutes": self.gift_limit,
                                         "cap_excess": self.cap_excess})


PLAIN = Scenario("W")
#: A cap W's volunteers run into, what does not fit going to the pool of their region.
POOLED = Scenario("W with a storage cap of 600 minutes, the excess to the region's pool",
                  cap=600, cap_excess="pool")
#: Limits that W's rows run into (a few thousand refusals each), so the rounds meet them.
LIMITED = Scenario("W with a storage cap of 600 minutes and a gift limit of 240 a year",
                   cap=600, gift_limit=240)


def rows_of(workload: Workload) -> list[Row]:
    """Phase B as rows; members are volunteer numbers, days the UTC dates' ordinals (the
    lots' earned_on under bank_w.py's policy), times minutes since W's first transfer (a
    deposit is a service that ends when it is recorded, as bank_w.py imports it)."""
    first = workload.phase_b[0].occurred_at
    out: list[Row] = []
    for t in workload.phase_b:
        local = POLICY.local_date(t.occurred_at)
        day, year = local.toordinal(), local.year
        minute = int((t.occurred_at - first).total_seconds()) // 60
        a = t.amount_minutes
        if t.kind == "deposit":
            out.append((t.index, "d", int(t.credit[1:]), None, a, day, year, minute - a, minute))
        elif t.kind == "redemption":
            out.append((t.index, "r", int(t.debit[1:]), None, a, day, year, None, None))
        else:
            out.append((t.index, "g", int(t.debit[1:]), int(t.credit[1:]), a, day, year, None,
                        None))
    return out


@dataclass
class Outcome:
    refused: dict[int, str]  # seq -> reason
    balances: dict[int, int]
    lots: list[Lot]
    uses: list[tuple[int, int]]  # (seq, minutes)
    pooled: list[tuple[int, int]]  # (minutes, day earned) a deposit sent to the pool

    def reasons(self) -> Counter[str]:
        return Counter(self.refused.values())


class _Reference:
    """The rules applied row by row, in the bulk engine's order of checks."""

    def __init__(self, scenario: Scenario) -> None:
        self.scenario = scenario
        self.balances: dict[int, int] = {}
        self.given: dict[tuple[int, int], int] = {}
        self.busy: dict[int, list[tuple[int, int]]] = {}
        self.open_lots: dict[int, list[list[int]]] = {}
        self.made: list[list[int]] = []
        self.uses: list[tuple[int, int]] = []
        self.pooled: list[tuple[int, int]] = []

    def refusal(self, row: Row) -> str | None:
        _seq, kind, member, other, minutes, _day, year, started, ended = row
        cap, held = self.scenario.cap, self.balances.get(member, 0)
        if kind == "d":
            assert started is not None
            assert ended is not None
            if any(a < ended and b > started for a, b in self.busy.get(member, [])):
                return "overlapping service"
            refuses = self.scenario.cap_excess == "refuse"
            if cap is not None and refuses and minutes > max(cap - held, 0):
                return "over the storage cap"
            return None
        if kind == "g":
            assert other is not None
            limit = self.scenario.gift_limit
            if limit is not None and self.given.get((member, year), 0) + minutes > limit:
                return "over the yearly gift limit"
            if cap is not None and minutes > max(cap - self.balances.get(other, 0), 0):
                return "over the storage cap"
        return "short of minutes" if held < minutes else None

    def apply(self, row: Row) -> None:
        seq, kind, member, other, minutes, day, year, started, ended = row
        if kind == "d":
            assert started is not None
            assert ended is not None
            self.busy.setdefault(member, []).append((started, ended))
            held, cap = self.balances.get(member, 0), self.scenario.cap
            kept = minutes if cap is None else min(minutes, max(cap - held, 0))
            if kept < minutes:
                self.pooled.append((minutes - kept, day))
            self.balances[member] = held + kept
            if kept:
                self.add([member, day, seq, 0, kept, kept])
            return
        self.balances[member] -= minutes
        left, piece = minutes, 0
        for lot in self.open_lots[member]:
            if left == 0:
                break
            part = min(left, lot[5])
            if part == 0:
                continue
            lot[5] -= part
            left -= part
            self.uses.append((seq, part))
            if kind == "g":
                assert other is not None
                piece += 1
                self.add([other, lot[1], seq, piece, part, part])
        assert left == 0, "the balance said the lots hold enough"
        if kind == "g":
            assert other is not None
            self.balances[other] = self.balances.get(other, 0) + minutes
            self.given[member, year] = self.given.get((member, year), 0) + minutes

    def add(self, lot: list[int]) -> None:
        self.made.append(lot)
        held = self.open_lots.setdefault(lot[0], [])
        held.append(lot)
        held.sort(key=lambda held_lot: (held_lot[1], held_lot[2], held_lot[3]))


def reference(rows: Sequence[Row], scenario: Scenario) -> Outcome:
    """The rules applied row by row, as the bulk engine's judge applies them."""
    judge = _Reference(scenario)
    refused: dict[int, str] = {}
    for row in rows:
        reason = judge.refusal(row)
        if reason is None:
            judge.apply(row)
        else:
            refused[row[0]] = reason
    lots: list[Lot] = [(a, b, c, d, e, f) for a, b, c, d, e, f in judge.made]
    return Outcome(refused, judge.balances, lots, judge.uses, judge.pooled)


@dataclass
class Measured:
    seconds: float
    refusal_seconds: float
    refusal_rounds: list[int]
    lot_rounds: list[int]
    outcome: Outcome


class _Db:
    """The statements the spike runs, on a PostgreSQL or an SQLite connection."""

    def __init__(self, backend: Backend, url: URL) -> None:
        self.backend = backend
        # psycopg's and sqlite3's connections both execute SQL and return a cursor.
        self.conn: Any
        if backend == "postgres":
            import psycopg  # noqa: PLC0415 - PostgreSQL runs only

            self.conn = psycopg.connect(url.set(drivername="postgresql").render_as_string(
                hide_password=False))
        else:
            assert url.database
            self.conn = sqlite3.connect(url.database, isolation_level=None)
            for pragma in (f"busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}", *SQLITE_FILE_PRAGMAS):
                self.conn.execute(f"PRAGMA {pragma}")

    def close(self) -> None:
        self.conn.close()

    def run(self, sql: str) -> int:
        """Execute; the number of rows it changed. ``CLEAR t`` empties a scratch table:
        TRUNCATE on PostgreSQL (a DELETE would leave its dead rows for every later batch to
        scan, and nothing vacuums temporary tables), DELETE on SQLite."""
        if sql.startswith("CLEAR "):
            table = sql.removeprefix("CLEAR ")
            sql = f"TRUNCATE {table}" if self.backend == "postgres" else f"DELETE FROM {table}"
        if self.backend == "postgres":
            return int(self.conn.execute(sql).rowcount)
        # sqlite3 reports no rowcount for a statement that starts with WITH.
        before = self.conn.total_changes
        self.conn.execute(sql)
        return int(self.conn.total_changes - before)

    def one(self, sql: str) -> Any:
        found = self.conn.execute(sql).fetchone()
        assert found is not None
        return found[0]

    def all(self, sql: str) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self.conn.execute(sql).fetchall()]

    def begin(self) -> None:
        if self.backend == "sqlite":  # psycopg opens a transaction by itself
            self.conn.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        if self.backend == "postgres":
            self.conn.commit()
        else:
            self.conn.execute("COMMIT")

    def stage(self, rows: Iterable[Row]) -> None:
        columns = "seq, kind, member, other, minutes, day, year, started, ended"
        if self.backend == "postgres":
            with self.conn.cursor() as cursor, cursor.copy(
                f"COPY stg ({columns}) FROM STDIN"
            ) as copy:
                for row in rows:
                    copy.write_row(row)
        else:
            marks = ", ".join("?" * len(columns.split(", ")))
            self.conn.executemany(f"INSERT INTO stg ({columns}) VALUES ({marks})", rows)

    def set_up(self) -> None:
        """The spike's tables, made again (so a database can take several runs)."""
        self.begin()
        for table in ("sp_use", "sp_lot", "sp_balance", "sp_given", "sp_service", "sp_pool"):
            self.run(f"DROP TABLE IF EXISTS {table}")
        for statement in (_SCHEMA.format(**_TYPES[self.backend]) + _INDEXES).split(";"):
            if statement.strip():
                self.run(statement)
        self.commit()


def decide(backend: Backend, url: URL, rows: Sequence[Row], scenario: Scenario,
           batch_rows: int = BATCH_ROWS) -> Measured:
    """The spike: every batch of ``batch_rows`` staged, its refusals and lots decided in
    SQL, committed."""
    db = _Db(backend, url)
    refusal_round = _refusal_round(scenario)
    try:
        db.set_up()
        refusal_rounds: list[int] = []
        lot_rounds: list[int] = []
        refusal_seconds = 0.0
        refused: dict[int, str] = {}
        started = time.perf_counter()
        for start in range(0, len(rows), batch_rows):
            db.begin()
            db.stage(rows[start : start + batch_rows])
            db.run("UPDATE stg SET kept = minutes WHERE kind = 'd'")  # until found not to fit
            if start == 0 and backend == "postgres":
                # Statistics of a batch, for temporary tables autovacuum never sees. Not on
                # SQLite: its planner chose worse plans with them (46 to 69 ms a batch for
                # the refusal rounds against 6 to 10 without, in a trial).
                db.run("ANALYZE stg")
            began = time.perf_counter()
            refusal_rounds.append(_until_none(lambda: db.run(refusal_round)))
            refusal_seconds += time.perf_counter() - began
            refused.update((int(seq), str(reason)) for seq, reason in db.all(
                "SELECT seq, reason FROM stg WHERE refused"))
            for statement in (_SERVICES, _BALANCES, _GIVEN, _POOL, *_EVENTS):
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
            pooled=[(int(m), int(d)) for m, d in db.all("SELECT minutes, day FROM sp_pool")],
        )
        return Measured(seconds, refusal_seconds, refusal_rounds, lot_rounds, outcome)
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
        "refused rows and their reasons": spike.refused == ref.refused,
        "balances": held(spike.balances) == held(ref.balances),
        "lots (member, day earned, made by row, piece, minutes, left)":
            sorted(spike.lots) == sorted(ref.lots),
        "lot uses (row, minutes)": sorted(spike.uses) == sorted(ref.uses),
        "pool lots (minutes, day earned)": sorted(spike.pooled) == sorted(ref.pooled),
    }


def library_agreement(url: URL, setup: Setup, spike: Outcome, rows: Sequence[Row],
                      reasons: Counter[str]) -> dict[str, bool]:
    """The spike's decisions against what the library's bulk import wrote for the same rows:
    which rows it refused and how many for each reason (``reasons``, its report's), its lots
    (member, day earned, minutes, left), lot uses and pool lots."""
    from sqlalchemy import create_engine, select, union_all  # noqa: PLC0415

    from timebank.bank.schema import (  # noqa: PLC0415
        gifts,
        lot_uses,
        lots,
        pool_lots,
        redemptions,
        services,
    )

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
            pooled = [(minutes, day.toordinal()) for minutes, day in conn.execute(
                select(pool_lots.c.minutes, pool_lots.c.earned_on))]
    finally:
        engine.dispose()
    return {
        "refused rows": set(spike.refused) == {r[0] for r in rows} - accepted,
        "refusals by reason": spike.reasons() == reasons,
        "lots (member, day earned, minutes, left)":
            sorted(stored) == sorted((m, d, n, left) for m, d, _c, _p, n, left in spike.lots),
        "lot uses (row, minutes)": sorted(used) == sorted(spike.uses),
        "pool lots (minutes, day earned)": sorted(pooled) == sorted(spike.pooled),
    }


def run(backend: Backend, pg_url: URL, workload: Workload, scenario: Scenario) -> str:
    rows = rows_of(workload)
    began = time.perf_counter()
    ref = reference(rows, scenario)
    reference_seconds = time.perf_counter() - began
    with tempfile.TemporaryDirectory(prefix="tbspike-") as directory, template(
        backend, pg_url, Path(directory), workload, scenario.policy()
    ) as (setup, copy):
        print(f"[{backend}] library bulk import (timed)", flush=True)
        imported_url = copy("spike_import")
        imported, accepted, reasons, bank = timed_bank(
            imported_url, lambda b: import_batches(b, workload.phase_b, setup, "bulk"))
        bank.dispose()
        print(f"[{backend}] set-based spike (timed)", flush=True)
        measured = decide(backend, copy("spike_sql"), rows, scenario)
        library = library_agreement(imported_url, setup, measured.outcome, rows, reasons)
    checks = {"the reference": agreement(measured.outcome, ref),
              "what the library's import wrote": library}
    return render(backend, pg_url, scenario, measured, checks=checks,
                  library=(imported, accepted), reference_seconds=reference_seconds,
                  reference=ref)


def render(backend: Backend, pg_url: URL, scenario: Scenario, m: Measured, *,
           checks: dict[str, dict[str, bool]], library: tuple[float, int],
           reference_seconds: float, reference: Outcome) -> str:
    imported, accepted = library

    def rounds(counts: list[int]) -> str:
        return f"mean {sum(counts) / len(counts):.2f}, max {max(counts)}"

    def agreed(found: dict[str, bool]) -> str:
        return "; ".join(f"{name} {'same' if same else 'DIFFERENT'}"
                         for name, same in found.items())

    flag = {PLAIN: "", LIMITED: " --limits", POOLED: " --pool"}.get(scenario, "")
    lines = [
        f"# Set-based spike of the import's sequential rules: {backend}, {scenario.name}",
        "",
        f"Command: `python benchmarks/set_based_spike.py --backend {backend}{flag}`",
        "",
        "| run, W's 100,000 rows of phase B in 100 transactions of 1,000 | s |",
        "|---|--:|",
        f"| the library's bulk import: every rule, every table ({accepted:,} rows accepted) "
        f"| {imported:.2f} |",
        "| the spike, all of it: staging, refusals, balances, services, lots and lot uses, "
        f"commits | {m.seconds:.2f} |",
        f"| of which the refusal rounds | {m.refusal_seconds:.2f} |",
        "| the same rules in Python, in memory, nothing written (the reference) "
        f"| {reference_seconds:.3f} |",
        "",
        f"- Rounds per batch (the last of each finds nothing to change): refusals "
        f"{rounds(m.refusal_rounds)}; lots {rounds(m.lot_rounds)}.",
        f"- The spike refused {len(m.outcome.refused):,} rows ("
        + ", ".join(f"{n:,} {reason}" for reason, n in sorted(m.outcome.reasons().items()))
        + f") and made {len(m.outcome.lots):,} lots, {len(m.outcome.uses):,} lot uses and "
        f"{len(m.outcome.pooled):,} pool lots; the reference {len(reference.refused):,}, "
        f"{len(reference.lots):,}, {len(reference.uses):,} and {len(reference.pooled):,}.",
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
    chosen = parser.add_mutually_exclusive_group()
    chosen.add_argument("--limits", action="store_true",
                        help=f"judge under {LIMITED.name} (default: W's policy, no limits)")
    chosen.add_argument("--pool", action="store_true", help=f"judge under {POOLED.name}")
    args = parser.parse_args(argv)
    scenario, suffix = (LIMITED, "limits-") if args.limits else (POOLED, "pool-") if args.pool \
        else (PLAIN, "")
    backends: list[Backend] = (["sqlite", "postgres"] if args.backend == "both"
                               else [args.backend])
    workload = generate()
    failed = False
    for backend in backends:
        report = run(backend, make_url(args.pg_url), workload, scenario)
        save_result(f"set-based-spike-{suffix}{backend}", report)
        failed |= "DIFFERENT" in report
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
