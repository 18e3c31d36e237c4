"""Members: registration under a keyed hash of their identity, personal data kept apart,
relations, beneficiaries, priority attributes and assessments of need (status changes live
in ``_lifecycle``)."""

from __future__ import annotations

import hashlib
import hmac
import unicodedata
from datetime import date, datetime
from typing import Any

from sqlalchemy import Connection, Row, delete, insert, select, update

from timebank import errors
from timebank._bulk import bulk_insert, can_reserve_ids, reserve_ids
from timebank.bank._ctx import Act, differences, one, programme_row
from timebank.bank._org import authorize, site_row
from timebank.bank.limits import IDENTITY_LENGTH_MAX
from timebank.bank.models import INVERSE_RELATION
from timebank.bank.schema import (
    beneficiaries,
    member_attributes,
    members,
    personal,
    programmes,
    relations,
    sites,
)
from timebank.limits import SQL_CHUNK_ROWS as IN_LIST_MAX
from timebank.models import AccountSpec
from timebank.schema import accounts


def identity_hash(secret: bytes, identity: str) -> str:
    """HMAC-SHA256 of the normalised identity (NFKC, no surrounding spaces, upper case, as
    an ID number's check letter 'x' and 'X' are the same), keyed by the programme's secret.
    Without the secret the hash names nobody; with it, the same person is found again."""
    normal = unicodedata.normalize("NFKC", identity).strip().upper()
    if not normal or len(normal) > IDENTITY_LENGTH_MAX:
        raise errors.InvalidInputError(f"an identity has 1 to {IDENTITY_LENGTH_MAX} characters")
    return hmac.new(secret, normal.encode(), hashlib.sha256).hexdigest()


def member_account_code(programme_code: str, hashed: str, registered_at: datetime) -> str:
    """The code of a new member's account: 80 bits of a digest of the (keyed) identity hash
    and the moment of registration. Not the hash alone: a code derived from it would name the
    same person again if they registered anew after an erasure, and link old exports to them."""
    stamp = hashlib.sha256(f"{hashed}|{registered_at.isoformat()}".encode()).hexdigest()
    return f"{programme_code}:member:{stamp[:20]}"


#: The display name left once a member's personal data is erased.
ERASED_NAME = "(erased)"


def erase(act: Act, member_id: int, reason: str, operator: str) -> None:
    """Erase the member's name, phone and identity hash (administrators of a region at or
    above their home). Their account code, which embedded part of the hash, becomes
    ``<programme>:member:erased-<id>``. The ledger, the lots and the seals are untouched:
    sealed entries name members by id only. Erasing again changes nothing."""
    member = for_administrator(act, member_id, operator)
    row = act.conn.execute(select(personal).where(personal.c.member_id == member_id)).one()
    if row.erased_at is not None:
        return
    programme_code = act.conn.execute(
        select(programmes.c.code).where(programmes.c.id == member.programme_id)
    ).scalar_one()
    act.conn.execute(
        update(accounts)
        .where(accounts.c.id == member.account_id)
        .values(code=f"{programme_code}:member:erased-{member_id}")
    )
    act.conn.execute(
        update(members).where(members.c.id == member_id).values(identity_hash=f"erased:{member_id}")
    )
    act.conn.execute(
        update(personal)
        .where(personal.c.member_id == member_id)
        .values(display_name=ERASED_NAME, phone=None, erased_at=act.now, erased_by=operator,
                erased_reason=reason)
    )


def member_row(conn: Connection, member_id: int, *, lock: bool = False) -> Row[Any]:
    query = select(members).where(members.c.id == member_id)
    if lock:
        query = query.with_for_update()
    return one(conn, query, "member", member_id)


def register(
    act: Act,
    programme_code: str,
    hashed: str,
    data: dict[str, Any],
    operator: str,
) -> int:
    """Register a member (or find the same registration again); returns the member id."""
    programme = programme_row(act.conn, programme_code)
    home = site_row(act.conn, programme.id, data["home_site"])
    if home.kind == "institution":
        raise errors.InvalidInputError("a member's home is a station, not an institution")
    authorize(act.conn, programme.id, operator, "recorder", site=home)
    existing = act.conn.execute(
        select(members, personal)
        .join(personal, personal.c.member_id == members.c.id)
        .where(members.c.programme_id == programme.id, members.c.identity_hash == hashed)
    ).first()
    wanted = _wanted(data, home.id)
    if existing is not None:
        fields = differences(dict(existing._mapping), wanted)
        if fields:
            raise errors.ExistsError("member", existing.id, fields)
        return int(existing.id)
    code = member_account_code(programme_code, hashed, act.now)
    act.tx.open_accounts([AccountSpec(code=code, type="member", floor_minutes=0)])
    member_id: int = act.conn.execute(
        insert(members)
        .values(
            programme_id=programme.id,
            identity_hash=hashed,
            kind=data["kind"],
            acts_as=data["acts_as"],
            home_site_id=home.id,
            account_id=act.tx.account(code).id,
            status="active",
            status_reason="",
            registered_at=act.now,
            registered_by=operator,
        )
        .returning(members.c.id)
    ).scalar_one()
    act.conn.execute(
        insert(personal).values(
            member_id=member_id,
            display_name=data["display_name"],
            birth_date=data["birth_date"],
            phone=data["phone"],
            sex=data["sex"],
        )
    )
    return member_id


def register_many(
    act: Act, programme_code: str, people: list[tuple[str, dict[str, Any]]], operator: str
) -> list[int]:
    """:func:`register` for many members in one transaction, all or nothing: the same
    rules, in many-row statements. ``people`` holds (identity hash, data) pairs; returns
    the member ids in the same order (an identity registered before, or twice in
    ``people``, with the same data gives the same id)."""
    programme = programme_row(act.conn, programme_code)
    homes = _homes(act, programme.id, {data["home_site"] for _, data in people}, operator)
    found = _registered(act.conn, programme.id, [hashed for hashed, _ in people])
    ids: list[int | None] = []
    fresh: dict[str, tuple[int, dict[str, Any]]] = {}
    for hashed, data in people:
        wanted = _wanted(data, homes[data["home_site"]].id)
        earlier = found.get(hashed)
        if earlier is not None:
            fields = differences(earlier, wanted)
            if fields:
                raise errors.ExistsError("member", earlier["id"], fields)
            ids.append(int(earlier["id"]))
        elif hashed in fresh:
            fields = differences(fresh[hashed][1], wanted)
            if fields:
                raise errors.InvalidInputError(
                    f"one identity twice with different {', '.join(fields)}"
                )
            ids.append(None)
        else:
            fresh[hashed] = (len(fresh), wanted)
            ids.append(None)
    created = _insert_members(act, programme, list(fresh.items()), operator)
    return [
        ident if ident is not None else created[fresh[hashed][0]]
        for ident, (hashed, _) in zip(ids, people, strict=True)
    ]


def _wanted(data: dict[str, Any], home_site_id: int) -> dict[str, Any]:
    return {
        "kind": data["kind"],
        "acts_as": data["acts_as"],
        "home_site_id": home_site_id,
        "display_name": data["display_name"],
        "birth_date": data["birth_date"],
        "phone": data["phone"],
        "sex": data["sex"],
    }


def _homes(act: Act, programme_id: int, codes: set[str], operator: str) -> dict[str, Row[Any]]:
    homes = {}
    for code in sorted(codes):
        home = site_row(act.conn, programme_id, code)
        if home.kind == "institution":
            raise errors.InvalidInputError("a member's home is a station, not an institution")
        authorize(act.conn, programme_id, operator, "recorder", site=home)
        homes[code] = home
    return homes


def _registered(
    conn: Connection, programme_id: int, hashes: list[str]
) -> dict[str, dict[str, Any]]:
    """The members already registered under these hashes, with their personal data. Two
    index look-ups, not a join: a join's plan may read all of the personal data, and most
    registrations find nobody."""
    found: dict[str, dict[str, Any]] = {}
    ordered = sorted(set(hashes))
    for start in range(0, len(ordered), IN_LIST_MAX):
        rows = conn.execute(
            select(members).where(
                members.c.programme_id == programme_id,
                members.c.identity_hash.in_(ordered[start : start + IN_LIST_MAX]),
            )
        )
        found.update((row.identity_hash, dict(row._mapping)) for row in rows)
    by_id = {row["id"]: row for row in found.values()}
    ids = sorted(by_id)
    for start in range(0, len(ids), IN_LIST_MAX):
        rows = conn.execute(
            select(personal).where(personal.c.member_id.in_(ids[start : start + IN_LIST_MAX]))
        )
        for row in rows:
            by_id[row.member_id].update(row._mapping)
    return found


_MEMBER_INSERT = bulk_insert(
    members,
    ("id", "programme_id", "identity_hash", "kind", "acts_as", "home_site_id", "account_id",
     "status", "status_reason", "assessed_need", "registered_at", "registered_by"),
)
_PERSONAL_INSERT = bulk_insert(
    personal, ("member_id", "display_name", "birth_date", "phone", "sex", "erased_at")
)


def _insert_members(
    act: Act, programme: Row[Any], fresh: list[tuple[str, tuple[int, dict[str, Any]]]],
    operator: str,
) -> list[int]:
    """Open the new members' accounts and write their rows; their ids, in ``fresh``'s order."""
    if not fresh:
        return []
    codes = [member_account_code(programme.code, hashed, act.now) for hashed, _ in fresh]
    act.tx.open_accounts(AccountSpec(code=code, type="member", floor_minutes=0) for code in codes)
    account_ids: dict[str, int] = {}
    for start in range(0, len(codes), IN_LIST_MAX):
        chunk = codes[start : start + IN_LIST_MAX]
        query = select(accounts.c.code, accounts.c.id).where(accounts.c.code.in_(chunk))
        account_ids.update((code, ident) for code, ident in act.conn.execute(query))
    rows = [
        (programme.id, hashed, w["kind"], w["acts_as"], w["home_site_id"], account_ids[code],
         "active", "", False, act.now, operator)
        for (hashed, (_, w)), code in zip(fresh, codes, strict=True)
    ]
    if can_reserve_ids(act.conn):
        ids = reserve_ids(act.conn, members, len(rows))
        _MEMBER_INSERT.execute(act.conn, [(i, *row) for i, row in zip(ids, rows, strict=True)])
    else:  # MariaDB: one insert per member, its id from the driver
        ids = [_MEMBER_INSERT_NO_ID.insert_one(act.conn, row) for row in rows]
    _PERSONAL_INSERT.execute(
        act.conn,
        [
            (i, w["display_name"], w["birth_date"], w["phone"], w["sex"], None)
            for i, (_, (_, w)) in zip(ids, fresh, strict=True)
        ],
    )
    return ids


_MEMBER_INSERT_NO_ID = bulk_insert(members, _MEMBER_INSERT.names[1:])


def home_site(conn: Connection, member: Row[Any]) -> Row[Any]:
    return conn.execute(select(sites).where(sites.c.id == member.home_site_id)).one()


def relate(act: Act, member_id: int, other_id: int, kind: str, operator: str) -> None:
    """``member`` is the ``kind`` of ``other``; the inverse row is written too."""
    if member_id == other_id:
        raise errors.InvalidInputError("a member is not their own relative")
    member = member_row(act.conn, member_id)
    other = member_row(act.conn, other_id)
    if member.programme_id != other.programme_id:
        raise errors.BankObjectNotFoundError("member", other_id)
    authorize(act.conn, member.programme_id, operator, "recorder", site=home_site(act.conn, member))
    stored = relation_of(act.conn, member_id, other_id)
    if stored is not None:
        if stored != kind:
            raise errors.ExistsError("relation", (member_id, other_id), ["kind"])
        return
    act.conn.execute(
        insert(relations),
        [
            {"member_id": member_id, "other_id": other_id, "kind": kind},
            {"member_id": other_id, "other_id": member_id, "kind": INVERSE_RELATION[kind]},
        ],
    )


def set_beneficiary(act: Act, member_id: int, beneficiary_id: int | None, operator: str) -> None:
    """Designate (or, with None, withdraw) whom the member's minutes pass to on their death.
    Entered by a recorder of the member's home station; both are active people of the same
    programme."""
    member = member_row(act.conn, member_id, lock=True)
    authorize(act.conn, member.programme_id, operator, "recorder", site=home_site(act.conn, member))
    if member.status != "active":
        raise errors.MemberStateError(f"member {member_id} is {member.status}")
    if beneficiary_id is not None:
        _check_heir(act.conn, member, beneficiary_id)
    stored = act.conn.execute(
        select(beneficiaries.c.beneficiary_id).where(beneficiaries.c.member_id == member_id)
    ).scalar()
    if stored == beneficiary_id:
        return  # already so: a retry writes nothing
    act.conn.execute(delete(beneficiaries).where(beneficiaries.c.member_id == member_id))
    if beneficiary_id is not None:
        act.conn.execute(
            insert(beneficiaries).values(
                member_id=member_id, beneficiary_id=beneficiary_id, set_by=operator, set_at=act.now
            )
        )


def _check_heir(conn: Connection, member: Row[Any], beneficiary_id: int) -> None:
    if beneficiary_id == member.id:
        raise errors.InvalidInputError("a member is not their own beneficiary")
    heir = member_row(conn, beneficiary_id)
    if heir.programme_id != member.programme_id:
        raise errors.BankObjectNotFoundError("member", beneficiary_id)
    if heir.status != "active":
        raise errors.MemberStateError(f"member {beneficiary_id} is {heir.status}")


def set_attributes(act: Act, member_id: int, attributes: frozenset[str], operator: str) -> None:
    """Replace the member's priority attributes (administrators of a region at or above the
    member's home): the grant rules of the policy name them."""
    for_administrator(act, member_id, operator)
    stored = act.conn.execute(
        select(member_attributes.c.attribute).where(member_attributes.c.member_id == member_id)
    ).scalars()
    if frozenset(stored) == attributes:
        return  # already so: a retry writes nothing
    act.conn.execute(delete(member_attributes).where(member_attributes.c.member_id == member_id))
    if attributes:
        act.conn.execute(
            insert(member_attributes),
            [{"member_id": member_id, "attribute": name} for name in sorted(attributes)],
        )


def for_administrator(act: Act, member_id: int, operator: str) -> Row[Any]:
    """The member's row, locked, once ``operator`` is shown to administer a region at or
    above the member's home station."""
    member = member_row(act.conn, member_id, lock=True)
    authorize(
        act.conn,
        member.programme_id,
        operator,
        "administrator",
        site=home_site(act.conn, member),
        region_admin=True,
    )
    return member


def require_active(conn: Connection, member_ids: list[int], programme_id: int) -> None:
    rows = conn.execute(
        select(members.c.id, members.c.status, members.c.programme_id).where(
            members.c.id.in_(member_ids)
        )
    ).all()
    found = {row.id: row for row in rows}
    for member_id in member_ids:
        row = found.get(member_id)
        if row is None or row.programme_id != programme_id:
            raise errors.BankObjectNotFoundError("member", member_id)
        if row.status != "active":
            raise errors.MemberStateError(f"member {member_id} is {row.status}")


def birth_date_of(conn: Connection, member_id: int) -> date:
    born: date = conn.execute(
        select(personal.c.birth_date).where(personal.c.member_id == member_id)
    ).scalar_one()
    return born


def set_assessed_need(act: Act, member_id: int, in_need: bool, operator: str) -> None:
    """Record an assessment of need (administrators of a region at or above the member's
    home): with ``Policy.need_redeems``, it lets the member redeem whatever their age."""
    member = for_administrator(act, member_id, operator)
    if bool(member.assessed_need) != in_need:
        act.conn.execute(
            update(members).where(members.c.id == member_id).values(assessed_need=in_need)
        )


def relation_of(conn: Connection, member_id: int, other_id: int) -> str | None:
    """What ``member_id`` is to ``other_id`` (spouse, child, ...), or None."""
    kind: str | None = conn.execute(
        select(relations.c.kind).where(
            relations.c.member_id == member_id, relations.c.other_id == other_id
        )
    ).scalar()
    return kind
