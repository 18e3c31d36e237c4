"""The ledger and the time bank as pandas DataFrames (read models for notebooks).

Every function takes a ``source``: a :class:`~timebank.TimeBank`, a
:class:`~timebank.Ledger` or an SQLAlchemy ``Engine`` on a timebank database, and reads it
with plain SELECTs (nothing is written, no lock is taken). Each frame has the columns and
dtypes of its ``*_COLUMNS`` mapping, in that order, whatever the database and even when
empty. Instants are ``datetime64[us, UTC]``; calendar days ``datetime64[s]`` (midnight,
no zone); nullable integers ``Int64``; text ``string``.

Large tables are read in chunks: rows stream from the database ``chunk_rows`` at a time
(``yield_per``: a server-side cursor on PostgreSQL and MariaDB), each chunk becomes a
DataFrame, and the ``iter_*`` functions yield them one by one, so memory stays bounded by
the chunk size. The whole-frame functions are built on them: ``postings()`` is the
concatenation of ``iter_postings()``, and the summaries aggregate chunk by chunk, holding
only their (small) result.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any, Final
from zoneinfo import ZoneInfo

import pandas as pd
from pandas.api.types import pandas_dtype
from sqlalchemy import Connection, Engine, Select, and_, func, select
from sqlalchemy.sql.elements import ColumnElement

from timebank import errors
from timebank.bank.api import TimeBank
from timebank.bank.schema import lots as lots_table
from timebank.bank.schema import members as members_table
from timebank.bank.schema import (
    personal,
    policies,
    programmes,
    redemptions,
    regions,
    service_recipients,
    sites,
)
from timebank.bank.schema import services as services_table
from timebank.ledger import Ledger
from timebank.schema import accounts
from timebank.schema import entries as entries_table

if TYPE_CHECKING:
    from pandas._typing import DtypeObj
from timebank.schema import postings as postings_table

#: What every function reads: a time bank, a ledger, or an engine on a timebank database.
Source = TimeBank | Ledger | Engine

#: Rows per chunk when none is given.
CHUNK_ROWS: Final = 50_000
#: The largest chunk one may ask for.
CHUNK_ROWS_MAX: Final = 1_000_000
#: Width of the age bands of :func:`members` (``"75-79"``).
AGE_BAND_YEARS: Final = 5

_INSTANT = "datetime64[us, UTC]"
_DAY = "datetime64[s]"

ENTRY_COLUMNS: Final[Mapping[str, str]] = {
    "entry_id": "int64",
    "code": "string",
    "idempotency_key": "string",
    "occurred_at": _INSTANT,
    "recorded_at": _INSTANT,
    "operator": "string",
    "memo": "string",
    "reverses_entry_id": "Int64",
}
POSTING_COLUMNS: Final[Mapping[str, str]] = {
    "entry_id": "int64",
    "account_id": "int64",
    "account_code": "string",
    "account_type": "string",
    #: The member whose account it is (<NA> for system accounts).
    "member_id": "Int64",
    "entry_code": "string",
    "amount_minutes": "int64",
    "balance_after_minutes": "int64",
    "occurred_at": _INSTANT,
    "recorded_at": _INSTANT,
}
BALANCE_COLUMNS: Final[Mapping[str, str]] = {
    "account_id": "int64",
    "account_code": "string",
    "account_type": "string",
    "member_id": "Int64",
    "balance_minutes": "int64",
    "last_entry_id": "Int64",
    "last_recorded_at": _INSTANT,
}
HISTORY_COLUMNS: Final[Mapping[str, str]] = {
    "entry_id": "int64",
    "entry_code": "string",
    "occurred_at": _INSTANT,
    "recorded_at": _INSTANT,
    "amount_minutes": "int64",
    "balance_after_minutes": "int64",
}
LOT_COLUMNS: Final[Mapping[str, str]] = {
    "lot_id": "int64",
    "member_id": "int64",
    "programme": "string",
    "minutes": "int64",
    "remaining_minutes": "int64",
    "origin_site": "string",
    "origin_region": "string",
    "earned_on": _DAY,
    "expires_on": _DAY,
    "source_entry_id": "int64",
    "source_code": "string",
    "parent_lot_id": "Int64",
}
SERVICE_COLUMNS: Final[Mapping[str, str]] = {
    "service_id": "int64",
    "programme": "string",
    "site": "string",
    "region": "string",
    "volunteer_id": "int64",
    "recipients": "int64",
    "service_type": "string",
    "started_at": _INSTANT,
    "ended_at": _INSTANT,
    "raw_minutes": "int64",
    "weight_permille": "int64",
    "credited_minutes": "int64",
    "rating": "Int64",
    "status": "string",
    "recorded_at": _INSTANT,
    "decided_at": _INSTANT,
    "deposit_entry_id": "Int64",
    "reversal_entry_id": "Int64",
}
MEMBER_COLUMNS: Final[Mapping[str, str]] = {
    "member_id": "int64",
    "programme": "string",
    "kind": "string",
    "acts_as": "string",
    "home_site": "string",
    "region": "string",
    "status": "string",
    "assessed_need": "bool",
    "registered_at": _INSTANT,
    "birth_year": "int64",
    "age_band": "string",
    "sex": "string",
}
SUMMARY_COLUMNS: Final[Mapping[str, str]] = {
    "site": "string",
    "site_kind": "string",
    "region": "string",
    "month": "period[M]",
    "services_confirmed": "int64",
    "minutes_deposited": "int64",
    "minutes_reversed": "int64",
    "minutes_redeemed": "int64",
    "volunteers": "int64",
}


# --- sources, connections, chunks ------------------------------------------------------------


def engine_of(source: Source) -> Engine:
    """The engine behind a time bank, a ledger or an engine."""
    if isinstance(source, TimeBank):
        return source.ledger.engine
    if isinstance(source, Ledger):
        return source.engine
    if isinstance(source, Engine):
        return source
    raise errors.InvalidInputError(
        f"a source is a TimeBank, a Ledger or an Engine, not {type(source).__name__}"
    )


def now_of(source: Source) -> datetime:
    """The source's clock (a TimeBank's or Ledger's, injectable), or the time now."""
    if isinstance(source, TimeBank):
        return source.ledger.clock()
    if isinstance(source, Ledger):
        return source.clock()
    return datetime.now(UTC)


@contextmanager
def snapshot(source: Source) -> Iterator[Connection]:
    """A read-only connection whose statements all see one state of the database
    (REPEATABLE READ on PostgreSQL and MariaDB; on SQLite, one read transaction)."""
    engine = engine_of(source)
    with engine.connect() as conn:
        if engine.dialect.name != "sqlite":
            conn.execution_options(isolation_level="REPEATABLE READ")
        with conn.begin() as transaction:
            try:
                yield conn
            finally:
                transaction.rollback()  # nothing was written: end the snapshot cheaply


def _check_chunk(chunk_rows: int) -> int:
    if type(chunk_rows) is not int or not 1 <= chunk_rows <= CHUNK_ROWS_MAX:
        raise errors.InvalidInputError(f"chunk_rows: 1 to {CHUNK_ROWS_MAX:,}")
    return chunk_rows


def frame_of(rows: Sequence[Any], schema: Mapping[str, str]) -> pd.DataFrame:
    """Rows (tuples in the order of ``schema``) as a DataFrame with the schema's dtypes."""
    frame = pd.DataFrame.from_records(list(rows), columns=list(schema), coerce_float=False)
    dtypes = dtypes_of(schema)
    for name, dtype in schema.items():
        if dtype.startswith("datetime64"):
            column = pd.to_datetime(frame[name], utc=dtype.endswith("UTC]"))
            frame[name] = column.astype(dtypes[name])
    return frame.astype(dtypes)


def dtypes_of(schema: Mapping[str, str]) -> dict[str, DtypeObj]:
    """A schema's dtypes as pandas dtype objects."""
    return {name: pandas_dtype(dtype) for name, dtype in schema.items()}


def empty(schema: Mapping[str, str]) -> pd.DataFrame:
    return frame_of([], schema)


def chunks(
    conn: Connection, query: Select[Any], schema: Mapping[str, str], chunk_rows: int
) -> Iterator[pd.DataFrame]:
    """``query``'s rows, ``chunk_rows`` at a time, as typed DataFrames (none when empty)."""
    result = conn.execution_options(yield_per=_check_chunk(chunk_rows)).execute(query)
    try:
        for part in result.partitions():
            yield frame_of(part, schema)
    finally:
        result.close()


def _iterate(
    source: Source, query: Select[Any], schema: Mapping[str, str], chunk_rows: int
) -> Iterator[pd.DataFrame]:
    engine_of(source)  # checked at the call, not at the first next()
    _check_chunk(chunk_rows)
    return _stream(source, query, schema, chunk_rows)


def _stream(
    source: Source, query: Select[Any], schema: Mapping[str, str], chunk_rows: int
) -> Iterator[pd.DataFrame]:
    with snapshot(source) as conn:
        yield from chunks(conn, query, schema, chunk_rows)


def concat(parts: Iterator[pd.DataFrame], schema: Mapping[str, str]) -> pd.DataFrame:
    """The chunks as one frame (the schema's empty frame when there are none)."""
    frames = [part for part in parts if len(part)]
    if not frames:
        return empty(schema)
    if len(frames) == 1:
        return frames[0]
    return pd.concat(frames, ignore_index=True)


def _programme_id(conn: Connection, programme: str) -> int:
    found = conn.execute(select(programmes.c.id).where(programmes.c.code == programme)).scalar()
    if found is None:
        raise errors.BankObjectNotFoundError("programme", programme)
    return int(found)


def _in_programme(programme: str | None) -> list[ColumnElement[bool]]:
    """Accounts of a programme: every account the time bank opens for it is named
    ``<programme>:...`` (programme codes have no colon)."""
    if programme is None:
        return []
    return [accounts.c.code.startswith(f"{programme}:", autoescape=True)]


def _window(
    column: Any, since: datetime | None, until: datetime | None
) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    for name, moment in (("since", since), ("until", until)):
        if moment is not None and (not isinstance(moment, datetime) or moment.utcoffset() is None):
            raise errors.InvalidInputError(f"{name} must be a timezone-aware datetime")
    if since is not None:
        conditions.append(column >= since)
    if until is not None:
        conditions.append(column < until)
    return conditions


def programme_zone(conn: Connection, programme_id: int) -> ZoneInfo:
    """The time zone of the programme's latest policy version: its calendar."""
    body = conn.execute(
        select(policies.c.body)
        .where(policies.c.programme_id == programme_id)
        .order_by(policies.c.version.desc())
        .limit(1)
    ).scalar_one()
    return ZoneInfo(str(body.get("timezone", "UTC")))


# --- the ledger core ---------------------------------------------------------------------------


def iter_entries(
    source: Source,
    *,
    codes: Sequence[str] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> Iterator[pd.DataFrame]:
    """Entries recorded in [since, until) (all by default), of the given entry ``codes``
    (``"deposit"``, ``"redemption"``...), by id, ``chunk_rows`` at a time. Columns:
    :data:`ENTRY_COLUMNS` (the metadata JSON is left out)."""
    e = entries_table
    query = select(
        e.c.id,
        e.c.code,
        e.c.idempotency_key,
        e.c.occurred_at,
        e.c.recorded_at,
        e.c.operator,
        e.c.memo,
        e.c.reverses_entry_id,
    ).where(*_window(e.c.recorded_at, since, until))
    if codes is not None:
        query = query.where(e.c.code.in_(list(codes)))
    return _iterate(source, query.order_by(e.c.id), ENTRY_COLUMNS, chunk_rows)


def entries(
    source: Source,
    *,
    codes: Sequence[str] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> pd.DataFrame:
    """Every entry of :func:`iter_entries` in one frame."""
    parts = iter_entries(source, codes=codes, since=since, until=until, chunk_rows=chunk_rows)
    return concat(parts, ENTRY_COLUMNS)


def _postings_query() -> Select[Any]:
    p, a, e = postings_table, accounts, entries_table
    return select(
        p.c.entry_id,
        p.c.account_id,
        a.c.code,
        a.c.type,
        members_table.c.id,
        e.c.code,
        p.c.amount_minutes,
        p.c.balance_after_minutes,
        e.c.occurred_at,
        p.c.recorded_at,
    ).select_from(
        p.join(a, a.c.id == p.c.account_id)
        .join(e, e.c.id == p.c.entry_id)
        .outerjoin(members_table, members_table.c.account_id == a.c.id)
    )


def iter_postings(
    source: Source,
    *,
    programme: str | None = None,
    account_types: Sequence[str] | None = None,
    codes: Sequence[str] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> Iterator[pd.DataFrame]:
    """Postings, ``chunk_rows`` at a time, in (entry, account) order: those of the
    accounts of ``programme`` (``"<programme>:..."``) and of the given account types
    (``"member"``, ``"station_issued"``, ``"site_redeemed"``, ``"region_pool"``,
    ``"programme_expired"``...), of entries with the given ``codes``, recorded in
    [since, until). Columns: :data:`POSTING_COLUMNS`; ``amount_minutes`` is signed
    (positive adds to the account) and ``balance_after_minutes`` is the account's running
    balance in recording order.

    The iterator holds a database connection until it is exhausted or closed."""
    p, a, e = postings_table, accounts, entries_table
    query = _postings_query().where(
        *_in_programme(programme), *_window(p.c.recorded_at, since, until)
    )
    if account_types is not None:
        query = query.where(a.c.type.in_(list(account_types)))
    if codes is not None:
        query = query.where(e.c.code.in_(list(codes)))
    query = query.order_by(p.c.entry_id, p.c.account_id)
    return _iterate(source, query, POSTING_COLUMNS, chunk_rows)


def postings(
    source: Source,
    *,
    programme: str | None = None,
    account_types: Sequence[str] | None = None,
    codes: Sequence[str] | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> pd.DataFrame:
    """Every posting of :func:`iter_postings` in one frame (read chunk by chunk)."""
    parts = iter_postings(
        source,
        programme=programme,
        account_types=account_types,
        codes=codes,
        since=since,
        until=until,
        chunk_rows=chunk_rows,
    )
    return concat(parts, POSTING_COLUMNS)


def balances(
    source: Source,
    *,
    as_of: datetime | None = None,
    programme: str | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> pd.DataFrame:
    """Every account's balance as recorded at ``as_of`` (default: everything recorded):
    the ``balance_after_minutes`` of its last posting recorded at or before that instant,
    0 when none. Accounts opened after ``as_of`` are left out. One row per account, by
    account id. Columns: :data:`BALANCE_COLUMNS` (``last_entry_id`` and
    ``last_recorded_at`` name the posting, <NA>/NaT when none). Their sum is always 0."""
    p, a = postings_table, accounts
    _window(p.c.recorded_at, as_of, None)  # checks as_of
    window = [] if as_of is None else [p.c.recorded_at <= as_of]
    last = (
        select(p.c.account_id, func.max(p.c.entry_id).label("entry_id"))
        .where(*window)
        .group_by(p.c.account_id)
        .subquery("last")
    )
    at = postings_table.alias("at")
    query = (
        select(
            a.c.id,
            a.c.code,
            a.c.type,
            members_table.c.id,
            func.coalesce(at.c.balance_after_minutes, 0),
            last.c.entry_id,
            at.c.recorded_at,
        )
        .select_from(
            a.outerjoin(last, last.c.account_id == a.c.id)
            .outerjoin(at, and_(at.c.entry_id == last.c.entry_id, at.c.account_id == a.c.id))
            .outerjoin(members_table, members_table.c.account_id == a.c.id)
        )
        .where(*_in_programme(programme))
        .order_by(a.c.id)
    )
    if as_of is not None:
        query = query.where(a.c.created_at <= as_of)
    return concat(_iterate(source, query, BALANCE_COLUMNS, chunk_rows), BALANCE_COLUMNS)


def balance_history(
    source: Source, account_code: str, *, chunk_rows: int = CHUNK_ROWS
) -> pd.DataFrame:
    """One account's postings in recording order, with its running balance. Columns:
    :data:`HISTORY_COLUMNS`. Unknown accounts raise AccountNotFoundError."""
    p, e = postings_table, entries_table
    with snapshot(source) as conn:
        account_id = conn.execute(select(accounts.c.id).where(accounts.c.code == account_code))
        found = account_id.scalar()
        if found is None:
            raise errors.AccountNotFoundError(f"no account {account_code!r}")
        query = (
            select(
                p.c.entry_id,
                e.c.code,
                e.c.occurred_at,
                p.c.recorded_at,
                p.c.amount_minutes,
                p.c.balance_after_minutes,
            )
            .join(e, e.c.id == p.c.entry_id)
            .where(p.c.account_id == found)
            .order_by(p.c.recorded_at, p.c.entry_id)
        )
        return concat(chunks(conn, query, HISTORY_COLUMNS, chunk_rows), HISTORY_COLUMNS)


# --- the time bank -----------------------------------------------------------------------------


def _programme_filter(
    source: Source, column: Any, programme: str | None
) -> list[ColumnElement[bool]]:
    """Rows of ``programme`` (all when None); an unknown programme raises
    BankObjectNotFoundError."""
    if programme is None:
        return []
    with snapshot(source) as conn:
        return [column == _programme_id(conn, programme)]


def lots(
    source: Source, *, programme: str | None = None, chunk_rows: int = CHUNK_ROWS
) -> pd.DataFrame:
    """Members' lots (minutes credited together), by id: where and when they were earned
    (``origin_site``, its ``origin_region``, ``earned_on`` in the programme's calendar),
    ``expires_on`` (NaT: never), how many are left, and the entry that created them
    (``source_code``: ``"deposit"``, ``"gift"``, ``"grant"``, ``"estate"``...). A member's
    balance is the sum of ``remaining_minutes`` of their lots. Columns: :data:`LOT_COLUMNS`.
    Pools' lots are not members' lots and are not included."""
    lt, e = lots_table, entries_table
    query = (
        select(
            lt.c.id,
            lt.c.member_id,
            programmes.c.code,
            lt.c.minutes,
            lt.c.remaining_minutes,
            sites.c.code,
            regions.c.code,
            lt.c.earned_on,
            lt.c.expires_on,
            lt.c.source_entry_id,
            e.c.code,
            lt.c.parent_lot_id,
        )
        .select_from(
            lt.join(members_table, members_table.c.id == lt.c.member_id)
            .join(programmes, programmes.c.id == members_table.c.programme_id)
            .join(sites, sites.c.id == lt.c.origin_site_id)
            .join(regions, regions.c.id == sites.c.region_id)
            .join(e, e.c.id == lt.c.source_entry_id)
        )
        .where(*_programme_filter(source, members_table.c.programme_id, programme))
        .order_by(lt.c.id)
    )
    return concat(_iterate(source, query, LOT_COLUMNS, chunk_rows), LOT_COLUMNS)


def services(
    source: Source, *, programme: str | None = None, chunk_rows: int = CHUNK_ROWS
) -> pd.DataFrame:
    """Recorded services, by id: where (``site`` and its ``region``), who served
    (``volunteer_id``), how many people were served, when, the minutes served and
    credited, the rating, the status (pending, confirmed, rejected, reversed) and the
    deposit (and reversal) entries. Notes and reasons (free text) are left out. Columns:
    :data:`SERVICE_COLUMNS`."""
    s = services_table
    served = (
        select(service_recipients.c.service_id, func.count().label("recipients"))
        .group_by(service_recipients.c.service_id)
        .subquery("served")
    )
    query = (
        select(
            s.c.id,
            programmes.c.code,
            sites.c.code,
            regions.c.code,
            s.c.volunteer_id,
            func.coalesce(served.c.recipients, 0),
            s.c.service_type,
            s.c.started_at,
            s.c.ended_at,
            s.c.raw_minutes,
            s.c.weight_permille,
            s.c.credited_minutes,
            s.c.rating,
            s.c.status,
            s.c.recorded_at,
            s.c.decided_at,
            s.c.deposit_entry_id,
            s.c.reversal_entry_id,
        )
        .select_from(
            s.join(programmes, programmes.c.id == s.c.programme_id)
            .join(sites, sites.c.id == s.c.site_id)
            .join(regions, regions.c.id == sites.c.region_id)
            .outerjoin(served, served.c.service_id == s.c.id)
        )
        .where(*_programme_filter(source, s.c.programme_id, programme))
        .order_by(s.c.id)
    )
    return concat(_iterate(source, query, SERVICE_COLUMNS, chunk_rows), SERVICE_COLUMNS)


def age_band(age: int) -> str:
    """The band of :data:`AGE_BAND_YEARS` years an age falls in: 77 -> ``"75-79"``."""
    low = age // AGE_BAND_YEARS * AGE_BAND_YEARS
    return f"{low}-{low + AGE_BAND_YEARS - 1}"


def members(
    source: Source,
    *,
    programme: str | None = None,
    on: date | None = None,
    chunk_rows: int = CHUNK_ROWS,
) -> pd.DataFrame:
    """Members without identity data, by id: no name, phone, identity hash, account code
    or birth date, only the ``birth_year`` and the ``age_band`` on ``on`` (default: today
    by the source's clock, in the programme's time zone, else UTC), with the declared
    ``sex`` (<NA>: not given), the programme, kind (person or group), role (``acts_as``),
    home station and its region, status and assessed need. Columns: :data:`MEMBER_COLUMNS`."""
    if on is not None and type(on) is not date:
        raise errors.InvalidInputError("on is a date")
    if on is None:
        zone: ZoneInfo | Any = UTC
        if programme is not None:
            with snapshot(source) as conn:
                zone = programme_zone(conn, _programme_id(conn, programme))
        day = now_of(source).astimezone(zone).date()
    else:
        day = on
    m = members_table
    query = (
        select(
            m.c.id,
            programmes.c.code,
            m.c.kind,
            m.c.acts_as,
            sites.c.code,
            regions.c.code,
            m.c.status,
            m.c.assessed_need,
            m.c.registered_at,
            personal.c.birth_date,
            personal.c.sex,
        )
        .select_from(
            m.join(programmes, programmes.c.id == m.c.programme_id)
            .join(sites, sites.c.id == m.c.home_site_id)
            .join(regions, regions.c.id == sites.c.region_id)
            .join(personal, personal.c.member_id == m.c.id)
        )
        .where(*_programme_filter(source, m.c.programme_id, programme))
        .order_by(m.c.id)
    )

    def without_birth_date(rows: Sequence[Any]) -> pd.DataFrame:
        public = [
            (*row[:9], row.birth_date.year, age_band(_age(row.birth_date, day)), row.sex)
            for row in rows
        ]
        return frame_of(public, MEMBER_COLUMNS)

    _check_chunk(chunk_rows)
    with snapshot(source) as conn:
        result = conn.execution_options(yield_per=chunk_rows).execute(query)
        parts = (without_birth_date(part) for part in result.partitions())
        return concat(parts, MEMBER_COLUMNS)


def _age(born: date, on: date) -> int:
    return on.year - born.year - ((on.month, on.day) < (born.month, born.day))


def monthly_station_summary(
    source: Source, programme: str, *, chunk_rows: int = CHUNK_ROWS
) -> pd.DataFrame:
    """Per site of ``programme`` (stations and institutions) and calendar month (the
    programme's time zone), from the first month with any activity to the last, zeros
    where nothing happened. Columns: :data:`SUMMARY_COLUMNS`:

    - ``services_confirmed``: services whose deposit was posted, counted in the month they
      ended (the deposit's ``occurred_at``);
    - ``minutes_deposited``: the minutes the site issued for them (its ``station_issued``
      account's postings of those deposit entries, sign flipped: the credited minutes, a
      part diverted to a pool included);
    - ``minutes_reversed``: minutes of deposits reversed, in the month of the reversal;
    - ``minutes_redeemed``: minutes redeemed at the site (redemptions and completed
      bookings), in the month they occurred: its ``site_redeemed`` account's postings;
    - ``volunteers``: distinct volunteers of the confirmed services.

    Over all months, a station's ``minutes_deposited - minutes_reversed`` is minus its
    issued account's balance, and a site's ``minutes_redeemed`` its redeemed account's."""
    _check_chunk(chunk_rows)
    p, e = postings_table, entries_table
    with snapshot(source) as conn:
        programme_id = _programme_id(conn, programme)
        zone = programme_zone(conn, programme_id)
        site_rows = conn.execute(
            select(sites.c.id, sites.c.code, sites.c.kind, regions.c.code.label("region"))
            .join(regions, regions.c.id == sites.c.region_id)
            .where(sites.c.programme_id == programme_id)
            .order_by(sites.c.code)
        ).all()
        deposits = (
            select(
                services_table.c.site_id,
                services_table.c.volunteer_id,
                e.c.occurred_at,
                -p.c.amount_minutes,
            )
            .select_from(
                services_table.join(e, e.c.id == services_table.c.deposit_entry_id)
                .join(sites, sites.c.id == services_table.c.site_id)
                .join(p, and_(p.c.entry_id == e.c.id, p.c.account_id == sites.c.issued_account_id))
            )
            .where(services_table.c.programme_id == programme_id)
        )
        reversals = (
            select(services_table.c.site_id, e.c.occurred_at, p.c.amount_minutes)
            .select_from(
                services_table.join(e, e.c.id == services_table.c.reversal_entry_id)
                .join(sites, sites.c.id == services_table.c.site_id)
                .join(p, and_(p.c.entry_id == e.c.id, p.c.account_id == sites.c.issued_account_id))
            )
            .where(services_table.c.programme_id == programme_id)
        )
        redeemed = (
            select(redemptions.c.site_id, e.c.occurred_at, p.c.amount_minutes)
            .select_from(
                redemptions.join(e, e.c.id == redemptions.c.entry_id)
                .join(sites, sites.c.id == redemptions.c.site_id)
                .join(
                    p, and_(p.c.entry_id == e.c.id, p.c.account_id == sites.c.redeemed_account_id)
                )
            )
            .where(redemptions.c.programme_id == programme_id)
        )
        deposit_schema = {
            "site_id": "int64",
            "volunteer_id": "int64",
            "occurred_at": _INSTANT,
            "minutes": "int64",
        }
        moved_schema = {"site_id": "int64", "occurred_at": _INSTANT, "minutes": "int64"}
        totals: list[pd.DataFrame] = []
        seen: list[pd.DataFrame] = []
        for part in chunks(conn, deposits, deposit_schema, chunk_rows):
            part["month"] = _months(part["occurred_at"], zone)
            groups = part.groupby(["site_id", "month"])["minutes"]
            counted = {"services_confirmed": groups.size(), "minutes_deposited": groups.sum()}
            totals.append(pd.DataFrame(counted))
            seen.append(part[["site_id", "month", "volunteer_id"]].drop_duplicates())
        for query, column in ((reversals, "minutes_reversed"), (redeemed, "minutes_redeemed")):
            for part in chunks(conn, query, moved_schema, chunk_rows):
                part["month"] = _months(part["occurred_at"], zone)
                totals.append(part.groupby(["site_id", "month"])["minutes"].sum().to_frame(column))
    return _summary(site_rows, totals, seen)


def _months(instants: pd.Series, zone: ZoneInfo) -> pd.Series:
    """The programme-calendar month of each instant."""
    local: pd.Series = instants.dt.tz_convert(zone).dt.tz_localize(None)
    months: pd.Series = local.dt.to_period("M")
    return months


def _summary(
    site_rows: Sequence[Any], totals: list[pd.DataFrame], seen: list[pd.DataFrame]
) -> pd.DataFrame:
    figures = ["services_confirmed", "minutes_deposited", "minutes_reversed", "minutes_redeemed"]
    if not totals or not site_rows:
        return empty(SUMMARY_COLUMNS)
    summed = pd.concat(totals).groupby(level=["site_id", "month"]).sum()
    summed = summed.reindex(columns=figures, fill_value=0)
    if seen:
        distinct = pd.concat(seen).drop_duplicates()
        summed["volunteers"] = distinct.groupby(["site_id", "month"]).size()
    else:
        summed["volunteers"] = 0
    months = summed.index.get_level_values("month")
    span = pd.period_range(months.min(), months.max(), freq="M")
    grid = pd.MultiIndex.from_product(
        [[row.id for row in site_rows], span], names=["site_id", "month"]
    )
    full = summed.reindex(grid).fillna(0).reset_index()
    info = pd.DataFrame(
        [(row.id, row.code, row.kind, row.region) for row in site_rows],
        columns=["site_id", "site", "site_kind", "region"],
    )
    merged = info.merge(full, on="site_id").sort_values(["site", "month"], ignore_index=True)
    return merged[list(SUMMARY_COLUMNS)].astype(dtypes_of(SUMMARY_COLUMNS))
