"""Tables of the time-bank layer: programmes and their policy versions, the region tree, sites
(stations and institutions), members and their personal data, relations, operators and their
roles, services with recipients and confirmations, and lots.

Everything that moves minutes goes through the ledger core's tables; these tables say who,
where, why and from which lot. Personal data lives in ``tb_member_personal`` only, apart
from the ledger; a member's external identity is stored as a keyed hash, never in clear.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any, cast

from sqlalchemy import (
    CheckConstraint,
    Date,
    ForeignKey,
    Index,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
    literal_column,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column
from sqlalchemy.sql.elements import ColumnElement

from timebank.bank.limits import (
    CODE_LENGTH_MAX,
    NAME_LENGTH_MAX,
    NOTE_LENGTH_MAX,
    PHONE_LENGTH_MAX,
)
from timebank.limits import KEY_LENGTH_MAX, MEMO_LENGTH_MAX, OPERATOR_LENGTH_MAX
from timebank.schema import Base, Id, _in, exact_text

REGION_LEVELS = ("province", "city", "county", "township")
SITE_KINDS = ("social_work_station", "volunteer_station", "community_station", "institution")
MEMBER_KINDS = ("person", "group")
SEXES = ("female", "male")
MEMBER_ROLES = ("volunteer", "recipient", "both")
MEMBER_STATUSES = ("active", "frozen", "deceased", "closed")
RELATION_KINDS = ("spouse", "parent", "child", "sibling", "other_relative", "friend")
OPERATOR_ROLES = ("recorder", "confirmer", "redeemer", "administrator", "auditor")
SERVICE_STATUSES = ("pending", "confirmed", "rejected", "reversed")
POOL_MOVE_KINDS = ("donation", "grant", "estate")
CONFIRMING_PARTIES = ("recipient", "operator", "automatic")
#: Units between which minutes are cleared: sites, or regions of one level of the tree.
CLEARING_LEVELS = ("site", "township", "county", "city", "province")
VOUCHER_DIRECTIONS = ("out", "in")
VOUCHER_STATUSES = ("in_flight", "accepted", "refused")
#: "<issuing programme>-<32 hex digits>".
VOUCHER_ID_LENGTH_MAX = 64
#: HMAC-SHA256, hex.
IDENTITY_HASH_LENGTH = 64


class Programme(Base):
    __tablename__ = "tb_programmes"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    code: Mapped[str] = mapped_column(exact_text(CODE_LENGTH_MAX), unique=True)
    name: Mapped[str] = mapped_column(String(NAME_LENGTH_MAX))
    #: Minutes no longer anyone's: expired lots end here.
    expired_account_id: Mapped[int] = mapped_column(Id, ForeignKey("tb_accounts.id"))
    created_at: Mapped[datetime]


class PolicyVersion(Base):
    """One version of a programme's policy: in force from ``effective_from`` until the next
    version's. Versions are appended, never changed: history keeps the rules it ran under."""

    __tablename__ = "tb_policies"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    programme_id: Mapped[int] = mapped_column(Id, ForeignKey("tb_programmes.id"))
    version: Mapped[int]
    effective_from: Mapped[datetime]
    body: Mapped[dict[str, Any]]
    set_by: Mapped[str] = mapped_column(String(OPERATOR_LENGTH_MAX))
    created_at: Mapped[datetime]

    __table_args__ = (
        UniqueConstraint("programme_id", "version"),
        UniqueConstraint("programme_id", "effective_from"),
        CheckConstraint("version >= 1", name="version"),
    )


class Region(Base):
    __tablename__ = "tb_regions"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    programme_id: Mapped[int] = mapped_column(Id, ForeignKey("tb_programmes.id"))
    code: Mapped[str] = mapped_column(exact_text(CODE_LENGTH_MAX))
    name: Mapped[str] = mapped_column(String(NAME_LENGTH_MAX))
    level: Mapped[str] = mapped_column(String(16))
    parent_id: Mapped[int | None] = mapped_column(Id, ForeignKey("tb_regions.id"))
    #: Ids from the root down, "/1/4/9/": "is under" is a prefix test, with no recursion.
    path: Mapped[str] = mapped_column(exact_text(255))
    pool_account_id: Mapped[int] = mapped_column(Id, ForeignKey("tb_accounts.id"))

    __table_args__ = (
        UniqueConstraint("programme_id", "code"),
        CheckConstraint(_in("level", REGION_LEVELS), name="level"),
    )


class Site(Base):
    """A station (where service is recorded and minutes issued) or an institution (where
    minutes are redeemed for care)."""

    __tablename__ = "tb_sites"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    programme_id: Mapped[int] = mapped_column(Id, ForeignKey("tb_programmes.id"))
    code: Mapped[str] = mapped_column(exact_text(CODE_LENGTH_MAX))
    name: Mapped[str] = mapped_column(String(NAME_LENGTH_MAX))
    kind: Mapped[str] = mapped_column(String(24))
    region_id: Mapped[int] = mapped_column(Id, ForeignKey("tb_regions.id"))
    issued_account_id: Mapped[int | None] = mapped_column(Id, ForeignKey("tb_accounts.id"))
    redeemed_account_id: Mapped[int] = mapped_column(Id, ForeignKey("tb_accounts.id"))

    __table_args__ = (
        UniqueConstraint("programme_id", "code"),
        CheckConstraint(_in("kind", SITE_KINDS), name="kind"),
        # Stations issue minutes; institutions only take them in.
        CheckConstraint(
            "(kind = 'institution') = (issued_account_id IS NULL)", name="issues_if_station"
        ),
    )


class Member(Base):
    __tablename__ = "tb_members"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    programme_id: Mapped[int] = mapped_column(Id, ForeignKey("tb_programmes.id"))
    identity_hash: Mapped[str] = mapped_column(exact_text(IDENTITY_HASH_LENGTH))
    kind: Mapped[str] = mapped_column(String(8))
    acts_as: Mapped[str] = mapped_column(String(12))
    home_site_id: Mapped[int] = mapped_column(Id, ForeignKey("tb_sites.id"))
    account_id: Mapped[int] = mapped_column(Id, ForeignKey("tb_accounts.id"), unique=True)
    status: Mapped[str] = mapped_column(String(10))
    status_reason: Mapped[str] = mapped_column(String(MEMO_LENGTH_MAX))
    #: Assessed as in need of care (by an administrator): may redeem whatever their age,
    #: when the policy says so.
    assessed_need: Mapped[bool] = mapped_column(default=False, server_default=false())
    registered_at: Mapped[datetime]
    registered_by: Mapped[str] = mapped_column(String(OPERATOR_LENGTH_MAX))

    __table_args__ = (
        UniqueConstraint("programme_id", "identity_hash"),
        CheckConstraint(_in("kind", MEMBER_KINDS), name="kind"),
        CheckConstraint(_in("acts_as", MEMBER_ROLES), name="acts_as"),
        CheckConstraint(_in("status", MEMBER_STATUSES), name="status"),
        # A station's members and their accounts (reports, exposure), without the table.
        Index("ix_tb_members_home_site_id_account_id", "home_site_id", "account_id"),
    )


class MemberPersonal(Base):
    """Personal data, apart from the ledger: erasable without touching a single entry."""

    __tablename__ = "tb_member_personal"

    member_id: Mapped[int] = mapped_column(Id, ForeignKey("tb_members.id"), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(NAME_LENGTH_MAX))
    birth_date: Mapped[date] = mapped_column(Date)
    phone: Mapped[str | None] = mapped_column(String(PHONE_LENGTH_MAX))
    #: As the member declared it, for the programme's statistics; None: not given.
    sex: Mapped[str | None] = mapped_column(String(8))
    #: When, by whom and why the name, phone and identity hash were erased (on request).
    erased_at: Mapped[datetime | None]
    erased_by: Mapped[str | None] = mapped_column(String(OPERATOR_LENGTH_MAX))
    erased_reason: Mapped[str | None] = mapped_column(String(MEMO_LENGTH_MAX))

    __table_args__ = (CheckConstraint("sex IS NULL OR " + _in("sex", SEXES), name="sex"),)


class Relation(Base):
    """``member`` is the ``kind`` of ``other`` (a parent of, a spouse of...). Stored in both
    directions, each with its own kind, so a rule reads one row."""

    __tablename__ = "tb_relations"

    member_id: Mapped[int] = mapped_column(Id, ForeignKey("tb_members.id"), primary_key=True)
    other_id: Mapped[int] = mapped_column(Id, ForeignKey("tb_members.id"), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))

    __table_args__ = (
        CheckConstraint(_in("kind", RELATION_KINDS), name="kind"),
        CheckConstraint("member_id <> other_id", name="distinct"),
    )


class Operator(Base):
    """Staff acting for exactly one site or one region."""

    __tablename__ = "tb_operators"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    programme_id: Mapped[int] = mapped_column(Id, ForeignKey("tb_programmes.id"))
    code: Mapped[str] = mapped_column(exact_text(OPERATOR_LENGTH_MAX))
    name: Mapped[str] = mapped_column(String(NAME_LENGTH_MAX))
    site_id: Mapped[int | None] = mapped_column(Id, ForeignKey("tb_sites.id"))
    region_id: Mapped[int | None] = mapped_column(Id, ForeignKey("tb_regions.id"))
    created_at: Mapped[datetime]

    __table_args__ = (
        UniqueConstraint("programme_id", "code"),
        CheckConstraint("(site_id IS NULL) <> (region_id IS NULL)", name="one_scope"),
    )


class OperatorRole(Base):
    __tablename__ = "tb_operator_roles"

    operator_id: Mapped[int] = mapped_column(Id, ForeignKey("tb_operators.id"), primary_key=True)
    role: Mapped[str] = mapped_column(String(16), primary_key=True)

    __table_args__ = (CheckConstraint(_in("role", OPERATOR_ROLES), name="role"),)


class Service(Base):
    __tablename__ = "tb_services"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    programme_id: Mapped[int] = mapped_column(Id, ForeignKey("tb_programmes.id"))
    idempotency_key: Mapped[str] = mapped_column(exact_text(KEY_LENGTH_MAX), unique=True)
    volunteer_id: Mapped[int] = mapped_column(Id, ForeignKey("tb_members.id"))
    site_id: Mapped[int] = mapped_column(Id, ForeignKey("tb_sites.id"))
    service_type: Mapped[str] = mapped_column(exact_text(CODE_LENGTH_MAX))
    started_at: Mapped[datetime]
    ended_at: Mapped[datetime]
    raw_minutes: Mapped[int]
    weight_permille: Mapped[int]
    credited_minutes: Mapped[int]
    policy_version: Mapped[int]
    rating: Mapped[int | None]
    note: Mapped[str] = mapped_column(String(NOTE_LENGTH_MAX))
    status: Mapped[str] = mapped_column(String(10))
    reason: Mapped[str] = mapped_column(String(MEMO_LENGTH_MAX))
    recorded_by: Mapped[str] = mapped_column(String(OPERATOR_LENGTH_MAX))
    recorded_at: Mapped[datetime]
    decided_at: Mapped[datetime | None]
    deposit_entry_id: Mapped[int | None] = mapped_column(
        Id, ForeignKey("tb_entries.id"), unique=True
    )
    reversal_entry_id: Mapped[int | None] = mapped_column(
        Id, ForeignKey("tb_entries.id"), unique=True
    )

    __table_args__ = (
        CheckConstraint(_in("status", SERVICE_STATUSES), name="status"),
        CheckConstraint("ended_at > started_at", name="interval"),
        CheckConstraint("raw_minutes > 0 AND credited_minutes >= 0", name="minutes"),
        CheckConstraint("weight_permille > 0", name="weight"),
        CheckConstraint("rating IS NULL OR rating BETWEEN 1 AND 5", name="rating"),
        CheckConstraint(
            "(status IN ('confirmed', 'reversed')) = (deposit_entry_id IS NOT NULL)",
            name="deposit_if_confirmed",
        ),
        CheckConstraint(
            "(status = 'reversed') = (reversal_entry_id IS NOT NULL)", name="reversal_if_reversed"
        ),
        Index("ix_tb_services_volunteer_id_started_at", "volunteer_id", "started_at"),
        Index("ix_tb_services_status_ended_at", "status", "ended_at"),
        # A station's report: the services recorded there in a period.
        Index("ix_tb_services_site_id_recorded_at", "site_id", "recorded_at"),
    )


class ServiceRecipient(Base):
    __tablename__ = "tb_service_recipients"

    service_id: Mapped[int] = mapped_column(Id, ForeignKey("tb_services.id"), primary_key=True)
    member_id: Mapped[int] = mapped_column(Id, ForeignKey("tb_members.id"), primary_key=True)


class Confirmation(Base):
    """One party's confirmation of a service; a party confirms a service once."""

    __tablename__ = "tb_confirmations"

    service_id: Mapped[int] = mapped_column(Id, ForeignKey("tb_services.id"), primary_key=True)
    party: Mapped[str] = mapped_column(String(10), primary_key=True)
    confirmed_by: Mapped[str] = mapped_column(String(OPERATOR_LENGTH_MAX))
    confirmed_at: Mapped[datetime]

    __table_args__ = (CheckConstraint(_in("party", CONFIRMING_PARTIES), name="party"),)


#: What makes a lot open. Written into the SQL as a literal, never bound: a planner uses a
#: partial index only for a predicate it can match when it plans the statement.
OPEN_LOT_SQL = "remaining_minutes > 0"

#: Dialects with partial indexes.
PARTIAL_INDEX_DIALECTS = ("postgresql", "sqlite")


def _open_index(name: str, owner: str) -> Index:
    """The open lots of an owner in consumption order: a partial index where the database
    has them (PostgreSQL, SQLite). MariaDB has none, and keeps the full index alone."""
    where = text(OPEN_LOT_SQL)
    index = Index(name, owner, "earned_on", "id", postgresql_where=where, sqlite_where=where)
    # (ddl_if takes a tuple of dialect names, though it is typed for one.)
    return index.ddl_if(dialect=PARTIAL_INDEX_DIALECTS)  # type: ignore[arg-type]


class Lot(Base):
    """Minutes credited together: where and when they were earned, when they expire, and how
    many are left. A member's balance is the sum of ``remaining_minutes`` of their lots."""

    __tablename__ = "tb_lots"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    member_id: Mapped[int] = mapped_column(Id, ForeignKey("tb_members.id"))
    minutes: Mapped[int]
    remaining_minutes: Mapped[int]
    origin_site_id: Mapped[int] = mapped_column(Id, ForeignKey("tb_sites.id"))
    earned_on: Mapped[date] = mapped_column(Date)
    expires_on: Mapped[date | None] = mapped_column(Date)
    source_entry_id: Mapped[int] = mapped_column(Id, ForeignKey("tb_entries.id"))
    #: The lot this one was split from (a gift moves part of a lot), if any.
    parent_lot_id: Mapped[int | None] = mapped_column(Id, ForeignKey("tb_lots.id"))

    __table_args__ = (
        CheckConstraint(
            "minutes > 0 AND remaining_minutes >= 0 AND remaining_minutes <= minutes",
            name="remaining",
        ),
        # A member's lots in consumption order, spent ones included (their list of lots).
        Index("ix_tb_lots_member_id_earned_on", "member_id", "earned_on", "id"),
        # First in, first out reads the open lots only, however many the member has spent.
        _open_index("ix_tb_lots_open_member_id_earned_on", "member_id"),
    )


class Redemption(Base):
    """Minutes a member spent on care at a site: for themselves, or for their spouse."""

    __tablename__ = "tb_redemptions"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    programme_id: Mapped[int] = mapped_column(Id, ForeignKey("tb_programmes.id"))
    idempotency_key: Mapped[str] = mapped_column(exact_text(KEY_LENGTH_MAX), unique=True)
    member_id: Mapped[int] = mapped_column(Id, ForeignKey("tb_members.id"))
    recipient_id: Mapped[int] = mapped_column(Id, ForeignKey("tb_members.id"))
    site_id: Mapped[int] = mapped_column(Id, ForeignKey("tb_sites.id"))
    service_type: Mapped[str] = mapped_column(exact_text(CODE_LENGTH_MAX))
    minutes: Mapped[int]
    occurred_at: Mapped[datetime]
    redeemed_by: Mapped[str] = mapped_column(String(OPERATOR_LENGTH_MAX))
    entry_id: Mapped[int] = mapped_column(Id, ForeignKey("tb_entries.id"), unique=True)

    __table_args__ = (
        CheckConstraint("minutes > 0", name="minutes"),
        # Clearing reads a programme's redemptions of a period.
        Index("ix_tb_redemptions_programme_id_occurred_at", "programme_id", "occurred_at"),
    )


class Gift(Base):
    """Minutes a member gave to a relative (or friend, as the policy allows). The minutes
    travel as lots: each keeps its origin station, earned day and expiry."""

    __tablename__ = "tb_gifts"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    programme_id: Mapped[int] = mapped_column(Id, ForeignKey("tb_programmes.id"))
    idempotency_key: Mapped[str] = mapped_column(exact_text(KEY_LENGTH_MAX), unique=True)
    giver_id: Mapped[int] = mapped_column(Id, ForeignKey("tb_members.id"))
    receiver_id: Mapped[int] = mapped_column(Id, ForeignKey("tb_members.id"))
    minutes: Mapped[int]
    occurred_at: Mapped[datetime]
    given_by: Mapped[str] = mapped_column(String(OPERATOR_LENGTH_MAX))
    entry_id: Mapped[int] = mapped_column(Id, ForeignKey("tb_entries.id"), unique=True)

    __table_args__ = (
        CheckConstraint("minutes > 0", name="minutes"),
        CheckConstraint("giver_id <> receiver_id", name="two_people"),
        Index("ix_tb_gifts_giver_id_occurred_at", "giver_id", "occurred_at"),
    )


class LotUse(Base):
    """Which lots an entry took its minutes from: where redeemed minutes were earned, the
    basis of clearing between stations."""

    __tablename__ = "tb_lot_uses"

    entry_id: Mapped[int] = mapped_column(Id, ForeignKey("tb_entries.id"), primary_key=True)
    lot_id: Mapped[int] = mapped_column(Id, ForeignKey("tb_lots.id"), primary_key=True)
    minutes: Mapped[int]

    __table_args__ = (CheckConstraint("minutes > 0", name="minutes"),)


class RedemptionOrigin(Base):
    """The minutes a redemption took from lots earned at one site: the rows of clearing
    (origin, redeeming site, when the care was given), written with the redemption from its
    lot uses. A clearing reads a range of one index instead of joining redemptions, lot uses
    and lots over the period, and a station's or a region's net position reads only the
    flows into and out of its own sites. ``sealing.audit`` checks it against the lot uses."""

    __tablename__ = "tb_redemption_origins"

    entry_id: Mapped[int] = mapped_column(
        Id, ForeignKey("tb_redemptions.entry_id"), primary_key=True
    )
    origin_site_id: Mapped[int] = mapped_column(Id, ForeignKey("tb_sites.id"), primary_key=True)
    programme_id: Mapped[int] = mapped_column(Id, ForeignKey("tb_programmes.id"))
    site_id: Mapped[int] = mapped_column(Id, ForeignKey("tb_sites.id"))
    occurred_at: Mapped[datetime]
    minutes: Mapped[int]

    __table_args__ = (
        CheckConstraint("minutes > 0", name="minutes"),
        # Each index holds what its reader sums, so no row is visited (index-only reads).
        # The entry id too: the clearing counts the period's distinct redemptions.
        Index(
            "ix_tb_redemption_origins_programme_id_occurred_at_entry_id",
            "programme_id", "occurred_at", "origin_site_id", "site_id", "minutes", "entry_id",
        ),
        Index(
            "ix_tb_redemption_origins_site_id_occurred_at",
            "site_id", "occurred_at", "origin_site_id", "minutes",
        ),
        Index(
            "ix_tb_redemption_origins_origin_site_id_occurred_at",
            "origin_site_id", "occurred_at", "site_id", "minutes",
        ),
    )


class PoolLot(Base):
    """Minutes a region's pool holds, with where and when they were earned (a donation, an
    excess over a member's cap, an estate or expired minutes). Pool lots do not expire; a
    grant passes them on, first in, first out. A pool's balance is the sum of
    ``remaining_minutes`` of its lots."""

    __tablename__ = "tb_pool_lots"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    region_id: Mapped[int] = mapped_column(Id, ForeignKey("tb_regions.id"))
    minutes: Mapped[int]
    remaining_minutes: Mapped[int]
    origin_site_id: Mapped[int] = mapped_column(Id, ForeignKey("tb_sites.id"))
    earned_on: Mapped[date] = mapped_column(Date)
    source_entry_id: Mapped[int] = mapped_column(Id, ForeignKey("tb_entries.id"))

    __table_args__ = (
        CheckConstraint(
            "minutes > 0 AND remaining_minutes >= 0 AND remaining_minutes <= minutes",
            name="remaining",
        ),
        Index("ix_tb_pool_lots_region_id_earned_on", "region_id", "earned_on", "id"),
        _open_index("ix_tb_pool_lots_open_region_id_earned_on", "region_id"),
    )


class PoolLotUse(Base):
    """Which pool lots an entry (a grant) took its minutes from."""

    __tablename__ = "tb_pool_lot_uses"

    entry_id: Mapped[int] = mapped_column(Id, ForeignKey("tb_entries.id"), primary_key=True)
    pool_lot_id: Mapped[int] = mapped_column(Id, ForeignKey("tb_pool_lots.id"), primary_key=True)
    minutes: Mapped[int]

    __table_args__ = (CheckConstraint("minutes > 0", name="minutes"),)


class PoolMove(Base):
    """Minutes between a member and a region's pool: a donation (member to pool), a grant
    (pool to an elder), or a deceased member's estate (to their beneficiary, and to the pool
    what the beneficiary may not hold or when nobody is designated)."""

    __tablename__ = "tb_pool_moves"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    programme_id: Mapped[int] = mapped_column(Id, ForeignKey("tb_programmes.id"))
    idempotency_key: Mapped[str] = mapped_column(exact_text(KEY_LENGTH_MAX), unique=True)
    kind: Mapped[str] = mapped_column(String(10))
    #: The donor, the elder granted minutes, or the deceased.
    member_id: Mapped[int] = mapped_column(Id, ForeignKey("tb_members.id"))
    region_id: Mapped[int | None] = mapped_column(Id, ForeignKey("tb_regions.id"))
    beneficiary_id: Mapped[int | None] = mapped_column(Id, ForeignKey("tb_members.id"))
    minutes: Mapped[int]
    #: Of ``minutes``, those that went to (or came from) the pool.
    pool_minutes: Mapped[int]
    occurred_at: Mapped[datetime]
    entered_by: Mapped[str] = mapped_column(String(OPERATOR_LENGTH_MAX))
    entry_id: Mapped[int] = mapped_column(Id, ForeignKey("tb_entries.id"), unique=True)

    __table_args__ = (
        CheckConstraint(_in("kind", POOL_MOVE_KINDS), name="kind"),
        CheckConstraint(
            "minutes > 0 AND pool_minutes >= 0 AND pool_minutes <= minutes", name="minutes"
        ),
        CheckConstraint(
            "kind = 'estate' OR (region_id IS NOT NULL AND beneficiary_id IS NULL"
            " AND pool_minutes = minutes)",
            name="pool_side",
        ),
        CheckConstraint("(region_id IS NULL) = (pool_minutes = 0)", name="region_if_pool_minutes"),
        CheckConstraint("beneficiary_id IS NULL OR beneficiary_id <> member_id", name="two_people"),
        Index("ix_tb_pool_moves_member_id_occurred_at", "member_id", "occurred_at"),
    )


class Booking(Base):
    """A booked service: a hold of the ledger on the member's minutes, completed (at most
    the held minutes are redeemed), cancelled, or left to expire."""

    __tablename__ = "tb_bookings"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    programme_id: Mapped[int] = mapped_column(Id, ForeignKey("tb_programmes.id"))
    idempotency_key: Mapped[str] = mapped_column(exact_text(KEY_LENGTH_MAX), unique=True)
    member_id: Mapped[int] = mapped_column(Id, ForeignKey("tb_members.id"))
    recipient_id: Mapped[int] = mapped_column(Id, ForeignKey("tb_members.id"))
    site_id: Mapped[int] = mapped_column(Id, ForeignKey("tb_sites.id"))
    service_type: Mapped[str] = mapped_column(exact_text(CODE_LENGTH_MAX))
    minutes: Mapped[int]
    scheduled_at: Mapped[datetime]
    hold_id: Mapped[int] = mapped_column(Id, ForeignKey("tb_holds.id"), unique=True)
    booked_by: Mapped[str] = mapped_column(String(OPERATOR_LENGTH_MAX))
    booked_at: Mapped[datetime]
    redemption_id: Mapped[int | None] = mapped_column(
        Id, ForeignKey("tb_redemptions.id"), unique=True
    )

    __table_args__ = (
        CheckConstraint("minutes > 0", name="minutes"),
        Index("ix_tb_bookings_member_id_scheduled_at", "member_id", "scheduled_at"),
    )


class MemberAttribute(Base):
    """A priority attribute recorded for a member by an administrator ("living_alone",
    "disabled", "low_income"...): grant rules of the policy name them."""

    __tablename__ = "tb_member_attributes"

    member_id: Mapped[int] = mapped_column(Id, ForeignKey("tb_members.id"), primary_key=True)
    attribute: Mapped[str] = mapped_column(exact_text(CODE_LENGTH_MAX), primary_key=True)


class Beneficiary(Base):
    """Whom a member designated to receive their minutes on their death."""

    __tablename__ = "tb_beneficiaries"

    member_id: Mapped[int] = mapped_column(Id, ForeignKey("tb_members.id"), primary_key=True)
    beneficiary_id: Mapped[int] = mapped_column(Id, ForeignKey("tb_members.id"))
    set_by: Mapped[str] = mapped_column(String(OPERATOR_LENGTH_MAX))
    set_at: Mapped[datetime]

    __table_args__ = (CheckConstraint("member_id <> beneficiary_id", name="two_people"),)


class Settlement(Base):
    """A period's clearing at one level, settled: the net positions between its units were
    posted between their clearing accounts (``tb_settlement_lines``), and every redemption
    it cleared is listed in ``tb_clearing_items``."""

    __tablename__ = "tb_settlements"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    programme_id: Mapped[int] = mapped_column(Id, ForeignKey("tb_programmes.id"))
    idempotency_key: Mapped[str] = mapped_column(exact_text(KEY_LENGTH_MAX), unique=True)
    level: Mapped[str] = mapped_column(String(10))
    #: The period, in days of the programme's calendar: [period_start, period_end).
    period_start: Mapped[date] = mapped_column(Date)
    period_end: Mapped[date] = mapped_column(Date)
    cleared_minutes: Mapped[int]
    #: Of ``cleared_minutes``, those dated before the period (recorded after the settlement
    #: of their own period).
    late_minutes: Mapped[int]
    settled_at: Mapped[datetime]
    settled_by: Mapped[str] = mapped_column(String(OPERATOR_LENGTH_MAX))

    __table_args__ = (
        UniqueConstraint("programme_id", "level", "period_start"),
        CheckConstraint(_in("level", CLEARING_LEVELS), name="level"),
        CheckConstraint("period_end > period_start", name="period"),
        CheckConstraint(
            "cleared_minutes >= 0 AND late_minutes >= 0 AND late_minutes <= cleared_minutes",
            name="minutes",
        ),
    )


class ClearingItem(Base):
    """A redemption cleared at one level: each is cleared once per level, by one settlement."""

    __tablename__ = "tb_clearing_items"

    level: Mapped[str] = mapped_column(String(10), primary_key=True)
    entry_id: Mapped[int] = mapped_column(Id, ForeignKey("tb_entries.id"), primary_key=True)
    settlement_id: Mapped[int] = mapped_column(Id, ForeignKey("tb_settlements.id"), index=True)


class SettlementLine(Base):
    """One net position of a settlement: ``debtor``'s minutes (earned there) redeemed at
    ``creditor``, net of the other way, posted by ``entry_id`` between their clearing
    accounts."""

    __tablename__ = "tb_settlement_lines"

    settlement_id: Mapped[int] = mapped_column(
        Id, ForeignKey("tb_settlements.id"), primary_key=True
    )
    line: Mapped[int] = mapped_column(primary_key=True)
    debtor: Mapped[str] = mapped_column(exact_text(CODE_LENGTH_MAX))
    creditor: Mapped[str] = mapped_column(exact_text(CODE_LENGTH_MAX))
    minutes: Mapped[int]
    entry_id: Mapped[int] = mapped_column(Id, ForeignKey("tb_entries.id"), unique=True)

    __table_args__ = (
        CheckConstraint("minutes > 0", name="minutes"),
        CheckConstraint("debtor <> creditor", name="two_units"),
    )


class Partner(Base):
    """Another, independent programme (in its own database) that minutes are exchanged
    with. Its ``code`` is that programme's code; ``account_id`` is our account for it
    (positive: we owe it minutes). ``rate_ours`` of our minutes are worth ``rate_theirs``
    of its minutes. The net position stays within the trust line both ways, which the
    account's floor and ceiling enforce."""

    __tablename__ = "tb_partners"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    programme_id: Mapped[int] = mapped_column(Id, ForeignKey("tb_programmes.id"))
    code: Mapped[str] = mapped_column(exact_text(CODE_LENGTH_MAX))
    name: Mapped[str] = mapped_column(String(NAME_LENGTH_MAX))
    account_id: Mapped[int] = mapped_column(Id, ForeignKey("tb_accounts.id"), unique=True)
    #: The site through which the partner's minutes enter: their lots' origin here.
    entry_site_id: Mapped[int] = mapped_column(Id, ForeignKey("tb_sites.id"))
    rate_ours: Mapped[int]
    rate_theirs: Mapped[int]
    trust_line_minutes: Mapped[int]
    created_by: Mapped[str] = mapped_column(String(OPERATOR_LENGTH_MAX))
    created_at: Mapped[datetime]

    __table_args__ = (
        UniqueConstraint("programme_id", "code"),
        CheckConstraint("rate_ours > 0 AND rate_theirs > 0", name="rate"),
        CheckConstraint("trust_line_minutes >= 0", name="trust_line"),
    )


class Voucher(Base):
    """A voucher between programmes, on the side that issued it (``out``: our member sent
    minutes) or received it (``in``: the partner's member sent minutes to ours). An
    outbound voucher is in flight until the partner's signed acknowledgement is recorded:
    accepted, or refused and returned to the sender by a reversal. An inbound voucher is
    decided when it arrives; ``acknowledgement`` is the one we issued."""

    __tablename__ = "tb_vouchers"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    programme_id: Mapped[int] = mapped_column(Id, ForeignKey("tb_programmes.id"))
    partner_id: Mapped[int] = mapped_column(Id, ForeignKey("tb_partners.id"))
    voucher_id: Mapped[str] = mapped_column(exact_text(VOUCHER_ID_LENGTH_MAX))
    direction: Mapped[str] = mapped_column(String(3))
    #: The sender's key (outbound vouchers only).
    idempotency_key: Mapped[str | None] = mapped_column(exact_text(KEY_LENGTH_MAX), unique=True)
    #: Our member: the sender (out) or the recipient (in; none when unknown here).
    member_id: Mapped[int | None] = mapped_column(Id, ForeignKey("tb_members.id"))
    #: The partner's member, by the partner's member number.
    remote_member_id: Mapped[int]
    minutes: Mapped[int]
    remote_minutes: Mapped[int]
    status: Mapped[str] = mapped_column(String(10))
    reason: Mapped[str] = mapped_column(String(MEMO_LENGTH_MAX))
    entry_id: Mapped[int | None] = mapped_column(Id, ForeignKey("tb_entries.id"), unique=True)
    return_entry_id: Mapped[int | None] = mapped_column(
        Id, ForeignKey("tb_entries.id"), unique=True
    )
    document: Mapped[str] = mapped_column(Text)
    acknowledgement: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime]
    decided_at: Mapped[datetime | None]

    __table_args__ = (
        UniqueConstraint("programme_id", "voucher_id"),
        CheckConstraint(_in("direction", VOUCHER_DIRECTIONS), name="direction"),
        CheckConstraint(_in("status", VOUCHER_STATUSES), name="status"),
        CheckConstraint("minutes > 0 AND remote_minutes > 0", name="minutes"),
        CheckConstraint("(direction = 'out') = (idempotency_key IS NOT NULL)", name="key_if_out"),
        CheckConstraint("direction = 'out' OR status <> 'in_flight'", name="in_decided"),
        # Outbound minutes always left the sender; inbound ones arrived only if accepted.
        CheckConstraint(
            "(entry_id IS NOT NULL) = (direction = 'out' OR status = 'accepted')",
            name="entry_if_moved",
        ),
        CheckConstraint(
            "(return_entry_id IS NOT NULL) = (direction = 'out' AND status = 'refused')",
            name="returned_if_refused",
        ),
        CheckConstraint(
            "(status = 'in_flight') = (acknowledgement IS NULL)", name="acknowledged_if_decided"
        ),
        Index("ix_tb_vouchers_partner_id_status", "partner_id", "status"),
    )


programmes = cast(Table, Programme.__table__)
policies = cast(Table, PolicyVersion.__table__)
regions = cast(Table, Region.__table__)
sites = cast(Table, Site.__table__)
members = cast(Table, Member.__table__)
personal = cast(Table, MemberPersonal.__table__)
relations = cast(Table, Relation.__table__)
operators = cast(Table, Operator.__table__)
operator_roles = cast(Table, OperatorRole.__table__)
services = cast(Table, Service.__table__)
service_recipients = cast(Table, ServiceRecipient.__table__)
confirmations = cast(Table, Confirmation.__table__)
lots = cast(Table, Lot.__table__)
redemptions = cast(Table, Redemption.__table__)
lot_uses = cast(Table, LotUse.__table__)
redemption_origins = cast(Table, RedemptionOrigin.__table__)
gifts = cast(Table, Gift.__table__)
pool_lots = cast(Table, PoolLot.__table__)
pool_lot_uses = cast(Table, PoolLotUse.__table__)
pool_moves = cast(Table, PoolMove.__table__)
bookings = cast(Table, Booking.__table__)
member_attributes = cast(Table, MemberAttribute.__table__)
beneficiaries = cast(Table, Beneficiary.__table__)
settlements = cast(Table, Settlement.__table__)
clearing_items = cast(Table, ClearingItem.__table__)
settlement_lines = cast(Table, SettlementLine.__table__)
partners = cast(Table, Partner.__table__)
vouchers = cast(Table, Voucher.__table__)


def is_open(table: Table) -> ColumnElement[bool]:
    """The condition that a lot (of ``lots`` or ``pool_lots``) has minutes left, in the
    form the partial index of open lots matches (see :data:`OPEN_LOT_SQL`)."""
    return table.c.remaining_minutes > literal_column("0")
