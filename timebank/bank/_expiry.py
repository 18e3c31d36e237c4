"""Expiry: lots past their expiry day give their remaining minutes up, to the programme's
expired account or to a region's pool, as the policy says. A lot expires at the start of its
``expires_on`` day (programme calendar). Running the sweep again posts nothing new: expired
lots have nothing left."""

from __future__ import annotations

from datetime import datetime
from itertools import groupby
from typing import Any

from sqlalchemy import Row, select, update

from timebank import errors
from timebank.bank import _lots, _pools
from timebank.bank._bookings import held_minutes
from timebank.bank._ctx import Act, account_code, programme_row
from timebank.bank._org import actor, policy_at
from timebank.bank.limits import SERVICES_PER_SWEEP_MAX
from timebank.bank.schema import lots, members, regions, sites

#: Lots one ``expire`` call may expire.
LOTS_PER_SWEEP_MAX = SERVICES_PER_SWEEP_MAX * 10


def expire(act: Act, programme_code: str, as_of: datetime, operator: str) -> int:
    """Expire the lots due by ``as_of`` of members under the operator's region (an
    administrator's). Frozen and deceased members' lots wait, and so do minutes a live
    booking holds. Returns how many lots expired in full."""
    if as_of > act.now:
        raise errors.InvalidInputError("expire looks back, not ahead: as_of is in the future")
    programme = programme_row(act.conn, programme_code)
    who = actor(act.conn, programme.id, operator)
    if "auditor" in who.roles or "administrator" not in who.roles or who.region_path is None:
        raise errors.PermissionDeniedError(
            f"operator {operator!r} may not expire lots: region administrators only"
        )
    _, policy = policy_at(act.conn, programme.id, as_of)
    due: list[Row[Any]] = act.conn.execute(
        select(
            lots.c.id,
            lots.c.member_id,
            lots.c.remaining_minutes,
            members.c.account_id,
            regions.c.id.label("region_id"),
        )
        .join(members, members.c.id == lots.c.member_id)
        .join(sites, sites.c.id == members.c.home_site_id)
        .join(regions, regions.c.id == sites.c.region_id)
        .where(
            members.c.programme_id == programme.id,
            members.c.status == "active",
            regions.c.path.startswith(who.region_path),
            lots.c.remaining_minutes > 0,
            lots.c.expires_on <= policy.local_date(as_of),
        )
        .order_by(lots.c.member_id, lots.c.earned_on, lots.c.id)
        .limit(LOTS_PER_SWEEP_MAX)
    ).all()  # type: ignore[assignment]
    expired = 0
    for _member_id, member_lots in groupby(due, key=lambda row: row.member_id):
        rows = list(member_lots)
        pool = _lots.Destination(_lots.POOL, rows[0].region_id)
        to = programme.expired_account_id if policy.expired_to == "programme" else pool
        expired += _expire_member(act, rows, to, operator, as_of)
    return expired


def _expire_member(
    act: Act,
    due: list[Row[Any]],
    to: int | _lots.Destination,
    operator: str,
    as_of: datetime,
) -> int:
    """Expire the member's due lots, oldest first, except the minutes a live booking holds:
    those stay until the booking resolves, and a later sweep takes what is left. Returns how
    many lots were fully expired."""
    first = due[0]
    code = account_code(act.conn, first.account_id)
    free = act.tx.balance(code).posted_minutes - held_minutes(act.conn, first.account_id, act.now)
    taken: list[tuple[Row[Any], int]] = []
    for row in due:
        part = min(row.remaining_minutes, free)
        if part <= 0:
            break
        taken.append((row, part))
        free -= part
    if not taken:
        return 0
    before = sum(row.remaining_minutes for row in due)
    destination = (
        account_code(act.conn, to)
        if isinstance(to, int)
        else _pools.pool_code(act.conn, to.owner_id)
    )
    entry = act.tx.transfer(
        # Unique per sweep: the minutes left in these lots only ever go down.
        f"expiry-m{first.member_id}-l{first.id}-{due[-1].id}-r{before}",
        debit=code,
        credit=destination,
        amount_minutes=sum(part for _, part in taken),
        code="expiry",
        operator=operator,
        occurred_at=as_of,
        memo=f"{len(taken)} lot(s) past their expiry day",
    )
    _lots.record_uses(act.conn, entry.id, [(row.id, part) for row, part in taken])
    for row, part in taken:
        act.conn.execute(
            update(lots)
            .where(lots.c.id == row.id)
            .values(remaining_minutes=lots.c.remaining_minutes - part)
        )
        if not isinstance(to, int):
            lot = act.conn.execute(select(lots).where(lots.c.id == row.id)).one()
            _lots.arrive(act.conn, to, part, lot, entry.id)
    return sum(1 for row, part in taken if part == row.remaining_minutes)
