"""Region pools: donations in, grants out to elders the policy gives priority, the excess
over a member's storage cap, and the estates of deceased members. A pool keeps its minutes as
lots, so a granted minute still says where it was earned."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Connection, Row, insert, select

from timebank import errors
from timebank.bank import _lots
from timebank.bank._ctx import Act, account_code, code_of, one, programme_row
from timebank.bank._org import authorize, policy_at, region_row
from timebank.bank.models import GrantCandidate, Policy, PoolMoveView, age_on
from timebank.bank.schema import (
    member_attributes,
    members,
    personal,
    pool_moves,
    programmes,
    regions,
    sites,
)
from timebank.ledger import LedgerTransaction
from timebank.models import EntryCommand, PostingSpec

#: The legs of an entry: account code -> signed minutes (credit > 0).
EntryLegs = dict[str, int]

# --- the storage cap ---------------------------------------------------------------------


def room(act: Act, member: Row[Any], policy: Policy) -> int | None:
    """Minutes the member may still receive under the storage cap (None: no cap)."""
    cap = policy.storage_cap_minutes
    if cap is None:
        return None
    # Every credit to a member checks the cap under this row lock, so two concurrent credits
    # cannot both see room that only one of them fits in.
    act.conn.execute(select(members.c.id).where(members.c.id == member.id).with_for_update())
    held = act.tx.balance(account_code(act.conn, member.account_id)).posted_minutes
    return max(cap - held, 0)


def require_room(act: Act, member: Row[Any], minutes: int, policy: Policy) -> None:
    left = room(act, member, policy)
    if left is not None and minutes > left:
        assert policy.storage_cap_minutes is not None, "room() is None without a cap"
        raise errors.CapExceededError(
            account_code(act.conn, member.account_id),
            cap_minutes=policy.storage_cap_minutes,
            room_minutes=left,
            requested=minutes,
        )


def split_at_cap(act: Act, member: Row[Any], minutes: int, policy: Policy) -> tuple[int, int]:
    """(to the member, to the pool) for a deposit: refused over the cap unless the policy
    sends the excess to the pool."""
    if policy.cap_excess == "refuse":
        require_room(act, member, minutes, policy)
        return minutes, 0
    left = room(act, member, policy)
    kept = minutes if left is None else min(minutes, left)
    return kept, minutes - kept


def home_region_id(conn: Connection, member: Row[Any]) -> int:
    region_id: int = conn.execute(
        select(sites.c.region_id).where(sites.c.id == member.home_site_id)
    ).scalar_one()
    return region_id


def pool_code(conn: Connection, region_id: int) -> str:
    pool_id = conn.execute(
        select(regions.c.pool_account_id).where(regions.c.id == region_id)
    ).scalar_one()
    return account_code(conn, pool_id)


def post_legs(
    act: Act,
    key: str,
    legs: EntryLegs,
    *,
    code: str,
    operator: str,
    memo: str,
    occurred_at: datetime | None = None,
    metadata: dict[str, Any] | None = None,
) -> int:
    """One balanced entry of the non-zero ``legs`` (account code -> signed minutes)."""
    entry = act.tx.post(
        EntryCommand(
            idempotency_key=key,
            code=code,
            postings=tuple(
                PostingSpec(account=account, amount_minutes=amount)
                for account, amount in legs.items()
                if amount
            ),
            operator=operator,
            occurred_at=act.now if occurred_at is None else occurred_at,
            memo=memo,
            metadata=metadata,
        )
    )
    return entry.id


# --- donations and grants ------------------------------------------------------------------

_COMPARED = ("kind", "member_id", "region_id", "minutes")


def _replay(act: Act, key: str, wanted: dict[str, Any]) -> int | None:
    row = act.conn.execute(select(pool_moves).where(pool_moves.c.idempotency_key == key)).first()
    if row is None:
        return None
    fields = [name for name, value in wanted.items() if getattr(row, name) != value]
    if fields:
        raise errors.IdempotencyConflictError(key, fields)
    return int(row.id)


def _locked_member(conn: Connection, member_id: int, programme_id: int) -> Row[Any]:
    """The member's row, locked before an act looks for its key: a retry that waited on
    this lock then finds the first attempt's row."""
    query = select(members).where(members.c.id == member_id).with_for_update()
    row = one(conn, query, "member", member_id)
    if row.programme_id != programme_id:
        raise errors.BankObjectNotFoundError("member", member_id)
    return row


def _require_active(member: Row[Any]) -> None:
    if member.status != "active":
        raise errors.MemberStateError(f"member {member.id} is {member.status}")


def donate(act: Act, programme_code: str, key: str, data: dict[str, Any], operator: str) -> int:
    """A member's minutes to a region's pool (their home region's when none is named).
    Entered by a recorder of the member's home station; groups may always donate."""
    programme = programme_row(act.conn, programme_code)
    member = _locked_member(act.conn, data["member_id"], programme.id)
    home = act.conn.execute(select(sites).where(sites.c.id == member.home_site_id)).one()
    authorize(act.conn, programme.id, operator, "recorder", site=home)
    region_id = (
        home.region_id
        if data["region"] is None
        else region_row(act.conn, programme.id, data["region"]).id
    )
    wanted = {"kind": "donation", "member_id": member.id, "region_id": region_id}
    wanted["minutes"] = data["minutes"]
    replay = _replay(act, key, wanted)
    if replay is not None:
        return replay
    _require_active(member)
    minutes = data["minutes"]
    entry_id = post_legs(
        act,
        f"donation:{key}",
        {
            account_code(act.conn, member.account_id): -minutes,
            pool_code(act.conn, region_id): minutes,
        },
        code="donation",
        operator=operator,
        memo=f"donation of member {member.id}",
    )
    pool = _lots.Destination(_lots.POOL, region_id)
    _lots.move(act.conn, _lots.MEMBER, member.id, [(pool, minutes)], entry_id)
    return _insert(act, programme.id, key, {**wanted, "pool_minutes": minutes}, operator, entry_id)


def grant(act: Act, programme_code: str, key: str, data: dict[str, Any], operator: str) -> int:
    """Minutes from a region's pool to an elder living under that region whom a grant rule
    of the policy matches. Administrators of the region (or above) only."""
    programme = programme_row(act.conn, programme_code)
    region = region_row(act.conn, programme.id, data["region"])
    authorize(act.conn, programme.id, operator, "administrator", region=region, region_admin=True)
    elder = _locked_member(act.conn, data["member_id"], programme.id)
    wanted = {"kind": "grant", "member_id": elder.id, "region_id": region.id}
    wanted["minutes"] = data["minutes"]
    replay = _replay(act, key, wanted)
    if replay is not None:
        return replay
    _require_active(elder)
    _, policy = policy_at(act.conn, programme.id, act.now)
    _check_grantee(act.conn, elder, region, policy, act)
    require_room(act, elder, data["minutes"], policy)
    minutes = data["minutes"]
    entry_id = post_legs(
        act,
        f"grant:{key}",
        {
            pool_code(act.conn, region.id): -minutes,
            account_code(act.conn, elder.account_id): minutes,
        },
        code="grant",
        operator=operator,
        memo=f"grant to member {elder.id}",
    )
    today = policy.local_date(act.now)
    expires = None if policy.lot_expiry_days is None else today + timedelta(policy.lot_expiry_days)
    destination = _lots.Destination(_lots.MEMBER, elder.id, keep_expiry=False, expires_on=expires)
    _lots.move(act.conn, _lots.POOL, region.id, [(destination, minutes)], entry_id)
    return _insert(act, programme.id, key, {**wanted, "pool_minutes": minutes}, operator, entry_id)


def _check_grantee(
    conn: Connection, elder: Row[Any], region: Row[Any], policy: Policy, act: Act
) -> None:
    if elder.kind != "person":
        raise errors.PolicyViolationError(f"member {elder.id} is a group: grants go to people")
    home_path = conn.execute(
        select(regions.c.path)
        .join(sites, sites.c.region_id == regions.c.id)
        .where(sites.c.id == elder.home_site_id)
    ).scalar_one()
    if not home_path.startswith(region.path):
        raise errors.PolicyViolationError(
            f"member {elder.id} does not live under region {region.code!r}: its pool grants "
            "to its own elders"
        )
    if priority_of(conn, elder, policy, act.now) is None:
        raise errors.PolicyViolationError(
            f"member {elder.id} matches none of the policy's grant rules"
        )


def priority_of(conn: Connection, member: Row[Any], policy: Policy, when: Any) -> int | None:
    born = conn.execute(
        select(personal.c.birth_date).where(personal.c.member_id == member.id)
    ).scalar_one()
    return policy.grant_priority(
        age_on(born, policy.local_date(when)),
        attributes_of(conn, member.id),
        bool(member.assessed_need),
    )


def attributes_of(conn: Connection, member_id: int) -> frozenset[str]:
    return frozenset(
        conn.execute(
            select(member_attributes.c.attribute).where(member_attributes.c.member_id == member_id)
        ).scalars()
    )


def _insert(  # noqa: PLR0917 - the columns of one row
    act: Act, programme_id: int, key: str, row: dict[str, Any], operator: str, entry_id: int
) -> int:
    move_id: int = act.conn.execute(
        insert(pool_moves)
        .values(
            programme_id=programme_id,
            idempotency_key=key,
            **row,
            occurred_at=act.now,
            entered_by=operator,
            entry_id=entry_id,
        )
        .returning(pool_moves.c.id)
    ).scalar_one()
    return move_id


def candidates(
    conn: Connection, programme_code: str, region_code: str, now: datetime, limit: int
) -> list[GrantCandidate]:
    """Active people living under the region whom a grant rule matches, by priority, then
    oldest first."""
    programme = programme_row(conn, programme_code)
    region = region_row(conn, programme.id, region_code)
    _, policy = policy_at(conn, programme.id, now)
    today = policy.local_date(now)
    living_under = (
        select(members.c.id)
        .join(sites, sites.c.id == members.c.home_site_id)
        .join(regions, regions.c.id == sites.c.region_id)
        .where(
            members.c.programme_id == programme.id,
            members.c.kind == "person",
            members.c.status == "active",
            regions.c.path.startswith(region.path),
        )
    )
    people = conn.execute(
        select(members.c.id, members.c.account_id, members.c.assessed_need, personal.c.birth_date)
        .join(personal, personal.c.member_id == members.c.id)
        .where(members.c.id.in_(living_under))
    ).all()
    held: dict[int, set[str]] = {}
    for member_id, attribute in conn.execute(
        select(member_attributes.c.member_id, member_attributes.c.attribute).where(
            member_attributes.c.member_id.in_(living_under)
        )
    ):
        held.setdefault(member_id, set()).add(attribute)
    found = []
    for person in people:
        age = age_on(person.birth_date, today)
        attributes = frozenset(held.get(person.id, ()))
        rank = policy.grant_priority(age, attributes, bool(person.assessed_need))
        if rank is not None:
            found.append((rank, -age, person.id, person.account_id))
    found.sort()
    ledger = LedgerTransaction(conn)
    return [
        GrantCandidate(
            member_id=member_id,
            priority=rank,
            age=-minus_age,
            balance_minutes=ledger.balance(account_code(conn, account)).posted_minutes,
        )
        for rank, minus_age, member_id, account in found[:limit]
    ]


# --- estates -------------------------------------------------------------------------------


def settle_estate(
    act: Act, member: Row[Any], beneficiary: Row[Any] | None, policy: Policy, operator: str
) -> None:
    """Pass a deceased member's balance on: to ``beneficiary`` up to their storage cap, the
    rest (or everything, with nobody designated) to the pool of the member's home region."""
    account = account_code(act.conn, member.account_id)
    balance = act.tx.balance(account).posted_minutes
    if balance == 0:
        return
    to_heir = 0
    if beneficiary is not None:
        left = room(act, beneficiary, policy)
        to_heir = balance if left is None else min(balance, left)
    to_pool = balance - to_heir
    region_id = home_region_id(act.conn, member) if to_pool else None
    legs: EntryLegs = {account: -balance}
    if beneficiary is not None and to_heir:
        legs[account_code(act.conn, beneficiary.account_id)] = to_heir
    if region_id is not None:
        legs[pool_code(act.conn, region_id)] = to_pool
    key = f"estate:member-{member.id}"
    entry_id = post_legs(
        act, key, legs, code="estate", operator=operator, memo=f"estate of member {member.id}"
    )
    shares = []
    if beneficiary is not None and to_heir:
        shares.append((_lots.Destination(_lots.MEMBER, beneficiary.id), to_heir))
    if region_id is not None:
        shares.append((_lots.Destination(_lots.POOL, region_id), to_pool))
    _lots.move(act.conn, _lots.MEMBER, member.id, shares, entry_id)
    row = {
        "kind": "estate",
        "member_id": member.id,
        "region_id": region_id,
        "beneficiary_id": beneficiary.id if to_heir and beneficiary is not None else None,
        "minutes": balance,
        "pool_minutes": to_pool,
    }
    _insert(act, member.programme_id, key, row, operator, entry_id)


# --- reading -------------------------------------------------------------------------------


def view(conn: Connection, move_id: int) -> PoolMoveView:
    row = one(conn, select(pool_moves).where(pool_moves.c.id == move_id), "pool move", move_id)
    holder = _lots.POOL if row.kind == "grant" else _lots.MEMBER
    return PoolMoveView(
        id=row.id,
        idempotency_key=row.idempotency_key,
        programme=code_of(conn, programmes, row.programme_id),
        kind=row.kind,
        member_id=row.member_id,
        region=None if row.region_id is None else code_of(conn, regions, row.region_id),
        beneficiary_id=row.beneficiary_id,
        minutes=row.minutes,
        pool_minutes=row.pool_minutes,
        occurred_at=row.occurred_at,
        entered_by=row.entered_by,
        entry_id=row.entry_id,
        lots=_lots.used_by(conn, row.entry_id, holder),
    )
