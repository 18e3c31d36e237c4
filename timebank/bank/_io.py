"""Exports and imports: the ledger and the time bank's tables streamed out as CSV or JSON
Lines, and a programme's history (services already done, redemptions) read in from CSV.

Exports read in one snapshot and stream: the database is read ``rows_per_fetch`` rows at a
time (a server-side cursor on PostgreSQL and MariaDB) and each row is written to the text
stream as it comes, so memory does not grow with the table. Members are exported without
identity data: no name, phone, identity hash, account code (it embeds a prefix of the
identity hash) or birth date, only the birth year.

Imports check every row and report every rejected one; see :func:`apply_batch` for how a
batch is applied and why each row runs under a savepoint.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, Final, Literal, TextIO, cast

from sqlalchemy import Connection, Select, exists, select

from timebank import errors
from timebank.bank import _gifts, _redeem, _services
from timebank.bank._ctx import Act, programme_row
from timebank.bank._org import actor, policy_at
from timebank.bank.limits import REDEMPTION_KEY_LENGTH_MAX
from timebank.bank.models import _Frozen
from timebank.bank.schema import (
    gifts,
    lots,
    members,
    personal,
    programmes,
    redemptions,
    sites,
)
from timebank.limits import AMOUNT_MAX_MINUTES
from timebank.schema import accounts, entries, postings

ExportTable = Literal["entries", "postings", "members", "lots"]
ExportFormat = Literal["csv", "jsonl"]
HistoryKind = Literal["service", "redemption", "gift"]

#: Columns of each export, in order: the CSV header, and the keys of each JSON Lines object.
ENTRY_COLUMNS: Final = (
    "entry_id",
    "idempotency_key",
    "code",
    "occurred_at",
    "recorded_at",
    "operator",
    "memo",
    "reverses_entry_id",
    "metadata",
)
POSTING_COLUMNS: Final = (
    "entry_id",
    "account",
    "account_type",
    "member_id",
    "amount_minutes",
    "balance_after_minutes",
    "recorded_at",
)
MEMBER_COLUMNS: Final = (
    "member_id",
    "programme",
    "kind",
    "acts_as",
    "home_site",
    "status",
    "registered_at",
    "birth_year",
    "sex",
    "balance_minutes",
)
LOT_COLUMNS: Final = (
    "lot_id",
    "member_id",
    "programme",
    "origin_site",
    "earned_on",
    "expires_on",
    "minutes",
    "remaining_minutes",
    "source_entry_id",
    "parent_lot_id",
)
EXPORT_COLUMNS: Final[dict[str, tuple[str, ...]]] = {
    "entries": ENTRY_COLUMNS,
    "postings": POSTING_COLUMNS,
    "members": MEMBER_COLUMNS,
    "lots": LOT_COLUMNS,
}
EXPORT_FORMATS: Final = ("csv", "jsonl")
#: Rows an export reads from the database at a time.
EXPORT_ROWS_PER_FETCH: Final = 1_000
EXPORT_ROWS_PER_FETCH_MAX: Final = 10_000

#: Columns of a history file, in the documented order (a file may order them otherwise).
HISTORY_COLUMNS: Final = (
    "key",
    "kind",
    "member",
    "recipient",
    "site",
    "service_type",
    "started_at",
    "ended_at",
    "minutes",
)
HISTORY_KINDS: Final = ("service", "redemption", "gift")
#: Keys the library writes itself (a completed booking's redemption, an estate).
_RESERVED_PREFIXES: Final = ("booking:", "estate:")
_MEMBER_ID_MAX: Final = 2**63 - 1


# --- the report -------------------------------------------------------------------------------


class RejectedRow(_Frozen):
    """A row of a history file that was not applied, and why. ``line`` is the line of the
    file where the row starts (the header is line 1); ``key`` is its key as read (``""``
    when it has none)."""

    line: int
    key: str
    reason: str


class ImportReport(_Frozen):
    """What :meth:`~timebank.bank.TimeBank.import_history` did.

    ``rows_read`` counts the data rows (not the header, not blank lines). Every row read is
    exactly one of: ``applied`` (written by this import, in a committed batch),
    ``already_present`` (its key was there with the same content, in a committed batch:
    nothing written), ``rejected`` (each with its line and reason) or ``rolled_back``
    (accepted, but its batch had a rejected row, so it was not written).
    ``batches_committed`` of ``batches`` were committed; without ``batch_rows`` the whole
    file is one batch.
    """

    rows_read: int
    applied: int
    already_present: int
    rejected: tuple[RejectedRow, ...]
    rolled_back: int
    batches: int
    batches_committed: int

    @property
    def ok(self) -> bool:
        """No row was rejected: every row is in the database."""
        return not self.rejected


# --- exports ----------------------------------------------------------------------------------


def export(  # noqa: PLR0917 - the choices of one export
    conn: Connection,
    table: ExportTable,
    out: TextIO,
    fmt: ExportFormat,
    programme: str | None,
    rows_per_fetch: int,
) -> int:
    """Write ``table`` to ``out``, row by row as the database yields them; returns how many
    rows were written (the CSV header not counted)."""
    columns = EXPORT_COLUMNS[table]
    programme_id = None if programme is None else int(programme_row(conn, programme).id)
    query = _QUERIES[table](programme, programme_id)
    transform = _TRANSFORMS.get(table)
    result = conn.execute(query.execution_options(yield_per=rows_per_fetch))
    written = 0
    try:
        if fmt == "csv":
            writer = csv.writer(out, lineterminator="\n")
            writer.writerow(columns)
            for row in result:
                values = tuple(row) if transform is None else transform(tuple(row))
                writer.writerow([_csv_cell(value) for value in values])
                written += 1
        else:
            for row in result:
                values = tuple(row) if transform is None else transform(tuple(row))
                document = dict(zip(columns, (_json_value(v) for v in values), strict=True))
                out.write(json.dumps(document, ensure_ascii=False, separators=(",", ":")))
                out.write("\n")
                written += 1
    finally:
        result.close()
    return written


def _account_prefix(programme: str) -> str:
    # Every account of a programme is named "<programme>:...".
    return f"{programme}:"


def _entries_query(programme: str | None, _programme_id: int | None) -> Select[Any]:
    query = select(
        entries.c.id,
        entries.c.idempotency_key,
        entries.c.code,
        entries.c.occurred_at,
        entries.c.recorded_at,
        entries.c.operator,
        entries.c.memo,
        entries.c.reverses_entry_id,
        entries.c["metadata"],
    ).order_by(entries.c.id)
    if programme is not None:
        touches = exists(
            select(postings.c.entry_id)
            .join(accounts, accounts.c.id == postings.c.account_id)
            .where(
                postings.c.entry_id == entries.c.id,
                accounts.c.code.startswith(_account_prefix(programme), autoescape=True),
            )
        )
        query = query.where(touches)
    return query


def _postings_query(programme: str | None, _programme_id: int | None) -> Select[Any]:
    query = (
        select(
            postings.c.entry_id,
            accounts.c.code,
            accounts.c.type,
            members.c.id,
            postings.c.amount_minutes,
            postings.c.balance_after_minutes,
            postings.c.recorded_at,
        )
        .select_from(
            postings.join(accounts, accounts.c.id == postings.c.account_id).outerjoin(
                members, members.c.account_id == postings.c.account_id
            )
        )
        .order_by(postings.c.entry_id, postings.c.account_id)
    )
    if programme is not None:
        query = query.where(accounts.c.code.startswith(_account_prefix(programme), autoescape=True))
    return query


def _members_query(_programme: str | None, programme_id: int | None) -> Select[Any]:
    query = (
        select(
            members.c.id,
            programmes.c.code,
            members.c.kind,
            members.c.acts_as,
            sites.c.code,
            members.c.status,
            members.c.registered_at,
            personal.c.birth_date,  # only its year is written
            personal.c.sex,
            accounts.c.posted_minutes,
        )
        .select_from(
            members.join(programmes, programmes.c.id == members.c.programme_id)
            .join(sites, sites.c.id == members.c.home_site_id)
            .join(accounts, accounts.c.id == members.c.account_id)
            .outerjoin(personal, personal.c.member_id == members.c.id)
        )
        .order_by(members.c.id)
    )
    if programme_id is not None:
        query = query.where(members.c.programme_id == programme_id)
    return query


def _lots_query(_programme: str | None, programme_id: int | None) -> Select[Any]:
    query = (
        select(
            lots.c.id,
            lots.c.member_id,
            programmes.c.code,
            sites.c.code,
            lots.c.earned_on,
            lots.c.expires_on,
            lots.c.minutes,
            lots.c.remaining_minutes,
            lots.c.source_entry_id,
            lots.c.parent_lot_id,
        )
        .select_from(
            lots.join(members, members.c.id == lots.c.member_id)
            .join(programmes, programmes.c.id == members.c.programme_id)
            .join(sites, sites.c.id == lots.c.origin_site_id)
        )
        .order_by(lots.c.id)
    )
    if programme_id is not None:
        query = query.where(members.c.programme_id == programme_id)
    return query


def _birth_year(values: tuple[Any, ...]) -> tuple[Any, ...]:
    born = values[7]
    return (*values[:7], None if born is None else born.year, *values[8:])


_QUERIES: Final[dict[str, Callable[[str | None, int | None], Select[Any]]]] = {
    "entries": _entries_query,
    "postings": _postings_query,
    "members": _members_query,
    "lots": _lots_query,
}
_TRANSFORMS: Final[dict[str, Callable[[tuple[Any, ...]], tuple[Any, ...]]]] = {
    "members": _birth_year,
}


def instant(value: datetime) -> str:
    """ISO-8601 in UTC with a ``Z``: seconds, and microseconds when there are any."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat() + "Z"


def _csv_cell(value: Any) -> str | int:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return instant(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict | list):
        return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    if isinstance(value, int | str):
        return value
    return str(value)


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return instant(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, dict | list):
        # Canonical: the same document whatever order the database kept its keys in.
        return json.loads(json.dumps(value, sort_keys=True))
    return value


# --- history files ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HistoryRow:
    """One row of a history file, parsed."""

    line: int
    key: str
    kind: HistoryKind
    member: int
    recipients: tuple[int, ...]
    site: str
    service_type: str
    started_at: datetime
    ended_at: datetime | None
    minutes: int | None


Item = HistoryRow | RejectedRow


class HistoryFile:
    """A history file read row by row: :meth:`header_problem` first, then :meth:`rows`
    yields each data row, parsed, or rejected with every problem it has. Keys must be
    unique in the file: a key seen on an earlier line rejects the row."""

    def __init__(self, source: Iterable[str]) -> None:
        self._reader = csv.reader(source, strict=True)
        self._last_line = 0
        self._header: list[str] = []

    def header_problem(self) -> RejectedRow | None:
        """Why the header is unusable (missing, unknown or repeated columns), or None."""
        try:
            header = next(self._reader, None)
        except csv.Error as exc:
            return RejectedRow(line=1, key="", reason=f"the header is not valid CSV: {exc}")
        self._last_line = self._reader.line_num
        if not header:
            return RejectedRow(line=1, key="", reason="no header row: the file is empty")
        names = [name.strip() for name in header]
        names[0] = names[0].removeprefix("\ufeff")  # a byte-order mark, as Excel writes
        problems = []
        unknown = [name for name in names if name not in HISTORY_COLUMNS]
        if unknown:
            problems.append("unknown columns " + ", ".join(repr(n) for n in unknown))
        missing = [name for name in HISTORY_COLUMNS if name not in names]
        if missing:
            problems.append("missing columns " + ", ".join(missing))
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            problems.append("repeated columns " + ", ".join(repeated))
        if problems:
            expected = ",".join(HISTORY_COLUMNS)
            return RejectedRow(
                line=1, key="", reason=f"header: {'; '.join(problems)} (expected {expected})"
            )
        self._header = names
        return None

    def rows(self) -> Iterator[Item]:
        seen: dict[str, int] = {}
        while True:
            line = self._last_line + 1
            try:
                record = next(self._reader)
            except StopIteration:
                return
            except csv.Error as exc:
                self._last_line = self._reader.line_num
                yield RejectedRow(line=line, key="", reason=f"not valid CSV: {exc}")
                continue
            self._last_line = self._reader.line_num
            if not record or (len(record) == 1 and not record[0].strip()):
                continue  # a blank line
            item = parse_row(line, self._header, record)
            key = item.key
            if key and key in seen:
                item = RejectedRow(
                    line=line, key=key, reason=f"key {key!r} is also on line {seen[key]}"
                )
            elif key:
                seen[key] = line
            yield item


def parse_row(line: int, header: Sequence[str], record: Sequence[str]) -> Item:
    """A data row, or its rejection naming every problem found in it."""
    if len(record) != len(header):
        key = record[header.index("key")].strip() if len(record) > header.index("key") else ""
        return RejectedRow(
            line=line,
            key=key,
            reason=f"{len(record)} fields where the header has {len(header)}",
        )
    cells = {name: value.strip() for name, value in zip(header, record, strict=True)}
    problems: list[str] = []
    key = cells["key"]
    if not key:
        problems.append("key is empty")
    elif len(key) > REDEMPTION_KEY_LENGTH_MAX:
        problems.append(f"key: at most {REDEMPTION_KEY_LENGTH_MAX} characters")
    elif key.startswith(_RESERVED_PREFIXES):
        problems.append("keys starting 'booking:' or 'estate:' are reserved")
    kind = cells["kind"]
    if kind not in HISTORY_KINDS:
        problems.append(f"kind {kind!r} is not 'service', 'redemption' or 'gift'")
    member = _member_id(cells["member"], "member", problems)
    recipients = _recipients(kind, cells["recipient"], problems)
    for name in ("site", "service_type"):
        if kind == "gift" and cells[name]:
            problems.append(f"{name}: empty for a gift")
        elif kind != "gift" and not cells[name]:
            problems.append(f"{name} is empty")
    started_at = _instant(cells["started_at"], "started_at", problems)
    ended_at, minutes = _end_and_minutes(kind, cells, problems)
    if problems:
        return RejectedRow(line=line, key=key, reason="; ".join(problems))
    assert member is not None  # no problem found: both parsed
    assert started_at is not None
    return HistoryRow(
        line=line,
        key=key,
        kind=cast(HistoryKind, kind),
        member=member,
        recipients=recipients,
        site=cells["site"],
        service_type=cells["service_type"],
        started_at=started_at,
        ended_at=ended_at,
        minutes=minutes,
    )


def _end_and_minutes(
    kind: str, cells: dict[str, str], problems: list[str]
) -> tuple[datetime | None, int | None]:
    """A service's end and its optional credited minutes; the minutes of a redemption or a
    gift, which has no end (``started_at`` is when it occurred)."""
    if kind == "service":
        ended_at = _instant(cells["ended_at"], "ended_at", problems)
        return ended_at, _minutes(cells["minutes"], problems) if cells["minutes"] else None
    if kind in ("redemption", "gift"):
        if cells["ended_at"]:
            problems.append(f"ended_at: empty for a {kind} (started_at is when it occurred)")
        return None, _minutes(cells["minutes"], problems)
    return None, None


def _member_id(text: str, name: str, problems: list[str]) -> int | None:
    if text.isascii() and text.isdigit() and 0 < int(text) <= _MEMBER_ID_MAX:
        return int(text)
    problems.append(f"{name}: {text!r} is not a member id" if text else f"{name} is empty")
    return None


def _recipients(kind: str, text: str, problems: list[str]) -> tuple[int, ...]:
    if kind == "redemption" and not text:
        return ()  # the member's own care
    if kind == "service" and not text:
        problems.append("recipient is empty: a service has one or more recipients")
        return ()
    if kind == "gift" and not text:
        problems.append("recipient is empty: a gift goes to one member")
        return ()
    parts = [part.strip() for part in text.split(";")]
    if kind in ("redemption", "gift") and len(parts) > 1:
        problems.append(f"recipient: one member for a {kind}")
        return ()
    found = [_member_id(part, "recipient", problems) for part in parts]
    return tuple(member for member in found if member is not None)


def _instant(text: str, name: str, problems: list[str]) -> datetime | None:
    if not text:
        problems.append(f"{name} is empty")
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        problems.append(f"{name}: {text!r} is not an ISO-8601 time")
        return None
    if moment.utcoffset() is None:
        problems.append(f"{name}: {text!r} has no UTC offset (add Z or one like +08:00)")
        return None
    return moment


def _minutes(text: str, problems: list[str]) -> int | None:
    if text.isascii() and text.isdigit() and 0 < int(text) <= AMOUNT_MAX_MINUTES:
        return int(text)
    problems.append(
        f"minutes: {text!r} is not a positive whole number" if text else "minutes is empty"
    )
    return None


def batches(items: Iterator[Item], size: int | None) -> Iterator[list[Item]]:
    """The rows in consecutive batches of ``size`` (the last may be shorter); all of them
    in one batch when ``size`` is None."""
    if size is None:
        everything = list(items)
        if everything:
            yield everything
        return
    batch: list[Item] = []
    for item in items:
        batch.append(item)
        if len(batch) == size:
            yield batch
            batch = []
    if batch:
        yield batch


# --- applying a batch -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    applied: int
    already_present: int
    rejected: tuple[RejectedRow, ...]


class BatchRejected(Exception):
    """Raised out of the batch's transaction to roll it back; carries the outcome."""

    def __init__(self, outcome: BatchOutcome) -> None:
        super().__init__(f"{len(outcome.rejected)} rows rejected")
        self.outcome = outcome


def check_import(conn: Connection, programme: str, operators: Iterable[str]) -> None:
    """Refuse, before reading the file, an import no row of which could pass: an unknown
    programme or operator, or an auditor (auditors never write)."""
    programme_id = int(programme_row(conn, programme).id)
    for code in operators:
        who = actor(conn, programme_id, code)
        if "auditor" in who.roles:
            raise errors.PermissionDeniedError(
                f"operator {code!r} is an auditor: auditors never write"
            )


def apply_batch(
    act: Act,
    programme: str,
    items: Sequence[Item],
    operator: str,
    confirm_operator: str,
    *,
    skip_rejected: bool = False,
) -> BatchOutcome:
    """Apply a batch's rows in file order in the act's transaction; raise BatchRejected
    (which rolls the transaction back) if any row is rejected.

    Each row runs under its own savepoint (``begin_nested``). A business refusal (an
    unknown member, too few minutes, an overlapping service...) can come after the row
    wrote part of its work (the service recorded, its deposit refused), so the savepoint
    is rolled back: the row leaves no trace, and the next rows are judged on the state of
    the rows accepted before them, exactly as if the rejected rows were not in the file.
    So the report is complete (every row is judged, not only up to the first refusal) and
    correct (what it accepts is what a file without the rejected rows applies). Checking
    every row first and applying afterwards could not judge a redemption paid by a
    service of the same file without applying it. Errors of the database (contention,
    storage) are not rows' faults: they propagate, and the caller's retry runs the batch
    again from the start.
    """
    applied = present = 0
    rejected: list[RejectedRow] = []
    for item in items:
        if isinstance(item, RejectedRow):
            rejected.append(item)
            continue
        try:
            with act.conn.begin_nested():
                fresh = _apply_row(act, programme, item, operator, confirm_operator)
        except errors.StorageError:
            raise
        except errors.TimebankError as refusal:
            rejected.append(
                RejectedRow(line=item.line, key=item.key, reason=_reason(item, refusal))
            )
            continue
        if fresh:
            applied += 1
        else:
            present += 1
    outcome = BatchOutcome(applied, present, tuple(rejected))
    if rejected and not skip_rejected:
        raise BatchRejected(outcome)
    return outcome


def _reason(row: HistoryRow, refusal: errors.TimebankError) -> str:
    """The refusal's message; a redemption short of minutes says so about the member (the
    ledger names the member's account, whose code carries a prefix of an identity hash)."""
    if (
        isinstance(refusal, errors.LimitExceededError)
        and not isinstance(refusal, errors.CapExceededError)
        and row.kind != "service"
    ):
        return short_of_minutes(row, refusal.available_minutes)
    return str(refusal)


def short_of_minutes(row: HistoryRow, available_minutes: int) -> str:
    """Why a redemption or a gift was refused for want of minutes."""
    return (
        f"member {row.member} has {available_minutes} minutes available, "
        f"not the {row.minutes} this {row.kind} takes"
    )


def _apply_row(
    act: Act, programme: str, row: HistoryRow, operator: str, confirm_operator: str
) -> bool:
    """Apply one row; True if it wrote something, False if it was already there."""
    if row.kind == "gift":
        existed_gift = act.conn.execute(
            select(gifts.c.id).where(gifts.c.idempotency_key == row.key)
        ).first()
        gift = {
            "giver_id": row.member,
            "receiver_id": row.recipients[0],
            "minutes": row.minutes,
            "occurred_at": row.started_at,
            "history": True,
        }
        _gifts.give(act, programme, row.key, gift, operator)
        return existed_gift is None
    if row.kind == "redemption":
        existed = act.conn.execute(
            select(redemptions.c.id).where(redemptions.c.idempotency_key == row.key)
        ).first()
        data = {
            "member_id": row.member,
            "recipient_id": row.recipients[0] if row.recipients else row.member,
            "site": row.site,
            "service_type": row.service_type,
            "minutes": row.minutes,
            "occurred_at": row.started_at,
        }
        _redeem.redeem(act, programme, row.key, data, operator)
        return existed is None
    data = {
        "volunteer_id": row.member,
        "recipient_ids": list(row.recipients),
        "site": row.site,
        "service_type": row.service_type,
        "started_at": row.started_at,
        "ended_at": row.ended_at,
        "rating": None,
        "note": "",
    }
    # A replay of a service recorded before (with the same content) returns its id.
    service_id = _services.record(act, programme, row.key, data, operator)
    service = _services.service_row(act.conn, service_id)
    fresh: bool = service.status == "pending"
    if service.status == "rejected":
        raise errors.ServiceStateError(
            f"service {service_id} with key {row.key!r} was rejected: {service.reason}"
        )
    if fresh:
        _confirm(act, service, row, operator, confirm_operator)
    if row.minutes is not None and row.minutes != service.credited_minutes:
        raise errors.InvalidInputError(
            f"the service credits {service.credited_minutes} minutes, "
            f"not the {row.minutes} of the file"
        )
    return fresh


def _confirm(act: Act, service: Any, row: HistoryRow, operator: str, confirm_operator: str) -> None:
    """Confirm a pending service, posting its deposit and its lot (earned on the day the
    service ended, in the programme's calendar). Where the policy asks for two
    confirmations, the recipient's side is recorded first (the recipient with the lowest
    member id, entered by ``operator``: the file vouches for it), then
    ``confirm_operator``'s."""
    _version, policy = policy_at(act.conn, service.programme_id, service.started_at)
    if policy.confirmations_required == 2:
        _services.confirm(act, service.id, operator, min(row.recipients))
    _services.confirm(act, service.id, confirm_operator, None)
    status = _services.service_row(act.conn, service.id).status
    if status != "confirmed":  # pragma: no cover - every refusal raises before this
        raise errors.ServiceStateError(f"service {service.id} is {status}, not confirmed")
