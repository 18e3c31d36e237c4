"""Gifts: a member gives minutes to a relative (or a friend) as the policy allows, within an
optional yearly limit and the receiver's storage cap. The minutes leave the giver's lots
first in, first out and arrive as lots of the receiver that keep each lot's origin
station, earned day and expiry."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, Row, func, insert, select

from timebank import errors
from timebank.bank import _lots
from timebank.bank._ctx import Act, account_code, code_of, one, programme_row
from timebank.bank._org import authorize, policy_at
from timebank.bank._people import home_site, member_row, relation_of
from timebank.bank._pools import require_room
from timebank.bank.models import INVERSE_RELATION, GiftView, Policy
from timebank.bank.schema import gifts, programmes, vouchers

_COMPARED = ("giver_id", "receiver_id", "minutes")


def give(act: Act, programme_code: str, key: str, data: dict[str, Any], operator: str) -> int:
    programme = programme_row(act.conn, programme_code)
    giver = member_row(act.conn, data["giver_id"], lock=True)
    if giver.programme_id != programme.id:
        raise errors.BankObjectNotFoundError("member", giver.id)
    authorize(act.conn, programme.id, operator, "recorder", site=home_site(act.conn, giver))
    wanted = {k: data[k] for k in _COMPARED}
    replay = act.conn.execute(select(gifts).where(gifts.c.idempotency_key == key)).first()
    if replay is not None:
        fields = replay_differences(replay, wanted, data.get("occurred_at"))
        if fields:
            raise errors.IdempotencyConflictError(key, fields)
        return int(replay.id)
    # A history import dates its gifts; a gift given now is dated now.
    occurred_at = data.get("occurred_at") or act.now
    if occurred_at > act.now:
        raise errors.InvalidInputError("a gift is recorded when it was given")
    receiver = member_row(act.conn, data["receiver_id"])
    _, policy = policy_at(act.conn, programme.id, occurred_at)
    _, policy_now = policy_at(act.conn, programme.id, act.now)
    if not data.get("history") and occurred_at < calendar_year(act.now, policy_now)[0]:
        # Each year has its own limit: dating a gift back into a year already closed would
        # spend that year's allowance again. Migrations bring such gifts in a history file.
        raise errors.InvalidInputError(
            "a gift dated before this calendar year is brought in by a history import"
        )
    _check(act.conn, programme.id, giver, receiver, policy)
    check_yearly_limit(act.conn, giver.id, data["minutes"], policy, occurred_at)
    # The cap limits what a member holds now, whenever the gift was given.
    require_room(act, receiver, data["minutes"], policy_now)
    entry = act.tx.transfer(
        f"gift:{key}",
        debit=account_code(act.conn, giver.account_id),
        credit=account_code(act.conn, receiver.account_id),
        amount_minutes=data["minutes"],
        code="gift",
        operator=operator,
        occurred_at=occurred_at,
        memo=f"gift from member {giver.id} to member {receiver.id}",
    )
    receiving = _lots.Destination(_lots.MEMBER, receiver.id)
    _lots.move(act.conn, _lots.MEMBER, giver.id, [(receiving, data["minutes"])], entry.id)
    gift_id: int = act.conn.execute(
        insert(gifts)
        .values(
            programme_id=programme.id,
            idempotency_key=key,
            **wanted,
            occurred_at=occurred_at,
            given_by=operator,
            entry_id=entry.id,
        )
        .returning(gifts.c.id)
    ).scalar_one()
    return gift_id


def replay_differences(
    stored: Row[Any], wanted: dict[str, Any], occurred_at: datetime | None
) -> list[str]:
    """The fields in which a gift sent again differs from the stored one; its date counts
    when the call gives one (a gift given "now" is not compared by the instant)."""
    fields = [name for name, value in wanted.items() if getattr(stored, name) != value]
    if occurred_at is not None and stored.occurred_at != occurred_at:
        fields.append("occurred_at")
    return fields


def _check(
    conn: Connection, programme_id: int, giver: Row[Any], receiver: Row[Any], policy: Policy
) -> None:
    judge(programme_id, giver, receiver, policy, lambda: relation_of(conn, giver.id, receiver.id))


def judge(
    programme_id: int,
    giver: Row[Any],
    receiver: Row[Any],
    policy: Policy,
    kind: Callable[[], str | None],
) -> None:
    """Whether ``giver`` may give to ``receiver`` (the row engine and the bulk import both
    judge with it). ``kind`` gives what the giver is to the receiver, asked only once the
    other rules have passed."""
    if receiver.id == giver.id:
        raise errors.InvalidInputError("a gift goes to somebody else")
    if receiver.programme_id != programme_id:
        raise errors.BankObjectNotFoundError("member", receiver.id)
    for person in (giver, receiver):
        if person.status != "active":
            raise errors.MemberStateError(f"member {person.id} is {person.status}")
    if policy.groups_donate_only and giver.kind == "group":
        raise errors.PolicyViolationError(
            f"member {giver.id} is a group: the policy lets groups only donate their minutes"
        )
    # The row says what the giver is to the receiver; the policy names what the receiver is
    # to the giver (a gift to one's mother goes to a parent).
    relation = kind()
    receiver_is = None if relation is None else INVERSE_RELATION[relation]
    if receiver_is not in policy.gift_relations:
        allowed = ", ".join(sorted(policy.gift_relations))
        raise errors.PolicyViolationError(
            f"member {giver.id} may give to their {allowed}; member {receiver.id} is "
            + ("no relation" if receiver_is is None else f"their {receiver_is}")
        )


def check_yearly_limit(
    conn: Connection, giver_id: int, minutes: int, policy: Policy, now: datetime
) -> None:
    """Gifts and vouchers to another programme (unless refused there) count together."""
    limit = policy.gift_yearly_limit_minutes
    if limit is None:
        return
    year_start, year_end = calendar_year(now, policy)
    given = conn.execute(
        select(func.coalesce(func.sum(gifts.c.minutes), 0)).where(
            gifts.c.giver_id == giver_id,
            gifts.c.occurred_at >= year_start,
            gifts.c.occurred_at < year_end,
        )
    ).scalar_one()
    sent = conn.execute(
        select(func.coalesce(func.sum(vouchers.c.minutes), 0)).where(
            vouchers.c.member_id == giver_id,
            vouchers.c.direction == "out",
            vouchers.c.status != "refused",
            vouchers.c.created_at >= year_start,
            vouchers.c.created_at < year_end,
        )
    ).scalar_one()
    within_limit(giver_id, int(given) + int(sent), minutes, limit)


def within_limit(giver_id: int, given: int, minutes: int, limit: int) -> None:
    """Refuse a gift past the yearly limit, ``given`` being what the year already counts."""
    if given + minutes > limit:
        raise errors.PolicyViolationError(
            f"member {giver_id} has given {given} of the {limit} minutes a year allows; "
            f"{limit - given} remain, {minutes} asked"
        )


def calendar_year(moment: datetime, policy: Policy) -> tuple[datetime, datetime]:
    """The start of the programme's calendar year of ``moment`` and of the next, in UTC
    (a gift dated in the past counts in its own year, not in the years after it)."""
    zone = ZoneInfo(policy.timezone)
    year = moment.astimezone(zone).year
    return (
        datetime(year, 1, 1, tzinfo=zone).astimezone(UTC),
        datetime(year + 1, 1, 1, tzinfo=zone).astimezone(UTC),
    )


def view(conn: Connection, gift_id: int) -> GiftView:
    row = one(conn, select(gifts).where(gifts.c.id == gift_id), "gift", gift_id)
    return GiftView(
        id=row.id,
        idempotency_key=row.idempotency_key,
        programme=code_of(conn, programmes, row.programme_id),
        giver_id=row.giver_id,
        receiver_id=row.receiver_id,
        minutes=row.minutes,
        occurred_at=row.occurred_at,
        given_by=row.given_by,
        entry_id=row.entry_id,
        lots=_lots.used_by(conn, row.entry_id),
    )
