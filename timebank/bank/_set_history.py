"""The set-based engine of history imports: a batch judged and written by SQL in the database.

Issue 10's design. A batch's rows are judged in two parts:

- The rules that depend on no earlier row of the batch (sites, permissions, keys and replays,
  a service's shape and credit, members' states and roles, eligibility by age and
  relation, whom a member may give to) are judged in Python by the in-memory engine's own
  code (:class:`~timebank.bank._bulk_history._Batch`: the row engine's rule functions and
  errors), against facts read in a few set-wise queries. Each row that passes is staged as
  one row of a temporary table, with what the rest needs (its accounts, the minutes
  credited, the day its lot is earned, an entry's memo and metadata).
- The rules that depend on the rows accepted before it (a service overlapping another, the
  storage cap, the yearly gift limit, a receiver's room under the cap, every account's
  status, floor and ceiling, and so refusals for want of minutes) are decided by SQL in
  rounds, as ``benchmarks/set_based_spike.py`` first did: every row still standing is
  checked against the standing rows before it (running sums per account); a failing row is
  final once no failing row before it shares an account with it, directly or through rows
  that link accounts (a recursive query follows them); final ones are refused, and the
  round runs again until nothing fails. Minutes are then taken from lots first in, first
  out, member by member, in rounds (a gift's pieces become the receiver's lots).

Every row the accepted rows make (entries, postings, balances, services, recipients,
confirmations, lots, lot uses, pool lots, redemptions, gifts, clearing rows) is written by
``INSERT ... SELECT`` from the staged rows; only the refused rows come back to Python, where
their reasons are built by the error classes the other engines raise. A row refused by a
rule of the first part that the engines check after one of the second (the confirmer's
right and the file's minutes are checked after the overlap and the cap) is refused with
whichever fails first, as there.

Members are locked before the first part reads them, accounts (in the ledger's canonical
order, expired holds released) before the rounds read them. PostgreSQL, and SQLite from 3.35
(``MATERIALIZED``, ``UPDATE ... FROM``); MariaDB imports with the row engine.
"""

from __future__ import annotations

import json
import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from typing import Any, Final

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Date,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    TextClause,
    bindparam,
    select,
    text,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.schema import CreateIndex, CreateTable, Index

from timebank import _accounts, _collector, errors
from timebank._bulk import bulk_insert, reserve_ids
from timebank._db import in_values, planned_each_time
from timebank.bank import _gifts
from timebank.bank._bulk_history import _LOTS_LEFT, _Account, _Batch, _Refused
from timebank.bank._ctx import Act
from timebank.bank._io import (
    BatchOutcome,
    BatchRejected,
    HistoryRow,
    Item,
    RejectedRow,
    short_of_minutes,
)
from timebank.bank._redeem import record_origins
from timebank.bank.models import Policy
from timebank.bank.schema import lots, redemptions, regions, services, sites
from timebank.schema import UTCDateTime, entries

#: Rounds of refusals or of lots in one batch past this mean a bug, not data: every round
#: refuses a row or moves a member on.
ROUNDS_MAX: Final = 10_000

# --- the temporary tables ------------------------------------------------------------------

_TEMP = MetaData()


def _temp(name: str, *columns: Column[Any]) -> Table:
    # Emptied at every commit on PostgreSQL; SQLite's are emptied when a batch starts.
    return Table(
        name, _TEMP, *columns, prefixes=["TEMPORARY"], postgresql_on_commit="DELETE ROWS"
    )


#: One row per row of the batch that passed the first part: what it is, its accounts and
#: amounts, and (filled in by SQL) what was decided.
STAGE = _temp(
    "tb_import_stage",
    Column("seq", Integer, primary_key=True, autoincrement=False),  # the row's place
    Column("kind", String(1), nullable=False),  # d a service's deposit, r a redemption, g a gift
    Column("row_key", String(128), nullable=False),
    Column("member", BigInteger, nullable=False),  # the volunteer, the payer, the giver
    Column("other", BigInteger),  # d: the first recipient; r: whose care; g: the receiver
    Column("acct", BigInteger, nullable=False),  # the member's account
    Column("other_acct", BigInteger),  # g: the receiver's account
    Column("site", BigInteger),
    Column("site_acct", BigInteger),  # d: the station's issue account; r: its redeemed account
    Column("pool_acct", BigInteger),  # d, where the cap sends the excess to a pool
    Column("region", BigInteger),
    Column("minutes", BigInteger, nullable=False),  # d: credited
    Column("started_at", UTCDateTime()),
    Column("ended_at", UTCDateTime()),
    Column("occurred_at", UTCDateTime(), nullable=False),
    Column("earned_on", Date),
    Column("expires_on", Date),
    Column("service_type", String(64)),
    Column("type_json", Text),
    Column("raw_minutes", BigInteger),
    Column("weight", BigInteger),
    Column("version", BigInteger),
    Column("two_conf", Integer),
    Column("gift_limit", BigInteger),
    Column("year_start", UTCDateTime()),
    Column("year_end", UTCDateTime()),
    # A refusal of the first part that the engines check after the overlap (1) or after
    # the accounts' limits (2): the row is refused, with it unless one of those fails.
    Column("late_after", Integer, nullable=False),
    Column("late_reason", Text),
    Column("memo", Text),
    Column("meta", Text),
    Column("kept", BigInteger),  # d: the minutes its volunteer keeps under the cap
    Column("stored_overlap", BigInteger),
    Column("given_stored", BigInteger),
    Column("refused", Integer, nullable=False, server_default="0"),
)
RECIPIENTS = _temp(
    "tb_import_recipients",
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("member", BigInteger, primary_key=True, autoincrement=False),
)
#: The accepted rows' ids, in file order.
OUT = _temp(
    "tb_import_out",
    Column("seq", Integer, primary_key=True, autoincrement=False),
    Column("entry_id", BigInteger, nullable=False),
    Column("service_id", BigInteger),
)
#: The accounts the batch may post to, as read under their locks (a few thousand rows that
#: the rounds join, where the accounts' table may hold millions).
ACCOUNTS = _temp(
    "tb_import_acct",
    Column("id", BigInteger, primary_key=True, autoincrement=False),
    Column("code", String(64), nullable=False),
    Column("status", String(16), nullable=False),
    Column("floor_minutes", BigInteger),
    Column("ceiling_minutes", BigInteger),
    Column("posted_minutes", BigInteger, nullable=False),
    Column("held_out_minutes", BigInteger, nullable=False),
    Column("held_in_minutes", BigInteger, nullable=False),
)
_INDEXES = (
    Index("ix_tb_import_stage_member", STAGE.c.member, STAGE.c.seq),
    Index("ix_tb_import_stage_other", STAGE.c.other, STAGE.c.seq),
)
_STAGED: Final = tuple(c.name for c in STAGE.c)[: tuple(STAGE.c.keys()).index("kept") + 1]
_STAGE_ROWS = bulk_insert(STAGE, _STAGED)
_RECIPIENT_ROWS = bulk_insert(RECIPIENTS, ("seq", "member"))

# Lots and their matching, in SQL's own types (nothing is staged into them from Python).
_LOT_TABLES = """
CREATE TEMPORARY TABLE IF NOT EXISTS tb_import_lot (
    tid {serial} PRIMARY KEY, member {big} NOT NULL, minutes {big} NOT NULL,
    remaining {big} NOT NULL, origin_site {big} NOT NULL, earned_on {date} NOT NULL,
    expires_on {date}, cseq {int} NOT NULL, piece {big} NOT NULL, parent_tid {big},
    stored_id {big}, stored_remaining {big}, new_id {big}){on_commit};
CREATE INDEX IF NOT EXISTS ix_tb_import_lot_open
    ON tb_import_lot (member, earned_on, cseq, piece) WHERE remaining > 0;
CREATE TEMPORARY TABLE IF NOT EXISTS tb_import_use (
    seq {int} NOT NULL, tid {big} NOT NULL, minutes {big} NOT NULL){on_commit};
CREATE TEMPORARY TABLE IF NOT EXISTS tb_import_ev (
    member {big} NOT NULL, seq {int} NOT NULL, kind {char} NOT NULL, minutes {big} NOT NULL,
    PRIMARY KEY (member, seq, kind)){on_commit};
CREATE TEMPORARY TABLE IF NOT EXISTS tb_import_prog (
    member {big} PRIMARY KEY, p {int} NOT NULL, last {int} NOT NULL){on_commit};
CREATE TEMPORARY TABLE IF NOT EXISTS tb_import_done (seq {int} PRIMARY KEY){on_commit};
CREATE TEMPORARY TABLE IF NOT EXISTS tb_import_fast (member {big} PRIMARY KEY){on_commit};
CREATE TEMPORARY TABLE IF NOT EXISTS tb_import_seg (
    seq {int} NOT NULL, member {big} NOT NULL, tid {big} NOT NULL, part {big} NOT NULL,
    kind {char} NOT NULL){on_commit}
"""
_TYPES: Final = {
    "postgresql": {"int": "int", "big": "bigint", "serial": "bigserial", "char": "char(1)",
                   "date": "date", "on_commit": " ON COMMIT DELETE ROWS"},
    # INTEGER PRIMARY KEY, spelled so, is SQLite's rowid; dates as SQLAlchemy stores them.
    "sqlite": {"int": "INTEGER", "big": "INTEGER", "serial": "INTEGER", "char": "TEXT",
               "date": "TEXT", "on_commit": ""},
}
_SCRATCH: Final = (
    "tb_import_stage",
    "tb_import_recipients",
    "tb_import_out",
    "tb_import_acct",
    "tb_import_lot",
    "tb_import_use",
    "tb_import_ev",
    "tb_import_prog",
    "tb_import_done",
    "tb_import_fast",
    "tb_import_seg",
)


def supported(conn: Connection) -> bool:
    """PostgreSQL, and SQLite from 3.35."""
    if conn.dialect.name == "postgresql":
        return True
    return conn.dialect.name == "sqlite" and sqlite3.sqlite_version_info >= (3, 35)


_SETUP: dict[str, tuple[str, ...]] = {}


def _setup_sql(dialect: Dialect) -> tuple[str, ...]:
    """The temporary tables' DDL (IF NOT EXISTS: a rolled-back batch may have made them)."""
    if dialect.name not in _SETUP:
        statements = [
            str(CreateTable(t, if_not_exists=True).compile(dialect=dialect))
            for t in (STAGE, RECIPIENTS, OUT, ACCOUNTS)
        ]
        statements += [
            str(CreateIndex(i, if_not_exists=True).compile(dialect=dialect)) for i in _INDEXES
        ]
        lot_tables = _LOT_TABLES.format(**_TYPES[dialect.name]).split(";")
        statements += [s.strip() for s in lot_tables if s.strip()]
        _SETUP[dialect.name] = tuple(statements)
    return _SETUP[dialect.name]


_ANY = re.compile(r"@ANY\(([\w.]+), (\w+)\)@")


def _dialect_sql(sql: str, dialect: str) -> str:
    """``sql`` with each ``@ANY(column, name)@`` as the dialect's test of ``column`` against
    the list of integers in parameter ``name`` (an array on PostgreSQL, JSON on SQLite):
    the planner then sees a list of known length and probes the index, where a join to
    a staged table may scan a table of millions whose statistics are stale."""
    if dialect == "postgresql":
        return _ANY.sub(r"\1 = ANY(CAST(:\2 AS BIGINT[]))", sql)
    return _ANY.sub(r"\1 IN (SELECT value FROM json_each(:\2))", sql)


# --- SQL of the rounds ---------------------------------------------------------------------

#: A row that still stands (rounds) or was accepted (afterwards).
_STANDING: Final = "refused = 0 AND late_after = 0"
#: The policy in force now (typed: PostgreSQL cannot guess the type of a NULL parameter).
_CAP: Final = "CAST(:cap AS BIGINT)"
_DIVERTS: Final = "CAST(:diverts AS INTEGER)"


def _legs(rows: str) -> str:
    """Each row's postings in the order the engines check them (``n``), with the weight
    ``w`` its amount counts with in the running sums: a deposit debits the station's issue
    account, credits what its volunteer keeps (a leg of 0 minutes is only looked at) and
    the excess to the pool; a redemption or a gift debits the member and credits the
    station or the receiver."""
    return f"""
    SELECT seq, 1 AS n, site_acct AS acct, -minutes AS amount, w FROM {rows} WHERE kind = 'd'
    UNION ALL SELECT seq, 2, acct, kept, w FROM {rows} WHERE kind = 'd'
    UNION ALL SELECT seq, 3, pool_acct, minutes - kept, w FROM {rows}
        WHERE kind = 'd' AND pool_acct IS NOT NULL
    UNION ALL SELECT seq, 1, acct, -minutes, w FROM {rows} WHERE kind <> 'd'
    UNION ALL SELECT seq, 2, CASE kind WHEN 'r' THEN site_acct ELSE other_acct END, minutes, w
        FROM {rows} WHERE kind <> 'd'
    """


def _room(before: str) -> str:
    return f"CASE WHEN {_CAP} > {before} THEN {_CAP} - {before} ELSE 0 END"


def _judged(rows: str, only: str = "TRUE") -> str:
    """CTEs judging the rows of ``rows`` (a CTE with every stage column and ``w``) against
    the rows before them that count (``w = 1``), the rows judged being those ``only``
    selects: ``run`` the balance of each leg's account
    before it, ``bad_leg`` each row's first leg its account refuses (status, floor,
    ceiling: the ledger's checks, in its order), ``judged`` each row's first failing rule in
    the engines' order, with what its reason needs."""
    overlap = """EXISTS (SELECT 1 FROM tb_import_stage e
                WHERE e.kind = 'd' AND e.refused = 0 AND e.late_after = 0
                  AND e.member = s.member AND e.seq < s.seq
                  AND e.started_at < s.ended_at AND e.ended_at > s.started_at)"""
    given = """s.given_stored + coalesce((SELECT sum(e.minutes) FROM tb_import_stage e
                WHERE e.kind = 'g' AND e.refused = 0 AND e.late_after = 0
                  AND e.member = s.member AND e.seq < s.seq
                  AND e.occurred_at >= s.year_start AND e.occurred_at < s.year_end), 0)"""
    room = _room("r2.before")
    return f"""
    legs AS MATERIALIZED ({_legs(rows)}),
    run AS MATERIALIZED (
        -- (Sums cast back to BIGINT: PostgreSQL's sum of BIGINT is NUMERIC.)
        SELECT l.seq, l.n, l.acct, l.amount, a.posted_minutes + CAST(coalesce(sum(l.amount * l.w)
                   OVER (PARTITION BY l.acct ORDER BY l.seq
                         ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING), 0) AS BIGINT)
               AS before,
               a.floor_minutes IS NOT NULL OR a.ceiling_minutes IS NOT NULL AS limited
        FROM legs l JOIN tb_import_acct a ON a.id = l.acct
    ),
    bad_leg AS MATERIALIZED (
        SELECT r.seq, min(r.n) AS n FROM run r JOIN tb_import_acct a ON a.id = r.acct
        WHERE r.amount <> 0 AND (a.status <> 'open'
           OR (r.amount < 0 AND a.floor_minutes IS NOT NULL
               AND -r.amount > r.before - a.held_out_minutes - a.floor_minutes)
           OR (r.amount > 0 AND a.ceiling_minutes IS NOT NULL
               AND r.amount > a.ceiling_minutes - r.before - a.held_in_minutes))
        GROUP BY r.seq
    ),
    judged AS MATERIALIZED (
        SELECT s.seq, s.kind, s.minutes, s.kept, {room} AS room, b.n AS bad_n, CASE
            WHEN s.kind = 'd' AND (s.stored_overlap IS NOT NULL OR {overlap}) THEN 'overlap'
            WHEN s.late_after = 1 THEN 'late'
            WHEN s.kind = 'd' AND {_CAP} IS NOT NULL AND {_DIVERTS} = 0 AND s.minutes > {room}
                THEN 'cap'
            WHEN s.kind = 'd' AND {_DIVERTS} = 1
                 AND s.kept <> CASE WHEN s.minutes < {room} THEN s.minutes ELSE {room} END
                THEN 'keep'
            WHEN s.kind = 'g' AND s.gift_limit IS NOT NULL
                 AND {given} + s.minutes > s.gift_limit THEN 'gift_limit'
            WHEN s.kind = 'g' AND {_CAP} IS NOT NULL AND s.minutes > {room} THEN 'room'
            WHEN b.n IS NOT NULL THEN 'leg'
            WHEN s.late_after = 2 THEN 'late'
        END AS reason
        FROM {rows} s
        JOIN run r2 ON r2.seq = s.seq AND r2.n = 2
        LEFT JOIN bad_leg b ON b.seq = s.seq
        WHERE {only}
    )"""


#: One round: the standing rows judged against each other; a failing one whose accounts no
#: failing row before it reaches (directly, or through rows linking accounts: a gift links
#: its giver's and receiver's, a deposit its volunteer's and a limited pool's) is final:
#: refused, or, a deposit keeping another amount under a cap that diverts, mended.
_ROUND = f"""
WITH RECURSIVE standing AS MATERIALIZED (
    SELECT tb_import_stage.*, 1 AS w FROM tb_import_stage WHERE {_STANDING}
), {_judged("standing")},
res AS MATERIALIZED (
    -- The accounts a row's decision reads and whose running sums it moves: its member's
    -- (and receiver's), and any other of its accounts that has a floor or a ceiling.
    SELECT seq, acct AS res FROM standing
    UNION SELECT seq, other_acct FROM standing WHERE kind = 'g'
    UNION SELECT seq, acct FROM run WHERE limited
),
links AS MATERIALIZED (
    SELECT a.seq, a.res, b.res AS res2 FROM res a JOIN res b ON b.seq = a.seq AND b.res <> a.res
),
touched AS MATERIALIZED (
    SELECT j.seq, r.res FROM judged j JOIN res r ON r.seq = j.seq WHERE j.reason IS NOT NULL
),
doubt(res, seq) AS (
    SELECT res, min(seq) FROM touched GROUP BY res
    UNION
    SELECT l.res2, l.seq FROM doubt d JOIN links l ON l.res = d.res AND l.seq >= d.seq
),
first_doubt AS MATERIALIZED (SELECT res, min(seq) AS seq FROM doubt GROUP BY res)
UPDATE tb_import_stage
SET refused = CASE WHEN f.reason = 'keep' THEN 0 ELSE 1 END,
    kept = CASE WHEN f.reason = 'keep'
                THEN CASE WHEN f.minutes < f.room THEN f.minutes ELSE f.room END
                ELSE tb_import_stage.kept END
FROM (
    -- Failing rows none of whose accounts is in doubt before them (an anti-join: the
    -- planner cannot count the rows of a HAVING, and a nested loop over them cost 55 ms
    -- a round on PostgreSQL).
    SELECT j.seq, j.reason, j.minutes, j.room FROM judged j
    WHERE j.reason IS NOT NULL AND NOT EXISTS (
        SELECT 1 FROM res r JOIN first_doubt d ON d.res = r.res
        WHERE r.seq = j.seq AND d.seq < j.seq)
) AS f
WHERE tb_import_stage.seq = f.seq
"""

_ALL_ROWS = """
everything AS MATERIALIZED (
    SELECT tb_import_stage.*, CASE WHEN refused = 0 AND late_after = 0 THEN 1 ELSE 0 END AS w
    FROM tb_import_stage
)"""

#: What a refused deposit would have kept, under a cap that diverts (its legs' checks
#: need it): judged against the accepted rows before it.
_KEPT_OF_REFUSED = f"""
WITH {_ALL_ROWS}, {_judged("everything", only="s.w = 0 AND s.kind = 'd'")}
UPDATE tb_import_stage
SET kept = CASE WHEN j.minutes < j.room THEN j.minutes ELSE j.room END
FROM judged j
WHERE tb_import_stage.seq = j.seq AND j.kind = 'd'
  AND (tb_import_stage.refused = 1 OR tb_import_stage.late_after > 0)
"""

#: Why each refused row was refused: its first failing rule against the accepted rows
#: before it, with the numbers its reason names.
_EXPLAIN = f"""
WITH {_ALL_ROWS}, {_judged("everything", only="s.w = 0")}
SELECT j.seq, j.reason, j.room, s.stored_overlap,
       (SELECT e.seq FROM tb_import_stage e
        WHERE e.kind = 'd' AND e.refused = 0 AND e.late_after = 0 AND e.member = s.member
          AND e.seq < s.seq AND e.started_at < s.ended_at AND e.ended_at > s.started_at
        ORDER BY e.seq LIMIT 1) AS overlapped,
       CASE WHEN s.kind = 'g' AND s.gift_limit IS NOT NULL THEN
           s.given_stored + coalesce((SELECT sum(e.minutes) FROM tb_import_stage e
               WHERE e.kind = 'g' AND e.refused = 0 AND e.late_after = 0
                 AND e.member = s.member AND e.seq < s.seq
                 AND e.occurred_at >= s.year_start AND e.occurred_at < s.year_end), 0)
       END AS given,
       a2.code AS code2, bl.n, bl.amount, bl.before, ba.code, ba.status, ba.floor_minutes,
       ba.ceiling_minutes, ba.held_out_minutes, ba.held_in_minutes
FROM judged j
JOIN tb_import_stage s ON s.seq = j.seq
JOIN run r2 ON r2.seq = j.seq AND r2.n = 2
JOIN tb_import_acct a2 ON a2.id = r2.acct
LEFT JOIN run bl ON bl.seq = j.seq AND bl.n = j.bad_n
LEFT JOIN tb_import_acct ba ON ba.id = bl.acct
WHERE s.refused = 1 OR s.late_after > 0
ORDER BY j.seq
"""

#: The batch's accounts locked in the ledger's order (code, byte by byte; on SQLite the
#: transaction holds the database's write lock): their latest posting.
_LOCK_SQL: Final = {
    "postgresql": """
    SELECT max(last_recorded_at) AS latest FROM (
        SELECT a.last_recorded_at FROM tb_accounts a WHERE @ANY(a.id, account_ids)@
        ORDER BY a.code COLLATE "C" FOR UPDATE
    ) AS locked
    """,
    "sqlite": "SELECT max(a.last_recorded_at) AS latest FROM tb_accounts a "
    "WHERE @ANY(a.id, account_ids)@",
}
_LOCK: Final = {
    name: text(_dialect_sql(sql, name)).columns(latest=UTCDateTime())
    for name, sql in _LOCK_SQL.items()
}
#: Whether a hold on one of them has expired (read without locking).
_DUE: Final = """
SELECT count(*) FROM tb_accounts a
WHERE @ANY(a.id, account_ids)@ AND a.next_hold_expiry_at <= :now
"""
_COPY_ACCOUNTS: Final = """
INSERT INTO tb_import_acct (id, code, status, floor_minutes, ceiling_minutes, posted_minutes,
                            held_out_minutes, held_in_minutes)
SELECT a.id, a.code, a.status, a.floor_minutes, a.ceiling_minutes, a.posted_minutes,
       a.held_out_minutes, a.held_in_minutes
FROM tb_accounts a WHERE @ANY(a.id, account_ids)@
"""
_STORED_OVERLAP = """
UPDATE tb_import_stage SET stored_overlap = (
    SELECT min(v.id) FROM tb_services v
    WHERE v.volunteer_id = tb_import_stage.member AND v.status IN ('pending', 'confirmed')
      AND v.started_at < tb_import_stage.ended_at AND v.ended_at > tb_import_stage.started_at)
WHERE kind = 'd'
"""
# Gifts and vouchers out of the giver in the gift's calendar year, already stored.
_GIVEN_STORED = """
UPDATE tb_import_stage SET given_stored = coalesce((
    SELECT sum(g.minutes) FROM tb_gifts g WHERE g.giver_id = tb_import_stage.member
      AND g.occurred_at >= tb_import_stage.year_start
      AND g.occurred_at < tb_import_stage.year_end), 0) + coalesce((
    SELECT sum(v.minutes) FROM tb_vouchers v WHERE v.member_id = tb_import_stage.member
      AND v.direction = 'out' AND v.status <> 'refused'
      AND v.created_at >= tb_import_stage.year_start
      AND v.created_at < tb_import_stage.year_end), 0)
WHERE kind = 'g' AND gift_limit IS NOT NULL
"""

# --- SQL of the lots ---------------------------------------------------------------------

_ACCEPTED: Final = f"SELECT * FROM tb_import_stage WHERE {_STANDING}"
def _matching(*, stop: str, outs: str, lots: str) -> str:
    """Minutes out matched to open lots first in, first out: the lot uses are where the
    running sums of the lots (in their order) and of the minutes out (in file order)
    overlap. ``outs`` joins the minutes out (``e``) to the members and rows taken, after
    the CTEs ``stop`` may begin; ``lots`` joins and filters the open lots (``l``)."""
    return f"""
    INSERT INTO tb_import_seg (seq, member, tid, part, kind)
    WITH {stop} outs AS MATERIALIZED (
        SELECT e.member, e.seq, e.minutes,
               sum(e.minutes) OVER (PARTITION BY e.member ORDER BY e.seq
                                    ROWS UNBOUNDED PRECEDING) - e.minutes AS lo
        FROM tb_import_ev e {outs}
        WHERE e.kind = 'o'
    ), open AS MATERIALIZED (
        SELECT l.tid, l.member, l.remaining,
               sum(l.remaining) OVER (PARTITION BY l.member
                                      ORDER BY l.earned_on, l.cseq, l.piece
                                      ROWS UNBOUNDED PRECEDING) - l.remaining AS lo
        FROM tb_import_lot l {lots}
    )
    SELECT o.seq, o.member, l.tid,
           CASE WHEN o.lo + o.minutes < l.lo + l.remaining
                THEN o.lo + o.minutes ELSE l.lo + l.remaining END
           - CASE WHEN o.lo > l.lo THEN o.lo ELSE l.lo END,
           s.kind
    FROM open l
    JOIN outs o ON o.member = l.member
         AND l.lo < o.lo + o.minutes AND o.lo < l.lo + l.remaining
    JOIN tb_import_stage s ON s.seq = o.seq
    """


_LOT_SETUP = (
    # The payers' open lots (stored ones sort first among a day's, by id).
    """
    INSERT INTO tb_import_lot (member, minutes, remaining, origin_site, earned_on, expires_on,
                               cseq, piece, stored_id, stored_remaining)
    SELECT l.member_id, l.minutes, l.remaining_minutes, l.origin_site_id, l.earned_on,
           l.expires_on, -1, l.id, l.id, l.remaining_minutes
    FROM tb_lots l
    WHERE @ANY(l.member_id, payers)@ AND l.remaining_minutes > 0
    """,
    # Each member's events: d its deposit's lot arrives, i a gift's lots arrive (once the
    # giver has taken them), o minutes go out (a redemption, a gift).
    f"""
    INSERT INTO tb_import_ev (member, seq, kind, minutes)
    SELECT member, seq, CASE kind WHEN 'd' THEN 'd' ELSE 'o' END,
           CASE kind WHEN 'd' THEN kept ELSE minutes END
    FROM ({_ACCEPTED}) AS a WHERE kind <> 'd' OR kept > 0
    UNION ALL
    SELECT other, seq, 'i', minutes FROM ({_ACCEPTED}) AS a WHERE kind = 'g'
    """,
    # A member's progress: the last row of the batch it has passed.
    """
    INSERT INTO tb_import_prog (member, p, last)
    SELECT member, -1, max(seq) FROM tb_import_ev GROUP BY member
    """,
)
_NEXT = """
SELECT member, seq, kind, minutes FROM (
    SELECT e.member, e.seq, e.kind, e.minutes,
           row_number() OVER (PARTITION BY e.member ORDER BY e.seq, e.kind) AS n
    FROM tb_import_ev e JOIN tb_import_prog p ON p.member = e.member AND e.seq > p.p
) AS x
WHERE n = 1 AND (kind = 'd' OR (kind = 'i' AND seq IN (SELECT seq FROM tb_import_done)))
"""
_LOT_ROUND = (
    # 1. The arrivals next in line: a deposit's lot is made; a gift whose giver has taken
    #    its lots is passed. Either way the member moves past it.
    f"""
    INSERT INTO tb_import_lot (member, minutes, remaining, origin_site, earned_on, expires_on,
                               cseq, piece)
    SELECT a.member, a.minutes, a.minutes, s.site, s.earned_on, s.expires_on, a.seq, 0
    FROM ({_NEXT}) AS a JOIN tb_import_stage s ON s.seq = a.seq WHERE a.kind = 'd'
    """,
    f"UPDATE tb_import_prog SET p = a.seq FROM ({_NEXT}) AS a "
    "WHERE tb_import_prog.member = a.member",
    # 2. Each member's run of minutes out up to its next arrival, from its open lots first
    #    in, first out: where the running sums of the lots and of the minutes out overlap.
    _matching(
        stop="""
        stop AS (
            SELECT p.member, p.p,
                   coalesce(min(e.seq) FILTER (WHERE e.kind <> 'o'), 2147483647) AS stop
            FROM tb_import_prog p JOIN tb_import_ev e ON e.member = p.member AND e.seq > p.p
            GROUP BY p.member, p.p
        ),""",
        outs="JOIN stop s ON s.member = e.member AND e.seq > s.p AND e.seq < s.stop",
        # Only lots that have arrived: a giver may have made the lots of a gift this
        # member has not passed yet.
        lots="""JOIN tb_import_prog p ON p.member = l.member
        WHERE l.remaining > 0 AND l.cseq <= p.p AND l.member IN (SELECT member FROM outs)""",
    ),
    """
    UPDATE tb_import_lot SET remaining = remaining - u.taken
    FROM (SELECT tid, sum(part) AS taken FROM tb_import_seg GROUP BY tid) AS u
    WHERE tb_import_lot.tid = u.tid
    """,
    "INSERT INTO tb_import_use (seq, tid, minutes) SELECT seq, tid, part FROM tb_import_seg",
    # 3. A gift's pieces become the receiver's lots, earned when their sources were.
    """
    INSERT INTO tb_import_lot (member, minutes, remaining, origin_site, earned_on, expires_on,
                               cseq, piece, parent_tid)
    SELECT s.other, u.part, u.part, l.origin_site, l.earned_on, l.expires_on, u.seq,
           row_number() OVER (PARTITION BY u.seq ORDER BY l.earned_on, l.cseq, l.piece),
           l.tid
    FROM tb_import_seg u JOIN tb_import_stage s ON s.seq = u.seq
    JOIN tb_import_lot l ON l.tid = u.tid
    WHERE u.kind = 'g'
    """,
    "INSERT INTO tb_import_done (seq) SELECT DISTINCT seq FROM tb_import_seg WHERE kind = 'g'",
    # The run's minutes out are all taken (the balances allowed them): past its end.
    """
    UPDATE tb_import_prog SET p = x.p
    FROM (SELECT member, max(seq) AS p FROM tb_import_seg GROUP BY member) AS x
    WHERE tb_import_prog.member = x.member
    """,
)
#: The members whose lots need no rounds: no gift reaches them in the batch, and each new
#: lot of theirs sorts after every lot they hold and every new one before it (earned no
#: earlier). Their new lots only ever join the end of their queue, so each minute out takes
#: the next minutes of the queue, which have arrived (the balance allowed it): one pass.
_FAST = (
    """
    INSERT INTO tb_import_fast (member)
    WITH deposits AS (
        SELECT e.member, s.earned_on,
               max(s.earned_on) OVER (PARTITION BY e.member ORDER BY e.seq
                                      ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
               AS latest_before
        FROM tb_import_ev e JOIN tb_import_stage s ON s.seq = e.seq
        WHERE e.kind = 'd'
    ), held AS (
        SELECT member, max(earned_on) AS latest FROM tb_import_lot WHERE cseq = -1
        GROUP BY member
    ), out_of_order AS (
        SELECT d.member FROM deposits d LEFT JOIN held h ON h.member = d.member
        WHERE d.earned_on < d.latest_before OR d.earned_on < h.latest
    )
    SELECT p.member FROM tb_import_prog p
    WHERE p.member NOT IN (SELECT member FROM tb_import_ev WHERE kind = 'i')
      AND p.member NOT IN (SELECT member FROM out_of_order)
    """,
    """
    INSERT INTO tb_import_lot (member, minutes, remaining, origin_site, earned_on, expires_on,
                               cseq, piece)
    SELECT e.member, e.minutes, e.minutes, s.site, s.earned_on, s.expires_on, e.seq, 0
    FROM tb_import_ev e JOIN tb_import_fast f ON f.member = e.member
    JOIN tb_import_stage s ON s.seq = e.seq
    WHERE e.kind = 'd'
    """,
    _matching(
        stop="",
        outs="JOIN tb_import_fast f ON f.member = e.member",
        lots="JOIN tb_import_fast f ON f.member = l.member WHERE l.remaining > 0",
    ),
)
#: Past their last event: the rounds leave them be.
_FAST_DONE = """
UPDATE tb_import_prog SET p = last
WHERE member IN (SELECT member FROM tb_import_fast)
"""
_MEMBERS_LEFT = "SELECT count(*) FROM tb_import_prog WHERE p < last"
#: Where a round's statements after its matching begin (taking the minutes, the uses, a
#: gift's pieces, the gifts done, the progress).
_AFTER_MATCHING: Final = 3
#: A minute out that no lot covered: the lots disagree with the balance.
_UNCOVERED = f"""
SELECT a.seq, a.member, a.minutes, coalesce(sum(u.minutes), 0)
FROM ({_ACCEPTED}) AS a LEFT JOIN tb_import_use u ON u.seq = a.seq
WHERE a.kind <> 'd'
GROUP BY a.seq, a.member, a.minutes
HAVING coalesce(sum(u.minutes), 0) <> a.minutes
"""

# --- SQL of the writes -------------------------------------------------------------------


def _ids(name: str, n: str, listed: bool) -> tuple[str, str]:
    """The id reserved for row number ``n`` in parameter ``name``: the first of a
    contiguous range plus ``n - 1``, or else (PostgreSQL: a sequence shared with other
    writers) from the list, joined by its ordinality."""
    if not listed:
        return f"CAST(:{name} AS BIGINT) + {n} - 1", ""
    join = f"LEFT JOIN unnest(CAST(:{name} AS BIGINT[])) WITH ORDINALITY AS {name}(id, n) "
    return f"{name}.id", join + f"ON {name}.n = {n}"


@cache
def _numbering(listed: bool) -> tuple[str, str]:
    """The accepted rows' entry and service ids, and the new lots' ids, in file order."""
    entry, entry_join = _ids("entry_ids", "o.n", listed)
    service, service_join = _ids("service_ids", "o.kn", listed)
    lot, lot_join = _ids("lot_ids", "o.n", listed)
    return (
        f"""
        INSERT INTO tb_import_out (seq, entry_id, service_id)
        SELECT o.seq, {entry}, CASE WHEN o.kind = 'd' THEN {service} END FROM (
            SELECT seq, kind, row_number() OVER (ORDER BY seq) AS n,
                   row_number() OVER (PARTITION BY kind ORDER BY seq) AS kn
            FROM tb_import_stage WHERE {_STANDING}
        ) AS o {entry_join} {service_join}
        """,
        f"""
        UPDATE tb_import_lot SET new_id = o.id
        FROM (SELECT o.tid, {lot} AS id FROM (
                  SELECT tid, row_number() OVER (ORDER BY cseq, piece) AS n
                  FROM tb_import_lot WHERE cseq >= 0) AS o {lot_join}) AS o
        WHERE tb_import_lot.tid = o.tid
        """,
    )


def _writes(dialect: str) -> tuple[str, ...]:
    as_json = "CAST({} AS json)" if dialect == "postgresql" else "{}"
    deposit_meta = (
        """'{"service_id": ' || service_id || ', "service_type": ' || type_json """
        """|| ', "raw_minutes": ' || raw_minutes || ', "weight_permille": ' || weight """
        """|| ', "credited_minutes": ' || minutes || ', "diverted_minutes": ' """
        """|| (minutes - kept) || '}'"""
    )
    meta = as_json.format(f"CASE kind WHEN 'd' THEN {deposit_meta} ELSE meta END")
    accepted_legs = f"""
    WITH accepted AS MATERIALIZED (SELECT tb_import_stage.*, 1 AS w FROM tb_import_stage
                                   WHERE {_STANDING}),
    legs AS MATERIALIZED ({_legs("accepted")})"""
    accepted = "tb_import_stage JOIN tb_import_out USING (seq)"
    return (
        f"""
        INSERT INTO tb_entries (id, idempotency_key, code, occurred_at, recorded_at, operator,
                                memo, metadata)
        SELECT entry_id,
               CASE kind WHEN 'd' THEN 'service-' || service_id || '-deposit'
                         WHEN 'r' THEN 'redemption:' || row_key ELSE 'gift:' || row_key END,
               CASE kind WHEN 'd' THEN 'deposit' WHEN 'r' THEN 'redemption' ELSE 'gift' END,
               occurred_at, :recorded, CASE kind WHEN 'd' THEN :confirmer ELSE :operator END,
               CASE kind WHEN 'd' THEN 'service ' || service_id || ': ' || service_type
                         ELSE memo END,
               {meta}
        FROM {accepted} ORDER BY seq
        """,
        f"""{accepted_legs}
        INSERT INTO tb_postings (entry_id, account_id, amount_minutes, balance_after_minutes,
                                 recorded_at)
        SELECT o.entry_id, l.acct, l.amount, a.posted_minutes + CAST(sum(l.amount)
                   OVER (PARTITION BY l.acct ORDER BY l.seq ROWS UNBOUNDED PRECEDING) AS BIGINT),
               :recorded
        FROM legs l JOIN tb_import_out o ON o.seq = l.seq
        JOIN tb_import_acct a ON a.id = l.acct
        WHERE l.amount <> 0
        """,
        f"""{accepted_legs}
        UPDATE tb_accounts
        SET posted_minutes = posted_minutes + d.delta, version = version + d.legs,
            last_recorded_at = :recorded
        FROM (SELECT acct, sum(amount) AS delta, count(*) AS legs FROM legs
              WHERE amount <> 0 GROUP BY acct) AS d
        WHERE tb_accounts.id = d.acct AND @ANY(tb_accounts.id, account_ids)@
        """,
        f"""
        INSERT INTO tb_services (id, programme_id, idempotency_key, volunteer_id, site_id,
            service_type, started_at, ended_at, raw_minutes, weight_permille, credited_minutes,
            policy_version, note, status, reason, recorded_by, recorded_at, decided_at,
            deposit_entry_id)
        SELECT service_id, :programme, row_key, member, site, service_type, started_at,
               ended_at, raw_minutes, weight, minutes, version, '', 'confirmed', '', :operator,
               :now, :now, entry_id
        FROM {accepted} WHERE kind = 'd' ORDER BY seq
        """,
        """
        INSERT INTO tb_service_recipients (service_id, member_id)
        SELECT o.service_id, r.member
        FROM tb_import_recipients r JOIN tb_import_out o ON o.seq = r.seq
        ORDER BY o.service_id, r.member
        """,
        f"""
        INSERT INTO tb_confirmations (service_id, party, confirmed_by, confirmed_at)
        SELECT service_id, party, confirmed_by, :now FROM (
            SELECT service_id, 0 AS k, 'recipient' AS party, 'member:' || other AS confirmed_by
            FROM {accepted} WHERE kind = 'd' AND two_conf = 1
            UNION ALL
            SELECT service_id, 1, 'operator', :confirmer
            FROM {accepted} WHERE kind = 'd'
        ) AS c ORDER BY service_id, k
        """,
        """
        INSERT INTO tb_lots (id, member_id, minutes, remaining_minutes, origin_site_id,
                             earned_on, expires_on, source_entry_id, parent_lot_id)
        SELECT l.new_id, l.member, l.minutes, l.remaining, l.origin_site, l.earned_on,
               l.expires_on, o.entry_id, coalesce(p.stored_id, p.new_id)
        FROM tb_import_lot l JOIN tb_import_out o ON o.seq = l.cseq
        LEFT JOIN tb_import_lot p ON p.tid = l.parent_tid
        WHERE l.cseq >= 0 ORDER BY l.new_id
        """,
        """
        INSERT INTO tb_lot_uses (entry_id, lot_id, minutes)
        SELECT o.entry_id, coalesce(l.stored_id, l.new_id), u.minutes
        FROM tb_import_use u JOIN tb_import_out o ON o.seq = u.seq
        JOIN tb_import_lot l ON l.tid = u.tid
        ORDER BY u.seq, l.earned_on, l.cseq, l.piece
        """,
        f"""
        INSERT INTO tb_pool_lots (region_id, minutes, remaining_minutes, origin_site_id,
                                  earned_on, source_entry_id)
        SELECT region, minutes - kept, minutes - kept, site, earned_on, entry_id
        FROM {accepted} WHERE kind = 'd' AND kept < minutes ORDER BY seq
        """,
        f"""
        INSERT INTO tb_redemptions (programme_id, idempotency_key, member_id, recipient_id,
            site_id, service_type, minutes, occurred_at, redeemed_by, entry_id)
        SELECT :programme, row_key, member, other, site, service_type, minutes, occurred_at,
               :operator, entry_id
        FROM {accepted} WHERE kind = 'r' ORDER BY seq
        """,
        f"""
        INSERT INTO tb_gifts (programme_id, idempotency_key, giver_id, receiver_id, minutes,
                              occurred_at, given_by, entry_id)
        SELECT :programme, row_key, member, other, minutes, occurred_at, :operator, entry_id
        FROM {accepted} WHERE kind = 'g' ORDER BY seq
        """,
    )


_TIMES: Final = (bindparam("now", type_=UTCDateTime()), bindparam("recorded", type_=UTCDateTime()))


@cache
def _statement(sql: str, dialect: str) -> TextClause:
    """``sql`` as a text clause for ``dialect``; its instants bound through the column
    type."""
    clause = text(_dialect_sql(sql, dialect))
    wanted = [p for p in _TIMES if f":{p.key}" in sql]
    return clause.bindparams(*wanted) if wanted else clause


# --- the first part: rules that depend on no earlier row -----------------------------------


@dataclass(slots=True)
class _Staged:
    values: tuple[Any, ...]
    recipients: tuple[int, ...]


class _Plan(_Batch):
    """The in-memory engine's reading and judging, up to the rules SQL decides."""

    def _load(self) -> None:
        self._load_facts()
        self.pools: dict[int, tuple[int, int]] = {}  # volunteer id -> (region, pool account)
        policy = self.policy_now[1]
        if policy.storage_cap_minutes is not None and policy.cap_excess == "pool":
            self._load_pools()

    def _load_pools(self) -> None:
        """Each volunteer's home region and its pool's account, where the cap diverts."""
        homes = {
            m.home_site_id: m.id
            for row in self.rows
            if row.kind == "service" and (m := self.members.get(row.member)) is not None
        }
        if not homes:
            return
        found = self.conn.execute(
            select(sites.c.id, regions.c.id, regions.c.pool_account_id)
            .join(regions, regions.c.id == sites.c.region_id)
            .where(sites.c.id.in_(sorted(homes)))
        ).all()
        by_site = {site: (region, pool) for site, region, pool in found}
        for member in self.members.values():
            if member.home_site_id in by_site:
                self.pools[member.id] = by_site[member.home_site_id]

    def plan(self, seq: int, row: HistoryRow) -> _Staged | None:
        """The staged row; None for a replay. Raises _Refused as the engines refuse."""
        if row.kind == "service":
            return self._plan_service(seq, row)
        if row.kind == "redemption":
            return self._plan_redemption(seq, row)
        return self._plan_gift(seq, row)

    def _plan_service(self, seq: int, row: HistoryRow) -> _Staged | None:
        facts = self.service_parties(row)
        if facts is None:
            return None
        site, version, policy, kind, raw, credited, volunteer, recipients = facts
        assert row.ended_at is not None, "a service row has its end"
        late_after, late = self._late(row, site, policy, credited)
        region, pool = self.pools.get(volunteer.id, (None, None))
        earned_on = policy.local_date(row.ended_at)
        expires = None
        if policy.lot_expiry_days is not None:
            expires = earned_on + timedelta(days=policy.lot_expiry_days)
        values = (
            seq, "d", row.key, volunteer.id, recipients[0], volunteer.account_id, None,
            site.id, site.issued_account_id, pool, region, credited, row.started_at,
            row.ended_at, row.ended_at, earned_on, expires, row.service_type,
            json.dumps(row.service_type), raw, kind.weight_permille, version,
            int(policy.confirmations_required == 2), None, None, None, late_after, late,
            None, None, credited,
        )  # fmt: skip
        return _Staged(values, tuple(recipients))

    def _late(
        self, row: HistoryRow, site: Any, policy: Policy, credited: int
    ) -> tuple[int, str | None]:
        """The refusals of this part the engines check after the overlap (the confirmations'
        rights) or after the accounts' limits (the file's minutes)."""
        try:
            self.confirmable(site, policy)
        except _Refused as refused:
            return 1, refused.reason
        try:
            self.file_minutes(row, credited)
        except _Refused as refused:
            return 2, refused.reason
        return 0, None

    def _plan_redemption(self, seq: int, row: HistoryRow) -> _Staged | None:
        parties = self.redemption_parties(row)
        if parties is None:
            return None
        site, member, recipient = parties
        assert row.minutes is not None
        values = (
            seq, "r", row.key, member.id, recipient.id, member.account_id, None, site.id,
            site.redeemed_account_id, None, None, row.minutes, None, None, row.started_at,
            None, None, row.service_type, None, None, None, None, None, None, None, None, 0,
            None, f"{row.service_type} for member {recipient.id}",
            json.dumps({"recipient_id": recipient.id, "service_type": row.service_type}),
            None,
        )  # fmt: skip
        return _Staged(values, ())

    def _plan_gift(self, seq: int, row: HistoryRow) -> _Staged | None:
        parties = self.gift_parties(row)
        if parties is None:
            return None
        giver, receiver, policy = parties
        assert row.minutes is not None
        limit = policy.gift_yearly_limit_minutes
        year = _gifts.calendar_year(row.started_at, policy) if limit is not None else (None, None)
        values = (
            seq, "g", row.key, giver.id, receiver.id, giver.account_id, receiver.account_id,
            None, None, None, None, row.minutes, None, None, row.started_at, None, None, None,
            None, None, None, None, None, limit, *year, 0, None,
            f"gift from member {giver.id} to member {receiver.id}", None, None,
        )  # fmt: skip
        return _Staged(values, ())


# --- the batch -----------------------------------------------------------------------------


class _Engine:
    """One batch through the database: staged, locked, judged in rounds, written."""

    def __init__(
        self, act: Act, plan: _Plan, rows: Sequence[HistoryRow], staged: list[_Staged]
    ) -> None:
        self.act = act
        self.conn = act.conn
        self.staged = staged
        self.rows_by_seq = dict(enumerate(rows))
        self.staged_by_seq = {s.values[0]: s for s in staged}
        policy = plan.policy_now[1]
        self.cap = policy.storage_cap_minutes
        self.params: dict[str, Any] = {
            "cap": self.cap,
            "diverts": int(self.cap is not None and policy.cap_excess == "pool"),
            "programme": plan.programme.id,
            "operator": plan.operator,
            "confirmer": plan.confirmer,
            "now": act.now,
        }

    def run(self, sql: str, **extra: Any) -> int:
        result = self.conn.execute(
            _statement(sql, self.conn.dialect.name), {**self.params, **extra}
        )
        if result.rowcount == -1 and self.conn.dialect.name == "sqlite":
            # Python's sqlite3 counts no rows of a statement that starts with WITH.
            return int(self.conn.exec_driver_sql("SELECT changes()").scalar_one())
        return int(result.rowcount)

    def rows(self, sql: str) -> list[Any]:
        return list(self.conn.execute(_statement(sql, self.conn.dialect.name), self.params).all())

    # --- staging and locking ---------------------------------------------------------------

    def stage(self) -> None:
        dialect = self.conn.dialect.name
        if dialect == "postgresql":
            # The recursive query's estimates run to millions of rows: past the server's JIT
            # threshold, compiling took 95 ms of a 170 ms round (for the batch only).
            self.conn.exec_driver_sql("SET LOCAL jit = off")
            # One round trip (psycopg runs several statements given without parameters);
            # the tables are emptied at every commit, and a rollback takes their rows.
            self.conn.exec_driver_sql(";\n".join(_setup_sql(self.conn.dialect)))
        else:
            for sql in _setup_sql(self.conn.dialect):
                self.conn.exec_driver_sql(sql)
            for name in _SCRATCH:
                self.conn.exec_driver_sql(f"DELETE FROM {name}")
        payers = {s.values[3] for s in self.staged if s.values[1] != "d"}
        self.params["account_ids"] = self._int_list(self._account_ids())
        self.params["payers"] = self._int_list(payers)
        _STAGE_ROWS.execute(self.conn, [s.values for s in self.staged])
        _RECIPIENT_ROWS.execute(
            self.conn, [(s.values[0], m) for s in self.staged for m in s.recipients]
        )
        if dialect == "postgresql":
            # Temporary tables have no statistics unless gathered: the rounds' joins need them.
            self.conn.exec_driver_sql("ANALYZE tb_import_stage")
        self.run(_STORED_OVERLAP)
        self.run(_GIVEN_STORED)

    def lock_accounts(self) -> None:
        """Lock every account a staged row may post to, in the ledger's order (on SQLite the
        transaction holds the database's write lock), then copy them for the rounds. Holds
        past their expiry are released first, by the ledger's own code (their minutes count
        in the limits), before this locks any (the ledger's code locks in its order, with
        the accounts those holds name); the batch's entries are recorded no earlier than any
        of the accounts' last postings, as the ledger records them."""
        if self.rows(_DUE)[0][0]:
            _accounts.lock_releasing_holds(self.conn, self._account_ids(), self.act.tx.clock())
        latest = self.conn.execute(_LOCK[self.conn.dialect.name], self.params).scalar_one()
        clock = self.act.tx.clock()
        self.params["recorded"] = clock if latest is None else max(clock, latest)
        self.run(_COPY_ACCOUNTS)

    def _account_ids(self) -> set[int]:
        """The accounts a staged row may post to: its member's, its receiver's, its
        station's and its pool's."""
        found = {v for s in self.staged for v in (s.values[5], s.values[6], *s.values[8:10])}
        found.discard(None)
        return found

    # --- judging ---------------------------------------------------------------------------

    def decide(self) -> None:
        for _round in range(ROUNDS_MAX):
            if self.run(_ROUND) == 0:
                return
        raise errors.IntegrityViolationError("the import's refusals did not settle")

    def _reserved(self, table: Any, count: int) -> list[int]:
        return reserve_ids(self.conn, table, count) if count else []

    def _numbered(self, which: int, **reserved: list[int]) -> None:
        """Run numbering statement ``which`` with the ids reserved: the first of each when
        they are contiguous (always on SQLite), else the lists."""
        listed = any(ids and ids[-1] - ids[0] != len(ids) - 1 for ids in reserved.values())
        if listed:
            self.run(_numbering(True)[which], **reserved)
        else:
            firsts = {name: ids[0] if ids else 0 for name, ids in reserved.items()}
            self.run(_numbering(False)[which], **firsts)

    def _int_list(self, values: Any) -> Any:
        """A list of integers as a parameter: an array on PostgreSQL, JSON on SQLite."""
        ordered = sorted(values)
        return ordered if self.conn.dialect.name == "postgresql" else json.dumps(ordered)

    def number(self) -> int:
        """Ids for the accepted rows' entries and services, in file order; their count."""
        ((accepted, deposits),) = self.rows(
            "SELECT count(*), coalesce(sum(CASE kind WHEN 'd' THEN 1 ELSE 0 END), 0) "
            f"FROM tb_import_stage WHERE {_STANDING}"
        )
        if accepted:
            entry_ids = self._reserved(entries, int(accepted))
            service_ids = self._reserved(services, int(deposits))
            self._numbered(0, entry_ids=entry_ids, service_ids=service_ids)
        return int(accepted)

    def refusals(self) -> list[RejectedRow]:
        """The refused rows, with the reasons the other engines give."""
        if self.params["diverts"]:
            self.run(_KEPT_OF_REFUSED)
        found = self.rows(_EXPLAIN)
        if not found:
            return []
        overlapped = [r.overlapped for r in found if r.overlapped is not None]
        ids: dict[int, int] = {}
        if overlapped:
            ids = dict(
                self.conn.execute(
                    select(OUT.c.seq, OUT.c.service_id).where(OUT.c.seq.in_(overlapped))
                ).all()
            )
        return [self._refusal(r, ids) for r in found]

    def _refusal(self, r: Any, service_ids: dict[int, int]) -> RejectedRow:
        row = self.rows_by_seq[r.seq]
        staged = self.staged_by_seq[r.seq]
        reason: errors.TimebankError | str
        if r.reason == "overlap":
            other = r.stored_overlap if r.stored_overlap is not None else service_ids[r.overlapped]
            reason = errors.OverlappingServiceError(row.member, other)
        elif r.reason == "late":
            reason = staged.values[27]
        elif r.reason in ("cap", "room"):
            assert self.cap is not None
            reason = errors.CapExceededError(
                r.code2, cap_minutes=self.cap, room_minutes=r.room, requested=staged.values[11]
            )
        elif r.reason == "gift_limit":
            reason = _limit_refusal(row, r.given, staged.values[23])
        elif r.reason == "leg":
            reason = _leg_refusal(row, r)
        else:
            raise errors.IntegrityViolationError(
                f"row {row.line} was refused, and the rules find nothing wrong with it"
            )
        return RejectedRow(line=row.line, key=row.key, reason=str(reason))

    # --- lots and writing ------------------------------------------------------------------

    def take_lots(self) -> None:
        """Minutes taken from lots first in, first out; a gift's pieces to its receiver."""
        for sql in _LOT_SETUP:
            self.run(sql)
        for sql in _FAST:
            self.run(sql)
        # The fast members' uses, as a round's (its statements after the matching).
        for sql in _LOT_ROUND[_AFTER_MATCHING:-1]:
            self.run(sql)
        self.run(_FAST_DONE)
        self.conn.exec_driver_sql("DELETE FROM tb_import_seg")
        for _round in range(ROUNDS_MAX):
            (left,) = self.rows(_MEMBERS_LEFT)[0]
            if not left:
                break
            moved = sum(self.run(sql) for sql in _LOT_ROUND)
            self.conn.exec_driver_sql("DELETE FROM tb_import_seg")
            if not moved:
                self._lots_disagree()
        uncovered = self.rows(_UNCOVERED)
        if uncovered:
            self._lots_disagree()

    def _lots_disagree(self) -> None:
        (_seq, member, minutes, covered), *_ = self.rows(_UNCOVERED) or [(None, "?", "?", "?")]
        raise errors.IntegrityViolationError(
            f"member {member}'s lots hold {covered} of the {minutes} minutes"
        )

    def write(self, dialect: str) -> None:
        (new_lots,) = self.rows("SELECT count(*) FROM tb_import_lot WHERE cseq >= 0")[0]
        if new_lots:
            self._numbered(1, lot_ids=self._reserved(lots, int(new_lots)))
        for sql in _writes(dialect):
            self.run(sql)
        # The stored lots' minutes left, by id: a join to the staged lots would scan the
        # lots' table where its statistics say it is small.
        left = self.rows(
            "SELECT stored_id, remaining FROM tb_import_lot "
            "WHERE stored_id IS NOT NULL AND remaining <> stored_remaining"
        )
        _LOTS_LEFT.execute(self.conn, [tuple(r) for r in left])
        redeemed = [
            entry_id
            for (entry_id,) in self.rows(
                "SELECT o.entry_id FROM tb_import_out o JOIN tb_import_stage s "
                "ON s.seq = o.seq WHERE s.kind = 'r'"
            )
        ]
        if redeemed:
            record_origins(self.conn, in_values(self.conn, redemptions.c.entry_id, redeemed))

def _limit_refusal(row: HistoryRow, given: int, limit: int) -> errors.TimebankError:
    assert row.minutes is not None
    try:
        _gifts.within_limit(row.member, int(given), row.minutes, limit)
    except errors.TimebankError as refused:
        return refused
    raise errors.IntegrityViolationError(f"row {row.line}: the gift limit finds nothing wrong")


def _leg_refusal(row: HistoryRow, r: Any) -> errors.TimebankError | str:
    """The ledger's refusal of a leg (the account's state, then its limits), as the
    in-memory engine builds it; a payment short of minutes worded as the engines word it."""
    account = _Account(0, r.code, r.status, r.floor_minutes, r.ceiling_minutes, int(r.before),
                       r.held_out_minutes, r.held_in_minutes)  # fmt: skip
    refusal = account.refusal(int(r.amount))
    if refusal is None:
        raise errors.IntegrityViolationError(f"row {row.line}: its accounts find nothing wrong")
    if isinstance(refusal, errors.LimitExceededError) and row.kind != "service" and r.n == 1:
        return short_of_minutes(row, refusal.available_minutes)
    return refusal


def apply_batch(
    act: Act,
    programme: str,
    items: Sequence[Item],
    operator: str,
    confirmer: str,
    *,
    skip_rejected: bool = False,
) -> BatchOutcome:
    """Judge a batch's rows in file order and write the accepted ones, by SQL, in the act's
    transaction; the outcome is the other engines'. With any row rejected, BatchRejected
    rolls the batch back, unless ``skip_rejected``, which writes the others."""
    # Everything built lives until the batch is written; and the batch's statements read
    # temporary tables whose sizes change every batch (no plan kept from another batch).
    with _collector.paused(), planned_each_time(act.conn):
        rows = [item for item in items if isinstance(item, HistoryRow)]
        rejected = [item for item in items if isinstance(item, RejectedRow)]
        plan = _Plan(act, programme, rows, operator, confirmer)
        staged: list[_Staged] = []
        present = 0
        for seq, row in enumerate(rows):
            try:
                found = plan.plan(seq, row)
            except _Refused as refusal:
                rejected.append(RejectedRow(line=row.line, key=row.key, reason=refusal.reason))
                continue
            if found is None:
                present += 1
            else:
                staged.append(found)
        applied = 0
        engine = _Engine(act, plan, rows, staged)
        if staged:
            engine.stage()
            engine.lock_accounts()
            engine.decide()
            applied = engine.number()
            rejected.extend(engine.refusals())
        rejected.sort(key=lambda r: r.line)
        outcome = BatchOutcome(applied, present, tuple(rejected))
        if rejected and not skip_rejected:
            raise BatchRejected(outcome)
        if applied:
            engine.take_lots()
            engine.write(act.conn.dialect.name)
        return outcome

