"""The tables of the ledger core (SQLAlchemy 2 typed declarative models).

Sign convention: a posting's ``amount_minutes`` is signed. Positive adds minutes to the
account (credit), negative takes them away (debit); the postings of an entry sum to zero.
An account's ``posted_minutes`` is the sum of its postings, and each posting stores the
account's running balance after it (``balance_after_minutes``), in recording order.

Balances live on the account row itself, as TigerBeetle keeps them: one row to lock, and
CHECK constraints that see the balance, the holds and the limits together.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, ClassVar, cast

from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    DateTime,
    Dialect,
    ForeignKey,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    TypeDecorator,
    text,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import JSON

from timebank.limits import (
    ACCOUNT_CODE_LENGTH_MAX,
    ACCOUNT_TYPE_LENGTH_MAX,
    AMOUNT_MAX_MINUTES,
    ENTRY_CODE_LENGTH_MAX,
    KEY_LENGTH_MAX,
    MEMO_LENGTH_MAX,
    OPERATOR_LENGTH_MAX,
    OWNER_REF_LENGTH_MAX,
)

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

ACCOUNT_STATUSES = ("open", "frozen", "closed")
HOLD_STATUSES = ("pending", "posted", "voided", "expired")


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC in Python. PostgreSQL and MariaDB store naive UTC timestamps
    (microseconds); SQLite stores integer microseconds since the Unix epoch: compact, exact,
    and ordered as numbers in its indexes, where ISO strings would cost 26 bytes a value."""

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name in ("mysql", "mariadb"):
            return dialect.type_descriptor(mysql.DATETIME(fsp=6))
        if dialect.name == "sqlite":
            return dialect.type_descriptor(BigInteger())
        return dialect.type_descriptor(DateTime())

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the ledger; pass an aware datetime")
        if dialect.name == "sqlite":
            return (value - _EPOCH) // _MICROSECOND
        if value.tzinfo is UTC:
            return value.replace(tzinfo=None)
        return value.astimezone(UTC).replace(tzinfo=None)

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if isinstance(value, int):
            return _EPOCH + value * _MICROSECOND
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC)


def exact_text(length: int) -> String:
    """Text compared byte for byte. MariaDB's default collations ignore case and trailing
    spaces, which would make 'K1', 'k1' and 'k1 ' one account code or idempotency key."""
    return String(length).with_variant(
        mysql.VARCHAR(length, collation="utf8mb4_nopad_bin"), "mysql", "mariadb"
    )


# SQLite only auto-numbers an INTEGER PRIMARY KEY, so ids are BIGINT elsewhere.
Id = BigInteger().with_variant(Integer(), "sqlite")


#: Dialects whose postings table has real foreign keys (see Posting).
FOREIGN_KEY_DIALECTS = ("sqlite", "mysql", "mariadb")


def include_object_for(dialect_name: str) -> Callable[..., bool]:
    """Alembic's ``include_object`` filter for one dialect: a model object declared for
    other dialects only (``ddl_if``) is not expected in this database."""

    def include_object(
        obj: object, _name: str | None, _type: str, reflected: bool, _compare_to: object
    ) -> bool:
        condition = getattr(obj, "_ddl_if", None)
        if reflected or condition is None or condition.dialect is None:
            return True
        wanted = condition.dialect
        return dialect_name in ((wanted,) if isinstance(wanted, str) else tuple(wanted))

    return include_object


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime(),
        int: BigInteger(),
        dict[str, Any]: JSON(none_as_null=True),
    }


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Account(Base):
    __tablename__ = "tb_accounts"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    code: Mapped[str] = mapped_column(exact_text(ACCOUNT_CODE_LENGTH_MAX), unique=True)
    type: Mapped[str] = mapped_column(String(ACCOUNT_TYPE_LENGTH_MAX))
    owner_ref: Mapped[str | None] = mapped_column(String(OWNER_REF_LENGTH_MAX))
    status: Mapped[str] = mapped_column(String(8))
    status_reason: Mapped[str] = mapped_column(String(MEMO_LENGTH_MAX))
    floor_minutes: Mapped[int | None]
    ceiling_minutes: Mapped[int | None]
    posted_minutes: Mapped[int]
    held_out_minutes: Mapped[int]
    held_in_minutes: Mapped[int]
    version: Mapped[int]
    next_hold_expiry_at: Mapped[datetime | None]
    # Latest recorded_at of the account's postings: recording time never goes backwards.
    last_recorded_at: Mapped[datetime | None]
    created_at: Mapped[datetime]

    __table_args__ = (
        CheckConstraint(_in("status", ACCOUNT_STATUSES), name="status"),
        CheckConstraint("held_out_minutes >= 0 AND held_in_minutes >= 0", name="holds"),
        CheckConstraint(
            "floor_minutes IS NULL OR ceiling_minutes IS NULL OR floor_minutes <= ceiling_minutes",
            name="limits",
        ),
        CheckConstraint(
            "floor_minutes IS NULL OR posted_minutes - held_out_minutes >= floor_minutes",
            name="floor",
        ),
        CheckConstraint(
            "ceiling_minutes IS NULL OR posted_minutes + held_in_minutes <= ceiling_minutes",
            name="ceiling",
        ),
        CheckConstraint(
            "status <> 'closed' OR "
            "(posted_minutes = 0 AND held_out_minutes = 0 AND held_in_minutes = 0)",
            name="closed_empty",
        ),
    )


class Entry(Base):
    __tablename__ = "tb_entries"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    idempotency_key: Mapped[str] = mapped_column(exact_text(KEY_LENGTH_MAX), unique=True)
    code: Mapped[str] = mapped_column(String(ENTRY_CODE_LENGTH_MAX))
    occurred_at: Mapped[datetime]
    recorded_at: Mapped[datetime]
    operator: Mapped[str] = mapped_column(String(OPERATOR_LENGTH_MAX))
    memo: Mapped[str] = mapped_column(String(MEMO_LENGTH_MAX))
    meta: Mapped[dict[str, Any] | None] = mapped_column("metadata")
    reverses_entry_id: Mapped[int | None] = mapped_column(Id, ForeignKey("tb_entries.id"))

    __table_args__ = (
        # An entry is reversed at most once. Partial where the database allows it, so the
        # many entries that reverse nothing cost no index entry.
        Index(
            "uq_tb_entries_reverses_entry_id",
            "reverses_entry_id",
            unique=True,
            postgresql_where=text("reverses_entry_id IS NOT NULL"),
            sqlite_where=text("reverses_entry_id IS NOT NULL"),
        ),
        # Reports over a period of recording find its entries without reading the journal.
        Index("ix_tb_entries_recorded_at", "recorded_at"),
    )


class Posting(Base):
    """One leg of an entry. Keyed by (entry, account): an entry names an account once.

    Per account, recording order is entry-id order and also ``recorded_at`` order (the
    ledger never lets an account's recording time go backwards), so one index serves the
    statement, the running balance and "balance as of a recorded instant".
    """

    __tablename__ = "tb_postings"

    entry_id: Mapped[int] = mapped_column(Id, primary_key=True)
    account_id: Mapped[int] = mapped_column(Id, primary_key=True)
    amount_minutes: Mapped[int]
    balance_after_minutes: Mapped[int]
    recorded_at: Mapped[datetime]

    __table_args__ = (
        # Foreign keys on SQLite and MariaDB. PostgreSQL checks the same references with one
        # statement-level trigger per insert, far cheaper than two row checks per posting
        # (migration 0002, which also keeps accounts from being deleted or renumbered).
        # (ddl_if takes a tuple of dialect names, though it is typed for one.)
        ForeignKeyConstraint(["entry_id"], ["tb_entries.id"]).ddl_if(
            dialect=FOREIGN_KEY_DIALECTS  # type: ignore[arg-type]
        ),
        ForeignKeyConstraint(["account_id"], ["tb_accounts.id"]).ddl_if(
            dialect=FOREIGN_KEY_DIALECTS  # type: ignore[arg-type]
        ),
        CheckConstraint(
            f"amount_minutes <> 0 AND amount_minutes BETWEEN {-AMOUNT_MAX_MINUTES} "
            f"AND {AMOUNT_MAX_MINUTES}",
            name="amount",
        ),
        Index("ix_tb_postings_account_id_recorded_at", "account_id", "recorded_at", "entry_id"),
        # On SQLite the primary key is the table itself: one B-tree less per posting.
        {"sqlite_with_rowid": False},
    )


class Hold(Base):
    __tablename__ = "tb_holds"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=True)
    idempotency_key: Mapped[str] = mapped_column(exact_text(KEY_LENGTH_MAX), unique=True)
    code: Mapped[str] = mapped_column(String(ENTRY_CODE_LENGTH_MAX))
    debit_account_id: Mapped[int] = mapped_column(Id, ForeignKey("tb_accounts.id"))
    credit_account_id: Mapped[int] = mapped_column(Id, ForeignKey("tb_accounts.id"))
    amount_minutes: Mapped[int]
    status: Mapped[str] = mapped_column(String(8))
    operator: Mapped[str] = mapped_column(String(OPERATOR_LENGTH_MAX))
    memo: Mapped[str] = mapped_column(String(MEMO_LENGTH_MAX))
    meta: Mapped[dict[str, Any] | None] = mapped_column("metadata")
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime | None]
    resolved_at: Mapped[datetime | None]
    resolution_key: Mapped[str | None] = mapped_column(exact_text(KEY_LENGTH_MAX), unique=True)
    resolved_by: Mapped[str | None] = mapped_column(String(OPERATOR_LENGTH_MAX))
    resolution_memo: Mapped[str | None] = mapped_column(String(MEMO_LENGTH_MAX))
    posted_entry_id: Mapped[int | None] = mapped_column(
        Id, ForeignKey("tb_entries.id"), unique=True
    )

    __table_args__ = (
        CheckConstraint(_in("status", HOLD_STATUSES), name="status"),
        CheckConstraint(
            f"amount_minutes > 0 AND amount_minutes <= {AMOUNT_MAX_MINUTES}", name="amount"
        ),
        CheckConstraint("debit_account_id <> credit_account_id", name="accounts"),
        CheckConstraint(
            "(status = 'pending' AND resolved_at IS NULL) OR "
            "(status <> 'pending' AND resolved_at IS NOT NULL)",
            name="resolved",
        ),
        CheckConstraint("(status = 'posted') = (posted_entry_id IS NOT NULL)", name="posted_entry"),
        Index("ix_tb_holds_status_expires_at", "status", "expires_at"),
        # An account's pending holds by expiry, one index a side: the expiry hint, releasing
        # expired holds and a station's live bookings read one range of these, where an
        # index by account alone reaches every hold the account ever had (a station's
        # account holds every booking made there).
        *(
            Index(f"ix_tb_holds_{side}_account_id_status_expires_at", f"{side}_account_id",
                  "status", "expires_at")
            for side in ("debit", "credit")
        ),
    )


#: Length of a SHA-256 digest in hex.
HASH_LENGTH = 64


class Seal(Base):
    """One block of the journal's hash chain (:mod:`timebank.sealing`): block ``id`` covers the
    entries listed for it in ``tb_sealed_entries``, and its hash covers the previous block's
    hash and, in entry order, each entry's hash under encoding ``encoding``."""

    __tablename__ = "tb_seals"

    id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=False)
    encoding: Mapped[int] = mapped_column(Integer)
    entries: Mapped[int]
    first_entry_id: Mapped[int]
    last_entry_id: Mapped[int]
    previous_hash: Mapped[str] = mapped_column(String(HASH_LENGTH))
    block_hash: Mapped[str] = mapped_column(String(HASH_LENGTH), unique=True)
    sealed_at: Mapped[datetime]

    __table_args__ = (
        CheckConstraint(
            "id >= 1 AND entries >= 1 AND first_entry_id <= last_entry_id", name="block"
        ),
    )


class SealedEntry(Base):
    """Which block sealed an entry, and the entry's hash then. No foreign key to the entry:
    an entry deleted behind the library's back must leave this row behind, as evidence."""

    __tablename__ = "tb_sealed_entries"

    entry_id: Mapped[int] = mapped_column(Id, primary_key=True, autoincrement=False)
    seal_id: Mapped[int] = mapped_column(Id, ForeignKey("tb_seals.id"), index=True)
    entry_hash: Mapped[str] = mapped_column(String(HASH_LENGTH))

    __table_args__ = ({"sqlite_with_rowid": False},)


metadata = Base.metadata
# Core handles for the hot paths.
accounts = cast(Table, Account.__table__)
entries = cast(Table, Entry.__table__)
postings = cast(Table, Posting.__table__)
holds = cast(Table, Hold.__table__)
seals = cast(Table, Seal.__table__)
sealed_entries = cast(Table, SealedEntry.__table__)
