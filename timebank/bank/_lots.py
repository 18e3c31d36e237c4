"""Lots: minutes credited together, consumed first in, first out.

Consumption order (documented, and the only one): the lot earned first goes first; lots
earned the same day go in the order they were created (lot id). A member's balance on the
ledger always equals the sum of the remaining minutes of their lots, and a region pool's the
sum of its pool lots'. ``earned_on`` and ``expires_on`` are days of the programme's calendar
(``Policy.timezone``). Pool lots never expire.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from sqlalchemy import Column, Connection, Table, func, insert, select, update

from timebank import errors
from timebank.bank.schema import is_open, lot_uses, lots, pool_lot_uses, pool_lots


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds lots: members (``tb_lots``) or region pools (``tb_pool_lots``)."""

    name: str
    table: Table
    owner: Column[Any]
    uses: Table
    uses_lot: Column[Any]


MEMBER = Holder("member", lots, lots.c.member_id, lot_uses, lot_uses.c.lot_id)
POOL = Holder("pool", pool_lots, pool_lots.c.region_id, pool_lot_uses, pool_lot_uses.c.pool_lot_id)


def create(
    conn: Connection,
    *,
    member_id: int,
    minutes: int,
    origin_site_id: int,
    earned_on: date,
    expiry_days: int | None,
    source_entry_id: int,
    parent_lot_id: int | None = None,
    expires_on: date | None = None,
) -> int:
    if expires_on is None and expiry_days is not None:
        expires_on = earned_on + timedelta(days=expiry_days)
    lot_id: int = conn.execute(
        insert(lots)
        .values(
            member_id=member_id,
            minutes=minutes,
            remaining_minutes=minutes,
            origin_site_id=origin_site_id,
            earned_on=earned_on,
            expires_on=expires_on,
            source_entry_id=source_entry_id,
            parent_lot_id=parent_lot_id,
        )
        .returning(lots.c.id)
    ).scalar_one()
    return lot_id


def consume(
    conn: Connection,
    owner_id: int,
    minutes: int,
    *,
    first_lot_id: int | None = None,
    holder: Holder = MEMBER,
) -> list[tuple[int, int]]:
    """Take ``minutes`` from the open lots of a member (or a pool: ``holder``),
    ``first_lot_id`` first (a reversal takes back the lot its deposit made), then first in,
    first out. Returns (lot id, minutes taken) pairs. The caller holds the ledger account's
    lock, so no one else consumes."""
    table = holder.table
    query = (
        select(table.c.id, table.c.remaining_minutes)
        .where(holder.owner == owner_id, is_open(table))
        .order_by(table.c.earned_on, table.c.id)
        .with_for_update()
    )
    open_lots = list(conn.execute(query))
    if first_lot_id is not None:
        open_lots.sort(key=lambda lot: lot.id != first_lot_id)  # stable: FIFO otherwise
    taken: list[tuple[int, int]] = []
    left = minutes
    for lot in open_lots:
        if left == 0:
            break
        part = min(left, lot.remaining_minutes)
        taken.append((lot.id, part))
        left -= part
    if left:
        # The ledger's floor refuses this before we get here; lots and ledger disagree.
        raise errors.IntegrityViolationError(
            f"{holder.name} {owner_id}'s lots hold {minutes - left} of the {minutes} minutes"
        )
    for lot_id, part in taken:
        conn.execute(
            update(table)
            .where(table.c.id == lot_id)
            .values(remaining_minutes=table.c.remaining_minutes - part)
        )
    return taken


def record_uses(
    conn: Connection, entry_id: int, taken: list[tuple[int, int]], holder: Holder = MEMBER
) -> None:
    """Remember which lots ``entry_id`` took its minutes from."""
    conn.execute(
        insert(holder.uses),
        [{"entry_id": entry_id, holder.uses_lot.name: lot, "minutes": m} for lot, m in taken],
    )


def create_pool_lot(
    conn: Connection,
    *,
    region_id: int,
    minutes: int,
    origin_site_id: int,
    earned_on: date,
    source_entry_id: int,
) -> int:
    lot_id: int = conn.execute(
        insert(pool_lots)
        .values(
            region_id=region_id,
            minutes=minutes,
            remaining_minutes=minutes,
            origin_site_id=origin_site_id,
            earned_on=earned_on,
            source_entry_id=source_entry_id,
        )
        .returning(pool_lots.c.id)
    ).scalar_one()
    return lot_id


@dataclass(frozen=True, slots=True)
class Destination:
    """Where moved minutes arrive: a member's lots or a region pool's. For a member, with
    ``keep_expiry`` each source lot's expiry travels with it (gifts, estates); without, the
    new lots expire on ``expires_on`` (a grant starts anew; None: never)."""

    holder: Holder
    owner_id: int
    keep_expiry: bool = True
    expires_on: date | None = None


def move(
    conn: Connection,
    source: Holder,
    source_id: int,
    shares: list[tuple[Destination, int]],
    entry_id: int,
) -> list[tuple[int, int]]:
    """Move minutes as lots: taken first in, first out from the source (once, recorded as
    the entry's uses), then handed out in order, ``shares`` being (destination, minutes);
    each slice becomes a lot of its destination with the same origin station and earned
    day."""
    taken = consume(conn, source_id, sum(minutes for _, minutes in shares), holder=source)
    record_uses(conn, entry_id, taken, source)
    slices = iter(taken)
    lot_id, left_in_lot = 0, 0
    for destination, minutes in shares:
        owed = minutes
        while owed:
            if left_in_lot == 0:
                lot_id, left_in_lot = next(slices)
            part = min(owed, left_in_lot)
            lot = conn.execute(select(source.table).where(source.table.c.id == lot_id)).one()
            arrive(conn, destination, part, lot, entry_id)
            owed -= part
            left_in_lot -= part
    return taken


def arrive(
    conn: Connection, destination: Destination, minutes: int, origin: Any, entry_id: int
) -> None:
    """A lot of ``minutes`` for the destination, earned where and when ``origin`` was (a
    lot row, or anything with ``id``, ``origin_site_id`` and ``earned_on``)."""
    if destination.holder is POOL:
        create_pool_lot(
            conn,
            region_id=destination.owner_id,
            minutes=minutes,
            origin_site_id=origin.origin_site_id,
            earned_on=origin.earned_on,
            source_entry_id=entry_id,
        )
        return
    keep = destination.keep_expiry and hasattr(origin, "expires_on")
    create(
        conn,
        member_id=destination.owner_id,
        minutes=minutes,
        origin_site_id=origin.origin_site_id,
        earned_on=origin.earned_on,
        expiry_days=None,
        expires_on=origin.expires_on if keep else destination.expires_on,
        source_entry_id=entry_id,
        # Only a member's lot can be a parent (the column refers to tb_lots).
        parent_lot_id=origin.id if hasattr(origin, "expires_on") else None,
    )


def open_total(conn: Connection, owner_id: int, holder: Holder = MEMBER) -> int:
    table = holder.table
    total = conn.execute(
        select(func.coalesce(func.sum(table.c.remaining_minutes), 0)).where(
            holder.owner == owner_id
        )
    ).scalar_one()
    return int(total)


def used_by(
    conn: Connection, entry_id: int, holder: Holder = MEMBER
) -> tuple[tuple[int, int], ...]:
    """(lot id, minutes) that the entry took, by lot id."""
    uses = holder.uses
    rows = conn.execute(
        select(holder.uses_lot, uses.c.minutes)
        .where(uses.c.entry_id == entry_id)
        .order_by(holder.uses_lot)
    )
    return tuple((lot, minutes) for lot, minutes in rows)
