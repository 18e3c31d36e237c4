"""Posting entries: validate -> lock -> claim keys -> check -> write. One function for one
entry and for a batch, so the fast path and the careful path are the same path."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert, select
from sqlalchemy import exc as sa_exc

from timebank import _accounts, errors
from timebank._accounts import LockedAccount
from timebank._db import KeyRace, violated
from timebank.limits import SQL_CHUNK_ROWS
from timebank.models import EntryCommand, EntryView, PostingSpec, PostingView
from timebank.schema import accounts, entries, postings

Clock = Callable[[], datetime]


@dataclass(frozen=True, slots=True)
class Draft:
    """An entry about to be written: the caller's command plus what the ledger adds."""

    command: EntryCommand
    reverses_entry_id: int | None = None


def post(
    conn: Connection, drafts: Sequence[Draft], clock: Clock, *, check_replays: bool
) -> tuple[list[int], int]:
    """Write ``drafts`` in order; return (entry id per draft, number of entries created).

    ``check_replays`` looks the keys up first. It is off on the first attempt: the unique
    constraint on the key decides, and a clash raises :class:`KeyRace` so the caller can
    roll back and run again with it on.
    """
    ids: list[int | None] = [None] * len(drafts)
    fresh = _dedupe(drafts, ids)
    if check_replays:
        _match_replays(conn, drafts, fresh, ids)
        fresh = [i for i in fresh if ids[i] is None]
    if fresh:
        _write(conn, [drafts[i] for i in fresh], clock, fresh, ids)
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
) -> None:
    codes = {p.account for d in drafts for p in d.command.postings}
    locked = _accounts.lock(conn, codes, clock())
    # The clock is read after the locks, so that per account recording order and
    # recorded_at agree even when writers queue on a lock.
    now = clock()
    entry_ids = _insert_entries(conn, drafts, now)
    rows = _apply(drafts, entry_ids, locked, now)
    conn.execute(insert(postings), rows)
    _accounts.write_back(conn, locked.values())
    for position, entry_id in zip(positions, entry_ids, strict=True):
        ids[position] = entry_id


def _apply(
    drafts: Sequence[Draft],
    entry_ids: Sequence[int],
    locked: dict[str, LockedAccount],
    now: datetime,
) -> list[dict[str, Any]]:
    """Check status and limits entry by entry, in order; build the posting rows."""
    rows: list[dict[str, Any]] = []
    for number, (draft, entry_id) in enumerate(zip(drafts, entry_ids, strict=True)):
        try:
            for spec in draft.command.postings:
                account = locked[spec.account]
                account.require_open()
                after = account.apply(spec.amount_minutes)
                rows.append(
                    {
                        "entry_id": entry_id,
                        "account_id": account.id,
                        "amount_minutes": spec.amount_minutes,
                        "balance_after_minutes": after,
                        "recorded_at": now,
                    }
                )
        except errors.TimebankError as exc:
            if len(drafts) > 1:
                exc.add_note(
                    f"refused entry {draft.command.idempotency_key!r} "
                    f"(number {number} of the batch); nothing of the batch was written"
                )
            raise
    return rows


def _entry_row(draft: Draft, now: datetime) -> dict[str, Any]:
    cmd = draft.command
    return {
        "idempotency_key": cmd.idempotency_key,
        "code": cmd.code,
        "occurred_at": cmd.occurred_at or now,
        "recorded_at": now,
        "operator": cmd.operator,
        "memo": cmd.memo,
        "metadata": cmd.metadata,
        "reverses_entry_id": draft.reverses_entry_id,
    }


def _insert_entries(conn: Connection, drafts: Sequence[Draft], now: datetime) -> list[int]:
    rows = [_entry_row(d, now) for d in drafts]
    try:
        if conn.dialect.insert_executemany_returning_sort_by_parameter_order:
            stmt = insert(entries).returning(entries.c.id, sort_by_parameter_order=True)
            return list(conn.execute(stmt, rows).scalars())
        return [_insert_one(conn, row) for row in rows]
    except sa_exc.IntegrityError as exc:
        if violated(exc, "idempotency_key"):
            raise KeyRace from exc
        if violated(exc, "reverses_entry_id"):
            raise errors.AlreadyReversedError(
                "the entry was reversed concurrently by another command"
            ) from exc
        raise


def _insert_one(conn: Connection, row: dict[str, Any]) -> int:
    key = conn.execute(insert(entries), row).inserted_primary_key
    assert key is not None, "an INSERT returns its primary key"
    return int(key[0])


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
    """Fields in which a command differs from the entry stored under its key. An unset
    ``occurred_at`` means "when recorded", so it matches whatever was recorded then."""
    cmd = draft.command
    fields = [
        name
        for name in ("code", "operator", "memo", "metadata")
        if getattr(cmd, name) != getattr(view, name)
    ]
    if cmd.occurred_at is not None and cmd.occurred_at != view.occurred_at:
        fields.append("occurred_at")
    if _legs(cmd) != sorted((p.account, p.amount_minutes) for p in view.postings):
        fields.append("postings")
    if draft.reverses_entry_id != view.reverses_entry_id:
        fields.append("reverses_entry_id")
    return fields


def _legs(cmd: EntryCommand) -> list[tuple[str, int]]:
    return sorted((p.account, p.amount_minutes) for p in cmd.postings)


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
        .order_by(postings.c.id)
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
