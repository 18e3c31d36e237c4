"""Redemption: a member's minutes pay for care at an institution or a station, for the member
or (when the policy allows) their spouse. The minutes leave the member's lots first in,
first out, and each lot used is recorded: where the redeemed minutes were earned."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime
from typing import Any

from sqlalchemy import Connection, Row, Select, except_, func, insert, select

from timebank import errors
from timebank.bank import _lots
from timebank.bank._ctx import Act, account_code, code_of, one, programme_row
from timebank.bank._org import authorize, policy_at, site_row
from timebank.bank._people import birth_date_of, member_row, relation_of
from timebank.bank.models import Policy, RedemptionView, age_on
from timebank.bank.schema import (
    lot_uses,
    lots,
    programmes,
    redemption_origins,
    redemptions,
    sites,
)

_COMPARED = ("member_id", "recipient_id", "site_id", "service_type", "minutes", "occurred_at")


def redeem(act: Act, programme_code: str, key: str, data: dict[str, Any], operator: str) -> int:
    """Spend ``data["minutes"]`` of the member's on care; returns the redemption id."""
    programme = programme_row(act.conn, programme_code)
    site = site_row(act.conn, programme.id, data["site"])
    authorize(act.conn, programme.id, operator, "redeemer", site=site)
    occurred_at = data["occurred_at"] or act.now
    wanted = {**{k: data[k] for k in _COMPARED if k in data}, "site_id": site.id}
    wanted["occurred_at"] = occurred_at
    # The member's row lock first: a retry that waited on it then finds the first attempt.
    member = member_row(act.conn, data["member_id"], lock=True)
    replay = act.conn.execute(
        select(redemptions).where(redemptions.c.idempotency_key == key)
    ).first()
    if replay is not None:
        _same(replay, key, programme.id, wanted, occurred_given=data["occurred_at"] is not None)
        return int(replay.id)
    if occurred_at > act.now:
        raise errors.InvalidInputError("a redemption is recorded when the care was given")
    _version, policy = policy_at(act.conn, programme.id, occurred_at)
    if data["service_type"] not in policy.service_types:
        raise errors.PolicyViolationError(
            f"service type {data['service_type']!r} is not in the catalogue"
        )
    recipient = member_row(act.conn, data["recipient_id"])
    check_people(act.conn, programme.id, member, recipient, policy, occurred_at)
    entry = act.tx.transfer(
        f"redemption:{key}",
        debit=account_code(act.conn, member.account_id),
        credit=account_code(act.conn, site.redeemed_account_id),
        amount_minutes=data["minutes"],
        code="redemption",
        operator=operator,
        occurred_at=occurred_at,
        memo=f"{data['service_type']} for member {recipient.id}",
        metadata={"recipient_id": recipient.id, "service_type": data["service_type"]},
    )
    return record(act, programme.id, key, {**wanted, "redeemed_by": operator}, entry.id)


def record(act: Act, programme_id: int, key: str, row: dict[str, Any], entry_id: int) -> int:
    """The redemption row of a posted entry, and the member's lots it used (first in, first
    out): shared by a redemption and a completed booking."""
    taken = _lots.consume(act.conn, row["member_id"], row["minutes"])
    _lots.record_uses(act.conn, entry_id, taken)
    redemption_id: int = act.conn.execute(
        insert(redemptions)
        .values(programme_id=programme_id, idempotency_key=key, **row, entry_id=entry_id)
        .returning(redemptions.c.id)
    ).scalar_one()
    record_origins(act.conn, redemptions.c.entry_id == entry_id)
    return redemption_id


def record_origins(conn: Connection, which: Any) -> None:
    """Write the clearing rows of the redemptions ``which`` selects (a condition on
    ``redemptions``), already written with their lot uses. The row engine and the bulk
    import both write them so."""
    columns = ["entry_id", "origin_site_id", "programme_id", "site_id", "occurred_at", "minutes"]
    conn.execute(insert(redemption_origins).from_select(columns, origins_from_lot_uses(which)))


def origins_from_lot_uses(*conditions: Any) -> Select[Any]:
    """The clearing rows of the redemptions matching ``conditions``, computed from their lot
    uses: minutes by the site where the lots were earned, with the redemption's programme,
    site and time (what ``record_origins`` writes and the audit compares)."""
    r, u = redemptions, lot_uses
    keys = (r.c.entry_id, lots.c.origin_site_id, r.c.programme_id, r.c.site_id, r.c.occurred_at)
    return (
        select(*keys, func.sum(u.c.minutes).label("minutes"))
        .select_from(r.join(u, u.c.entry_id == r.c.entry_id).join(lots, lots.c.id == u.c.lot_id))
        .where(*conditions)
        .group_by(*keys)
    )


def differing_origins(conn: Connection, *conditions: Any) -> list[tuple[str, Row[Any]]]:
    """The clearing rows (of the redemptions matching ``conditions``) that differ from what
    their lot uses give: ("missing", the row the lot uses give) where none like it is
    stored, ("stray", the stored row) where the lot uses give none like it. Empty when
    every redemption's rows are right."""
    o = redemption_origins
    computed = origins_from_lot_uses(*conditions)
    stored: Select[Any] = select(
        o.c.entry_id, o.c.origin_site_id, o.c.programme_id, o.c.site_id, o.c.occurred_at,
        o.c.minutes,
    ).where(o.c.entry_id.in_(select(redemptions.c.entry_id).where(*conditions)))
    found: list[tuple[str, Row[Any]]] = []
    pairs = (("missing", except_(computed, stored)), ("stray", except_(stored, computed)))
    for label, rows in pairs:
        differ = rows.subquery()
        found += [(label, row) for row in conn.execute(select(differ).order_by(*differ.c))]
    return found


def _same(
    row: Row[Any], key: str, programme_id: int, wanted: dict[str, Any], *, occurred_given: bool
) -> None:
    fields = [
        name
        for name, value in wanted.items()
        if getattr(row, name) != value and (name != "occurred_at" or occurred_given)
    ]
    if row.programme_id != programme_id:
        fields.append("programme")
    if fields:
        raise errors.IdempotencyConflictError(key, fields)


def check_people(  # noqa: PLR0917 - the parties and the rules that judge them
    conn: Connection,
    programme_id: int,
    member: Row[Any],
    recipient: Row[Any],
    policy: Policy,
    when: datetime,
) -> None:
    judge_people(
        programme_id, member, recipient, policy, when,
        relation=lambda: relation_of(conn, recipient.id, member.id),
        born=lambda: birth_date_of(conn, recipient.id),
    )


def judge_people(
    programme_id: int,
    member: Row[Any],
    recipient: Row[Any],
    policy: Policy,
    when: datetime,
    *,
    relation: Callable[[], str | None],
    born: Callable[[], date],
) -> None:
    """Whose care ``member``'s minutes may pay for (the row engine and the bulk import both
    judge with it). ``relation`` gives what the recipient is to the member, ``born`` the
    recipient's birth date: asked only when a rule needs them, so a refusal for a member of
    another programme reads nothing of theirs."""
    for person in (member, recipient):
        if person.programme_id != programme_id:
            raise errors.BankObjectNotFoundError("member", person.id)
        if person.status != "active":
            raise errors.MemberStateError(f"member {person.id} is {person.status}")
    if policy.groups_donate_only and member.kind == "group":
        raise errors.PolicyViolationError(
            f"member {member.id} is a group: the policy lets groups only donate their minutes"
        )
    if recipient.id != member.id and not (policy.spouse_redeems and relation() == "spouse"):
        raise errors.PolicyViolationError(
            f"member {member.id}'s minutes pay for their own care"
            + (" or their spouse's" if policy.spouse_redeems else "")
            + f", not member {recipient.id}'s"
        )
    age = age_on(born(), policy.local_date(when))
    by_age = policy.redemption_min_age is not None and age >= policy.redemption_min_age
    by_need = policy.need_redeems and bool(recipient.assessed_need)
    if policy.redemption_rule == "age_and_need":
        if not (by_age and by_need):
            raise errors.PolicyViolationError(
                f"member {recipient.id} is {age}"
                + ("" if recipient.assessed_need else ", not assessed in need")
                + f": care is redeemed from age {policy.redemption_min_age} with an assessed need"
            )
        return
    if not (by_age or by_need):
        raise errors.PolicyViolationError(
            f"member {recipient.id} is {age}: care is redeemed from age "
            f"{policy.redemption_min_age}"
            + (" or with an assessed need" if policy.need_redeems else "")
        )


def view(conn: Connection, redemption_id: int) -> RedemptionView:
    row = one(
        conn,
        select(redemptions).where(redemptions.c.id == redemption_id),
        "redemption",
        redemption_id,
    )
    return RedemptionView(
        id=row.id,
        idempotency_key=row.idempotency_key,
        programme=code_of(conn, programmes, row.programme_id),
        member_id=row.member_id,
        recipient_id=row.recipient_id,
        site=code_of(conn, sites, row.site_id),
        service_type=row.service_type,
        minutes=row.minutes,
        occurred_at=row.occurred_at,
        redeemed_by=row.redeemed_by,
        entry_id=row.entry_id,
        lots=_lots.used_by(conn, row.entry_id),
    )
