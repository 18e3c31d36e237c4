"""Locked account state: read under a row lock in one canonical order, changed in memory,
written back with a version guard. Every write path of the ledger goes through here."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import Connection, bindparam, func, select, update

from timebank import errors
from timebank._bulk import RawMany, binary_parameters, driver_execute
from timebank.limits import ATTEMPTS_MAX, SQL_CHUNK_ROWS
from timebank.schema import accounts, holds


class Limited(Protocol):
    """What the limit check reads of an account."""

    code: str
    floor_minutes: int | None
    ceiling_minutes: int | None
    posted_minutes: int
    held_out_minutes: int
    held_in_minutes: int


def limit_refusal(account: Limited, amount_minutes: int) -> errors.LimitExceededError | None:
    """Why posting ``amount_minutes`` would take ``account`` past its floor or ceiling (holds
    count), or None. The ledger's check, and the bulk import's before it writes."""
    if amount_minutes < 0 and account.floor_minutes is not None:
        available = account.posted_minutes - account.held_out_minutes - account.floor_minutes
        if -amount_minutes > available:
            return errors.LimitExceededError(
                account.code,
                limit="floor",
                limit_minutes=account.floor_minutes,
                available_minutes=available,
                requested_minutes=-amount_minutes,
            )
    elif amount_minutes > 0 and account.ceiling_minutes is not None:
        room = account.ceiling_minutes - account.posted_minutes - account.held_in_minutes
        if amount_minutes > room:
            return errors.LimitExceededError(
                account.code,
                limit="ceiling",
                limit_minutes=account.ceiling_minutes,
                available_minutes=room,
                requested_minutes=amount_minutes,
            )
    return None


@dataclass(slots=True)
class LockedAccount:
    id: int
    code: str
    status: str
    floor_minutes: int | None
    ceiling_minutes: int | None
    posted_minutes: int
    held_out_minutes: int
    held_in_minutes: int
    version: int
    next_hold_expiry_at: datetime | None
    last_recorded_at: datetime | None
    version_read: int = 0
    expiry_dirty: bool = False

    @property
    def dirty(self) -> bool:
        return self.version != self.version_read or self.expiry_dirty

    def require_open(self) -> None:
        if self.status != "open":
            raise errors.AccountStateError(f"account {self.code!r} is {self.status}")

    def apply(self, amount_minutes: int) -> int:
        """Post ``amount_minutes`` after checking the limits; return the running balance."""
        refusal = limit_refusal(self, amount_minutes)
        if refusal is not None:
            raise refusal
        self.posted_minutes += amount_minutes
        self.version += 1
        return self.posted_minutes


_COLUMNS = (
    accounts.c.id,
    accounts.c.code,
    accounts.c.status,
    accounts.c.floor_minutes,
    accounts.c.ceiling_minutes,
    accounts.c.posted_minutes,
    accounts.c.held_out_minutes,
    accounts.c.held_in_minutes,
    accounts.c.version,
    accounts.c.next_hold_expiry_at,
    accounts.c.last_recorded_at,
)


_LOCK = (
    select(*_COLUMNS)
    # MariaDB may scan a small table in primary-key order instead, locking rows in another
    # order than a writer that uses the index: that is a deadlock. Force the code order.
    .with_hint(accounts, "FORCE INDEX (uq_tb_accounts_code)", "mysql")
    .where(accounts.c.code.in_(bindparam("codes", expanding=True)))
    .order_by(accounts.c.code)
    .with_for_update()
)
_SELECTED = ", ".join(c.name for c in _COLUMNS)
# Straight to the driver (this runs once per write), the codes as one parameter: an array on
# PostgreSQL, a JSON list on SQLite, instead of one parameter per code.
_LOCK_SQL = {
    "postgresql": (
        f"SELECT {_SELECTED} FROM tb_accounts WHERE code = ANY(%(codes)s::text[]) "
        # Byte order, as Python sorts the chunks: the canonical order whatever the collation.
        'ORDER BY code COLLATE "C" FOR UPDATE'
    ),
    "sqlite": (
        f"SELECT {_SELECTED} FROM tb_accounts "
        "WHERE code IN (SELECT value FROM json_each(?)) ORDER BY code"
    ),
}
#: Up to this many codes, SQLite gets one placeholder per code: for the one or two accounts
#: of a single entry that is about twice as fast as parsing a JSON list.
_SQLITE_PLACEHOLDERS_MAX = 8
_SQLITE_LOCK_SMALL = [
    f"SELECT {_SELECTED} FROM tb_accounts WHERE code IN ({', '.join('?' * n)}) ORDER BY code"
    for n in range(_SQLITE_PLACEHOLDERS_MAX + 1)
]
_INSTANT_COLUMNS = (9, 10)  # next_hold_expiry_at, last_recorded_at


def _lock_rows(conn: Connection, codes: list[str]) -> Iterable[Sequence[Any]]:
    name = conn.dialect.name
    if name == "postgresql":
        sql = binary_parameters(_LOCK_SQL[name], conn.dialect.driver)
        rows = driver_execute(conn, sql, {"codes": codes}, fetch=True).rows
    elif name == "sqlite" and len(codes) <= _SQLITE_PLACEHOLDERS_MAX:
        rows = driver_execute(conn, _SQLITE_LOCK_SMALL[len(codes)], codes, fetch=True).rows
    elif name == "sqlite":
        rows = driver_execute(conn, _LOCK_SQL[name], (json.dumps(codes),), fetch=True).rows
    else:
        return conn.execute(_LOCK, {"codes": codes})
    convert = _instant_converter(conn.dialect)
    # A batch's accounts share few instants (one recording time per earlier batch):
    # convert each distinct stored value once.
    seen: dict[Any, Any] = {None: None}
    out = []
    for row in rows:
        values = list(row)
        for i in _INSTANT_COLUMNS:
            raw = values[i]
            if raw not in seen:
                seen[raw] = convert(raw)
            values[i] = seen[raw]
        out.append(values)
    return out


_CONVERTERS: dict[str, Any] = {}


def _instant_converter(dialect: Any) -> Any:
    """The stored-instant-to-datetime function of ``dialect`` (built once per dialect)."""
    convert = _CONVERTERS.get(dialect.name)
    if convert is None:
        convert = accounts.c.last_recorded_at.type.result_processor(dialect, None)
        assert convert is not None
        _CONVERTERS[dialect.name] = convert
    return convert


def _chunks(items: list[str]) -> Iterable[list[str]]:
    for start in range(0, len(items), SQL_CHUNK_ROWS):
        yield items[start : start + SQL_CHUNK_ROWS]


#: Accounts to lock besides those an operation names: counterparties of expired holds that a
#: previous attempt found (see :class:`LockMore`). Set by the façade for one operation.
EXTRA_LOCKS: ContextVar[frozenset[str]] = ContextVar("timebank_extra_locks", default=frozenset())


class LockMore(Exception):
    """Expired holds must be released on accounts the operation has not locked. Locking them
    now would break the canonical lock order (and deadlock), so the operation is rolled back
    and run again with them in its lock set."""

    def __init__(self, codes: Iterable[str]) -> None:
        super().__init__()
        self.codes = frozenset(codes)


def lock(
    conn: Connection, codes: Iterable[str], now: datetime, *, expired: list[int] | None = None
) -> dict[str, LockedAccount]:
    """Lock the accounts named by ``codes`` in code order; release holds past their expiry.

    Code order is the canonical lock order of the whole library: every writer that takes
    several account locks takes them in this order, so writers queue and never deadlock.
    """
    locked = _lock_only(conn, {*codes, *EXTRA_LOCKS.get()})
    if any(
        a.next_hold_expiry_at is not None and a.next_hold_expiry_at <= now for a in locked.values()
    ):
        count = release_expired_holds(conn, locked, now)
        if expired is not None:
            expired.append(count)
    return locked


def _lock_only(conn: Connection, codes: Iterable[str]) -> dict[str, LockedAccount]:
    wanted = sorted(set(codes))
    locked: dict[str, LockedAccount] = {}
    for chunk in _chunks(wanted):
        for row in _lock_rows(conn, chunk):
            account = LockedAccount(*row)
            account.version_read = account.version
            locked[account.code] = account
    if len(locked) != len(wanted):
        raise errors.AccountNotFoundError([c for c in wanted if c not in locked])
    return locked


def _codes_of(conn: Connection, ids: Iterable[int]) -> list[str]:
    found = conn.execute(select(accounts.c.code).where(accounts.c.id.in_(sorted(set(ids)))))
    return list(found.scalars())


def lock_ids(
    conn: Connection, ids: Iterable[int], now: datetime, *, expired: list[int] | None = None
) -> dict[str, LockedAccount]:
    return lock(conn, _codes_of(conn, ids), now, expired=expired)


def lock_releasing_holds(
    conn: Connection, ids: Iterable[int], now: datetime
) -> dict[str, LockedAccount]:
    """:func:`lock_ids` for a bulk writer that reads the accounts itself: holds past their
    expiry are released and the accounts written back at once, and the locks are taken
    again with the accounts those holds name when they were not among ``ids``
    (:class:`LockMore`), each attempt under a savepoint."""
    wanted = list(ids)
    extra: frozenset[str] = frozenset()
    for _attempt in range(ATTEMPTS_MAX):
        token = EXTRA_LOCKS.set(extra)
        try:
            with conn.begin_nested():
                locked = lock_ids(conn, wanted, now)
                write_back(conn, locked.values())
                return locked
        except LockMore as more:
            extra |= more.codes
        finally:
            EXTRA_LOCKS.reset(token)
    raise errors.ConcurrencyError("expired holds kept naming more accounts; retry")


def release_expired_holds(conn: Connection, locked: dict[str, LockedAccount], now: datetime) -> int:
    """Mark pending holds of the due ``locked`` accounts as expired and give their minutes
    back. A counterparty not locked yet raises :class:`LockMore`: the operation runs again
    with it in the lock set, so locks are always taken in the canonical order."""
    due = [
        a.id
        for a in locked.values()
        if a.next_hold_expiry_at is not None and a.next_hold_expiry_at <= now
    ]
    found: dict[int, Any] = {}
    for side in _SIDES:
        query = (
            select(
                holds.c.id,
                holds.c.debit_account_id,
                holds.c.credit_account_id,
                holds.c.amount_minutes,
            )
            .where(side.in_(due), *_expired(now))
            .with_for_update()
        )
        # Two statements lock these rows in no common order: safe, as every writer of a
        # hold row holds both its accounts' locks first, taken in the canonical order.
        found.update((r.id, r) for r in conn.execute(query))
    rows = [found[i] for i in sorted(found)]
    by_id = {a.id: a for a in locked.values()}
    missing = {i for r in rows for i in (r.debit_account_id, r.credit_account_id)} - by_id.keys()
    if missing:
        raise LockMore(_codes_of(conn, _expired_closure(conn, by_id.keys() | missing, now)))
    for row in rows:
        by_id[row.debit_account_id].held_out_minutes -= row.amount_minutes
        by_id[row.credit_account_id].held_in_minutes -= row.amount_minutes
        by_id[row.debit_account_id].version += 1
        by_id[row.credit_account_id].version += 1
    if rows:
        conn.execute(
            update(holds)
            .where(holds.c.id.in_([r.id for r in rows]), holds.c.status == "pending")
            .values(status="expired", resolved_at=now)
        )
    refresh_next_expiry(conn, [by_id[i] for i in due])
    return len(rows)


def _expired_closure(conn: Connection, ids: set[int], now: datetime) -> set[int]:
    """Every account linked to ``ids`` through chains of expired holds (read only), so one
    restart locks all an operation will need, however long the chain."""
    found = set(ids)
    frontier = set(ids)
    while frontier:
        linked: set[int] = set()
        for side in _SIDES:
            query = select(holds.c.debit_account_id, holds.c.credit_account_id).where(
                side.in_(frontier), *_expired(now)
            )
            linked.update(i for row in conn.execute(query) for i in row)
        frontier = linked - found
        found |= frontier
    return found


#: A hold's two accounts. An account's holds are read one side at a time, each one range of
#: its index by (account, status, expiry), the soonest expiry its first entry. With the two
#: sides in one condition (OR), both databases planned the read through the index by status:
#: the ledger's pending holds in expiry order, until the account's first. Beside 100,000 live
#: bookings expiring sooner a resolution took 35 ms on PostgreSQL and 29 ms on SQLite,
#: against 5 and 2 ms (`benchmarks/results/holds-*-2026-11-30.md`).
_SIDES = (holds.c.debit_account_id, holds.c.credit_account_id)


def _expired(now: datetime) -> tuple[Any, ...]:
    return holds.c.status == "pending", holds.c.expires_at <= now


def refresh_next_expiry(
    conn: Connection, targets: Iterable[LockedAccount], *, leaving: int | None = None
) -> None:
    """Recompute each account's earliest pending hold expiry (a hint that lets the hot path
    skip the holds table entirely while nothing is due). ``leaving``: a hold still pending
    in its row but being resolved by this operation, left out."""
    for account in targets:
        soonest_per_side = []
        for side in _SIDES:
            query = select(func.min(holds.c.expires_at)).where(
                side == account.id, holds.c.status == "pending"
            )
            if leaving is not None:
                query = query.where(holds.c.id != leaving)
            soonest_per_side.append(query.scalar_subquery())
        found = [t for t in conn.execute(select(*soonest_per_side)).one() if t is not None]
        soonest = min(found, default=None)
        if soonest != account.next_hold_expiry_at:
            account.next_hold_expiry_at = soonest
            account.expiry_dirty = True


WRITE_BACK = RawMany(
    update(accounts)
    .where(accounts.c.id == bindparam("b_id"), accounts.c.version == bindparam("b_version"))
    .values(
        posted_minutes=bindparam("b_posted"),
        held_out_minutes=bindparam("b_held_out"),
        held_in_minutes=bindparam("b_held_in"),
        version=bindparam("b_new_version"),
        next_hold_expiry_at=bindparam("b_next_expiry"),
        last_recorded_at=bindparam("b_last_recorded"),
    ),
    [
        ("b_id", accounts.c.id.type),
        ("b_version", accounts.c.version.type),
        ("b_posted", accounts.c.posted_minutes.type),
        ("b_held_out", accounts.c.held_out_minutes.type),
        ("b_held_in", accounts.c.held_in_minutes.type),
        ("b_new_version", accounts.c.version.type),
        ("b_next_expiry", accounts.c.next_hold_expiry_at.type),
        ("b_last_recorded", accounts.c.last_recorded_at.type),
    ],
    # One set-based statement per batch on PostgreSQL instead of one UPDATE per account.
    """
UPDATE tb_accounts AS a SET posted_minutes = v.posted, held_out_minutes = v.held_out,
    held_in_minutes = v.held_in, version = v.new_version, next_hold_expiry_at = v.next_expiry,
    last_recorded_at = v.last_recorded
FROM unnest(%(b_id)s::bigint[], %(b_version)s::bigint[], %(b_posted)s::bigint[],
            %(b_held_out)s::bigint[], %(b_held_in)s::bigint[], %(b_new_version)s::bigint[],
            %(b_next_expiry)s::timestamp[], %(b_last_recorded)s::timestamp[])
    AS v(id, version, posted, held_out, held_in, new_version, next_expiry, last_recorded)
WHERE a.id = v.id AND a.version = v.version
""",
)


def write_back(conn: Connection, locked: Iterable[LockedAccount]) -> None:
    """Write changed accounts, guarded by the version read under the lock. The accounts
    then count as freshly read, so an operation may change and write them again."""
    changed, rows = write_back_rows(locked)
    if changed:
        written_back(changed, WRITE_BACK.execute(conn, rows))


def write_back_rows(
    locked: Iterable[LockedAccount],
) -> tuple[list[LockedAccount], list[tuple[Any, ...]]]:
    """The changed accounts and their rows for the guarded UPDATE (``WRITE_BACK``'s
    parameters), for a caller that sends the UPDATE inside a larger statement."""
    changed = [a for a in locked if a.dirty]
    for account in changed:
        if account.version == account.version_read:  # only the expiry hint moved
            account.version += 1
    rows = [
        (
            a.id,
            a.version_read,
            a.posted_minutes,
            a.held_out_minutes,
            a.held_in_minutes,
            a.version,
            a.next_hold_expiry_at,
            a.last_recorded_at,
        )
        for a in changed
    ]
    return changed, rows


def written_back(changed: list[LockedAccount], written: int) -> None:
    """Check the UPDATE's row count and mark the accounts as freshly read."""
    if written not in (-1, len(changed)):
        # Impossible while the rows are locked; refuse rather than lose an update.
        raise errors.ConcurrencyError(
            f"{len(changed) - written} account row(s) changed under the lock"
        )
    for account in changed:
        account.version_read = account.version
        account.expiry_dirty = False
