"""Daily work: services, bookings, redemptions, gifts, pools, expiry, freezing.

Acts that create something (a service, a booking, a redemption, a gift, a donation, a grant,
a settlement) take ``--idempotency-key``. Acts on something that exists (confirm, reject,
reverse, complete, cancel, freeze) are named by it: running one again replays it."""

from __future__ import annotations

from datetime import date, datetime

import click

from timebank.bank import TimeBank
from timebank.bank.models import ClearingLevel
from timebank.cli._app import common
from timebank.cli._output import emit, idempotency_key
from timebank.cli._params import (
    DAY,
    ID,
    MOMENT,
    key_option,
    local,
    operator_option,
    programme_option,
)
from timebank.cli._root import root
from timebank.cli._state import STATE

CLEARING_LEVELS: tuple[ClearingLevel, ...] = ("site", "township", "county", "city", "province")


def _now_or(bank: TimeBank, programme: str, moment: datetime | None) -> datetime:
    found = local(bank, programme, moment)
    return bank.ledger.clock() if found is None else found


def _at(bank: TimeBank, programme: str, moment: datetime) -> datetime:
    found = local(bank, programme, moment)
    assert found is not None
    return found


# --- services --------------------------------------------------------------------------------


@root.command()
@common()
@programme_option
@operator_option
@key_option
@click.option("--volunteer", "volunteer_id", type=ID, required=True, help="Member id.")
@click.option("--recipient", "recipient_ids", type=ID, multiple=True, required=True,
              help="Member id of a person served (repeat for several).")
@click.option("--site", required=True, help="The station recording it.")
@click.option("--type", "service_type", required=True, help="A service type of the policy.")
@click.option("--start", "started_at", type=MOMENT, required=True)
@click.option("--end", "ended_at", type=MOMENT, required=True)
@click.option("--rating", type=click.IntRange(1, 5), help="The recipient's rating, 1 to 5.")
@click.option("--note", default="", help="A note for the record (no personal data).")
def record(
    *, programme: str, operator: str, key: str | None, volunteer_id: int,
           recipient_ids: tuple[int, ...], site: str, service_type: str, started_at: datetime,
           ended_at: datetime, rating: int | None, note: str) -> None:
    """Record a service; it stays pending until confirmed (or the policy's delay passes).

    \b
    Example:
      timebank record -p nj -o desk1 --volunteer 1 --recipient 2 --site st-hunan \\
          --type chat --start 2026-11-29T09:00 --end 2026-11-29T10:30
    """
    bank = STATE.bank()
    view = bank.record_service(
        idempotency_key(key, "record"), programme=programme, volunteer_id=volunteer_id,
        recipient_ids=recipient_ids, site=site, service_type=service_type,
        started_at=_at(bank, programme, started_at), ended_at=_at(bank, programme, ended_at),
        operator=operator, rating=rating, note=note,
    )
    emit(view, title=f"service {view.id}")


@root.command()
@common()
@operator_option
@click.argument("service_id", type=ID)
@click.option("--recipient", "recipient_id", type=ID,
              help="Record this recipient's confirmation (entered by a recorder) instead of "
              "the operator's own.")
def confirm(operator: str, service_id: int, recipient_id: int | None) -> None:
    """Confirm service SERVICE_ID; when the policy's confirmations are reached the minutes
    are deposited. Confirming again changes nothing.

    \b
    Example:
      timebank confirm 17 -o confirmer1
    """
    view = STATE.bank().confirm_service(service_id, operator=operator, recipient_id=recipient_id)
    emit(view, title=f"service {service_id}")


@root.command()
@common()
@operator_option
@click.argument("service_id", type=ID)
@click.option("--reason", required=True)
def reject(operator: str, service_id: int, reason: str) -> None:
    """Reject pending service SERVICE_ID (the same reason again changes nothing).

    \b
    Example:
      timebank reject 18 -o confirmer1 --reason "recipient was in hospital"
    """
    emit(STATE.bank().reject_service(service_id, reason=reason, operator=operator),
         title=f"service {service_id}")


@root.command()
@common()
@operator_option
@click.argument("service_id", type=ID)
@click.option("--reason", required=True)
def reverse(operator: str, service_id: int, reason: str) -> None:
    """Reverse confirmed service SERVICE_ID's deposit (administrators; refused when its
    minutes are spent).

    \b
    Example:
      timebank reverse 17 -o admin --reason "recorded twice"
    """
    emit(STATE.bank().reverse_service(service_id, reason=reason, operator=operator),
         title=f"service {service_id}")


@root.command("confirm-due")
@common()
@programme_option
@operator_option
@click.option("--as-of", type=MOMENT, help="[default: now]")
def confirm_due(programme: str, operator: str, as_of: datetime | None) -> None:
    """Confirm the pending services whose policy delay has passed (run it daily).

    \b
    Example:
      timebank confirm-due -p nj -o confirmer1
    """
    bank = STATE.bank()
    count = bank.confirm_due(programme, as_of=_now_or(bank, programme, as_of), operator=operator)
    emit({"programme": programme, "confirmed": count}, title="confirmed automatically")


# --- bookings and redemptions ------------------------------------------------------------


@root.command()
@common()
@programme_option
@operator_option
@key_option
@click.option("--member", "member_id", type=ID, required=True, help="Whose minutes.")
@click.option("--recipient", "recipient_id", type=ID,
              help="Who receives the care [default: the member].")
@click.option("--site", required=True, help="Where the care is given.")
@click.option("--type", "service_type", required=True)
@click.option("--minutes", type=int, required=True)
@click.option("--at", "scheduled_at", type=MOMENT, required=True, help="When it is scheduled.")
@click.option("--expires", "expires_at", type=MOMENT,
              help="When the hold lapses [default: a day after --at].")
def book(
    *, programme: str, operator: str, key: str | None, member_id: int,
         recipient_id: int | None, site: str, service_type: str, minutes: int,
         scheduled_at: datetime, expires_at: datetime | None) -> None:
    """Book care: hold --minutes of the member's until it is given (complete) or cancelled.

    \b
    Example:
      timebank book -p nj -o desk1 --member 2 --site care-home --type body_care \\
          --minutes 60 --at 2026-12-01T10:00
    """
    bank = STATE.bank()
    view = bank.book(
        idempotency_key(key, "book"), programme=programme, member_id=member_id,
        site=site, service_type=service_type, minutes=minutes,
        scheduled_at=_at(bank, programme, scheduled_at), operator=operator,
        recipient_id=recipient_id, expires_at=local(bank, programme, expires_at),
    )
    emit(view, title=f"booking {view.id}")


@root.command()
@common()
@operator_option
@click.argument("booking_id", type=ID)
@click.option("--minutes", type=int, help="Minutes given [default: all held].")
@click.option("--at", "occurred_at", type=MOMENT,
              help="When the care was given [default: now].")
def complete(operator: str, booking_id: int, minutes: int | None,
             occurred_at: datetime | None) -> None:
    """The booked care was given: redeem its minutes and release the rest.

    \b
    Example:
      timebank complete 4 -o desk1
    """
    bank = STATE.bank()
    when = occurred_at
    if when is not None and when.utcoffset() is None:
        when = local(bank, bank.booking(booking_id).programme, when)
    emit(bank.complete_booking(booking_id, operator=operator, minutes=minutes, occurred_at=when),
         title=f"booking {booking_id}")


@root.command()
@common()
@operator_option
@click.argument("booking_id", type=ID)
@click.option("--reason", required=True)
def cancel(operator: str, booking_id: int, reason: str) -> None:
    """Cancel booking BOOKING_ID and release its minutes.

    \b
    Example:
      timebank cancel 4 -o desk1 --reason "moved to hospital"
    """
    emit(STATE.bank().cancel_booking(booking_id, reason=reason, operator=operator),
         title=f"booking {booking_id}")


@root.command()
@common()
@programme_option
@operator_option
@key_option
@click.option("--member", "member_id", type=ID, required=True, help="Whose minutes.")
@click.option("--recipient", "recipient_id", type=ID,
              help="Who received the care (the member's spouse, where the policy allows) "
              "[default: the member].")
@click.option("--site", required=True, help="Where the care was given.")
@click.option("--type", "service_type", required=True)
@click.option("--minutes", type=int, required=True)
@click.option("--at", "occurred_at", type=MOMENT, help="When [default: now].")
def redeem(
    *, programme: str, operator: str, key: str | None, member_id: int,
           recipient_id: int | None, site: str, service_type: str, minutes: int,
           occurred_at: datetime | None) -> None:
    """Pay --minutes of a member's for care received (first in, first out from their lots).

    \b
    Example:
      timebank redeem -p nj -o desk1 --member 2 --site care-home --type body_care --minutes 45
    """
    bank = STATE.bank()
    view = bank.redeem(
        idempotency_key(key, "redeem"), programme=programme, member_id=member_id, site=site,
        service_type=service_type, minutes=minutes, operator=operator,
        recipient_id=recipient_id, occurred_at=local(bank, programme, occurred_at),
    )
    emit(view, title=f"redemption {view.id}")


# --- gifts and pools ---------------------------------------------------------------------


@root.command()
@common()
@programme_option
@operator_option
@key_option
@click.option("--from", "giver_id", type=ID, required=True, help="The giving member.")
@click.option("--to", "receiver_id", type=ID, required=True, help="The receiving relative.")
@click.option("--minutes", type=int, required=True)
def gift(
    *, programme: str, operator: str, key: str | None, giver_id: int, receiver_id: int,
         minutes: int) -> None:
    """Give minutes to a relative, within the policy's relations and yearly limit.

    \b
    Example:
      timebank gift -p nj -o desk1 --from 1 --to 2 --minutes 120
    """
    view = STATE.bank().give(
        idempotency_key(key, "gift"), programme=programme, giver_id=giver_id,
        receiver_id=receiver_id, minutes=minutes, operator=operator,
    )
    emit(view, title=f"gift {view.id}")


@root.command()
@common()
@programme_option
@operator_option
@key_option
@click.option("--member", "member_id", type=ID, required=True)
@click.option("--minutes", type=int, required=True)
@click.option("--region", "region_code", help="Whose pool [default: the member's home region].")
def donate(
    *, programme: str, operator: str, key: str | None, member_id: int, minutes: int,
           region_code: str | None) -> None:
    """Donate minutes to a region's pool.

    \b
    Example:
      timebank donate -p nj -o desk1 --member 1 --minutes 60
    """
    view = STATE.bank().donate(
        idempotency_key(key, "donate"), programme=programme, member_id=member_id,
        minutes=minutes, operator=operator, region=region_code,
    )
    emit(view, title=f"donation {view.id}")


@root.command()
@common()
@programme_option
@operator_option
@key_option
@click.option("--region", "region_code", required=True, help="The pool's region.")
@click.option("--member", "member_id", type=ID, required=True, help="The elder granted to.")
@click.option("--minutes", type=int, required=True)
def grant(
    *, programme: str, operator: str, key: str | None, region_code: str, member_id: int,
          minutes: int) -> None:
    """Grant minutes from a region's pool to an elder a grant rule matches (administrators).

    \b
    Example:
      timebank grant -p nj -o admin --region gulou --member 2 --minutes 300
    """
    view = STATE.bank().grant(
        idempotency_key(key, "grant"), programme=programme, region=region_code,
        member_id=member_id, minutes=minutes, operator=operator,
    )
    emit(view, title=f"grant {view.id}")


@root.command()
@common()
@programme_option
@operator_option
@click.option("--as-of", type=MOMENT, help="[default: now]")
def expire(programme: str, operator: str, as_of: datetime | None) -> None:
    """Expire every lot past its expiry day (region administrators; running it again posts
    nothing new).

    \b
    Example:
      timebank expire -p nj -o admin
    """
    bank = STATE.bank()
    count = bank.expire(programme, as_of=_now_or(bank, programme, as_of), operator=operator)
    emit({"programme": programme, "lots_expired": count}, title="expiry")


# --- freezing ------------------------------------------------------------------------------


@root.command()
@common()
@operator_option
@click.argument("member_id", type=ID)
@click.option("--reason", required=True)
def freeze(operator: str, member_id: int, reason: str) -> None:
    """Freeze member MEMBER_ID: nothing moves in or out until unfrozen (administrators).

    \b
    Example:
      timebank freeze 12 -o admin --reason "identity under review"
    """
    emit(STATE.bank().set_member_status(member_id, "frozen", reason=reason, operator=operator),
         title=f"member {member_id}")


@root.command()
@common()
@operator_option
@click.argument("member_id", type=ID)
@click.option("--reason", required=True)
def unfreeze(operator: str, member_id: int, reason: str) -> None:
    """Make frozen member MEMBER_ID active again (administrators)."""
    emit(STATE.bank().set_member_status(member_id, "active", reason=reason, operator=operator),
         title=f"member {member_id}")


# --- settlement ----------------------------------------------------------------------------


@root.command()
@common()
@programme_option
@operator_option
@key_option
@click.option("--from", "start", type=DAY, required=True, help="First day of the period.")
@click.option("--to", "end", type=DAY, required=True, help="The day after the period.")
@click.option("--level", type=click.Choice(CLEARING_LEVELS), default="site", show_default=True)
def settle(
    *, programme: str, operator: str, key: str | None, start: date, end: date,
           level: ClearingLevel) -> None:
    """Settle a period's clearing at --level (administrators of the programme; periods in
    order, once each, after they end).

    \b
    Example:
      timebank settle -p nj -o admin --from 2026-11-01 --to 2026-12-01 --level county
    """
    view = STATE.bank().settle(
        idempotency_key(key, "settle"), programme=programme, start=start, end=end,
        level=level, operator=operator,
    )
    emit(view, title=f"settlement {view.id}")
