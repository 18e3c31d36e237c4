"""The floor of a history import written in Python: how near its baselines any import of
W's phase B can come on this stack, beside the library's own (issue 10, parts 1 and 2).

    python benchmarks/import_floor.py [--backend sqlite|postgres] [--pg-url URL] [--rounds N]

Contenders, each on its own copy of bank_w.py's set-up (W's stations, care homes, 10,000
volunteers and their relations), in turn, ``--rounds`` times (default 5), the imports in an
order that starts one place further along each round:

- ``ceiling``: run_w.py's core ceiling, phase B (the baseline of part 1's 25 %);
- ``library``: bank_w.py's bulk import, 100 calls of ``import_history(method="bulk")`` of
  1,000 rows each, ``skip_rejected=True`` (on PostgreSQL an untimed ANALYZE whenever the
  imported entries double, what autovacuum keeps up);
- ``floor``: the least an import must do, written as plainly as Python allows on the
  driver itself, 1,000 rows a transaction: parse the same CSV text with the csv module; per
  batch read what the rules need (sites, the batch's members and their accounts, the keys
  already stored, the recipients' birth dates, the givers' relations, the payers' open lots,
  the volunteers' services in the batch's span) with one query each; judge every row in one
  loop over tuples and dicts (a service's site and overlap, a redemption's age rule and
  balance, a gift's relation and balance; lots first in, first out, a gift's pieces becoming
  the receiver's lots); write the same rows into the same tables (entries with their
  metadata, postings with running balances, accounts, services, recipients, confirmations,
  lots, lot uses, redemptions, clearing rows, gifts; the accounts it moved, guarded by the
  version it read, the guard's row count checked). Beside those rules it checks that a key
  is not stored yet and a payer or volunteer active; nothing of permissions, policy
  versions, service shapes and credits by weight, roles, the status of recipients and
  receivers, keys repeated within a batch, storage caps and the pool, yearly gift limits,
  lots' expiry, metadata limits, what a replay must repeat, or the ledger's own checks of
  each entry; it builds no error message and no object a row, and trusts its input. It takes
  ids as the library does (on SQLite after the highest, under the batch's write lock; on
  PostgreSQL from the sequences, moved by one ``setval`` a batch where the library draws
  each id with ``nextval``). A lean import written for W, not a proven lower bound: what an
  import of these rows in W's transactions of 1,000 must do, in as little Python as we could
  write. On SQLite:
  the sqlite3 module with the library's settings (``SQLITE_FILE_PRAGMAS``, foreign keys on),
  lists as one JSON parameter, one ``executemany`` a table. On PostgreSQL: psycopg, lists
  as one array parameter, the members, accounts and open lots locked as read, every table
  written by COPY, the accounts and stored lots by one ``UPDATE ... FROM unnest`` each (the
  stored lots guarded by the remaining minutes read, as the accounts by their versions), and
  the same untimed ANALYZE as the library's;
- on PostgreSQL, ``carried`` and ``piped`` (``CarriedFloor``): the floor with the members,
  accounts and open lots it read carried from batch to batch, judged without locks and
  checked by the batch's writer under its locks; ``piped`` judges the next batch while a
  second thread writes the one before (the pipelined design named for part 2), ``carried``
  writes each batch as soon as it is judged (what carrying alone changes);
- on PostgreSQL, ``plain COPY``: bank_copy.py's baseline of part 2, the rows the library
  wrote (read out of its database after the first round, untimed) copied into a fresh copy
  of the set-up in one transaction, constraints on.

In the first round every floor must accept and refuse the same rows as the library, and
every table it writes (the accounts too) must hold the same rows, ids, balances after each
posting and lots' remaining minutes included, but for the times of recording, and on
PostgreSQL the id sequences must stand where the library's do (else the exit status is 1).
Ratios to the ceiling are in entries a second, as bank_w.py reports them; to the plain COPY
in rows of W a second, as bank_copy.py does. Results go to
benchmarks/results/import-floor-<backend>-<date>.md.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import queue
import sqlite3
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import psycopg
from sqlalchemy import URL, create_engine, make_url, text

BENCHMARKS_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCHMARKS_DIR.parent
if str(REPO_ROOT) not in sys.path:
    sys.path.append(str(REPO_ROOT))

import bank_w  # noqa: E402 - after the path set-up
from bank_copy import TABLES, read_out, write_in  # noqa: E402 - the tables the import writes
from run_w import (  # noqa: E402
    DEFAULT_PG_URL,
    REGISTRY,
    Backend,
    machine_info,
    postgres_database,
    run_contender,
    save_result,
    sqlite_database,
)
from workload import PHASE_B_COUNT, Transfer, Workload, generate  # noqa: E402

from timebank._db import SQLITE_FILE_PRAGMAS, pg_integer_array  # noqa: E402

BATCH_ROWS = bank_w.BATCH_ROWS
DEFAULT_ROUNDS = 5
MIN_AGE = bank_w.POLICY.redemption_min_age or 0
SERVICE_COLUMNS = (
    "id", "programme_id", "idempotency_key", "volunteer_id", "site_id", "service_type",
    "started_at", "ended_at", "raw_minutes", "weight_permille", "credited_minutes",
    "policy_version", "note", "status", "reason", "recorded_by", "recorded_at", "decided_at",
    "deposit_entry_id",
)

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_NAIVE_EPOCH = datetime(1970, 1, 1)


def micros(text: str) -> int:
    """An ISO-8601 instant as the library stores it on SQLite (microseconds since 1970)."""
    return (datetime.fromisoformat(text) - _EPOCH) // _MICROSECOND


def connect(path: str) -> sqlite3.Connection:
    con = sqlite3.connect(path, isolation_level=None)
    for pragma in SQLITE_FILE_PRAGMAS:
        con.execute(f"PRAGMA {pragma}")
    con.execute("PRAGMA foreign_keys = ON")
    return con


def listed(values: Iterable[int | str]) -> str:
    """A list as the one JSON parameter ``json_each`` reads (what the library sends)."""
    return json.dumps(list(values))


#: A parsed row: key, kind, member, recipient, site, service type, start and end (micro-
#: seconds), minutes.
Row = tuple[str, str, int, int | None, str, str, int, int | None, int]
#: A lot as judged: [id, remaining minutes, origin site, earned on, stored remaining (None
#: for a lot made by the batch)].
Lot = list[Any]


@dataclass
class State:
    """What a batch's rules read, one query each."""

    sites: dict[str, tuple[int, int | None, int]]  # code: id, issue and redeem accounts
    members: dict[int, tuple[str, int]]  # id: status, account
    accounts: dict[int, list[Any]]  # id: [floor, posted minutes, version, version read]
    stored: set[str]  # the batch's keys already stored
    born: dict[int, str]
    relations: dict[tuple[int, int], str]
    lots: defaultdict[int, list[Lot]]  # open lots, first in first out
    busy: defaultdict[int, list[tuple[int, int]]]  # services in the batch's span
    ids: list[int]  # the last entry, service and lot ids


@dataclass
class Writes:
    """The rows a batch writes, as the tuples executemany binds."""

    now: int
    entries: list[tuple[Any, ...]] = field(default_factory=list)
    postings: list[tuple[int, int, int, int, int]] = field(default_factory=list)
    services: list[tuple[Any, ...]] = field(default_factory=list)
    recipients: list[tuple[int, int]] = field(default_factory=list)
    confirmations: list[tuple[int, str, str, int]] = field(default_factory=list)
    lots: list[tuple[Any, ...]] = field(default_factory=list)  # the Lot fourth
    touched: dict[int, Lot] = field(default_factory=dict)
    uses: list[tuple[int, int, int]] = field(default_factory=list)
    redemptions: list[tuple[Any, ...]] = field(default_factory=list)
    origins: list[tuple[Any, ...]] = field(default_factory=list)
    gifts: list[tuple[Any, ...]] = field(default_factory=list)


Copy = tuple[str, str, list[tuple[Any, ...]]]  # table, columns, rows


@dataclass
class Sealed:
    """A judged batch's writes on PostgreSQL, every row built; and, for a batch judged
    without locks (CarriedFloor), what the writer must find under its locks."""

    setvals: list[tuple[str, int]]
    recorded: Any
    moved: list[tuple[int, int, int, int, int]]
    lots_left: list[tuple[int, int, int]]  # id, remaining, remaining before
    copies: list[Copy]  # before the stored lots' update (entries first)
    after_lots: list[Copy]
    statuses: dict[int, str] = field(default_factory=dict)  # member: status judged on
    versions: dict[int, int] = field(default_factory=dict)  # account: version judged on
    busy: tuple[list[int], Any, Any, int] | None = None  # volunteers, span, services in it


def parse(text: str) -> list[Row]:
    reader = csv.reader(io.StringIO(text))
    next(reader)
    rows: list[Row] = []
    for key, kind, member, recipient, site, service_type, started, ended, minutes in reader:
        start = micros(started)
        if kind == "service":
            end = micros(ended)
            rows.append((key, kind, int(member), int(recipient), site, service_type, start, end,
                         (end - start) // 60_000_000))
        else:
            rows.append((key, kind, int(member), int(recipient) if recipient else None, site,
                         service_type, start, None, int(minutes)))
    return rows


class Floor:
    """The floor's import on SQLite: a batch's state read with one query per kind of fact,
    its rows judged in one loop over tuples, its writes one executemany per table."""

    #: How a list of values is one parameter (what the library sends on each database).
    LIST = "(SELECT value FROM json_each(?))"
    BEGIN = "BEGIN IMMEDIATE"
    #: Rows the batch will change, locked as it reads them (SQLite's BEGIN IMMEDIATE
    #: already holds the only write lock).
    LOCK = ""

    def __init__(self, path: str, programme: str, operator: str) -> None:
        self.rows: list[Row] = []
        self.con: Any = self.connect(path)
        (self.programme_id,) = self.execute(
            "SELECT id FROM tb_programmes WHERE code = ?", (programme,)
        ).fetchone()
        self.operator = operator
        self.accepted = 0
        self.refused: Counter[str] = Counter()
        self.untimed = 0.0

    def connect(self, path: str) -> Any:
        return connect(path)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        return self.con.execute(sql.replace("{list}", self.LIST).replace("{lock}", self.LOCK),
                                params)

    def listed(self, values: Iterable[int | str]) -> Any:
        return listed(set(values))

    def to_db_time(self, micros_: int) -> Any:
        """A time (microseconds since 1970) as this database's driver takes it (SQLite: the
        integer the library stores)."""
        return micros_

    def from_db_time(self, value: Any) -> int:
        return int(value)

    def earned(self, end: int) -> Any:
        return datetime.fromtimestamp(end / 1e6, UTC).date().isoformat()

    def birth(self, value: Any) -> date:
        return date.fromisoformat(value)

    def run(self, transfers: Sequence[Transfer], setup: bank_w.Setup
            ) -> tuple[int, Counter[str]]:
        """Phase B in batches of 1,000 rows, each made into CSV text here as bank_w.py
        makes it in its timed phase (the input of an import is the file)."""
        for start in range(0, len(transfers), BATCH_ROWS):
            chunk = transfers[start : start + BATCH_ROWS]
            self.batch("\n".join((bank_w.HEADER, *(bank_w.history_line(t, setup)
                                                   for t in chunk))) + "\n")
            self.after_batch()
        self.con.close()
        return self.accepted, self.refused

    def after_batch(self) -> None:
        """Nothing on SQLite (PostgreSQL's floor gathers statistics here, untimed)."""

    def batch(self, text: str) -> None:
        rows = parse(text)
        self.rows = rows
        self.execute(self.BEGIN)
        state = self.read(rows)
        writes = self.judge_all(rows, state)
        self.write(writes, state)
        self.execute("COMMIT")

    def judge_all(self, rows: list[Row], state: State) -> Writes:
        """Judge the batch's rows in order, counting what is accepted and refused."""
        writes = Writes(now=(datetime.now(UTC) - _EPOCH) // _MICROSECOND)
        for row in rows:
            reason = self.judge(row, state, writes)
            if reason:
                self.refused[reason] += 1
            else:
                self.accepted += 1
        return writes

    def read(self, rows: list[Row]) -> State:
        pid = self.programme_id

        def query(sql: str, values: Iterable[int | str], *more: Any) -> Any:
            return self.execute(sql, (self.listed(values), *more))

        people = {r[2] for r in rows} | {r[3] for r in rows if r[3] is not None}
        members = {mid: (status, account) for mid, status, account in query(
            "SELECT id, status, account_id FROM tb_members WHERE id IN {list} "
            "AND programme_id = ? ORDER BY id{lock}", people, pid)}
        sites = {code: (sid, issued, redeemed) for code, sid, issued, redeemed in self.execute(
            "SELECT code, id, issued_account_id, redeemed_account_id FROM tb_sites "
            "WHERE programme_id = ?", (pid,))}
        account_ids = {a for _, a in members.values()}
        account_ids |= {a for s in sites.values() for a in s[1:] if a is not None}
        accounts = {aid: [floor, posted, version, version] for aid, floor, posted, version in query(
            "SELECT id, floor_minutes, posted_minutes, version FROM tb_accounts "
            "WHERE id IN {list} ORDER BY id{lock}", account_ids)}
        stored, born, relations = self.read_facts(rows)
        lots: defaultdict[int, list[Lot]] = defaultdict(list)
        for lot_id, mid, remaining, origin, earned in query(
            "SELECT id, member_id, remaining_minutes, origin_site_id, earned_on FROM tb_lots "
            "WHERE member_id IN {list} AND remaining_minutes > 0 "
            "ORDER BY member_id, earned_on, id{lock}",
            (r[2] for r in rows if r[1] != "service")):
            lots[mid].append([lot_id, remaining, origin, earned, remaining])
        return State(sites, members, accounts, stored, born, relations, lots,
                     self.read_busy(rows), self.read_ids())

    def read_facts(self, rows: list[Row]
                   ) -> tuple[set[str], dict[int, Any], dict[tuple[int, int], str]]:
        """The batch's keys already stored, the birth dates of those cared for, the givers'
        relations."""

        def query(sql: str, values: Iterable[int | str]) -> Any:
            return self.execute(sql, (self.listed(values),))

        stored: set[str] = set()
        for table, kind in (("tb_services", "service"), ("tb_redemptions", "redemption"),
                            ("tb_gifts", "gift")):
            stored |= {k for (k,) in query(
                f"SELECT idempotency_key FROM {table} WHERE idempotency_key IN {{list}}",
                (r[0] for r in rows if r[1] == kind))}
        born = dict(query(
            "SELECT member_id, birth_date FROM tb_member_personal WHERE member_id IN {list}",
            (r[3] or r[2] for r in rows if r[1] == "redemption")))
        relations = {(m, o): k for m, o, k in query(
            "SELECT member_id, other_id, kind FROM tb_relations WHERE member_id IN {list}",
            (r[2] for r in rows if r[1] == "gift"))}
        return stored, born, relations

    def read_busy(self, rows: list[Row]) -> defaultdict[int, list[tuple[int, int]]]:
        """The volunteers' services overlapping the batch's span (the overlap rule)."""
        busy: defaultdict[int, list[tuple[int, int]]] = defaultdict(list)
        services = [r for r in rows if r[1] == "service"]
        if services:
            for vid, start, end in self.execute(
                "SELECT volunteer_id, started_at, ended_at FROM tb_services WHERE volunteer_id "
                "IN {list} AND status IN ('pending', 'confirmed') "
                "AND started_at < ? AND ended_at > ?",
                (self.listed(r[2] for r in services),
                 self.to_db_time(max(r[7] or 0 for r in services)),
                 self.to_db_time(min(r[6] for r in services)))):
                busy[vid].append((self.from_db_time(start), self.from_db_time(end)))
        return busy

    def read_ids(self) -> list[int]:
        return [
            self.execute(f"SELECT coalesce(max(id), 0) FROM {t}").fetchone()[0]
            for t in ("tb_entries", "tb_services", "tb_lots")
        ]

    def judge(self, row: Row, state: State, w: Writes) -> str | None:
        """Apply ``row``; the reason it is refused, or None."""
        key, kind, member = row[0], row[1], row[2]
        if key in state.stored or state.members.get(member, ("",))[0] != "active":
            return "other"
        if kind == "service":
            return self.service(row, state, w)
        account = state.members[member][1]
        if kind == "redemption":
            born = self.birth(state.born[row[3] or member])
            if _age(born, datetime.fromtimestamp(row[6] / 1e6, UTC).date()) < MIN_AGE:
                return "other"
        elif row[3] is None or (member, row[3]) not in state.relations:
            return "other"
        payer = state.accounts[account]
        if payer[0] is not None and payer[1] - row[8] < payer[0]:
            return "short of minutes"
        state.ids[0] += 1
        if kind == "redemption":
            self.redemption(row, state, w, account)
        else:
            self.gift(row, state, w, account)
        return None

    def service(self, row: Row, state: State, w: Writes) -> str | None:
        key, _, member, recipient, site, service_type, start, end, minutes = row
        assert end is not None
        assert recipient is not None
        if any(s < end and e > start for s, e in state.busy[member]):
            return "overlapping service"
        sid, issued, _ = state.sites[site]
        assert issued is not None
        ids = state.ids
        ids[0] += 1
        ids[1] += 1
        ids[2] += 1
        entry, service, now, op = ids[0], ids[1], w.now, self.operator
        metadata = json.dumps({"service_id": service, "service_type": service_type,
                               "raw_minutes": minutes, "weight_permille": 1000,
                               "credited_minutes": minutes, "diverted_minutes": 0})
        w.entries.append((entry, f"service-{service}-deposit", "deposit", end, now, op,
                          f"service {service}: {service_type}", metadata))
        post(state, w, entry, (issued, state.members[member][1]), minutes)
        w.services.append((service, self.programme_id, key, member, sid, service_type, start,
                           end, minutes, 1000, minutes, 1, "", "confirmed", "", op, now, now,
                           entry))
        w.recipients.append((service, recipient))
        w.confirmations.append((service, "operator", op, now))
        earned = self.earned(end)
        lot = [ids[2], minutes, sid, earned, None]
        state.lots[member].append(lot)
        w.lots.append((ids[2], member, minutes, lot, sid, earned, None, entry, None))
        state.busy[member].append((start, end))
        return None

    def redemption(self, row: Row, state: State, w: Writes, account: int) -> None:
        key, _, member, recipient, site, service_type, start, _, minutes = row
        cared = recipient or member
        sid, _, redeemed = state.sites[site]
        entry = state.ids[0]
        w.entries.append((entry, f"redemption:{key}", "redemption", start, w.now, self.operator,
                          f"{service_type} for member {cared}",
                          json.dumps({"recipient_id": cared, "service_type": service_type})))
        post(state, w, entry, (account, redeemed), minutes)
        origins: defaultdict[int, int] = defaultdict(int)
        for lot, part in take(state, w, member, minutes, entry):
            origins[lot[2]] += part
        w.redemptions.append((self.programme_id, key, member, cared, sid, service_type, minutes,
                              start, self.operator, entry))
        w.origins.extend((entry, o, self.programme_id, sid, start, m)
                         for o, m in origins.items())

    def gift(self, row: Row, state: State, w: Writes, account: int) -> None:
        key, _, member, receiver, _, _, start, _, minutes = row
        assert receiver is not None
        entry, ids = state.ids[0], state.ids
        w.entries.append((entry, f"gift:{key}", "gift", start, w.now, self.operator,
                          f"gift from member {member} to member {receiver}", None))
        post(state, w, entry, (account, state.members[receiver][1]), minutes)
        queue = state.lots[receiver]
        for lot, part in take(state, w, member, minutes, entry):
            ids[2] += 1
            new = [ids[2], part, lot[2], lot[3], None]
            queue.append(new)
            w.lots.append((ids[2], receiver, part, new, lot[2], lot[3], None, entry, lot[0]))
        queue.sort(key=lambda lot: (lot[3], lot[0]))
        w.gifts.append((self.programme_id, key, member, receiver, minutes, start, self.operator,
                        entry))

    def write(self, w: Writes, state: State) -> None:
        many = self.con.executemany
        many(_insert("tb_entries", "id, idempotency_key, code, occurred_at, recorded_at, "
                     "operator, memo, metadata"), w.entries)
        many(_insert("tb_postings", "entry_id, account_id, amount_minutes, "
                     "balance_after_minutes, recorded_at"), w.postings)
        moved = changed(state, w)
        guarded(len(moved), many(
            "UPDATE tb_accounts SET posted_minutes = ?, version = ?, last_recorded_at = ? "
            "WHERE id = ? AND version = ?", moved).rowcount)
        many(_insert("tb_services", ", ".join(SERVICE_COLUMNS)), w.services)
        many(_insert("tb_service_recipients", "service_id, member_id"), w.recipients)
        many(_insert("tb_confirmations", "service_id, party, confirmed_by, confirmed_at"),
             w.confirmations)
        many(_insert("tb_lots", "id, member_id, minutes, remaining_minutes, origin_site_id, "
                     "earned_on, expires_on, source_entry_id, parent_lot_id"),
             [(i, m, n, lot[1], o, e, x, s, p) for i, m, n, lot, o, e, x, s, p in w.lots])
        many("UPDATE tb_lots SET remaining_minutes = ? WHERE id = ?",
             [(lot[1], lot[0]) for lot in w.touched.values()])
        many(_insert("tb_lot_uses", "entry_id, lot_id, minutes"), w.uses)
        many(_insert("tb_redemptions", "programme_id, idempotency_key, member_id, recipient_id, "
                     "site_id, service_type, minutes, occurred_at, redeemed_by, entry_id"),
             w.redemptions)
        many(_insert("tb_redemption_origins", "entry_id, origin_site_id, programme_id, site_id, "
                     "occurred_at, minutes"), w.origins)
        many(_insert("tb_gifts", "programme_id, idempotency_key, giver_id, receiver_id, minutes, "
                     "occurred_at, given_by, entry_id"), w.gifts)


class PgFloor(Floor):
    """The floor on PostgreSQL: lists as one array parameter, the members, accounts and lots
    read locked, ids from the sequences, every table written by COPY, the accounts and
    stored lots by one UPDATE each; ANALYZE whenever the entries double, untimed (what
    autovacuum keeps up; bank_w.py's import gets the same)."""

    LIST = "%s"
    BEGIN = "BEGIN"
    LOCK = " FOR UPDATE"

    def __init__(self, url: str, programme: str, operator: str) -> None:
        super().__init__(url, programme, operator)
        self.analyzed = 0
        self.sequences = [
            self.con.execute("SELECT pg_get_serial_sequence(%s, 'id')", (t,)).fetchone()[0]
            for t in SEQUENCED
        ]
        self.ids_read: list[int] = []
        #: The connection the batches are written on (CarriedFloor's writer has its own).
        self.out = self.con

    def read_ids(self) -> list[int]:
        """The last id each sequence gave: the library takes its ids from the sequences
        (``reserve_ids``), so the floor does, to write the same ids."""
        self.ids_read = [
            last if called else last - 1
            for last, called in (
                self.con.execute(f"SELECT last_value, is_called FROM {seq}").fetchone()
                for seq in self.sequences
            )
        ]
        return list(self.ids_read)

    def connect(self, path: str) -> Any:
        return psycopg.connect(path, autocommit=True)

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Any:
        sql = sql.replace("IN {list}", "= ANY({list})").replace("?", "%s")
        return super().execute(sql, params)

    def listed(self, values: Iterable[int | str]) -> Any:
        found = sorted(set(values))
        return pg_integer_array(found) or found

    def to_db_time(self, micros_: int) -> Any:
        return _NAIVE_EPOCH + timedelta(microseconds=micros_)

    def from_db_time(self, value: Any) -> int:
        return int((value - _NAIVE_EPOCH) // _MICROSECOND)

    def earned(self, end: int) -> Any:
        return (_NAIVE_EPOCH + timedelta(microseconds=end)).date()

    def birth(self, value: Any) -> date:
        return cast(date, value)

    def after_batch(self) -> None:
        if self.accepted >= max(2 * self.analyzed, 10_000):
            started = time.perf_counter()
            self.con.execute("ANALYZE")
            self.untimed += time.perf_counter() - started
            self.analyzed = self.accepted

    def write(self, w: Writes, state: State) -> None:
        self.apply(self.seal(w, state))

    def next_ids(self, state: State) -> list[int]:
        """Where the sequences must stand after the batch, as the library's reservations
        leave them: the entries' and lots' at the last id used; the services' past a block
        of one id per service row of the batch, taken at its first accepted service (its
        refused rows leave gaps)."""
        services = sum(1 for r in self.rows if r[1] == "service")
        return [state.ids[0], self.ids_read[1] + services if state.ids[1] > self.ids_read[1]
                else self.ids_read[1], state.ids[2]]

    def seal(self, w: Writes, state: State) -> Sealed:
        """What the batch writes, every row built now (nothing of it refers to the state the
        next batch will change)."""
        t = self.to_db_time
        ends = self.next_ids(state)
        lots_left = [(lot[0], lot[1], lot[4]) for lot in w.touched.values()]
        new_lots = [(i, m, n, lot[1], o, e, x, s, p) for i, m, n, lot, o, e, x, s, p in w.lots]
        for lot in (*w.touched.values(), *(row[3] for row in w.lots)):
            lot[4] = lot[1]  # what the database will hold once this batch is written
        return Sealed(
            setvals=[(seq, end) for seq, end, read in zip(self.sequences, ends, self.ids_read,
                                                          strict=True) if end > read],
            recorded=t(w.now),
            moved=changed(state, w),
            lots_left=lots_left,
            copies=[
                ("tb_entries", "id, idempotency_key, code, occurred_at, recorded_at, operator, "
                 "memo, metadata",
                 [(e, k, c, t(o), t(r), op, m, d) for e, k, c, o, r, op, m, d in w.entries]),
                ("tb_postings", "entry_id, account_id, amount_minutes, balance_after_minutes, "
                 "recorded_at", [(e, a, m, b, t(r)) for e, a, m, b, r in w.postings]),
                ("tb_services", ", ".join(SERVICE_COLUMNS),
                 [(*r[:6], t(r[6]), t(r[7]), *r[8:16], t(r[16]), t(r[17]), r[18])
                  for r in w.services]),
                ("tb_service_recipients", "service_id, member_id", w.recipients),
                ("tb_confirmations", "service_id, party, confirmed_by, confirmed_at",
                 [(sid, party, by, t(at)) for sid, party, by, at in w.confirmations]),
                ("tb_lots", "id, member_id, minutes, remaining_minutes, origin_site_id, "
                 "earned_on, expires_on, source_entry_id, parent_lot_id", new_lots),
            ],
            after_lots=[
                ("tb_lot_uses", "entry_id, lot_id, minutes", w.uses),
                ("tb_redemptions", "programme_id, idempotency_key, member_id, recipient_id, "
                 "site_id, service_type, minutes, occurred_at, redeemed_by, entry_id",
                 [(*r[:7], t(r[7]), *r[8:]) for r in w.redemptions]),
                ("tb_redemption_origins", "entry_id, origin_site_id, programme_id, site_id, "
                 "occurred_at, minutes", [(*r[:4], t(r[4]), r[5]) for r in w.origins]),
                ("tb_gifts", "programme_id, idempotency_key, giver_id, receiver_id, minutes, "
                 "occurred_at, given_by, entry_id",
                 [(*r[:5], t(r[5]), *r[6:]) for r in w.gifts]),
            ],
        )

    def apply(self, s: Sealed) -> None:
        """Write a sealed batch on the writing connection, inside its transaction: the
        sequences moved, every table by COPY, the accounts and stored lots by one UPDATE
        each, both guarded by what the judging read and their row counts checked."""
        con = self.out
        if s.setvals:
            con.execute("SELECT " + ", ".join("setval(%s, %s)" for _ in s.setvals),
                        [v for pair in s.setvals for v in pair])
        for table, columns, rows in s.copies[:2]:
            self.copy(table, columns, rows)
        if s.moved:
            posted, versions, _, ids, read = (list(c) for c in zip(*s.moved, strict=True))
            guarded(len(s.moved), con.execute(
                "UPDATE tb_accounts AS a SET posted_minutes = v.posted, version = v.version, "
                "last_recorded_at = %s FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[], "
                "%s::bigint[]) AS v(id, posted, version, read) "
                "WHERE a.id = v.id AND a.version = v.read",
                (s.recorded, ids, posted, versions, read)).rowcount)
        for table, columns, rows in s.copies[2:]:
            self.copy(table, columns, rows)
        if s.lots_left:
            ids, left, before = (list(c) for c in zip(*s.lots_left, strict=True))
            guarded(len(ids), con.execute(
                "UPDATE tb_lots AS l SET remaining_minutes = v.left_minutes "
                "FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[]) "
                "AS v(id, left_minutes, before) "
                "WHERE l.id = v.id AND l.remaining_minutes = v.before",
                (ids, left, before)).rowcount, "lot")
        for table, columns, rows in s.after_lots:
            self.copy(table, columns, rows)

    def copy(self, table: str, columns: str, rows: Iterable[tuple[Any, ...]]) -> None:
        with self.out.cursor() as cursor, cursor.copy(
            f"COPY {table} ({columns}) FROM STDIN"
        ) as copy:
            for row in rows:
                copy.write_row(row)


class CarriedFloor(PgFloor):
    """The floor on PostgreSQL with what it judged carried from batch to batch and, with
    ``threaded``, the next batch judged while a second thread writes the one before: the
    pipelined design named for part 2, measured before any of it is built into the library.

    Every member, account and member's open lots it has read stay in memory, updated by the
    judging, so a batch reads from the database only what no earlier batch read, plus what
    the floor reads every batch (the sites, the keys, birth dates, relations, and the
    volunteers' services in the batch's span, to which the services it wrote are added),
    without locks. The batch's writer then locks its members and the accounts it judged on
    and checks that they stand as judged (the members' statuses; the accounts' versions,
    which any other writer's posting moves, and with it any change to a member's lots), and
    that the volunteers' services in the span are as many as the judging counted (a count:
    one service cancelled and another added in the span would pass); the accounts' and the
    stored lots' updates are guarded as the floor's are. A mismatch is an error here, where
    no other writer runs; a library would roll the batch back and judge it again from fresh
    state (not written). Unchecked: birth dates and relations (as on the floor's side: the
    import does not change them), the sites and the members' accounts (read each batch or
    once, never compared), the keys (the unique indexes would refuse a key another writer
    stored meanwhile), and the ids: carried from batch to batch, the sequences set to where
    this import leaves them, which could move back a sequence another writer advanced (only
    a clash of primary keys would show it). With ``threaded`` the writer is a thread with its
    own connection and a queue of one sealed batch, so the judging can run up to two batches
    ahead of the last commit; without, each batch is written as soon as it is judged (what
    carrying alone changes)."""

    LOCK = ""

    def __init__(self, url: str, programme: str, operator: str, *, threaded: bool) -> None:
        super().__init__(url, programme, operator)
        self.members_c: dict[int, tuple[str, int]] = {}
        self.accounts_c: dict[int, list[Any]] = {}
        self.lots_c: dict[int, list[Lot]] = {}
        self.services_c: defaultdict[int, dict[int, tuple[int, int]]] = defaultdict(dict)
        self.keys_c: set[str] = set()
        self.ids_c: list[int] | None = None
        self.busy_seen: tuple[list[int], Any, Any, int] | None = None
        self.failure: BaseException | None = None
        self.queue: queue.Queue[Sealed | None] | None = None
        if threaded:
            self.out = self.connect(url)
            self.queue = queue.Queue(maxsize=1)
            self.thread = threading.Thread(target=self.writer, name="floor-writer", daemon=True)
            self.thread.start()

    def run(self, transfers: Sequence[Transfer], setup: bank_w.Setup
            ) -> tuple[int, Counter[str]]:
        try:
            done = super().run(transfers, setup)
        except BaseException:
            self.stop(quiet=True)  # the judging's error, not the writer's, is raised
            raise
        self.stop()  # inside the timing: the last batches' writes
        return done

    def batch(self, text: str) -> None:
        rows = parse(text)
        self.rows = rows
        state = self.read(rows)
        writes = self.judge_all(rows, state)
        versions = {aid: a[3] for aid, a in state.accounts.items()}
        sealed = self.seal(writes, state)
        sealed.statuses = {mid: m[0] for mid, m in state.members.items()}
        sealed.versions = versions
        sealed.busy = self.busy_seen
        self.carry(writes, state)
        self.send(sealed)

    def carry(self, w: Writes, state: State) -> None:
        """What the next batches judge on: the ids, keys and services this batch takes,
        the accounts' versions as its writer will leave them, the spent lots dropped."""
        self.ids_c = self.next_ids(state)
        self.keys_c.update(r[2] for r in w.services)
        self.keys_c.update(r[1] for r in (*w.redemptions, *w.gifts))
        for r in w.services:
            self.services_c[r[3]][r[0]] = (r[6], r[7])
        for account in state.accounts.values():
            account[3] = account[2]
        for member, lots_ in state.lots.items():
            lots_[:] = [lot for lot in lots_ if lot[1] > 0]
            self.lots_c[member] = lots_

    def read(self, rows: list[Row]) -> State:
        pid = self.programme_id

        def query(sql: str, values: Iterable[int | str], *more: Any) -> Any:
            return self.execute(sql, (self.listed(values), *more))

        people = {r[2] for r in rows} | {r[3] for r in rows if r[3] is not None}
        unread = people - self.members_c.keys()
        if unread:
            self.members_c.update((mid, (status, account)) for mid, status, account in query(
                "SELECT id, status, account_id FROM tb_members WHERE id IN {list} "
                "AND programme_id = ?", unread, pid))
        members = {m: self.members_c[m] for m in people if m in self.members_c}
        sites = {code: (sid, issued, redeemed) for code, sid, issued, redeemed in self.execute(
            "SELECT code, id, issued_account_id, redeemed_account_id FROM tb_sites "
            "WHERE programme_id = ?", (pid,))}
        account_ids = {a for _, a in members.values()}
        account_ids |= {a for s in sites.values() for a in s[1:] if a is not None}
        unread = account_ids - self.accounts_c.keys()
        if unread:
            self.accounts_c.update((aid, [floor, posted, version, version])
                                   for aid, floor, posted, version in query(
                "SELECT id, floor_minutes, posted_minutes, version FROM tb_accounts "
                "WHERE id IN {list}", unread))
        accounts = {a: self.accounts_c[a] for a in account_ids if a in self.accounts_c}
        stored, born, relations = self.read_facts(rows)
        stored |= {r[0] for r in rows} & self.keys_c
        return State(sites, members, accounts, stored, born, relations, self.read_lots(rows),
                     self.read_busy(rows), self.read_ids())

    def read_lots(self, rows: list[Row]) -> defaultdict[int, list[Lot]]:
        """The open lots of every member whose lots the batch may change (payers, the
        volunteers whose services make lots, the receivers of gifts), read once each."""
        owners = {r[2] for r in rows} | {r[3] for r in rows if r[1] == "gift" and r[3]}
        unread = owners - self.lots_c.keys()
        for member in unread:
            self.lots_c[member] = []
        if unread:
            for lot_id, mid, remaining, origin, earned in self.execute(
                "SELECT id, member_id, remaining_minutes, origin_site_id, earned_on "
                "FROM tb_lots WHERE member_id IN {list} AND remaining_minutes > 0 "
                "ORDER BY member_id, earned_on, id", (self.listed(unread),)):
                self.lots_c[mid].append([lot_id, remaining, origin, earned, remaining])
        return defaultdict(list, {m: self.lots_c[m] for m in owners})

    def read_busy(self, rows: list[Row]) -> defaultdict[int, list[tuple[int, int]]]:
        """The volunteers' services overlapping the batch's span: those stored, with those
        the earlier batches wrote (some perhaps not yet committed), once each by id; their
        number is what the writer must find."""
        busy: defaultdict[int, list[tuple[int, int]]] = defaultdict(list)
        services = [r for r in rows if r[1] == "service"]
        self.busy_seen = None
        if not services:
            return busy
        volunteers = sorted({r[2] for r in services})
        low, high = min(r[6] for r in services), max(r[7] or 0 for r in services)
        seen: dict[int, tuple[int, int, int]] = {}
        for sid, vid, start, end in self.execute(
            "SELECT id, volunteer_id, started_at, ended_at FROM tb_services WHERE volunteer_id "
            "IN {list} AND status IN ('pending', 'confirmed') AND started_at < ? "
            "AND ended_at > ?",
            (self.listed(volunteers), self.to_db_time(high), self.to_db_time(low))):
            seen[sid] = (vid, self.from_db_time(start), self.from_db_time(end))
        for vid in volunteers:
            for sid, (start, end) in self.services_c.get(vid, {}).items():
                if start < high and end > low:
                    seen[sid] = (vid, start, end)
        for vid, start, end in seen.values():
            busy[vid].append((start, end))
        self.busy_seen = (volunteers, self.to_db_time(low), self.to_db_time(high), len(seen))
        return busy

    def read_ids(self) -> list[int]:
        if self.ids_c is None:
            return super().read_ids()
        self.ids_read = list(self.ids_c)
        return list(self.ids_c)

    def send(self, sealed: Sealed) -> None:
        if self.queue is None:
            self.apply(sealed)
            return
        if self.failure is not None:
            raise RuntimeError("the writer failed") from self.failure
        self.queue.put(sealed)

    def writer(self) -> None:
        assert self.queue is not None
        while True:
            sealed = self.queue.get()
            try:
                if sealed is None:
                    return
                if self.failure is None:
                    self.apply(sealed)
            except Exception as exc:  # noqa: BLE001 - raised again in the judging thread
                self.failure = exc
            finally:
                self.queue.task_done()

    def drain(self) -> None:
        if self.queue is not None:
            self.queue.join()
            if self.failure is not None:
                raise RuntimeError("the writer failed") from self.failure

    def stop(self, *, quiet: bool = False) -> None:
        if self.queue is not None:
            self.queue.put(None)
            self.thread.join()
            self.out.close()
            self.queue = None
            if self.failure is not None and not quiet:
                raise RuntimeError("the writer failed") from self.failure

    def after_batch(self) -> None:
        if self.accepted >= max(2 * self.analyzed, 10_000):
            self.drain()  # ANALYZE, untimed, runs alone, as the other contenders' does
        super().after_batch()

    def apply(self, s: Sealed) -> None:
        """The batch in one transaction of the writing connection: its members and accounts
        locked and found as judged, then written as the floor writes."""
        con = self.out
        con.execute("BEGIN")
        try:
            self.check(s)
            super().apply(s)
        except BaseException:
            con.execute("ROLLBACK")
            raise
        con.execute("COMMIT")

    def check(self, s: Sealed) -> None:
        con = self.out
        found = dict(con.execute(
            "SELECT id, status FROM tb_members WHERE id = ANY(%s) ORDER BY id FOR UPDATE",
            (self.listed(s.statuses),)).fetchall())
        if found != s.statuses:
            raise RuntimeError("a member changed since the batch was judged")
        found = dict(con.execute(
            "SELECT id, version FROM tb_accounts WHERE id = ANY(%s) ORDER BY id FOR UPDATE",
            (self.listed(s.versions),)).fetchall())
        if found != s.versions:
            raise RuntimeError("an account moved since the batch was judged")
        if s.busy is not None:
            volunteers, low, high, expected = s.busy
            (count,) = con.execute(
                "SELECT count(*) FROM tb_services WHERE volunteer_id = ANY(%s) "
                "AND status IN ('pending', 'confirmed') AND started_at < %s AND ended_at > %s",
                (self.listed(volunteers), high, low)).fetchone()
            if count != expected:
                raise RuntimeError("a volunteer's services changed since the batch was judged")


def post(state: State, w: Writes, entry: int, accounts: tuple[int, int], minutes: int) -> None:
    """Move ``minutes`` from the first account to the second; their postings."""
    debit, credit = state.accounts[accounts[0]], state.accounts[accounts[1]]
    debit[1] -= minutes
    debit[2] += 1
    credit[1] += minutes
    credit[2] += 1
    w.postings.append((entry, accounts[0], -minutes, debit[1], w.now))
    w.postings.append((entry, accounts[1], minutes, credit[1], w.now))


def changed(state: State, w: Writes) -> list[tuple[int, int, int, int, int]]:
    """The accounts the batch moved, as the guarded UPDATE's rows (posted, version, recorded,
    id, version read); unmoved ones are not written, as the library writes them."""
    return [(a[1], a[2], w.now, aid, a[3]) for aid, a in state.accounts.items() if a[2] != a[3]]


def guarded(moved: int, written: int, what: str = "account") -> None:
    """A guarded UPDATE wrote every row it was given, as the library checks."""
    if written != moved:
        raise RuntimeError(f"{moved - written} {what} row(s) changed under the lock")


def take(state: State, w: Writes, member: int, minutes: int, entry: int
         ) -> list[tuple[Lot, int]]:
    """``minutes`` from ``member``'s lots, first in, first out (the balance was checked)."""
    taken: list[tuple[Lot, int]] = []
    left = minutes
    for lot in state.lots[member]:
        if lot[1] == 0:
            continue
        part = min(left, lot[1])
        lot[1] -= part
        left -= part
        taken.append((lot, part))
        if lot[4] is not None:  # a stored lot: its remaining minutes are written back
            w.touched[lot[0]] = lot
        w.uses.append((entry, lot[0], part))
        if not left:
            break
    return taken


def _insert(table: str, columns: str) -> str:
    marks = ", ".join("?" for _ in columns.split(","))
    return f"INSERT INTO {table} ({columns}) VALUES ({marks})"


def _age(born: date, on: date) -> int:
    return on.year - born.year - ((on.month, on.day) < (born.month, born.day))


# ---- running ---------------------------------------------------------------------------------


Timed = tuple[float, int, Counter[str]]


def library(url: URL, workload: Workload, setup: bank_w.Setup) -> Timed:
    """bank_w.py's bulk import (its ANALYZE on PostgreSQL untimed)."""
    seconds, accepted, refused, bank = bank_w.timed_bank(
        url, lambda b: bank_w.import_batches(b, workload.phase_b, setup, "bulk"))
    bank.dispose()
    return seconds, accepted, refused


def floor(url: URL, workload: Workload, setup: bank_w.Setup, variant: str = "floor"
          ) -> Timed:
    """The floor (``variant`` "floor"), or on PostgreSQL CarriedFloor ("carried": state
    carried between batches; "piped": that, with the next batch judged while a thread
    writes the one before)."""
    if url.get_backend_name() == "sqlite":
        contender: Floor = Floor(url.database or "", bank_w.PROGRAMME, bank_w.OPERATOR)
    else:
        conninfo = url.set(drivername="postgresql").render_as_string(hide_password=False)
        if variant == "floor":
            contender = PgFloor(conninfo, bank_w.PROGRAMME, bank_w.OPERATOR)
        else:
            contender = CarriedFloor(conninfo, bank_w.PROGRAMME, bank_w.OPERATOR,
                                     threaded=variant == "piped")
    started = time.perf_counter()
    accepted, refused = contender.run(workload.phase_b, setup)
    return time.perf_counter() - started - contender.untimed, accepted, refused


def carried(url: URL, workload: Workload, setup: bank_w.Setup) -> Timed:
    return floor(url, workload, setup, "carried")


def piped(url: URL, workload: Workload, setup: bank_w.Setup) -> Timed:
    return floor(url, workload, setup, "piped")


def ceiling(backend: Backend, directory: Path, pg_url: URL, workload: Workload) -> float:
    database = (sqlite_database(directory, "ceiling") if backend == "sqlite"
                else postgres_database(pg_url, "floor_ceiling"))
    with database as url:
        result = run_contender("ceiling", REGISTRY["ceiling"], url, workload, naive_limit=0,
                               analyze=False)
    return result.b_seconds


#: Columns that hold when a row was recorded (the clock of each run), left out of the
#: comparison of what the floor and the library wrote.
RECORDED = {"recorded_at", "decided_at", "confirmed_at", "last_recorded_at"}

State_ = tuple[dict[str, int], dict[str, str]]


SEQUENCED = ("tb_entries", "tb_services", "tb_lots")


def sequence_state(conn: Any, table: str) -> tuple[Any, ...]:
    sequence = conn.execute(
        text("SELECT pg_get_serial_sequence(:t, 'id')"), {"t": table}).scalar_one()
    return tuple(conn.execute(text(f"SELECT last_value, is_called FROM {sequence}")).one())


def state_of(url: URL) -> State_:
    """The rows of every table the floor writes, and a digest of each table's content (the
    accounts' included) without the times of recording: the floor must write what the
    library writes, ids, balances after each posting and lots' remaining minutes included."""
    engine = create_engine(url)
    counts: dict[str, int] = {}
    digests: dict[str, str] = {}
    try:
        with engine.connect() as conn:
            for table in (*TABLES, "tb_accounts"):
                names = list(conn.execute(text(f"SELECT * FROM {table} LIMIT 0")).keys())
                kept = ", ".join(n for n in names if n not in RECORDED)
                # Sorted here: PostgreSQL has no order for json columns.
                rows = sorted(repr(tuple(r)) for r in conn.execute(
                    text(f"SELECT {kept} FROM {table}")))
                counts[table] = len(rows)
                digests[table] = hashlib.sha256("\n".join(rows).encode()).hexdigest()
            if conn.dialect.name == "postgresql":
                # Where the id sequences stand: the next import must get the same ids.
                digests["sequences"] = repr([sequence_state(conn, t) for t in SEQUENCED])
    finally:
        engine.dispose()
    counts.pop("tb_accounts")
    return counts, digests


Contender = Callable[[URL, Workload, bank_w.Setup], Timed]
CONTENDERS: dict[Backend, list[tuple[str, Contender]]] = {
    "sqlite": [("floor", floor), ("library", library)],
    "postgres": [("floor", floor), ("library", library), ("carried", carried),
                 ("piped", piped)],
}


@dataclass
class Run:
    """Every round's seconds by contender; what each contender accepted and refused, and the
    state it left, in the first round."""

    rounds: list[dict[str, float]] = field(default_factory=list)
    outcome: dict[str, tuple[int, Counter[str]]] = field(default_factory=dict)
    states: dict[str, State_] = field(default_factory=dict)


def measure(backend: Backend, pg_url: URL, rounds: int, workload: Workload) -> Run:
    run = Run()
    plain_rows: dict[str, tuple[int, bytes]] | None = None
    with tempfile.TemporaryDirectory(prefix="tbfloor-") as name:
        directory = Path(name)
        with bank_w.template(backend, pg_url, directory, workload) as (setup, copy):
            for number in range(rounds):
                print(f"round {number + 1}: ceiling", flush=True)
                times = {"ceiling": ceiling(backend, directory, pg_url, workload)}
                # In turn: each round starts one place further along the list.
                contenders = CONTENDERS[backend]
                turn = number % len(contenders)
                for label, contender in contenders[turn:] + contenders[:turn]:
                    print(f"round {number + 1}: {label}", flush=True)
                    url = copy(f"floor_{label}{number}")
                    times[label], accepted, refused = contender(url, workload, setup)
                    if number == 0:
                        run.outcome[label] = (accepted, refused)
                        run.states[label] = state_of(url)
                    if backend == "postgres" and plain_rows is None and label == "library":
                        plain_rows = read_out(url)
                if plain_rows is not None:
                    print(f"round {number + 1}: plain COPY", flush=True)
                    times["copy"] = write_in(copy(f"floor_plain{number}"), plain_rows,
                                             replica=False)
                run.rounds.append(times)
                print("  " + ", ".join(f"{k} {v:.2f} s" for k, v in times.items()), flush=True)
    return run


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--pg-url", default=DEFAULT_PG_URL)
    parser.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS)
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error("--rounds: at least 1")
    backend: Backend = args.backend
    run = measure(backend, make_url(args.pg_url), args.rounds, generate())
    problems = []
    for label in run.outcome:
        if label == "library":
            continue
        differ = [t for t, d in run.states["library"][1].items()
                  if run.states[label][1][t] != d]
        if differ:
            problems.append(f"the {label} wrote otherwise than the library into "
                            + ", ".join(differ))
        if run.outcome[label] != run.outcome["library"]:
            problems.append(f"accepted and refused differ: {label} {run.outcome[label]}, "
                            f"library {run.outcome['library']}")
    report = render(backend, make_url(args.pg_url), run, problems, argv)
    save_result(f"import-floor-{backend}", report, trial=args.rounds != DEFAULT_ROUNDS)
    return 1 if problems else 0


SAME = ("{names} accepted and refused the same rows as the library, and every table "
        "they write, the accounts too, holds the same rows as the library's but for the times of "
        "recording (first round; on PostgreSQL the id sequences stand alike too)")


def render(backend: Backend, pg_url: URL, run: Run, problems: list[str],
           argv: Sequence[str]) -> str:
    accepted, refused = run.outcome["library"]
    counts = run.states["library"][0]
    plain = "copy" in run.rounds[0]
    extra = [label for label in run.outcome if label not in ("floor", "library")]
    names = " and ".join(("the floor", *(f"the {label}" for label in extra)))
    lines = [
        f"# The floor of a Python import on {backend}, beside the library's (W's phase B)",
        "",
        f"- Command: `python benchmarks/import_floor.py {' '.join(argv)}`".rstrip(),
        f"- Date: {datetime.now(UTC).isoformat(timespec='minutes')}",
        *(f"- {k}: {v}" for k, v in machine_info(backend, pg_url).items()),
        f"- Rows: {PHASE_B_COUNT:,} in batches of {BATCH_ROWS:,}; accepted {accepted:,} "
        f"(entries), refused {sum(refused.values()):,} ("
        + ", ".join(f"{v:,} {k}" for k, v in sorted(refused.items())) + ")",
        "- Rows written by each: " + ", ".join(f"{t} {n:,}" for t, n in counts.items()),
        f"- Check: {'; '.join(problems) or SAME.format(names=names)}",
        "",
        "| round | ceiling s (transfers a second) | floor s | floor ÷ ceiling | library s | "
        "library ÷ ceiling | library ÷ floor (time) |"
        + (" plain COPY s | floor ÷ COPY | library ÷ COPY |" if plain else "")
        + ("".join(f" {label} s | {label} ÷ COPY |" for label in extra) if plain else ""),
        "|--:|--:|--:|--:|--:|--:|--:|" + ("--:|--:|--:|" if plain else "")
        + ("--:|--:|" * len(extra) if plain else ""),
    ]
    ratios: dict[str, list[float]] = defaultdict(list)
    for number, t in enumerate(run.rounds, 1):
        rate = PHASE_B_COUNT / t["ceiling"]
        for label in ("floor", "library"):
            ratios[label].append(accepted / t[label] / rate)
        line = (f"| {number} | {t['ceiling']:.2f} ({rate:,.0f}) | {t['floor']:.2f} | "
                f"{ratios['floor'][-1]:.3f} | {t['library']:.2f} | "
                f"{ratios['library'][-1]:.3f} | {t['library'] / t['floor']:.2f} |")
        if plain:
            # Rows of W a second over the plain COPY's, as bank_copy.py reports it: the
            # plain COPY's time over the import's.
            for label in ("floor", "library", *extra):
                ratios[f"{label}_copy"].append(t["copy"] / t[label])
            line += (f" {t['copy']:.2f} | {ratios['floor_copy'][-1]:.3f} | "
                     f"{ratios['library_copy'][-1]:.3f} |")
            line += "".join(f" {t[label]:.2f} | {ratios[f'{label}_copy'][-1]:.3f} |"
                            for label in extra)
        lines.append(line)
    lines += [
        "",
        f"Medians: the floor {statistics.median(ratios['floor']):.3f} of the core ceiling, "
        f"the library {statistics.median(ratios['library']):.3f} (entries a second over the "
        "ceiling's transfers a second, each round's own ceiling; issue 10's target for part 1: "
        "0.25)."
        + (" Against a plain COPY of the rows the library wrote, constraints on: "
           + ", ".join(f"the {label} {statistics.median(ratios[f'{label}_copy']):.3f}"
                       for label in ("floor", "library", *extra))
           + " (part 2's target: 0.5)." if plain else ""),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
