"""Posting entries: validate -> lock -> claim keys -> check -> write. One function for one
entry and for a batch, so the fast path and the careful path are the same path."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select
from sqlalchemy import exc as sa_exc

from timebank import _accounts, errors
from timebank._accounts import LockedAccount
from timebank._bulk import (
    COPY_ROWS_MIN,
    RawMany,
    bulk_insert,
    can_reserve_ids,
    driver_execute,
    reserve_ids,
    unnest_insert,
)
from timebank._db import PLANNED_EACH_TIME_MIN, KeyRace, planned_each_time, violated
from timebank.limits import SQL_CHUNK_ROWS
from timebank.models import Command, EntryCommand, EntryView, PostingSpec, PostingView
from timebank.schema import accounts, entries, postings

Clock = Callable[[], datetime]


@dataclass(frozen=True, slots=True)
class Draft:
    """An entry about to be written: the caller's command plus what the ledger adds."""

    command: Command
    reverses_entry_id: int | None = None


def post_one(conn: Connection, draft: Draft, clock: Clock, *, check_replays: bool) -> EntryView:
    """Post one entry and return it, built from what was just written (no read back)."""
    written: list[_Written] = []
    [entry_id], created = post(conn, [draft], clock, check_replays=check_replays, sink=written)
    if not created:
        return load(conn, [entry_id])[0]
    [(now, locked, rows)] = written
    cmd = draft.command
    codes = {account.id: code for code, account in locked.items()}
    legs = sorted(
        (
            PostingView.model_construct(
                account=codes[row[1]], amount_minutes=row[2], balance_after_minutes=row[3]
            )
            for row in rows
        ),
        key=lambda leg: leg.account,
    )
    # Built from values this function just validated and wrote: no second validation.
    return EntryView.model_construct(
        id=entry_id,
        idempotency_key=cmd.idempotency_key,
        code=cmd.code,
        occurred_at=cmd.occurred_at or now,
        recorded_at=now,
        operator=cmd.operator,
        memo=cmd.memo,
        metadata=cmd.metadata,
        reverses_entry_id=draft.reverses_entry_id,
        postings=tuple(legs),
    )


_Row = tuple[int, int, int, int, datetime]
_Written = tuple[datetime, dict[str, LockedAccount], list[_Row]]


def post(
    conn: Connection,
    drafts: Sequence[Draft],
    clock: Clock,
    *,
    check_replays: bool,
    sink: list[_Written] | None = None,
) -> tuple[list[int], int]:
    """Write ``drafts`` in order; return (entry id per draft, number of entries created).

    ``check_replays`` looks the keys up first. It is off on the first attempt: the unique
    constraint on the key decides, and a clash raises :class:`KeyRace` so the caller can
    roll back and run again with it on.
    """
    # A batch's statements read tables it may be growing: planned each time (see _db).
    many = len(drafts) >= PLANNED_EACH_TIME_MIN
    with planned_each_time(conn) if many else nullcontext():
        return _post(conn, drafts, clock, check_replays=check_replays, sink=sink)


def _post(
    conn: Connection,
    drafts: Sequence[Draft],
    clock: Clock,
    *,
    check_replays: bool,
    sink: list[_Written] | None,
) -> tuple[list[int], int]:
    ids: list[int | None] = [None] * len(drafts)
    fresh = _dedupe(drafts, ids)
    if check_replays:
        _match_replays(conn, drafts, fresh, ids)
        fresh = [i for i in fresh if ids[i] is None]
    if fresh:
        written = _write(
            conn, [drafts[i] for i in fresh], clock, fresh, ids, check_replays=check_replays
        )
        if sink is not None:
            sink.append(written)
    _fill_duplicates(drafts, ids)
    result = [i for i in ids if i is not None]
    assert len(result) == len(drafts), "every draft has an entry id"
    return result, len(fresh)


def _dedupe(drafts: Sequence[Draft], ids: list[int | None]) -> list[int]:
    """Indexes of the first draft per key; a repeated key in one batch must repeat content."""
    first: dict[str, int] = {}
    fresh: list[int] = []
    for index, draft in enumerate(drafts):
        key = draft.command.idempotency_key
        if key in first:
            differing = _differences(drafts[first[key]], draft)
            if differing:
                raise errors.IdempotencyConflictError(key, differing)
            continue
        first[key] = index
        fresh.append(index)
    return fresh


def _fill_duplicates(drafts: Sequence[Draft], ids: list[int | None]) -> None:
    by_key: dict[str, int] = {}
    for index, draft in enumerate(drafts):
        key = draft.command.idempotency_key
        if ids[index] is not None:
            by_key.setdefault(key, ids[index])  # type: ignore[arg-type]
    for index, draft in enumerate(drafts):
        if ids[index] is None:
            ids[index] = by_key[draft.command.idempotency_key]


def _write(
    conn: Connection,
    drafts: Sequence[Draft],
    clock: Clock,
    positions: Sequence[int],
    ids: list[int | None],
    *,
    check_replays: bool,
) -> _Written:
    codes = {account for d in drafts for account, _ in d.command.legs}
    try:
        locked = _accounts.lock(conn, codes, clock())
    except errors.AccountNotFoundError as exc:
        if len(drafts) > 1:
            number, draft = next(
                (n, d)
                for n, d in enumerate(drafts)
                if any(code in exc.codes for code, _ in d.command.legs)
            )
            exc.add_note(_batch_note(draft, number))
        raise
    now = _recording_time(clock(), locked.values())
    if conn.dialect.name == "postgresql" and len(drafts) < COPY_ROWS_MIN:
        entry_ids, rows = _write_in_one_statement(conn, drafts, locked, now, check_replays)
    else:
        entry_ids = _insert_entries(conn, drafts, now)
        rows = _apply(drafts, entry_ids, locked, now)
        _POSTINGS.execute(conn, rows)
        _accounts.write_back(conn, locked.values())
    for position, entry_id in zip(positions, entry_ids, strict=True):
        ids[position] = entry_id
    return now, locked, rows


def _recording_time(clock_now: datetime, locked: Iterable[LockedAccount]) -> datetime:
    """The clock, read after the locks, and never earlier than an account's last posting: per
    account, recording order (entry ids) and recorded_at then always agree, whatever the
    clock does, so one index serves statements and balances as of an instant."""
    latest = [a.last_recorded_at for a in locked if a.last_recorded_at is not None]
    return max(clock_now, *latest) if latest else clock_now


_ENTRY_COLUMNS = (
    "id",
    "idempotency_key",
    "code",
    "occurred_at",
    "recorded_at",
    "operator",
    "memo",
    "metadata",
    "reverses_entry_id",
)
_ENTRIES_WITH_ID = bulk_insert(entries, _ENTRY_COLUMNS)
_ENTRY = bulk_insert(entries, _ENTRY_COLUMNS[1:])
_POSTINGS = bulk_insert(
    postings, ("entry_id", "account_id", "amount_minutes", "balance_after_minutes", "recorded_at")
)


def _apply(
    drafts: Sequence[Draft],
    entry_ids: Iterable[int],
    locked: dict[str, LockedAccount],
    now: datetime,
) -> list[tuple[int, int, int, int, datetime]]:
    """Check status and limits entry by entry, in order; build the posting rows."""
    rows: list[tuple[int, int, int, int, datetime]] = []
    for number, (draft, entry_id) in enumerate(zip(drafts, entry_ids, strict=True)):
        try:
            for code, amount in draft.command.legs:
                account = locked[code]
                account.require_open()
                after = account.apply(amount)
                account.last_recorded_at = now
                rows.append((entry_id, account.id, amount, after, now))
        except errors.TimebankError as exc:
            if len(drafts) > 1:
                exc.add_note(_batch_note(draft, number))
            raise
    return rows


def _batch_note(draft: Draft, number: int) -> str:
    return (
        f"refused entry {draft.command.idempotency_key!r} (number {number} of the batch); "
        "nothing of the batch was written"
    )


def _entry_row(draft: Draft, now: datetime) -> tuple[Any, ...]:
    cmd = draft.command
    return (
        cmd.idempotency_key,
        cmd.code,
        cmd.occurred_at or now,
        now,
        cmd.operator,
        cmd.memo,
        cmd.metadata,
        draft.reverses_entry_id,
    )


def _insert_entries(conn: Connection, drafts: Sequence[Draft], now: datetime) -> list[int]:
    """Insert the entry rows first: the unique key is claimed before any check runs, so a
    concurrent duplicate is recognised as a replay, not refused for a limit."""
    rows = [_entry_row(d, now) for d in drafts]
    try:
        if len(rows) > 1 and can_reserve_ids(conn):
            ids = reserve_ids(conn, entries, len(rows))
            _ENTRIES_WITH_ID.execute(conn, [(i, *row) for i, row in zip(ids, rows, strict=True)])
            return ids
        return [_ENTRY.insert_one(conn, row) for row in rows]
    except sa_exc.IntegrityError as exc:
        # Either key clash means another writer got there first (a database may name only
        # one of the two when both clash): run again, looking the key and the reversal up.
        if violated(exc, "idempotency_key") or violated(exc, "reverses_entry_id"):
            raise KeyRace from exc
        raise


# PostgreSQL, for a few entries: entries, postings and balances in ONE statement (writable
# CTEs), one round trip instead of three; on a server each costs more than the work. The
# postings find their entry by its key; foreign keys are checked at the statement's end,
# when the entries exist.
_PG_ENTRY_COLUMNS = _ENTRY_COLUMNS[1:]
_PG_POSTINGS_BY_KEY = RawMany(
    insert(postings),
    [
        ("key", entries.c.idempotency_key.type),
        ("account_id", postings.c.account_id.type),
        ("amount_minutes", postings.c.amount_minutes.type),
        ("balance_after_minutes", postings.c.balance_after_minutes.type),
        ("recorded_at", postings.c.recorded_at.type),
    ],
    pg_sql="",  # only its parameters are used, inside _PG_ONE_STATEMENT
)
_PG_ONE_STATEMENT = f"""
WITH e AS (
    {unnest_insert(entries, _PG_ENTRY_COLUMNS, "e_")} RETURNING id, idempotency_key
), p AS (
    INSERT INTO tb_postings
        (entry_id, account_id, amount_minutes, balance_after_minutes, recorded_at)
    SELECT e.id, v.account_id, v.amount_minutes, v.balance_after_minutes, v.recorded_at
    FROM unnest(%(p_key)s::text[], %(p_account_id)s::bigint[], %(p_amount_minutes)s::bigint[],
                %(p_balance_after_minutes)s::bigint[], %(p_recorded_at)s::timestamp[])
        AS v(key, account_id, amount_minutes, balance_after_minutes, recorded_at)
    JOIN e ON e.idempotency_key = v.key
), u AS (
    {_accounts.WRITE_BACK.pg_sql} RETURNING 1
)
SELECT e.idempotency_key, e.id, (SELECT count(*) FROM u) FROM e
"""


def _write_in_one_statement(
    conn: Connection,
    drafts: Sequence[Draft],
    locked: dict[str, LockedAccount],
    now: datetime,
    check_replays: bool,
) -> tuple[list[int], list[_Row]]:
    """Check every entry, then write entries, postings and balances in one statement.

    The checks run before the keys are claimed here, so a refusal may hide a replay: the
    same command, committed by another writer while this one waited for the locks. On the
    first attempt a refusal therefore runs the operation again with the keys looked up
    first; the second attempt answers the replay, or raises the same refusal.
    """
    try:
        positional = _apply(drafts, range(len(drafts)), locked, now)
    except errors.RefusedError as exc:
        if not check_replays:
            raise KeyRace from exc
        raise
    keys = [d.command.idempotency_key for d in drafts]
    changed, account_rows = _accounts.write_back_rows(locked.values())
    params = {
        **_ENTRY.pg_arrays(conn, [_entry_row(d, now) for d in drafts], "e_"),
        **_PG_POSTINGS_BY_KEY.pg_arrays(conn, [(keys[r[0]], *r[1:]) for r in positional], "p_"),
        **_accounts.WRITE_BACK.pg_arrays(conn, account_rows),
    }
    try:
        result = driver_execute(conn, _PG_ONE_STATEMENT, params, fetch=True).rows
    except sa_exc.IntegrityError as exc:
        if violated(exc, "idempotency_key") or violated(exc, "reverses_entry_id"):
            raise KeyRace from exc
        raise
    _accounts.written_back(changed, int(result[0][2]))
    ids_by_key = {key: int(entry_id) for key, entry_id, _count in result}
    entry_ids = [ids_by_key[key] for key in keys]
    return entry_ids, [(entry_ids[r[0]], *r[1:]) for r in positional]


# --- replays -------------------------------------------------------------------------------


def _match_replays(
    conn: Connection, drafts: Sequence[Draft], fresh: list[int], ids: list[int | None]
) -> None:
    keys = [drafts[i].command.idempotency_key for i in fresh]
    stored = load_by_keys(conn, keys, lock=True)
    for index in fresh:
        draft = drafts[index]
        view = stored.get(draft.command.idempotency_key)
        if view is None:
            continue
        differing = differences_from_stored(draft, view)
        if differing:
            raise errors.IdempotencyConflictError(draft.command.idempotency_key, differing)
        ids[index] = view.id


def _differences(a: Draft, b: Draft) -> list[str]:
    fields = []
    ca, cb = a.command, b.command
    for name in ("code", "operator", "memo", "metadata", "occurred_at"):
        if getattr(ca, name) != getattr(cb, name):
            fields.append(name)
    if _legs(ca) != _legs(cb):
        fields.append("postings")
    if a.reverses_entry_id != b.reverses_entry_id:
        fields.append("reverses_entry_id")
    return fields


def differences_from_stored(draft: Draft, view: EntryView) -> list[str]:
    """Fields in which a command differs from the entry stored under its key."""
    cmd = draft.command
    fields = [
        name
        for name in ("code", "operator", "memo", "metadata")
        if getattr(cmd, name) != getattr(view, name)
    ]
    # An unset occurred_at means "when recorded": it matches only an entry stored that way.
    expected_at = cmd.occurred_at if cmd.occurred_at is not None else view.recorded_at
    if expected_at != view.occurred_at:
        fields.append("occurred_at")
    if _legs(cmd) != sorted((p.account, p.amount_minutes) for p in view.postings):
        fields.append("postings")
    if draft.reverses_entry_id != view.reverses_entry_id:
        fields.append("reverses_entry_id")
    return fields


def _legs(cmd: Command) -> list[tuple[str, int]]:
    return sorted(cmd.legs)


# --- loading -------------------------------------------------------------------------------


def load_by_keys(
    conn: Connection, keys: Sequence[str], *, lock: bool = False
) -> dict[str, EntryView]:
    found: dict[str, EntryView] = {}
    for start in range(0, len(keys), SQL_CHUNK_ROWS):
        query = select(entries.c.id).where(
            entries.c.idempotency_key.in_(keys[start : start + SQL_CHUNK_ROWS])
        )
        if lock:
            # A locking read sees the latest committed row even under REPEATABLE READ.
            query = query.with_for_update(read=True)
        for view in load(conn, list(conn.execute(query).scalars())):
            found[view.idempotency_key] = view
    return found


def load(conn: Connection, ids: Sequence[int]) -> list[EntryView]:
    """Entries with their postings, in the order of ``ids``."""
    if not ids:
        return []
    legs: dict[int, list[PostingView]] = {i: [] for i in ids}
    leg_rows = conn.execute(
        select(
            postings.c.entry_id,
            accounts.c.code,
            postings.c.amount_minutes,
            postings.c.balance_after_minutes,
        )
        .join(accounts, accounts.c.id == postings.c.account_id)
        .where(postings.c.entry_id.in_(ids))
        .order_by(postings.c.entry_id, accounts.c.code)
    )
    for entry_id, code, amount, after in leg_rows:
        legs[entry_id].append(
            PostingView(account=code, amount_minutes=amount, balance_after_minutes=after)
        )
    views = {}
    for row in conn.execute(select(entries).where(entries.c.id.in_(ids))).mappings():
        views[row["id"]] = EntryView(
            id=row["id"],
            idempotency_key=row["idempotency_key"],
            code=row["code"],
            occurred_at=row["occurred_at"],
            recorded_at=row["recorded_at"],
            operator=row["operator"],
            memo=row["memo"],
            metadata=row["metadata"],
            reverses_entry_id=row["reverses_entry_id"],
            postings=tuple(legs[row["id"]]),
        )
    return [views[i] for i in ids if i in views]


# --- reversal ------------------------------------------------------------------------------

REVERSAL_CODE = "reversal"


def reversal_draft(
    conn: Connection,
    entry_id: int,
    *,
    key: str,
    operator: str,
    reason: str,
    occurred_at: datetime | None,
) -> Draft:
    """The mirror of entry ``entry_id``, linked to it. Refused if it was reversed already
    (by another key: a retry with the same key is a replay, not a second reversal)."""
    found = load(conn, [entry_id])
    if not found:
        raise errors.EntryNotFoundError(f"no entry with id {entry_id}")
    original = found[0]
    prior = conn.execute(
        select(entries.c.idempotency_key).where(entries.c.reverses_entry_id == entry_id)
    ).scalar()
    if prior is not None and prior != key:
        raise errors.AlreadyReversedError(
            f"entry {entry_id} was already reversed by entry with key {prior!r}"
        )
    command = EntryCommand(
        idempotency_key=key,
        code=REVERSAL_CODE,
        operator=operator,
        memo=reason,
        occurred_at=occurred_at,
        postings=tuple(
            PostingSpec(account=p.account, amount_minutes=-p.amount_minutes)
            for p in original.postings
        ),
    )
    return Draft(command, reverses_entry_id=entry_id)
