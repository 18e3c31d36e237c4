"""Exchange between independent programmes, each in its own database: a member of ours sends
minutes to a member of a partner programme by a signed voucher.

The steps, each one transaction on one side, each safe to run again:

1. ``send``: our member's minutes move to our account for the partner, taken from their lots
   (recorded), and the voucher is stored, in flight. Again with the same key: the same
   voucher.
2. ``accept`` (the partner's side): the signature is verified; the recipient is credited from
   the partner's account for us, as a new lot, or the voucher is refused (unknown or
   ineligible recipient, storage cap, trust line, rate). Either way the decision is stored
   with a signed acknowledgement. Again with the same voucher: the same acknowledgement.
3. ``record``: the acknowledgement is verified and recorded; a refusal returns the minutes to
   the sender by a reversal, as lots with their origin and expiry. Again: nothing new.

A crash between steps loses nothing: the sender's side lists what is in flight, and
delivering it again (step 2, then 3) completes it exactly once. Documents that do not
verify change nothing and raise SignatureError.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Row, func, insert, select, update

from timebank import errors
from timebank.bank import _lots, _vouchers
from timebank.bank._ctx import Act, account_code, code_of, one, programme_row
from timebank.bank._gifts import check_yearly_limit
from timebank.bank._org import authorize, policy_at, site_row
from timebank.bank._people import home_site, member_row
from timebank.bank._pools import home_region_id, pool_code, require_room
from timebank.bank.models import (
    InFlightVoucher,
    PartnerStatement,
    PartnerView,
    Reconciliation,
    StatementVoucher,
    UnitRate,
    VoucherView,
)
from timebank.bank.schema import lots, members, partners, programmes, regions, sites, vouchers
from timebank.limits import AMOUNT_MAX_MINUTES
from timebank.models import AccountSpec
from timebank.schema import accounts

Secrets = dict[tuple[str, str], bytes]
#: Member numbers are 64-bit ids; rates are bounded as UnitRate bounds them.
ID_MAX = 2**63 - 1
RATE_MAX = 1_000_000


def partner_account(programme_code: str, partner_code: str) -> str:
    return f"{programme_code}:partner:{partner_code}"


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


# --- partners --------------------------------------------------------------------------------


def add_partner(act: Act, programme_code: str, spec: dict[str, Any], operator: str) -> int:
    """Register a partner programme with our account for it; the same definition again is
    a replay."""
    programme = programme_row(act.conn, programme_code)
    authorize(act.conn, programme.id, operator, "administrator", region_admin=True)
    if spec["code"] == programme_code:
        raise errors.InvalidInputError("a programme is not its own partner")
    site = site_row(act.conn, programme.id, spec["entry_site"])
    rate: UnitRate = spec["rate"]
    wanted = {
        "name": spec["name"],
        "entry_site_id": site.id,
        "rate_ours": rate.ours,
        "rate_theirs": rate.theirs,
        "trust_line_minutes": spec["trust_line_minutes"],
    }
    existing = act.conn.execute(
        select(partners).where(
            partners.c.programme_id == programme.id, partners.c.code == spec["code"]
        )
    ).first()
    if existing is not None:
        fields = [name for name, value in wanted.items() if getattr(existing, name) != value]
        if fields:
            raise errors.ExistsError("partner", spec["code"], fields)
        return int(existing.id)
    line = spec["trust_line_minutes"]
    code = partner_account(programme_code, spec["code"])
    # The trust line, both ways, is the account's floor and ceiling: the database holds it.
    act.tx.open_accounts(
        [AccountSpec(code=code, type="partner", floor_minutes=-line, ceiling_minutes=line)]
    )
    account_id = act.tx.account(code).id
    partner_id: int = act.conn.execute(
        insert(partners)
        .values(
            programme_id=programme.id,
            code=spec["code"],
            account_id=account_id,
            created_by=operator,
            created_at=act.now,
            **wanted,
        )
        .returning(partners.c.id)
    ).scalar_one()
    return partner_id


def partner_row(conn: Connection, programme_id: int, code: str, *, lock: bool = False) -> Row[Any]:
    query = select(partners).where(partners.c.programme_id == programme_id, partners.c.code == code)
    if lock:
        query = query.with_for_update()
    return one(conn, query, "partner", code)


def set_trust_line(
    act: Act, programme_code: str, partner_code: str, minutes: int, operator: str
) -> None:
    programme = programme_row(act.conn, programme_code)
    authorize(act.conn, programme.id, operator, "administrator", region_admin=True)
    partner = partner_row(act.conn, programme.id, partner_code, lock=True)
    code = account_code(act.conn, partner.account_id)
    balance = _balance(act.conn, partner.account_id)
    in_flight = _in_flight_minutes(act.conn, partner.id)
    # Below it, a refused voucher in flight could not be returned.
    lowest = max(balance, in_flight - balance)
    if lowest > minutes:
        raise errors.PolicyViolationError(
            f"the position with {partner_code!r} is {balance} minutes with {in_flight} in "
            f"flight: the trust line cannot be set below {lowest}"
        )
    act.tx.set_limits(code, floor_minutes=-minutes, ceiling_minutes=minutes)
    act.conn.execute(
        update(partners).where(partners.c.id == partner.id).values(trust_line_minutes=minutes)
    )


def _in_flight_minutes(conn: Connection, partner_id: int) -> int:
    """Minutes of our vouchers to the partner that await its answer."""
    total = conn.execute(
        select(func.coalesce(func.sum(vouchers.c.minutes), 0)).where(
            vouchers.c.partner_id == partner_id,
            vouchers.c.direction == "out",
            vouchers.c.status == "in_flight",
        )
    ).scalar_one()
    return int(total)


def _balance(conn: Connection, account_id: int) -> int:
    balance: int = conn.execute(
        select(accounts.c.posted_minutes).where(accounts.c.id == account_id)
    ).scalar_one()
    return balance


def partner_view(conn: Connection, programme_code: str, partner_code: str) -> PartnerView:
    programme = programme_row(conn, programme_code)
    row = partner_row(conn, programme.id, partner_code)
    return PartnerView(
        programme=programme_code,
        code=row.code,
        name=row.name,
        account=account_code(conn, row.account_id),
        entry_site=code_of(conn, sites, row.entry_site_id),
        rate=UnitRate(ours=row.rate_ours, theirs=row.rate_theirs),
        trust_line_minutes=row.trust_line_minutes,
        balance_minutes=_balance(conn, row.account_id),
    )


def secret(secrets: Secrets, programme_code: str, partner_code: str) -> bytes:
    try:
        return secrets[programme_code, partner_code]
    except KeyError:
        raise errors.InvalidInputError(
            f"no exchange secret for {programme_code!r} and {partner_code!r}: pass it in "
            "exchange_secrets"
        ) from None


# --- step 1: send ----------------------------------------------------------------------------

_SENT = ("partner_id", "member_id", "remote_member_id", "minutes")


def send(act: Act, programme_code: str, key: str, data: dict[str, Any], secrets: Secrets) -> int:
    programme = programme_row(act.conn, programme_code)
    partner = partner_row(act.conn, programme.id, data["partner"])
    sender = member_row(act.conn, data["sender_id"], lock=True)
    if sender.programme_id != programme.id:
        raise errors.BankObjectNotFoundError("member", sender.id)
    authorize(
        act.conn, programme.id, data["operator"], "recorder", site=home_site(act.conn, sender)
    )
    wanted = {
        "partner_id": partner.id,
        "member_id": sender.id,
        "remote_member_id": data["recipient"],
        "minutes": data["minutes"],
    }
    replay = act.conn.execute(select(vouchers).where(vouchers.c.idempotency_key == key)).first()
    if replay is not None:
        fields = [name for name in _SENT if getattr(replay, name) != wanted[name]]
        if json.loads(replay.document)["relation"] != data["relation"]:
            fields.append("relation")
        if replay.programme_id != programme.id:
            fields.append("programme")
        if fields:
            raise errors.IdempotencyConflictError(key, fields)
        return int(replay.id)
    key_of_partner = secret(secrets, programme_code, partner.code)
    credited = _check_send(act, programme.id, sender, partner, data)
    voucher_id = f"{programme_code}-{hashlib.sha256(key.encode()).hexdigest()[:32]}"
    entry = act.tx.transfer(
        f"voucher:{voucher_id}",
        debit=account_code(act.conn, sender.account_id),
        credit=account_code(act.conn, partner.account_id),
        amount_minutes=data["minutes"],
        code="voucher_out",
        operator=data["operator"],
        occurred_at=act.now,
        memo=f"voucher to member {data['recipient']} of {partner.code}",
    )
    taken = _lots.consume(act.conn, sender.id, data["minutes"])
    _lots.record_uses(act.conn, entry.id, taken)
    voucher = {
        "format": _vouchers.VOUCHER,
        "voucher": voucher_id,
        "from": programme_code,
        "to": partner.code,
        "issued_at": _iso(act.now),
        "sender": sender.id,
        "recipient": data["recipient"],
        "relation": data["relation"],
        "minutes": data["minutes"],
        "credited_minutes": credited,
        "rate": {"ours": partner.rate_ours, "theirs": partner.rate_theirs},
        "origin": _origin(act.conn, taken),
    }
    row_id: int = act.conn.execute(
        insert(vouchers)
        .values(
            programme_id=programme.id,
            voucher_id=voucher_id,
            direction="out",
            idempotency_key=key,
            **{**wanted, "remote_minutes": credited},
            status="in_flight",
            reason="",
            entry_id=entry.id,
            document=_vouchers.sign(voucher, key_of_partner),
            created_at=act.now,
        )
        .returning(vouchers.c.id)
    ).scalar_one()
    return row_id


def _check_send(
    act: Act, programme_id: int, sender: Row[Any], partner: Row[Any], data: dict[str, Any]
) -> int:
    """Refuse what the policy, the rate or the trust line does not allow; returns the
    minutes the recipient will be credited, in the partner's minutes."""
    _, policy = policy_at(act.conn, programme_id, act.now)
    if sender.status != "active":
        raise errors.MemberStateError(f"member {sender.id} is {sender.status}")
    if policy.groups_donate_only and sender.kind == "group":
        raise errors.PolicyViolationError(
            f"member {sender.id} is a group: the policy lets groups only donate their minutes"
        )
    if data["relation"] not in policy.gift_relations:
        allowed = ", ".join(sorted(policy.gift_relations))
        raise errors.PolicyViolationError(
            f"member {sender.id} may send minutes to their {allowed}, not to their "
            f"{data['relation']}"
        )
    check_yearly_limit(act.conn, sender.id, data["minutes"], policy, act.now)
    rate = UnitRate(ours=partner.rate_ours, theirs=partner.rate_theirs)
    credited = rate.convert(data["minutes"])
    if credited is not None and credited > AMOUNT_MAX_MINUTES:
        raise errors.InvalidAmountError(
            f"{data['minutes']} minutes are {credited} of {partner.code}'s: more than one "
            f"entry may carry ({AMOUNT_MAX_MINUTES})"
        )
    if credited is None or credited == 0:
        raise errors.InvalidAmountError(
            f"{data['minutes']} minutes do not convert exactly at {rate.ours} of ours to "
            f"{rate.theirs} of {partner.code}'s: send a multiple of {rate.ours}"
        )
    position = _balance(act.conn, partner.account_id)
    if position + data["minutes"] > partner.trust_line_minutes:
        raise errors.LimitExceededError(
            account_code(act.conn, partner.account_id),
            limit="trust line",
            limit_minutes=partner.trust_line_minutes,
            available_minutes=max(partner.trust_line_minutes - position, 0),
            requested_minutes=data["minutes"],
        )
    return credited


def _origin(conn: Connection, taken: list[tuple[int, int]]) -> list[dict[str, Any]]:
    """Where the sent minutes were earned: per station, the minutes and the first and last
    earned day."""
    rows = conn.execute(
        select(lots.c.id, lots.c.earned_on, sites.c.code, regions.c.code.label("region"))
        .select_from(
            lots.join(sites, sites.c.id == lots.c.origin_site_id).join(
                regions, regions.c.id == sites.c.region_id
            )
        )
        .where(lots.c.id.in_([lot for lot, _ in taken]))
    ).all()
    by_lot = {row.id: row for row in rows}
    summary: dict[tuple[str, str], dict[str, Any]] = {}
    for lot_id, minutes in taken:
        row = by_lot[lot_id]
        day = row.earned_on.isoformat()
        item = summary.setdefault(
            (row.code, row.region),
            {"site": row.code, "region": row.region, "minutes": 0, "earned_from": day},
        )
        item["minutes"] += minutes
        item["earned_from"] = min(item["earned_from"], day)
        item["earned_to"] = max(item.get("earned_to", day), day)
    return [summary[k] for k in sorted(summary)]


# --- step 2: accept (the recipient's side) ---------------------------------------------------


def accept(
    act: Act, programme_code: str, document: str | bytes, operator: str, secrets: Secrets
) -> int:
    fields, programme, partner, text = _received(
        act, programme_code, (document, _vouchers.VOUCHER), operator, secrets
    )
    _check_voucher_shape(fields)
    # Serialise the vouchers of one partner: a redelivery waits for the first delivery.
    partner = partner_row(act.conn, programme.id, partner.code, lock=True)
    seen = act.conn.execute(
        select(vouchers).where(
            vouchers.c.programme_id == programme.id, vouchers.c.voucher_id == fields["voucher"]
        )
    ).first()
    if seen is not None:
        if seen.direction != "in" or seen.document != text:
            raise errors.VoucherReplayError(fields["voucher"], "voucher")
        return int(seen.id)
    recipient, reason = _judge(act, programme.id, partner, fields)
    entry_id = None
    if reason == "":
        assert recipient is not None
        entry_id = _credit(act, programme.id, partner, recipient, fields, operator)
    status = "accepted" if reason == "" else "refused"
    ack = {
        "format": _vouchers.ACKNOWLEDGEMENT,
        "voucher": fields["voucher"],
        "from": programme_code,
        "to": partner.code,
        "voucher_digest": _vouchers.digest(text),
        "status": status,
        "reason": reason,
        "recipient": fields["recipient"],
        "credited_minutes": fields["credited_minutes"],
        "decided_at": _iso(act.now),
    }
    row_id: int = act.conn.execute(
        insert(vouchers)
        .values(
            programme_id=programme.id,
            partner_id=partner.id,
            voucher_id=fields["voucher"],
            direction="in",
            idempotency_key=None,
            member_id=None if recipient is None else recipient.id,
            remote_member_id=fields["sender"],
            minutes=fields["credited_minutes"],
            remote_minutes=fields["minutes"],
            status=status,
            reason=reason,
            entry_id=entry_id,
            document=text,
            acknowledgement=_vouchers.sign(ack, secret(secrets, programme_code, partner.code)),
            created_at=act.now,
            decided_at=act.now,
        )
        .returning(vouchers.c.id)
    ).scalar_one()
    return row_id


def _received(
    act: Act,
    programme_code: str,
    document: tuple[str | bytes, str],
    operator: str,
    secrets: Secrets,
) -> tuple[dict[str, Any], Row[Any], Row[Any], str]:
    """A partner's document of a kind, verified, and the operator allowed to take it in
    (operators of the root region): its fields, our programme, the partner, and its
    canonical text."""
    fields = _vouchers.read(*document)
    programme = programme_row(act.conn, programme_code)
    partner = _verified_partner(act.conn, programme_code, programme.id, fields, secrets)
    authorize(act.conn, programme.id, operator, "recorder")
    return fields, programme, partner, _vouchers.canonical(fields).decode("ascii")


def _verified_partner(
    conn: Connection,
    programme_code: str,
    programme_id: int,
    fields: dict[str, Any],
    secrets: Secrets,
) -> Row[Any]:
    if fields["to"] != programme_code:
        raise errors.SignatureError(
            f"the document is addressed to {fields['to']!r}, not to {programme_code!r}"
        )
    partner = conn.execute(
        select(partners).where(
            partners.c.programme_id == programme_id, partners.c.code == fields["from"]
        )
    ).first()
    if partner is None:
        raise errors.SignatureError(
            f"{fields['from']!r} is not a partner of {programme_code!r}: nothing to verify with"
        )
    _vouchers.verify(fields, secret(secrets, programme_code, partner.code))
    return partner


def _check_voucher_shape(fields: dict[str, Any]) -> None:
    """A signed voucher is the partner's word, but still checked: its numbers are stored
    and its id must be one its sender could issue (``<sender>-<32 hex digits>``), so no
    partner can take another's ids."""
    rate = fields["rate"]
    prefix, _, tail = fields["voucher"].rpartition("-")
    well_formed = (
        prefix == fields["from"]
        and len(tail) == 32
        and all(c in "0123456789abcdef" for c in tail)
        and 0 < fields["minutes"] <= AMOUNT_MAX_MINUTES
        and 0 < fields["credited_minutes"] <= AMOUNT_MAX_MINUTES
        and 0 < fields["sender"] <= ID_MAX
        and 0 < fields["recipient"] <= ID_MAX
        and set(rate) == {"ours", "theirs"}
        and all(type(rate[k]) is int and 0 < rate[k] <= RATE_MAX for k in rate)
    )
    if not well_formed:
        raise errors.SignatureError(f"voucher {fields['voucher'][:80]!r} is malformed")


def _judge(
    act: Act, programme_id: int, partner: Row[Any], fields: dict[str, Any]
) -> tuple[Row[Any] | None, str]:
    """The recipient, and why the voucher is refused ("" when it is accepted)."""
    rate_problem = _rate_problem(partner, fields)
    if rate_problem:
        return None, rate_problem
    recipient = act.conn.execute(
        select(members).where(members.c.id == fields["recipient"]).with_for_update()
    ).first()
    if recipient is None or recipient.programme_id != programme_id:
        return None, f"unknown recipient: no member {fields['recipient']}"
    if recipient.status != "active":
        return recipient, f"ineligible recipient: member {recipient.id} is {recipient.status}"
    _, policy = policy_at(act.conn, programme_id, act.now)
    try:
        require_room(act, recipient, fields["credited_minutes"], policy)
    except errors.CapExceededError as exc:
        # Not the error's text: it names the member's ledger account, derived from their
        # identity hash, and only member numbers may travel.
        return recipient, (
            f"ineligible recipient: member {recipient.id} may hold {exc.available_minutes} "
            f"more minutes under the storage cap of {exc.limit_minutes}"
        )
    # Our vouchers in flight may come back refused, their minutes returned from this
    # account: the trust line keeps room for them, so a return always fits.
    position = _balance(act.conn, partner.account_id) - _in_flight_minutes(act.conn, partner.id)
    if position - fields["credited_minutes"] < -partner.trust_line_minutes:
        return recipient, (
            f"trust line: {partner.code} would owe {fields['credited_minutes'] - position} "
            f"minutes, over the trust line of {partner.trust_line_minutes}"
        )
    return recipient, ""


def _rate_problem(partner: Row[Any], fields: dict[str, Any]) -> str:
    """Both sides must hold the same rate, and the voucher follow it exactly."""
    rate = fields["rate"]
    if (rate["ours"], rate["theirs"]) != (partner.rate_theirs, partner.rate_ours):
        return (
            f"rate: {partner.code} sends {rate['ours']} of its minutes for {rate['theirs']} "
            f"of ours; we hold {partner.rate_theirs} for {partner.rate_ours}"
        )
    if fields["minutes"] * rate["theirs"] != fields["credited_minutes"] * rate["ours"]:
        return "rate: the credited minutes do not follow from the rate"
    return ""


def _credit(  # noqa: PLR0917
    act: Act,
    programme_id: int,
    partner: Row[Any],
    recipient: Row[Any],
    fields: dict[str, Any],
    operator: str,
) -> int:
    """Post the credit and give the recipient a lot earned today at the partner's entry
    site, expiring as our policy says."""
    entry = act.tx.transfer(
        f"voucher-in:{code_of(act.conn, programmes, programme_id)}:{fields['voucher']}",
        debit=account_code(act.conn, partner.account_id),
        credit=account_code(act.conn, recipient.account_id),
        amount_minutes=fields["credited_minutes"],
        code="voucher_in",
        operator=operator,
        occurred_at=act.now,
        memo=f"voucher from member {fields['sender']} of {partner.code}",
    )
    _, policy = policy_at(act.conn, programme_id, act.now)
    _lots.create(
        act.conn,
        member_id=recipient.id,
        minutes=fields["credited_minutes"],
        origin_site_id=partner.entry_site_id,
        earned_on=policy.local_date(act.now),
        expiry_days=policy.lot_expiry_days,
        source_entry_id=entry.id,
    )
    return entry.id


# --- step 3: record the acknowledgement (the sender's side) ----------------------------------


def record(
    act: Act, programme_code: str, document: str | bytes, operator: str, secrets: Secrets
) -> int:
    fields, programme, partner, text = _received(
        act, programme_code, (document, _vouchers.ACKNOWLEDGEMENT), operator, secrets
    )
    voucher = act.conn.execute(
        select(vouchers)
        .where(
            vouchers.c.programme_id == programme.id,
            vouchers.c.voucher_id == fields["voucher"],
            vouchers.c.direction == "out",
            vouchers.c.partner_id == partner.id,
        )
        .with_for_update()
    ).first()
    if voucher is None:
        raise errors.BankObjectNotFoundError("voucher", fields["voucher"])
    if voucher.acknowledgement is not None:
        if voucher.acknowledgement != text:
            raise errors.VoucherReplayError(fields["voucher"], "acknowledgement of voucher")
        return int(voucher.id)
    if (
        fields["voucher_digest"] != _vouchers.digest(voucher.document)
        or fields["status"] not in ("accepted", "refused")
        or fields["credited_minutes"] != voucher.remote_minutes
        or fields["recipient"] != voucher.remote_member_id
    ):
        raise errors.VoucherReplayError(fields["voucher"], "acknowledgement of voucher")
    values: dict[str, Any] = {
        "status": fields["status"],
        "reason": fields["reason"][:500],
        "acknowledgement": text,
        "decided_at": act.now,
    }
    if fields["status"] == "refused":
        values["return_entry_id"] = _return(act, voucher, operator)
    act.conn.execute(update(vouchers).where(vouchers.c.id == voucher.id).values(**values))
    return int(voucher.id)


def _return(act: Act, voucher: Row[Any], operator: str) -> int:
    """Give the refused minutes back as lots like the ones that left (origin, earned day,
    expiry): to the sender by a reversal of the outbound entry, or, when the sender has
    died or left meanwhile, to the pool of their home region, as an estate with nobody
    designated would. A frozen sender is refused: the voucher stays in flight until they
    are unfrozen."""
    sender = member_row(act.conn, voucher.member_id, lock=True)
    if sender.status == "frozen":
        raise errors.MemberStateError(
            f"member {sender.id} is frozen: their refused voucher {voucher.voucher_id!r} is "
            "returned once they are unfrozen"
        )
    key = f"voucher-return:{voucher.voucher_id}"
    if sender.status == "active":
        entry = act.tx.reverse(
            voucher.entry_id,
            idempotency_key=key,
            operator=operator,
            reason="refused by the partner",
        )
        back = _lots.Destination(_lots.MEMBER, sender.id)
    else:
        region_id = home_region_id(act.conn, sender)
        entry = act.tx.transfer(
            key,
            debit=account_code(act.conn, _partner_account_id(act.conn, voucher.partner_id)),
            credit=pool_code(act.conn, region_id),
            amount_minutes=voucher.minutes,
            code="voucher_return",
            operator=operator,
            occurred_at=act.now,
            memo=f"refused voucher of member {sender.id}, who is {sender.status}: to the pool",
        )
        back = _lots.Destination(_lots.POOL, region_id)
    for lot_id, minutes in _lots.used_by(act.conn, voucher.entry_id):
        lot = act.conn.execute(select(lots).where(lots.c.id == lot_id)).one()
        _lots.arrive(act.conn, back, minutes, lot, entry.id)
    return entry.id


def _partner_account_id(conn: Connection, partner_id: int) -> int:
    account_id: int = conn.execute(
        select(partners.c.account_id).where(partners.c.id == partner_id)
    ).scalar_one()
    return account_id


# --- reads, statements and reconciliation ------------------------------------------------------


def view(conn: Connection, row_id: int) -> VoucherView:
    row = one(conn, select(vouchers).where(vouchers.c.id == row_id), "voucher", row_id)
    return _view(conn, row)


def _view(conn: Connection, row: Row[Any]) -> VoucherView:
    return VoucherView(
        voucher_id=row.voucher_id,
        programme=code_of(conn, programmes, row.programme_id),
        partner=code_of(conn, partners, row.partner_id),
        direction=row.direction,
        idempotency_key=row.idempotency_key,
        member_id=row.member_id,
        remote_member_id=row.remote_member_id,
        minutes=row.minutes,
        remote_minutes=row.remote_minutes,
        status=row.status,
        reason=row.reason,
        document=row.document,
        acknowledgement=row.acknowledgement,
        entry_id=row.entry_id,
        return_entry_id=row.return_entry_id,
        created_at=row.created_at,
        decided_at=row.decided_at,
    )


def listing(
    conn: Connection, programme_code: str, partner_code: str, status: str | None, limit: int
) -> list[VoucherView]:
    programme = programme_row(conn, programme_code)
    partner = partner_row(conn, programme.id, partner_code)
    query = select(vouchers).where(vouchers.c.partner_id == partner.id)
    if status is not None:
        query = query.where(vouchers.c.status == status)
    rows = conn.execute(query.order_by(vouchers.c.id).limit(limit)).all()
    return [_view(conn, row) for row in rows]


def statement(
    conn: Connection, programme_code: str, partner_code: str, now: datetime, secrets: Secrets
) -> PartnerStatement:
    programme = programme_row(conn, programme_code)
    partner = partner_row(conn, programme.id, partner_code)
    rows = conn.execute(
        select(
            vouchers.c.voucher_id,
            vouchers.c.direction,
            vouchers.c.minutes,
            vouchers.c.remote_minutes,
            vouchers.c.status,
        )
        .where(vouchers.c.partner_id == partner.id)
        .order_by(vouchers.c.id)
    ).all()
    lines = [
        {
            "voucher": row.voucher_id,
            "direction": row.direction,
            "minutes": row.minutes,
            "remote_minutes": row.remote_minutes,
            "status": row.status,
        }
        for row in rows
    ]
    balance = _balance(conn, partner.account_id)
    fields = {
        "format": _vouchers.STATEMENT,
        "from": programme_code,
        "to": partner_code,
        "as_of": _iso(now),
        "balance_minutes": balance,
        "vouchers": lines,
    }
    return PartnerStatement(
        programme=programme_code,
        partner=partner_code,
        as_of=now,
        balance_minutes=balance,
        vouchers=tuple(_statement_line(line) for line in lines),
        document=_vouchers.sign(fields, secret(secrets, programme_code, partner_code)),
    )


def _statement_line(line: dict[str, Any]) -> StatementVoucher:
    return StatementVoucher(
        voucher_id=line["voucher"],
        direction=line["direction"],
        minutes=line["minutes"],
        remote_minutes=line["remote_minutes"],
        status=line["status"],
    )


def read_statement(
    conn: Connection, programme_code: str, document: str | bytes, secrets: Secrets
) -> PartnerStatement:
    """The partner's statement for us, verified."""
    fields = _vouchers.read(document, _vouchers.STATEMENT)
    programme = programme_row(conn, programme_code)
    _verified_partner(conn, programme_code, programme.id, fields, secrets)
    try:
        lines = tuple(_statement_line(_strict_line(line)) for line in fields["vouchers"])
        as_of = datetime.fromisoformat(fields["as_of"])
    except (KeyError, TypeError, ValueError):
        raise errors.SignatureError("the statement is malformed") from None
    return PartnerStatement(
        programme=fields["from"],
        partner=fields["to"],
        as_of=as_of,
        balance_minutes=fields["balance_minutes"],
        vouchers=lines,
        document=_vouchers.canonical(fields).decode("ascii"),
    )


_LINE = {"voucher": str, "direction": str, "minutes": int, "remote_minutes": int, "status": str}


def _strict_line(line: Any) -> dict[str, Any]:
    """A statement line with exactly its fields, of exactly their types (a bool is no
    int); anything else is a TypeError."""
    if not isinstance(line, dict) or set(line) != set(_LINE):
        raise TypeError("not a statement line")
    if any(type(line[name]) is not kind for name, kind in _LINE.items()):
        raise TypeError("a statement line's field has the wrong type")
    return line


def _contribution(line: StatementVoucher) -> int:
    """What a voucher adds to its side's account for the other."""
    if line.direction == "out":
        return 0 if line.status == "refused" else line.minutes
    return -line.minutes if line.status == "accepted" else 0


def reconcile(ours: PartnerStatement, theirs: PartnerStatement) -> Reconciliation:
    """Compare both sides voucher by voucher (see :class:`Reconciliation`)."""
    mismatches: list[str] = []
    for side in (ours, theirs):
        total = sum(_contribution(line) for line in side.vouchers)
        if total != side.balance_minutes:
            mismatches.append(
                f"{side.programme}'s account for {side.partner} holds {side.balance_minutes} "
                f"minutes; its vouchers sum to {total}"
            )
    mine = {line.voucher_id: line for line in ours.vouchers}
    other = {line.voucher_id: line for line in theirs.vouchers}
    for side, lines in ((ours, mine), (theirs, other)):
        if len(lines) != len(side.vouchers):
            mismatches.append(f"{side.programme}'s statement lists a voucher more than once")
    in_flight: list[InFlightVoucher] = []
    pending: dict[str, int] = defaultdict(int)
    for voucher_id in sorted(mine.keys() | other.keys()):
        a, b = mine.get(voucher_id), other.get(voucher_id)
        problem, flight = _compare(ours, theirs, voucher_id, a, b)
        if problem:
            mismatches.append(problem)
        if flight is not None:
            in_flight.append(flight)
            pending[ours.programme] += 0 if a is None else _contribution(a)
            pending[theirs.programme] += 0 if b is None else _contribution(b)
    our_position = ours.balance_minutes - pending[ours.programme]
    their_position = theirs.balance_minutes - pending[theirs.programme]
    settled = [
        line for line in ours.vouchers if line.voucher_id not in {f.voucher_id for f in in_flight}
    ]
    in_their_minutes = sum(
        (line.remote_minutes if _contribution(line) > 0 else -line.remote_minutes)
        for line in settled
        if _contribution(line) != 0
    )
    return Reconciliation(
        programme=ours.programme,
        partner=ours.partner,
        our_balance_minutes=ours.balance_minutes,
        their_balance_minutes=theirs.balance_minutes,
        our_position_minutes=our_position,
        their_position_minutes=their_position,
        in_flight=tuple(in_flight),
        mismatches=tuple(mismatches),
        agreed=not mismatches,
        mirrored=not mismatches and in_their_minutes == -their_position,
    )


def _compare(
    ours: PartnerStatement,
    theirs: PartnerStatement,
    voucher_id: str,
    a: StatementVoucher | None,
    b: StatementVoucher | None,
) -> tuple[str, InFlightVoucher | None]:
    """A mismatch (or "") and the in-flight record (or None) for one voucher, ``a`` ours and
    ``b`` theirs."""
    sender_side, sent, received = (
        (ours, a, b) if a is not None and a.direction == "out" else (theirs, b, a)
    )
    if sent is None or sent.direction != "out":
        return f"voucher {voucher_id}: received, but its sender has no record of sending it", None
    if received is not None and (
        received.direction != "in"
        or (received.minutes, received.remote_minutes) != (sent.remote_minutes, sent.minutes)
    ):
        return f"voucher {voucher_id}: the two sides record different minutes", None
    if sent.status == "in_flight":
        stage = "not received" if received is None else "acknowledgement not recorded"
        flight = InFlightVoucher(
            voucher_id=voucher_id,
            sender=sender_side.programme,
            minutes=sent.minutes,
            stage=stage,
        )
        return "", flight
    if received is None or received.status != sent.status:
        return (
            f"voucher {voucher_id}: the sender recorded it {sent.status}, the receiver "
            + ("has no record of it" if received is None else f"{received.status} it")
        ), None
    return "", None
