"""Bookings: a future service at an institution or station, paid by a hold of the ledger on
the member's minutes (TigerBeetle's pending transfer). Completing it redeems at most the held
minutes and releases the rest; cancelling releases them all; a booking not completed by its
expiry releases them by itself (the ledger expires the hold the next time either account is
touched, or in ``expire_bookings``). Held minutes can be spent once only: the ledger counts
them out of what the member may redeem, give or donate."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, func, insert, or_, select, update

from timebank import errors
from timebank.bank import _redeem
from timebank.bank._ctx import Act, account_code, code_of, differences, one, programme_row
from timebank.bank._org import authorize, policy_at, site_row
from timebank.bank._people import member_row
from timebank.bank.models import BookingStatus, BookingView
from timebank.bank.schema import bookings, programmes, redemptions, sites
from timebank.schema import holds

_COMPARED = ("member_id", "recipient_id", "site_id", "service_type", "minutes", "scheduled_at")


def book(act: Act, programme_code: str, key: str, data: dict[str, Any], operator: str) -> int:
    """Hold ``data["minutes"]`` of the member's for a service at ``data["site"]``; the same
    eligibility as a redemption (judged on the scheduled day). Returns the booking id."""
    programme = programme_row(act.conn, programme_code)
    site = site_row(act.conn, programme.id, data["site"])
    authorize(act.conn, programme.id, operator, "redeemer", site=site)
    wanted = {**{k: data[k] for k in _COMPARED if k != "site_id"}, "site_id": site.id}
    # The member's row lock first: a retry that waited on it then finds the first attempt.
    member = member_row(act.conn, data["member_id"], lock=True)
    replay = act.conn.execute(
        select(bookings, holds.c.expires_at)
        .join(holds, holds.c.id == bookings.c.hold_id)
        .where(bookings.c.idempotency_key == key)
    ).first()
    if replay is not None:
        stored = {**replay._mapping}
        fields = differences(stored, {**wanted, "expires_at": data["expires_at"]})
        if replay.programme_id != programme.id:
            fields.append("programme")
        if fields:
            raise errors.IdempotencyConflictError(key, fields)
        return int(replay.id)
    expires_at: datetime = data["expires_at"]
    if expires_at <= act.now or expires_at < data["scheduled_at"]:
        raise errors.InvalidInputError(
            "a booking expires in the future, and not before its scheduled time"
        )
    _, policy = policy_at(act.conn, programme.id, data["scheduled_at"])
    if data["service_type"] not in policy.service_types:
        raise errors.PolicyViolationError(
            f"service type {data['service_type']!r} is not in the catalogue"
        )
    recipient = member_row(act.conn, data["recipient_id"])
    _redeem.check_people(act.conn, programme.id, member, recipient, policy, data["scheduled_at"])
    hold = act.tx.hold(
        f"booking:{key}",
        debit=account_code(act.conn, member.account_id),
        credit=account_code(act.conn, site.redeemed_account_id),
        amount_minutes=data["minutes"],
        code="booking",
        operator=operator,
        expires_at=expires_at,
        memo=f"{data['service_type']} for member {recipient.id}",
    )
    booking_id: int = act.conn.execute(
        insert(bookings)
        .values(
            programme_id=programme.id,
            idempotency_key=key,
            **wanted,
            hold_id=hold.id,
            booked_by=operator,
            booked_at=act.now,
        )
        .returning(bookings.c.id)
    ).scalar_one()
    return booking_id


def _booking(act: Act, booking_id: int, operator: str) -> tuple[Row[Any], Row[Any]]:
    booking = one(
        act.conn,
        select(bookings).where(bookings.c.id == booking_id).with_for_update(),
        "booking",
        booking_id,
    )
    site = act.conn.execute(select(sites).where(sites.c.id == booking.site_id)).one()
    authorize(act.conn, booking.programme_id, operator, "redeemer", site=site)
    return booking, site


def complete(
    act: Act, booking_id: int, minutes: int | None, operator: str, occurred_at: datetime | None
) -> None:
    """Redeem ``minutes`` (all held by default, never more) of a booking; the rest of the
    hold is released. Completing again with the same minutes is a replay."""
    booking, _site = _booking(act, booking_id, operator)
    amount = booking.minutes if minutes is None else minutes
    if booking.redemption_id is not None:
        done = act.conn.execute(
            select(redemptions.c.minutes).where(redemptions.c.id == booking.redemption_id)
        ).scalar_one()
        if done != amount:
            raise errors.IdempotencyConflictError(booking.idempotency_key, ["minutes"])
        return
    _require_open(act, booking)
    if amount > booking.minutes:
        raise errors.InvalidAmountError(
            f"booking {booking_id} holds {booking.minutes} minutes: {amount} cannot be redeemed"
        )
    member = member_row(act.conn, booking.member_id, lock=True)
    recipient = member_row(act.conn, booking.recipient_id)
    for person in (member, recipient):
        if person.status != "active":
            raise errors.MemberStateError(f"member {person.id} is {person.status}")
    when = act.now if occurred_at is None else occurred_at
    if when > act.now:
        raise errors.InvalidInputError("a booking is completed when the care was given")
    entry = act.tx.post_hold(
        booking.hold_id,
        idempotency_key=f"booking-{booking_id}-completion",
        operator=operator,
        amount_minutes=amount,
        occurred_at=when,
    )
    row = {
        "member_id": booking.member_id,
        "recipient_id": booking.recipient_id,
        "site_id": booking.site_id,
        "service_type": booking.service_type,
        "minutes": amount,
        "occurred_at": when,
        "redeemed_by": operator,
    }
    key = f"booking:{booking.idempotency_key}"
    redemption_id = _redeem.record(act, booking.programme_id, key, row, entry.id)
    act.conn.execute(
        update(bookings).where(bookings.c.id == booking_id).values(redemption_id=redemption_id)
    )


def cancel(act: Act, booking_id: int, reason: str, operator: str) -> None:
    """Release a booking's minutes. Cancelling a cancelled booking is a replay."""
    booking, _site = _booking(act, booking_id, operator)
    hold = act.conn.execute(select(holds).where(holds.c.id == booking.hold_id)).one()
    if hold.status == "voided":
        if hold.resolution_memo != reason:
            raise errors.ExistsError("booking cancellation", booking_id, ["reason"])
        return
    _require_open(act, booking)
    act.tx.void_hold(
        booking.hold_id,
        idempotency_key=f"booking-{booking_id}-cancellation",
        operator=operator,
        reason=reason,
    )


def _require_open(act: Act, booking: Row[Any]) -> None:
    hold = act.conn.execute(
        select(holds.c.status, holds.c.expires_at).where(holds.c.id == booking.hold_id)
    ).one()
    status = status_of(hold.status, hold.expires_at, act.now)
    if status != "booked":
        raise errors.ServiceStateError(f"booking {booking.id} is {status}")


def cancel_all(act: Act, member_id: int, reason: str, operator: str) -> None:
    """Release every open booking the member pays for or would receive care from (on
    death)."""
    pending = act.conn.execute(
        select(bookings.c.id, bookings.c.hold_id)
        .join(holds, holds.c.id == bookings.c.hold_id)
        .where(
            or_(bookings.c.member_id == member_id, bookings.c.recipient_id == member_id),
            holds.c.status == "pending",
        )
        .order_by(bookings.c.id)
    ).all()
    for booking_id, hold_id in pending:
        hold = act.conn.execute(select(holds.c.expires_at).where(holds.c.id == hold_id)).one()
        if hold.expires_at > act.now:
            act.tx.void_hold(
                hold_id,
                idempotency_key=f"booking-{booking_id}-cancellation",
                operator=operator,
                reason=reason,
            )


def held_minutes(conn: Connection, account_id: int, now: datetime) -> int:
    """Minutes live bookings (pending holds not yet past their expiry) hold on the account."""
    held = conn.execute(
        select(func.coalesce(func.sum(holds.c.amount_minutes), 0)).where(
            holds.c.debit_account_id == account_id,
            holds.c.status == "pending",
            holds.c.expires_at > now,
        )
    ).scalar_one()
    return int(held)


def status_of(hold_status: str, expires_at: datetime, now: datetime) -> BookingStatus:
    if hold_status == "pending":
        return "booked" if expires_at > now else "expired"
    if hold_status == "posted":
        return "completed"
    if hold_status == "voided":
        return "cancelled"
    return "expired"


def view(conn: Connection, booking_id: int, now: datetime) -> BookingView:
    row = one(conn, select(bookings).where(bookings.c.id == booking_id), "booking", booking_id)
    hold = conn.execute(
        select(holds.c.status, holds.c.expires_at).where(holds.c.id == row.hold_id)
    ).one()
    redeemed = 0
    if row.redemption_id is not None:
        redeemed = conn.execute(
            select(redemptions.c.minutes).where(redemptions.c.id == row.redemption_id)
        ).scalar_one()
    return BookingView(
        id=row.id,
        idempotency_key=row.idempotency_key,
        programme=code_of(conn, programmes, row.programme_id),
        member_id=row.member_id,
        recipient_id=row.recipient_id,
        site=code_of(conn, sites, row.site_id),
        service_type=row.service_type,
        minutes=row.minutes,
        scheduled_at=row.scheduled_at,
        expires_at=hold.expires_at,
        status=status_of(hold.status, hold.expires_at, now),
        booked_by=row.booked_by,
        hold_id=row.hold_id,
        redemption_id=row.redemption_id,
        redeemed_minutes=redeemed,
    )
