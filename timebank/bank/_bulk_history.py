"""The bulk engine of history imports: a batch judged in memory, then written in bulk.

The row engine (:func:`timebank.bank._io.apply_batch`) runs each row through the same code
as the one-at-a-time API, a dozen statements a row. This engine reads what the batch needs
in a few set-wise queries (its members, locked; their accounts and open lots; the policy
versions; the keys already used; the services its volunteers already have in the batch's
time span; the gifts that count towards the yearly limits), judges every row in file order
against that state in memory with the rule functions the row engine calls (same rules, same
order of checks, same messages), and then writes what the accepted rows make: the entries
through the ledger's own batch path (which checks balances, floors and account states again
under its locks, and on PostgreSQL the database checks that every entry balances), then
services, confirmations, lots, lot uses, redemptions and gifts, each as one many-row
statement (``COPY`` on PostgreSQL).

Why a pass in memory rather than staging tables and set-based SQL: it calls the row engine's
own rule functions and builds its errors, so the two engines cannot drift apart. The rules
that look sequential (first in, first out over lots; refusals that depend on the rows
accepted before them) do not rule set-based SQL out: :mod:`timebank.bank._set_history`
(issue 10's design) judges them, and writes every row, by SQL in the database, reusing this
class for the rules that depend on no earlier row. It is proven against the row engine
as this one is; this one stays the default while it is the faster (BENCHMARKS.md, "The
set-based import").

Ids that rows refer to (services: the key of their deposit entry; lots: their uses and the
lots a gift makes from them) are reserved up front, so it runs where ids can be reserved:
PostgreSQL and SQLite (MariaDB imports with the row engine).

One difference from the row engine, documented: a key whose service is still pending is
rejected with the reason (the row engine confirms it). A confirmed or reversed service, a
redemption or a gift with the same content is a replay, and a rejected service a
rejection, as there.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, Final, NamedTuple

from sqlalchemy import (
    BigInteger,
    Connection,
    Row,
    bindparam,
    select,
    update,
)

from timebank import _accounts, _collector, errors
from timebank._accounts import limit_refusal
from timebank._bulk import RawMany, bulk_insert, can_reserve_ids, reserve_ids
from timebank._db import in_values, planned_each_time
from timebank.bank import _gifts, _pools, _redeem, _services
from timebank.bank._ctx import Act, programme_row
from timebank.bank._io import (
    BatchOutcome,
    BatchRejected,
    HistoryRow,
    Item,
    RejectedRow,
    short_of_minutes,
)
from timebank.bank._org import Actor, actor, permit
from timebank.bank.models import Policy, Role, ServiceType
from timebank.bank.schema import (
    confirmations,
    gifts,
    is_open,
    lot_uses,
    lots,
    members,
    personal,
    policies,
    pool_lots,
    redemptions,
    regions,
    relations,
    service_recipients,
    services,
    sites,
    vouchers,
)
from timebank.limits import ENTRIES_PER_BATCH_MAX
from timebank.models import EntryCommand, PostingSpec, TransferCommand
from timebank.schema import accounts

#: Ids per ``IN (...)`` list: under every backend's limit on bound parameters.
IDS_PER_QUERY: Final = 900
#: New lots sort after every lot already stored that was earned the same day.
_NEW_LOT_SEQ: Final = 1 << 62

_SERVICE_COLUMNS: Final = (
    "id",
    "programme_id",
    "idempotency_key",
    "volunteer_id",
    "site_id",
    "service_type",
    "started_at",
    "ended_at",
    "raw_minutes",
    "weight_permille",
    "credited_minutes",
    "policy_version",
    "note",
    "status",
    "reason",
    "recorded_by",
    "recorded_at",
    "decided_at",
    "deposit_entry_id",
)
_LOT_COLUMNS: Final = (
    "id",
    "member_id",
    "minutes",
    "remaining_minutes",
    "origin_site_id",
    "earned_on",
    "expires_on",
    "source_entry_id",
    "parent_lot_id",
)
_INSERTS: Final = {
    "services": bulk_insert(services, _SERVICE_COLUMNS),
    "recipients": bulk_insert(service_recipients, ("service_id", "member_id")),
    "confirmations": bulk_insert(
        confirmations, ("service_id", "party", "confirmed_by", "confirmed_at")
    ),
    "lots": bulk_insert(lots, _LOT_COLUMNS),
    "uses": bulk_insert(lot_uses, ("entry_id", "lot_id", "minutes")),
    "pool_lots": bulk_insert(
        pool_lots,
        (
            "region_id",
            "minutes",
            "remaining_minutes",
            "origin_site_id",
            "earned_on",
            "source_entry_id",
        ),
    ),
    "redemptions": bulk_insert(
        redemptions,
        (
            "programme_id",
            "idempotency_key",
            "member_id",
            "recipient_id",
            "site_id",
            "service_type",
            "minutes",
            "occurred_at",
            "redeemed_by",
            "entry_id",
        ),
    ),
    "gifts": bulk_insert(
        gifts,
        (
            "programme_id",
            "idempotency_key",
            "giver_id",
            "receiver_id",
            "minutes",
            "occurred_at",
            "given_by",
            "entry_id",
        ),
    ),
}

#: Stored lots' remaining minutes after the batch, one statement (an executemany of single-row
#: UPDATEs was 5 % of the PostgreSQL bulk path).
_LOTS_LEFT: Final = RawMany(
    update(lots)
    .where(lots.c.id == bindparam("lot_id"))
    .values(remaining_minutes=bindparam("left")),
    [("lot_id", BigInteger()), ("left", BigInteger())],
    "UPDATE tb_lots AS l SET remaining_minutes = v.left_minutes "
    "FROM unnest(%(lot_id)s::bigint[], %(left)s::bigint[]) AS v(id, left_minutes) "
    "WHERE l.id = v.id",
)


def supported(conn: Connection) -> bool:
    """Whether this database can reserve ids up front (PostgreSQL, SQLite)."""
    return can_reserve_ids(conn)


# --- the state a batch is judged against -------------------------------------------------------


@dataclass(slots=True)
class _Account:
    """A ledger account as the batch sees it, moved as the accepted rows move it."""

    id: int
    code: str
    status: str
    floor_minutes: int | None
    ceiling_minutes: int | None
    posted_minutes: int
    held_out_minutes: int
    held_in_minutes: int

    def refusal(self, amount: int) -> errors.TimebankError | None:
        """What the ledger would refuse posting ``amount`` for (its checks, its messages)."""
        if self.status != "open":
            return errors.AccountStateError(f"account {self.code!r} is {self.status}")
        return limit_refusal(self, amount)


@dataclass(slots=True, eq=False)
class _Lot:
    member_id: int
    minutes: int
    remaining: int
    origin_site_id: int
    earned_on: date
    expires_on: date | None
    seq: int
    id: int | None = None  # None: made by this batch, its id reserved when written
    stored_remaining: int | None = None  # a stored lot's remaining minutes when read
    source_entry: int | None = None  # a new lot's entry, as an index into the batch's
    parent: _Lot | None = None

    def order(self) -> tuple[date, int]:
        return (self.earned_on, self.seq)


@dataclass(slots=True)
class _Writes:
    """What the accepted rows write, in the order they were accepted."""

    commands: list[EntryCommand | TransferCommand] = field(default_factory=list)
    services: list[tuple[Any, ...]] = field(default_factory=list)  # deposit entry index last
    recipients: list[tuple[int, int]] = field(default_factory=list)
    confirmations: list[tuple[int, str, str]] = field(default_factory=list)
    new_lots: list[_Lot] = field(default_factory=list)
    touched: dict[int, _Lot] = field(default_factory=dict)  # stored lots, by id
    uses: list[tuple[int, _Lot, int]] = field(default_factory=list)  # entry index, lot, minutes
    pool_lots: list[tuple[int, int, int, date, int]] = field(default_factory=list)
    redemptions: list[tuple[Any, ...]] = field(default_factory=list)  # entry index last
    gifts: list[tuple[Any, ...]] = field(default_factory=list)  # entry index last


class ServiceFacts(NamedTuple):
    """What a service's first rules found: its site, policy, credit and people."""

    site: Row[Any]
    version: int
    policy: Policy
    kind: ServiceType
    raw: int
    credited: int
    volunteer: Row[Any]
    recipients: list[int]


class _Refused(Exception):
    """A row's refusal inside the judging pass (never leaves this module)."""

    def __init__(self, error: errors.TimebankError | str) -> None:
        super().__init__(str(error))
        self.reason = str(error)


class _Refusing:
    """Turn the shared rules' refusals into the row's (errors of the database propagate).

    A class, not ``@contextmanager``: the judging pass enters it a few times a row, and
    needs no generator made for each."""

    def __enter__(self) -> None:
        return None

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: object
    ) -> None:
        if isinstance(exc, errors.TimebankError) and not isinstance(exc, errors.StorageError):
            raise _Refused(exc) from None


_refusing = _Refusing()


class _Batch:
    """One batch: its state read up front, its rows judged, its writes gathered."""

    def __init__(
        self,
        act: Act,
        programme: str,
        rows: Sequence[HistoryRow],
        operator: str,
        confirmer: str,
    ) -> None:
        self.act = act
        self.conn = act.conn
        self.programme = programme_row(self.conn, programme)
        self.rows = rows
        self.operator = operator
        self.confirmer = confirmer
        self.writes = _Writes()
        self._grants: dict[tuple[str, str, int], errors.TimebankError | None] = {}
        self._actors: dict[str, Actor] = {}
        self._paths: dict[int, str] = {}
        self._pool_accounts: dict[int, int] = {}
        self._homes: dict[int, Row[Any]] = {}
        self._lot_seq = 0
        self._one_parameter = self.conn.dialect.name in ("postgresql", "sqlite")
        self._last_entry = -1
        self._service_ids: list[int] | None = None
        self._load()

    # --- reading ------------------------------------------------------------------------------

    def _chunks(self, values: Iterable[Any]) -> Iterable[list[Any]]:
        """``values`` (without None) in lists for :meth:`_in`: one list on PostgreSQL and
        SQLite, which take it as one parameter; lists of IDS_PER_QUERY elsewhere."""
        ordered = sorted({v for v in values if v is not None})
        step = len(ordered) if self._one_parameter else IDS_PER_QUERY
        for start in range(0, len(ordered), max(step, 1)):
            yield ordered[start : start + step]

    def _in(self, column: Any, values: list[Any]) -> Any:
        return in_values(self.conn, column, values)

    def _load(self) -> None:
        self._load_facts()
        self._load_accounts()
        self._load_lots()
        self._load_services()
        self._load_given()

    def _load_facts(self) -> None:
        """What the rules that depend on no earlier row read: sites, policies, the members
        (locked), their homes, the keys already used, birth dates and relations."""
        conn, rows = self.conn, self.rows
        self.sites = {
            r.code: r
            for r in conn.execute(
                select(sites).where(
                    sites.c.programme_id == self.programme.id,
                    sites.c.code.in_({row.site for row in rows if row.site}),
                )
            )
        }
        self.policies = [
            (r.effective_from, r.version, Policy(**r.body))
            for r in conn.execute(
                select(policies.c.effective_from, policies.c.version, policies.c.body)
                .where(policies.c.programme_id == self.programme.id)
                .order_by(policies.c.effective_from, policies.c.version)
            )
        ]
        self._policy_starts = [start for start, _, _ in self.policies]
        self.policy_now = self.policy_at(self.act.now)
        people = {row.member for row in rows} | {m for row in rows for m in row.recipients}
        self.members: dict[int, Row[Any]] = {}
        for chunk in self._chunks(people):
            query = select(members).where(self._in(members.c.id, chunk)).order_by(members.c.id)
            for r in conn.execute(query.with_for_update()).all():
                self.members[r.id] = r
        self._load_homes()
        self._load_keys()
        self._load_people_facts()

    def _load_homes(self) -> None:
        """The home stations of the batch's givers (a gift is authorised there): one query
        a batch instead of one per station."""
        homes = {
            self.members[row.member].home_site_id
            for row in self.rows
            if row.kind == "gift" and row.member in self.members
        }
        for chunk in self._chunks(homes):
            for r in self.conn.execute(select(sites).where(self._in(sites.c.id, chunk))).all():
                self._homes[r.id] = r

    def _load_accounts(self) -> None:
        ids = {m.account_id for m in self.members.values()}
        ids |= {s.issued_account_id for s in self.sites.values()}
        ids |= {s.redeemed_account_id for s in self.sites.values()}
        ids.discard(None)
        self.accounts: dict[int, _Account] = {}
        # Holds past their expiry no longer count: released first, as the ledger releases
        # them under its locks before it checks (the row engine's checks see them gone);
        # the accounts are then read again.
        if self._read_accounts(ids):
            _accounts.lock_releasing_holds(self.conn, ids, self.act.tx.clock())
            self.accounts = {}
            self._read_accounts(ids)

    def _read_accounts(self, ids: Iterable[int | None]) -> bool:
        """Read the accounts not read yet; whether a hold on one of them has expired."""
        # None: an institution's issue account (it issues nothing); _chunks leaves it out.
        cols = accounts.c
        now = self.act.tx.clock()
        due = False
        for chunk in self._chunks(i for i in ids if i not in self.accounts):
            for *r, expiry in self.conn.execute(
                select(
                    cols.id,
                    cols.code,
                    cols.status,
                    cols.floor_minutes,
                    cols.ceiling_minutes,
                    cols.posted_minutes,
                    cols.held_out_minutes,
                    cols.held_in_minutes,
                    cols.next_hold_expiry_at,
                ).where(self._in(cols.id, chunk))
            ).all():
                self.accounts[r[0]] = _Account(*r)
                due = due or (expiry is not None and expiry <= now)
        return due

    def _load_keys(self) -> None:
        self.stored: dict[str, dict[str, Row[Any]]] = {"service": {}, "redemption": {}, "gift": {}}
        tables = {"service": services, "redemption": redemptions, "gift": gifts}
        for kind, table in tables.items():
            keys = {row.key for row in self.rows if row.kind == kind}
            for chunk in self._chunks(keys):
                for r in self.conn.execute(
                    select(table).where(self._in(table.c.idempotency_key, chunk))
                ).all():
                    self.stored[kind][r.idempotency_key] = r
        self.stored_recipients: dict[int, tuple[int, ...]] = defaultdict(tuple)
        ids = [r.id for r in self.stored["service"].values()]
        for chunk in self._chunks(ids):
            found: dict[int, list[int]] = defaultdict(list)
            for r in self.conn.execute(
                select(service_recipients).where(self._in(service_recipients.c.service_id, chunk))
            ).all():
                found[r.service_id].append(r.member_id)
            for service_id, people in found.items():
                self.stored_recipients[service_id] = tuple(sorted(people))

    def _load_people_facts(self) -> None:
        """Birth dates of who may receive care, and relations between the batch's people."""
        cared = {
            row.recipients[0] if row.recipients else row.member
            for row in self.rows
            if row.kind == "redemption"
        }
        self.born: dict[int, date] = {}
        for chunk in self._chunks(cared):
            query = select(personal.c.member_id, personal.c.birth_date)
            for r in self.conn.execute(query.where(self._in(personal.c.member_id, chunk))).all():
                self.born[r.member_id] = r.birth_date
        pairs = {
            (row.recipients[0], row.member)
            for row in self.rows
            if row.kind == "redemption" and row.recipients
        }
        pairs |= {(row.member, row.recipients[0]) for row in self.rows if row.kind == "gift"}
        self.relations: dict[tuple[int, int], str] = {}
        for chunk in self._chunks(a for a, _ in pairs):
            query = select(relations).where(self._in(relations.c.member_id, chunk))
            for r in self.conn.execute(query).all():
                if (r.member_id, r.other_id) in pairs:
                    self.relations[(r.member_id, r.other_id)] = r.kind

    def _load_lots(self) -> None:
        """The open lots of every member the batch may take minutes from, locked, in the
        order they are consumed."""
        payers = {row.member for row in self.rows if row.kind != "service"}
        self.lots: dict[int, list[_Lot]] = defaultdict(list)
        for chunk in self._chunks(payers):
            query = (
                select(lots)
                .where(self._in(lots.c.member_id, chunk), is_open(lots))
                .order_by(lots.c.member_id, lots.c.earned_on, lots.c.id)
                .with_for_update()
            )
            for r in self.conn.execute(query).all():
                self.lots[r.member_id].append(
                    _Lot(
                        member_id=r.member_id,
                        minutes=r.minutes,
                        remaining=r.remaining_minutes,
                        origin_site_id=r.origin_site_id,
                        earned_on=r.earned_on,
                        expires_on=r.expires_on,
                        seq=r.id,
                        id=r.id,
                        stored_remaining=r.remaining_minutes,
                    )
                )

    def _load_services(self) -> None:
        """The volunteers' pending and confirmed services in the batch's time span."""
        spans = [
            (row.started_at, row.ended_at)
            for row in self.rows
            if row.kind == "service" and row.ended_at is not None
        ]
        self.busy: dict[int, list[tuple[datetime, datetime, int]]] = defaultdict(list)
        if not spans:
            return
        start = min(s for s, _ in spans)
        end = max(e for _, e in spans)
        volunteers = {row.member for row in self.rows if row.kind == "service"}
        for chunk in self._chunks(volunteers):
            c = services.c
            query = (
                select(c.volunteer_id, c.started_at, c.ended_at, c.id)
                .where(
                    self._in(c.volunteer_id, chunk),
                    c.status.in_(("pending", "confirmed")),
                    c.started_at < end,
                    c.ended_at > start,
                )
                .order_by(c.id)
            )
            for r in self.conn.execute(query).all():
                self.busy[r.volunteer_id].append((r.started_at, r.ended_at, r.id))

    def _load_given(self) -> None:
        """Gifts and vouchers out of the batch's givers in the years its gifts fall in,
        when a policy limits them."""
        self.given: dict[int, list[tuple[datetime, int]]] = defaultdict(list)
        dated = [row for row in self.rows if row.kind == "gift"]
        limited = [r for r in dated if self.policy_at(r.started_at)[1].gift_yearly_limit_minutes]
        if not limited:
            return
        years = [
            _gifts.calendar_year(r.started_at, self.policy_at(r.started_at)[1]) for r in limited
        ]
        start, end = min(y[0] for y in years), max(y[1] for y in years)
        for chunk in self._chunks(r.member for r in limited):
            for giver, when, minutes in self.conn.execute(
                select(gifts.c.giver_id, gifts.c.occurred_at, gifts.c.minutes).where(
                    self._in(gifts.c.giver_id, chunk),
                    gifts.c.occurred_at >= start,
                    gifts.c.occurred_at < end,
                )
            ).all():
                self.given[giver].append((when, minutes))
            v = vouchers.c
            for giver, when, minutes in self.conn.execute(
                select(v.member_id, v.created_at, v.minutes).where(
                    self._in(v.member_id, chunk),
                    v.direction == "out",
                    v.status != "refused",
                    v.created_at >= start,
                    v.created_at < end,
                )
            ).all():
                self.given[giver].append((when, minutes))

    # --- helpers of judgment ------------------------------------------------------------------

    def policy_at(self, when: datetime) -> tuple[int, Policy]:
        """The version in force at ``when`` (version 1 before the first took effect)."""
        index = bisect.bisect_right(self._policy_starts, when)
        _, version, policy = self.policies[index - 1] if index else self.policies[0]
        return version, policy

    def site(self, code: str) -> Row[Any]:
        found = self.sites.get(code)
        if found is None:
            raise _Refused(errors.BankObjectNotFoundError("site", code))
        return found

    def authorize(self, operator: str, role: Role, site: Row[Any]) -> None:
        """The row engine's permission check, with the operator and the site's region path
        read once per batch."""
        slot = (operator, role, site.id)
        if slot not in self._grants:
            try:
                permit(self._actor(operator), role, self._region_path(site.region_id), site=site)
                self._grants[slot] = None
            except errors.TimebankError as denied:
                self._grants[slot] = denied
        found = self._grants[slot]
        if found is not None:
            raise _Refused(found)

    def _actor(self, operator: str) -> Actor:
        if operator not in self._actors:
            self._actors[operator] = actor(self.conn, self.programme.id, operator)
        return self._actors[operator]

    def _region_path(self, region_id: int) -> str:
        if not self._paths:
            query = select(regions.c.id, regions.c.path).where(
                regions.c.programme_id == self.programme.id
            )
            self._paths = {r.id: r.path for r in self.conn.execute(query)}
        return self._paths[region_id]

    def member(self, member_id: int) -> Row[Any]:
        found = self.members.get(member_id)
        if found is None:
            raise _Refused(errors.BankObjectNotFoundError("member", member_id))
        return found

    def require_active(self, people: Sequence[int]) -> None:
        for member_id in people:
            row = self.members.get(member_id)
            if row is None or row.programme_id != self.programme.id:
                raise _Refused(errors.BankObjectNotFoundError("member", member_id))
            if row.status != "active":
                raise _Refused(errors.MemberStateError(f"member {member_id} is {row.status}"))

    def account(self, account_id: int) -> _Account:
        if account_id not in self.accounts:
            self._read_accounts([account_id])
        return self.accounts[account_id]

    def check_legs(self, legs: dict[int, int]) -> None:
        """Refuse what the ledger would refuse for these legs (account id -> minutes), leg
        by leg in the command's order, as the ledger checks them."""
        for account_id, amount in legs.items():
            refusal = self.account(account_id).refusal(amount)
            if refusal is not None:
                raise _Refused(refusal)

    def post(self, command: EntryCommand | TransferCommand, legs: dict[int, int]) -> int:
        """Move the accounts and queue the entry; returns its index in the batch."""
        for account_id, amount in legs.items():
            self.accounts[account_id].posted_minutes += amount
        self.writes.commands.append(command)
        return len(self.writes.commands) - 1

    def new_lot(self, lot: _Lot) -> None:
        self.writes.new_lots.append(lot)
        bisect.insort(self.lots[lot.member_id], lot, key=_Lot.order)

    def next_seq(self) -> int:
        self._lot_seq += 1
        return _NEW_LOT_SEQ + self._lot_seq

    def consume(self, member_id: int, minutes: int, entry: int) -> list[tuple[_Lot, int]]:
        """Take ``minutes`` first in, first out (the caller checked the balance)."""
        taken: list[tuple[_Lot, int]] = []
        left = minutes
        for lot in self.lots[member_id]:
            if left == 0:
                break
            if lot.remaining == 0:
                continue
            part = min(left, lot.remaining)
            lot.remaining -= part
            left -= part
            taken.append((lot, part))
            if lot.id is not None:
                self.writes.touched[lot.id] = lot
            self.writes.uses.append((entry, lot, part))
        if left:
            raise errors.IntegrityViolationError(
                f"member {member_id}'s lots hold {minutes - left} of the {minutes} minutes"
            )
        return taken

    # --- judging ------------------------------------------------------------------------------

    def judge(self, row: HistoryRow) -> bool:
        """Apply ``row`` to the batch's state; True if new, False if already stored.
        Raises _Refused, having changed nothing, if the row engine would refuse it."""
        if row.kind == "service":
            return self.service(row)
        if row.kind == "redemption":
            return self.redemption(row)
        return self.gift(row)

    def service_parties(self, row: HistoryRow) -> ServiceFacts | None:
        """A service's rules that depend on no earlier row and come before the overlap, in
        the engines' order; None for a replay."""
        site = self.site(row.site)
        self.authorize(self.operator, "recorder", site)
        assert row.ended_at is not None, "a service row has its end"
        stored = self.stored["service"].get(row.key)
        if stored is not None:
            self._service_replay(row, stored, site)
            return None
        version, policy = self.policy_at(row.started_at)
        with _refusing:
            _services.check_shape(
                site, row.started_at, row.ended_at, self.act.now, row.recipients, row.member
            )
            kind, raw, credited = _services.credit(
                policy, version, row.service_type, row.started_at, row.ended_at
            )
        volunteer = self.member(row.member)
        recipients = sorted(set(row.recipients))
        self._service_people(volunteer, recipients)
        return ServiceFacts(site, version, policy, kind, raw, credited, volunteer, recipients)

    def confirmable(self, site: Row[Any], policy: Policy) -> None:
        """The confirmations' rights (after the overlap, in the engines' order)."""
        if policy.confirmations_required == 2:
            self.authorize(self.operator, "recorder", site)
        self.authorize(self.confirmer, "confirmer", site)

    @staticmethod
    def file_minutes(row: HistoryRow, credited: int) -> None:
        """The file's minutes, when it gives them, against the credit (checked last)."""
        if row.minutes is not None and row.minutes != credited:
            raise _Refused(
                errors.InvalidInputError(
                    f"the service credits {credited} minutes, not the {row.minutes} of the file"
                )
            )

    def service(self, row: HistoryRow) -> bool:
        facts = self.service_parties(row)
        if facts is None:
            return False
        site, version, policy, kind, raw, credited, volunteer, recipients = facts
        self._overlap(row)
        self.confirmable(site, policy)
        split = self._deposit_split(site, volunteer, credited)
        self.file_minutes(row, credited)
        # Every check passed: from here on the row changes the batch's state.
        service_id = self._deposit(row, site, volunteer, policy, (credited, *split))
        self._service_rows(
            row,
            service_id,
            site,
            policy=policy,
            amounts=(version, raw, kind.weight_permille, credited),
            recipients=recipients,
        )
        return True

    def _service_replay(self, row: HistoryRow, stored: Row[Any], site: Row[Any]) -> bool:
        # In the row engine's order, so a conflict names the fields alike.
        wanted = {
            "volunteer_id": row.member,
            "service_type": row.service_type,
            "started_at": row.started_at,
            "ended_at": row.ended_at,
            "rating": None,
            "note": "",
            "site_id": site.id,
        }
        fields = [name for name, value in wanted.items() if getattr(stored, name) != value]
        if stored.programme_id != self.programme.id:
            fields.append("programme")
        if self.stored_recipients[stored.id] != tuple(sorted(set(row.recipients))):
            fields.append("recipient_ids")
        if fields:
            raise _Refused(errors.IdempotencyConflictError(row.key, fields))
        if stored.status == "rejected":
            raise _Refused(
                errors.ServiceStateError(
                    f"service {stored.id} with key {row.key!r} was rejected: {stored.reason}"
                )
            )
        if stored.status == "pending":
            raise _Refused(
                errors.ServiceStateError(
                    f"service {stored.id} with key {row.key!r} is pending: the bulk import "
                    "confirms no service recorded before it (confirm it, or import with "
                    "method='rows')"
                )
            )
        if row.minutes is not None and row.minutes != stored.credited_minutes:
            raise _Refused(
                errors.InvalidInputError(
                    f"the service credits {stored.credited_minutes} minutes, "
                    f"not the {row.minutes} of the file"
                )
            )
        return False

    def _service_people(self, volunteer: Row[Any], recipients: list[int]) -> None:
        self.require_active([volunteer.id, *recipients])
        with _refusing:
            _services.check_roles(volunteer, [self.members[m] for m in recipients])

    def _overlap(self, row: HistoryRow) -> None:
        assert row.ended_at is not None
        for start, end, other in self.busy[row.member]:
            if start < row.ended_at and end > row.started_at:
                raise _Refused(errors.OverlappingServiceError(row.member, other))

    def _deposit_split(
        self, site: Row[Any], volunteer: Row[Any], credited: int
    ) -> tuple[dict[int, int], int, int, int | None]:
        """The deposit's legs (account id -> minutes), minutes kept and diverted, and the
        pool's region: refused over the storage cap in force now unless it diverts."""
        account = self.account(volunteer.account_id)
        kept, excess = credited, 0
        cap = self.policy_now[1].storage_cap_minutes
        if cap is not None:
            room = max(cap - account.posted_minutes, 0)
            if self.policy_now[1].cap_excess == "refuse" and credited > room:
                raise _Refused(
                    errors.CapExceededError(
                        account.code, cap_minutes=cap, room_minutes=room, requested=credited
                    )
                )
            kept = min(credited, room)
            excess = credited - kept
        legs = {site.issued_account_id: -credited, volunteer.account_id: kept}
        region_id = None
        if excess:
            region_id = _pools.home_region_id(self.conn, volunteer)
            pool = self._pool_account(region_id)
            legs[pool] = legs.get(pool, 0) + excess
        legs = {k: v for k, v in legs.items() if v}
        self.check_legs(legs)
        return legs, kept, excess, region_id

    def _deposit(
        self,
        row: HistoryRow,
        site: Row[Any],
        volunteer: Row[Any],
        policy: Policy,
        split: tuple[int, dict[int, int], int, int, int | None],
    ) -> int:
        """Queue the deposit and its lot (or pool lot); returns the service id."""
        assert row.ended_at is not None
        credited, legs, kept, excess, region_id = split
        service_id = self._reserve_service_id()
        fields: dict[str, Any] = {
            "idempotency_key": f"service-{service_id}-deposit",
            "code": "deposit",
            "operator": self.confirmer,
            "occurred_at": row.ended_at,
            "memo": f"service {service_id}: {row.service_type}",
            "metadata": {
                "service_id": service_id,
                "service_type": row.service_type,
                "raw_minutes": int((row.ended_at - row.started_at) / timedelta(minutes=1)),
                "weight_permille": policy.service_types[row.service_type].weight_permille,
                "credited_minutes": credited,
                "diverted_minutes": excess,
            },
        }
        command: EntryCommand | TransferCommand
        if not excess:  # the common case: the two-posting command validates quicker
            command = TransferCommand(
                debit=self.accounts[site.issued_account_id].code,
                credit=self.accounts[volunteer.account_id].code,
                amount_minutes=credited,
                **fields,
            )
        else:
            command = EntryCommand(
                postings=tuple(
                    PostingSpec(account=self.accounts[a].code, amount_minutes=m)
                    for a, m in legs.items()
                ),
                **fields,
            )
        entry = self.post(command, legs)
        self._deposit_lots(row, site, volunteer, policy, (kept, excess, region_id, entry))
        self._last_entry = entry
        return service_id

    def _pool_account(self, region_id: int) -> int:
        """The account of a region's pool (read once a batch per region)."""
        if region_id not in self._pool_accounts:
            self._pool_accounts[region_id] = self.conn.execute(
                select(regions.c.pool_account_id).where(regions.c.id == region_id)
            ).scalar_one()
        account_id = self._pool_accounts[region_id]
        self.account(account_id)
        return account_id

    def _deposit_lots(
        self,
        row: HistoryRow,
        site: Row[Any],
        volunteer: Row[Any],
        policy: Policy,
        split: tuple[int, int, int | None, int],
    ) -> None:
        assert row.ended_at is not None
        kept, excess, region_id, entry = split
        earned_on = policy.local_date(row.ended_at)
        if kept:
            expires = None
            if policy.lot_expiry_days is not None:
                expires = earned_on + timedelta(days=policy.lot_expiry_days)
            self.new_lot(
                _Lot(
                    member_id=volunteer.id,
                    minutes=kept,
                    remaining=kept,
                    origin_site_id=site.id,
                    earned_on=earned_on,
                    expires_on=expires,
                    seq=self.next_seq(),
                    source_entry=entry,
                )
            )
        if region_id is not None:
            self.writes.pool_lots.append((region_id, excess, site.id, earned_on, entry))

    def _service_rows(
        self,
        row: HistoryRow,
        service_id: int,
        site: Row[Any],
        *,
        policy: Policy,
        amounts: tuple[int, int, int, int],
        recipients: list[int],
    ) -> None:
        assert row.ended_at is not None
        version, raw, weight, credited = amounts
        now = self.act.now
        self.writes.services.append(
            (
                service_id,
                self.programme.id,
                row.key,
                row.member,
                site.id,
                row.service_type,
                row.started_at,
                row.ended_at,
                raw,
                weight,
                credited,
                version,
                "",
                "confirmed",
                "",
                self.operator,
                now,
                now,
                self._last_entry,
            )
        )
        self.writes.recipients.extend((service_id, m) for m in recipients)
        if policy.confirmations_required == 2:
            self.writes.confirmations.append((service_id, "recipient", f"member:{recipients[0]}"))
        self.writes.confirmations.append((service_id, "operator", self.confirmer))
        self.busy[row.member].append((row.started_at, row.ended_at, service_id))

    def _reserve_service_id(self) -> int:
        if self._service_ids is None:
            count = sum(1 for row in self.rows if row.kind == "service")
            self._service_ids = reserve_ids(self.conn, services, count)[::-1]
        return self._service_ids.pop()

    def redemption_parties(
        self, row: HistoryRow
    ) -> tuple[Row[Any], Row[Any], Row[Any]] | None:
        """A redemption's rules that depend on no earlier row, in the engines' order: its
        site, member and recipient, or None for a replay."""
        site = self.site(row.site)
        self.authorize(self.operator, "redeemer", site)
        member = self.member(row.member)
        recipient_id = row.recipients[0] if row.recipients else row.member
        stored = self.stored["redemption"].get(row.key)
        if stored is not None:
            # In the row engine's order, so a conflict names the fields alike.
            wanted = {
                "member_id": row.member,
                "recipient_id": recipient_id,
                "service_type": row.service_type,
                "minutes": row.minutes,
                "occurred_at": row.started_at,
                "site_id": site.id,
            }
            fields = [n for n, v in wanted.items() if getattr(stored, n) != v]
            if stored.programme_id != self.programme.id:
                fields.append("programme")
            if fields:
                raise _Refused(errors.IdempotencyConflictError(row.key, fields))
            return None
        if row.started_at > self.act.now:
            raise _Refused(
                errors.InvalidInputError("a redemption is recorded when the care was given")
            )
        _, policy = self.policy_at(row.started_at)
        if row.service_type not in policy.service_types:
            raise _Refused(
                errors.PolicyViolationError(
                    f"service type {row.service_type!r} is not in the catalogue"
                )
            )
        recipient = self.member(recipient_id)
        self._redemption_people(member, recipient, policy, row.started_at)
        return site, member, recipient

    def redemption(self, row: HistoryRow) -> bool:
        parties = self.redemption_parties(row)
        if parties is None:
            return False
        site, member, recipient = parties
        assert row.minutes is not None
        legs = {member.account_id: -row.minutes, site.redeemed_account_id: row.minutes}
        self._pay(row, legs)
        entry = self.post(
            TransferCommand(
                idempotency_key=f"redemption:{row.key}",
                debit=self.accounts[member.account_id].code,
                credit=self.accounts[site.redeemed_account_id].code,
                amount_minutes=row.minutes,
                code="redemption",
                operator=self.operator,
                occurred_at=row.started_at,
                memo=f"{row.service_type} for member {recipient.id}",
                metadata={"recipient_id": recipient.id, "service_type": row.service_type},
            ),
            legs,
        )
        self.consume(member.id, row.minutes, entry)
        self.writes.redemptions.append(
            (
                self.programme.id,
                row.key,
                member.id,
                recipient.id,
                site.id,
                row.service_type,
                row.minutes,
                row.started_at,
                self.operator,
                entry,
            )
        )
        return True

    def _pay(self, row: HistoryRow, legs: dict[int, int]) -> None:
        """The ledger's checks of a payment, a shortfall worded as the row engine words it."""
        try:
            self.check_legs(legs)
        except _Refused:
            payer = self.accounts[self.members[row.member].account_id]
            shortfall = payer.refusal(-(row.minutes or 0))
            if isinstance(shortfall, errors.LimitExceededError):
                raise _Refused(short_of_minutes(row, shortfall.available_minutes)) from None
            raise

    def _redemption_people(
        self, member: Row[Any], recipient: Row[Any], policy: Policy, when: datetime
    ) -> None:
        with _refusing:
            _redeem.judge_people(
                self.programme.id,
                member,
                recipient,
                policy,
                when,
                relation=lambda: self.relations.get((recipient.id, member.id)),
                born=lambda: self.born[recipient.id],
            )

    def gift_parties(self, row: HistoryRow) -> tuple[Row[Any], Row[Any], Policy] | None:
        """A gift's rules that depend on no earlier row, in the engines' order: its giver,
        receiver and policy, or None for a replay."""
        giver = self.member(row.member)
        if giver.programme_id != self.programme.id:
            raise _Refused(errors.BankObjectNotFoundError("member", giver.id))
        home = self._home_site(giver)
        self.authorize(self.operator, "recorder", home)
        receiver_id = row.recipients[0]
        stored = self.stored["gift"].get(row.key)
        if stored is not None:
            wanted = {"giver_id": row.member, "receiver_id": receiver_id, "minutes": row.minutes}
            fields = _gifts.replay_differences(stored, wanted, row.started_at)
            if fields:
                raise _Refused(errors.IdempotencyConflictError(row.key, fields))
            return None
        if row.started_at > self.act.now:
            raise _Refused(errors.InvalidInputError("a gift is recorded when it was given"))
        receiver = self.member(receiver_id)
        _, policy = self.policy_at(row.started_at)
        self._gift_people(giver, receiver, policy)
        return giver, receiver, policy

    def gift(self, row: HistoryRow) -> bool:
        parties = self.gift_parties(row)
        if parties is None:
            return False
        giver, receiver, policy = parties
        assert row.minutes is not None
        self._yearly_limit(row, policy)
        self._room(receiver, row.minutes, self.policy_now[1])
        legs = {giver.account_id: -row.minutes, receiver.account_id: row.minutes}
        self._pay(row, legs)
        entry = self.post(
            TransferCommand(
                idempotency_key=f"gift:{row.key}",
                debit=self.accounts[giver.account_id].code,
                credit=self.accounts[receiver.account_id].code,
                amount_minutes=row.minutes,
                code="gift",
                operator=self.operator,
                occurred_at=row.started_at,
                memo=f"gift from member {giver.id} to member {receiver.id}",
            ),
            legs,
        )
        for lot, part in self.consume(giver.id, row.minutes, entry):
            self.new_lot(
                _Lot(
                    member_id=receiver.id,
                    minutes=part,
                    remaining=part,
                    origin_site_id=lot.origin_site_id,
                    earned_on=lot.earned_on,
                    expires_on=lot.expires_on,
                    seq=self.next_seq(),
                    source_entry=entry,
                    parent=lot,
                )
            )
        self.given[giver.id].append((row.started_at, row.minutes))
        self.writes.gifts.append(
            (
                self.programme.id,
                row.key,
                giver.id,
                receiver.id,
                row.minutes,
                row.started_at,
                self.operator,
                entry,
            )
        )
        return True

    def _home_site(self, member: Row[Any]) -> Row[Any]:
        """A giver's home station, read up front by :meth:`_load_homes` (every member has
        one: the column is required and a foreign key)."""
        return self._homes[member.home_site_id]

    def _gift_people(self, giver: Row[Any], receiver: Row[Any], policy: Policy) -> None:
        with _refusing:
            _gifts.judge(
                self.programme.id,
                giver,
                receiver,
                policy,
                lambda: self.relations.get((giver.id, receiver.id)),
            )

    def _yearly_limit(self, row: HistoryRow, policy: Policy) -> None:
        limit = policy.gift_yearly_limit_minutes
        if limit is None:
            return
        start, end = _gifts.calendar_year(row.started_at, policy)
        given = sum(m for when, m in self.given[row.member] if start <= when < end)
        assert row.minutes is not None
        with _refusing:
            _gifts.within_limit(row.member, given, row.minutes, limit)

    def _room(self, receiver: Row[Any], minutes: int, policy: Policy) -> None:
        cap = policy.storage_cap_minutes
        if cap is None:
            return
        account = self.account(receiver.account_id)
        room = max(cap - account.posted_minutes, 0)
        if minutes > room:
            raise _Refused(
                errors.CapExceededError(
                    account.code, cap_minutes=cap, room_minutes=room, requested=minutes
                )
            )

    # --- writing ------------------------------------------------------------------------------

    def write(self) -> None:
        """Write what the accepted rows make: entries first (everything else refers to them)."""
        w = self.writes
        entry_ids: list[int] = []
        for start in range(0, len(w.commands), ENTRIES_PER_BATCH_MAX):
            receipt = self.act.tx.post_many(w.commands[start : start + ENTRIES_PER_BATCH_MAX])
            entry_ids.extend(receipt.entry_ids)
        conn = self.conn
        _INSERTS["services"].execute(conn, [(*r[:-1], entry_ids[r[-1]]) for r in w.services])
        _INSERTS["recipients"].execute(conn, w.recipients)
        now = self.act.now
        _INSERTS["confirmations"].execute(conn, [(*r, now) for r in w.confirmations])
        self._write_lots(entry_ids)
        _INSERTS["pool_lots"].execute(
            conn,
            [(region, m, m, site, day, entry_ids[e]) for region, m, site, day, e in w.pool_lots],
        )
        for name, queued in (("redemptions", w.redemptions), ("gifts", w.gifts)):
            _INSERTS[name].execute(conn, [(*r[:-1], entry_ids[r[-1]]) for r in queued])
        if w.redemptions:
            redeemed = [entry_ids[r[-1]] for r in w.redemptions]
            _redeem.record_origins(conn, in_values(conn, redemptions.c.entry_id, redeemed))

    def _write_lots(self, entry_ids: list[int]) -> None:
        w = self.writes
        if w.new_lots:
            ids = reserve_ids(self.conn, lots, len(w.new_lots))
            for lot, lot_id in zip(w.new_lots, ids, strict=True):
                lot.id = lot_id
        # In creation order: a gift's lots come after the lots they were made from.
        _INSERTS["lots"].execute(
            self.conn,
            [
                (
                    lot.id,
                    lot.member_id,
                    lot.minutes,
                    lot.remaining,
                    lot.origin_site_id,
                    lot.earned_on,
                    lot.expires_on,
                    entry_ids[lot.source_entry or 0],
                    None if lot.parent is None else lot.parent.id,
                )
                for lot in w.new_lots
            ],
        )
        changed = [
            (lot.id, lot.remaining)
            for lot in w.touched.values()
            if lot.remaining != lot.stored_remaining
        ]
        _LOTS_LEFT.execute(self.conn, changed)
        _INSERTS["uses"].execute(self.conn, [(entry_ids[e], lot.id, m) for e, lot, m in w.uses])


def apply_batch(
    act: Act,
    programme: str,
    items: Sequence[Item],
    operator: str,
    confirmer: str,
    *,
    skip_rejected: bool = False,
) -> BatchOutcome:
    """Judge a batch's rows in file order and write the accepted ones in bulk, in the act's
    transaction. A rejected row leaves no trace and the rows after it are judged without
    it; with any row rejected, BatchRejected rolls the batch back, unless
    ``skip_rejected``, which writes the others. Errors of the database propagate."""
    # Everything built lives until the batch is written; and the batch's statements, each
    # run once a batch, read tables the import is growing (no plan made when they were small).
    with _collector.paused(), planned_each_time(act.conn):
        rows = [item for item in items if isinstance(item, HistoryRow)]
        rejected = [item for item in items if isinstance(item, RejectedRow)]
        applied = present = 0
        batch = _Batch(act, programme, rows, operator, confirmer)
        for row in rows:
            try:
                fresh = batch.judge(row)
            except _Refused as refusal:
                rejected.append(RejectedRow(line=row.line, key=row.key, reason=refusal.reason))
                continue
            applied += fresh
            present += not fresh
        rejected.sort(key=lambda r: r.line)
        outcome = BatchOutcome(applied, present, tuple(rejected))
        if rejected and not skip_rejected:
            raise BatchRejected(outcome)
        batch.write()
        return outcome
