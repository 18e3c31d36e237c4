"""A member's life in the programme: active, frozen (nothing moves), deceased (their bookings
released, their minutes passed on to a beneficiary or a pool) and closed (an empty account)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Row, select, update

from timebank import errors
from timebank.bank import _bookings, _pools
from timebank.bank._ctx import Act, account_code
from timebank.bank._org import policy_at
from timebank.bank._people import for_administrator, member_row
from timebank.bank.schema import beneficiaries, members

#: Which status may follow which. Closed is final; a deceased member is only closed.
TRANSITIONS = {
    "active": {"frozen", "deceased", "closed"},
    "frozen": {"active", "deceased", "closed"},
    "deceased": {"closed"},
    "closed": set(),
}


def set_status(act: Act, member_id: int, status: str, reason: str, operator: str) -> None:
    """Freeze, unfreeze, mark deceased or close a member (administrators of a region at or
    above the member's home). The member's ledger account follows: frozen while the member
    is frozen or deceased, closed with the member (it must be empty)."""
    member = for_administrator(act, member_id, operator)
    if member.status == status:
        if member.status_reason != reason:
            raise errors.ExistsError("member status", member_id, ["reason"])
        return
    if status not in TRANSITIONS[member.status]:
        raise errors.MemberStateError(
            f"member {member_id} is {member.status}: it cannot become {status}"
        )
    account = act.tx.account(account_code(act.conn, member.account_id))
    if status == "deceased":
        _settle_death(act, member, reason, operator)
        account = act.tx.account(account.code)
    if status == "closed":
        act.tx.close(account.code, reason=reason)
    elif status in ("frozen", "deceased") and account.status == "open":
        act.tx.freeze(account.code, reason=reason)
    elif status == "active":
        act.tx.unfreeze(account.code, reason=reason)
    act.conn.execute(
        update(members).where(members.c.id == member_id).values(status=status, status_reason=reason)
    )


def _settle_death(act: Act, member: Row[Any], reason: str, operator: str) -> None:
    """Release the member's bookings and pass their minutes on (``Policy.estate_to``)."""
    code = account_code(act.conn, member.account_id)
    if act.tx.account(code).status == "frozen":
        act.tx.unfreeze(code, reason="estate")
    _bookings.cancel_all(act, member.id, reason or "deceased", operator)
    _, policy = policy_at(act.conn, member.programme_id, act.now)
    heir = None
    if policy.estate_to == "beneficiary":
        heir_id = act.conn.execute(
            select(beneficiaries.c.beneficiary_id).where(beneficiaries.c.member_id == member.id)
        ).scalar()
        if heir_id is not None:
            heir = member_row(act.conn, heir_id, lock=True)
            if heir.status != "active":
                heir = None  # a frozen, deceased or closed heir receives nothing: the pool does
    _pools.settle_estate(act, member, heir, policy, operator)
