"""The time bank against an in-memory reference model, step by step (Hypothesis stateful).

The world is ``tests.bankworld``'s programme "langfang" (its policy: a service is at most
480 minutes, one confirmation deposits, pending services are confirmed 24 hours after they
ended). Every example first draws a policy variant (``VARIANTS``): the world's, or a second
version in force from the start with a storage cap whose excess goes to the region's pool or
is refused, and lots that expire (into the pool, or to the programme's expired account).

The model keeps members (role, status, reason, birth date, beneficiary), their relations,
services (content, status, confirming parties, minutes kept and diverted to the pool), the
lots of members and of region pools (made by deposits, gifts, donations, grants, estates and
expiry, consumed first in, first out), bookings (their minutes held until completed,
cancelled or expired), redemptions, gifts, donations and grants; balances follow from the
lots, free minutes from the live bookings. Before every step it predicts success or the
refusal: the set of error classes that apply (the library may check in any order, so any one
of them is accepted; when one applies, exactly that one). A refusal must leave every row as
it was (``tests.dbdump.dump`` before and after); a replay or a no-op every row of the
library's tables (read through its metadata: cheaper, and they are frequent). After every
step the invariants compare balances, held minutes, lots, pools, bookings, services and the
trial balance with the model.

Time is the injected ``tests.clocks.Clock``, which the machine advances. Every example starts
from the world ``bankworld.build`` makes: on SQLite a copy of one file built per process, on
PostgreSQL and MariaDB built again in a wiped database.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta, timezone
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol, TypeVar

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)
from sqlalchemy.pool import NullPool

from tests import bankworld
from tests.bankworld import POLICY, PROGRAMME, World
from tests.clocks import Clock
from tests.dbdump import dump
from timebank import Ledger
from timebank.bank import (
    BookingView,
    GiftView,
    MemberView,
    Policy,
    PoolMoveView,
    RedemptionView,
    ServiceView,
    TimeBank,
    credited_minutes,
)
from timebank.bank.schema import pool_lots as pool_lots_table
from timebank.bank.schema import regions as regions_table
from timebank.bank.schema import sites as sites_table
from timebank.errors import (
    AccountStateError,
    CapExceededError,
    ExistsError,
    IdempotencyConflictError,
    InvalidAmountError,
    InvalidInputError,
    LimitExceededError,
    MemberStateError,
    OverlappingServiceError,
    PermissionDeniedError,
    PolicyViolationError,
    ServiceStateError,
    TimebankError,
)
from timebank.schema import metadata as tables_metadata

T = TypeVar("T")
D = TypeVar("D")
Snapshot = dict[str, list[tuple[Any, ...]]]
Refusal = frozenset[type[TimebankError]]
PoolLotRow = tuple[int, str, int, int, int, str, date]

#: The stations services are recorded at, with their recorder and their confirmer.
STATIONS = ("xinyuan-sw", "xinyuan-vol")
RECORDER = {"xinyuan-sw": "rec-sw", "xinyuan-vol": "rec-vol"}
CONFIRMER = {"xinyuan-sw": "conf-sw", "xinyuan-vol": "rec-vol"}
ADMIN = "gy-admin"
SERVICE_TYPES = tuple(sorted(POLICY.service_types))
MAX_MINUTES = POLICY.service_minutes_max
AUTO_CONFIRM = timedelta(minutes=POLICY.auto_confirm_after_minutes or 0)
#: People the machine registers (again and again, so that re-registration happens).
NEW_PEOPLE = ("chen", "sun", "zhou", "wu", "qian")
ACTS_AS = ("both", "both", "recipient", "volunteer")
REASONS = ("no-show", "duplicate record")
STATUS_REASONS = ("", "suspected fraud", "moved away")
DEATH_REASONS = ("", "passed away")
#: Station software in China passes Beijing time; the bank stores UTC.
ZONES = (UTC, timezone(timedelta(hours=8)))
LIVE = ("pending", "confirmed")
#: Where minutes are redeemed and bookings made, and who redeems there (a region
#: administrator at a station); ``STRANGER`` may not.
REDEEMERS = {"sunrise": "sunrise-op", "xinyuan-sw": ADMIN, "xinyuan-vol": ADMIN}
STRANGER = {"sunrise": "rec-sw", "xinyuan-sw": "sunrise-op", "xinyuan-vol": "sunrise-op"}
#: Birth dates: the world's members are born in 1960 (grandma in 1938); the machine's people
#: in 1950, except one too young to redeem.
BORN = {"grandma": date(1938, 3, 3), "qian": date(2000, 1, 1)}
WORLD_BORN = date(1960, 5, 1)
NEW_BORN = date(1950, 1, 1)
#: What one member is to another (``relate``); gifts go to spouses, parents and children.
RELATIONS = ("parent", "child", "spouse", "friend")
INVERSE = {"parent": "child", "child": "parent", "spouse": "spouse", "friend": "friend"}
#: The regions, each with its pool. Everybody lives at Xinyuan's stations, so under the
#: first four; "gy-admin" administers Guangyang and Xinyuan, "admin" every region.
REGIONS = ("hebei", "langfang-city", "guangyang", "xinyuan", "anci")
ABOVE = {"xinyuan": frozenset({"hebei", "langfang-city", "guangyang", "xinyuan"})}
GRANTERS = {"admin": frozenset(REGIONS), ADMIN: frozenset({"guangyang", "xinyuan"})}
#: The world's grant rule: elders of 80 and over (grandma alone).
GRANT_MIN_AGE = 80
#: A booking without ``expires_at`` lapses this long after its scheduled time.
BOOKING_GRACE = timedelta(days=1)
#: The policy variants an example runs under (the first is the world's own policy).
VARIANTS: dict[str, dict[str, Any]] = {
    "world": {},
    "cap, excess to the pool": {
        "storage_cap_minutes": 150,
        "cap_excess": "pool",
        "lot_expiry_days": 1,
        "expired_to": "pool",
    },
    "cap refuses": {
        "storage_cap_minutes": 150,
        "cap_excess": "refuse",
        "lot_expiry_days": 1,
        "expired_to": "programme",
    },
}


# --- the reference model -----------------------------------------------------------------------


@dataclass
class MMember:
    id: int
    acts_as: str
    home_site: str
    born: date
    status: str = "active"
    reason: str = ""

    def age(self, on: date) -> int:
        return on.year - self.born.year - ((on.month, on.day) < (self.born.month, self.born.day))


@dataclass
class MLot:
    id: int
    member_id: int
    source_entry_id: int
    minutes: int
    remaining: int
    origin_site: str
    earned_on: date
    expires_on: date | None = None

    def row(self) -> tuple[int, int, int, int, str, date, date | None]:
        return (
            self.id,
            self.source_entry_id,
            self.minutes,
            self.remaining,
            self.origin_site,
            self.earned_on,
            self.expires_on,
        )


@dataclass
class MPoolLot:
    id: int
    region: str
    source_entry_id: int
    minutes: int
    remaining: int
    origin_site: str
    earned_on: date

    def row(self) -> PoolLotRow:
        return (
            self.id,
            self.region,
            self.source_entry_id,
            self.minutes,
            self.remaining,
            self.origin_site,
            self.earned_on,
        )


class _Lot(Protocol):
    id: int
    remaining: int
    earned_on: date


@dataclass
class MBooking:
    id: int
    key: str
    member_id: int
    recipient_id: int
    site: str
    service_type: str
    minutes: int
    expires_at: datetime
    #: "booked", "completed" or "cancelled"; a booked one past its expiry is "expired".
    state: str = "booked"
    reason: str = ""
    redeemed: int = 0

    def status(self, now: datetime) -> str:
        if self.state == "booked" and self.expires_at <= now:
            return "expired"
        return self.state


@dataclass(frozen=True)
class Spending:
    """A redemption, gift, booking, donation or grant that succeeded: the ``TimeBank``
    method, its key and arguments, and the view it returned."""

    method: str
    key: str
    kwargs: dict[str, Any]
    view: RedemptionView | GiftView | BookingView | PoolMoveView


@dataclass(frozen=True)
class Recording:
    """The arguments of one ``record_service`` call."""

    key: str
    volunteer_id: int
    recipient_ids: tuple[int, ...]
    site: str
    service_type: str
    started_at: datetime
    ended_at: datetime
    rating: int | None = None
    note: str = ""

    @property
    def raw_minutes(self) -> int:
        return int((self.ended_at - self.started_at) / timedelta(minutes=1))

    def call(self, bank: TimeBank) -> Callable[[], ServiceView]:
        def run() -> ServiceView:
            return bank.record_service(
                self.key,
                programme=PROGRAMME,
                volunteer_id=self.volunteer_id,
                recipient_ids=list(self.recipient_ids),
                site=self.site,
                service_type=self.service_type,
                started_at=self.started_at,
                ended_at=self.ended_at,
                operator=RECORDER[self.site],
                rating=self.rating,
                note=self.note,
            )

        return run


@dataclass
class MService:
    id: int
    recording: Recording
    weight_permille: int
    policy_version: int
    status: str = "pending"
    reason: str = ""
    #: party ("operator", "recipient", "automatic") -> who confirmed, as the view shows it.
    parties: dict[str, str] = field(default_factory=dict)
    deposit_entry_id: int | None = None
    #: Of the credited minutes, those the volunteer's lot got and those diverted to the pool
    #: of their home region (over the storage cap), with the lots they made.
    kept: int = 0
    diverted: int = 0
    lot_id: int | None = None
    pool_lot_id: int | None = None
    pool_region: str = ""

    @property
    def volunteer_id(self) -> int:
        return self.recording.volunteer_id

    @property
    def site(self) -> str:
        return self.recording.site

    @property
    def credited(self) -> int:
        return self.recording.raw_minutes * self.weight_permille // 1000

    def overlaps(self, start: datetime, end: datetime) -> bool:
        return self.recording.started_at < end and self.recording.ended_at > start


def take(
    lots: Sequence[_Lot], minutes: int, first_lot_id: int | None = None
) -> list[tuple[int, int]]:
    """Take minutes from ``lots`` (in consumption order) first in, first out, ``first_lot_id``
    first: (lot id, minutes) pairs."""
    ordered = sorted(lots, key=lambda lot: lot.id != first_lot_id)
    taken: list[tuple[int, int]] = []
    left = minutes
    for lot in ordered:
        if left == 0:
            break
        part = min(left, lot.remaining)
        lot.remaining -= part
        taken.append((lot.id, part))
        left -= part
    assert left == 0, "the model consumed more than the lots hold"
    return taken


def share_out(
    taken: list[tuple[int, int]], shares: list[tuple[D, int]]
) -> list[tuple[D, int, int]]:
    """Hand the slices ``taken`` out in order to ``shares`` (destination, minutes), as the
    library moves lots: (destination, source lot id, minutes) per new lot."""
    slices = iter(taken)
    out: list[tuple[D, int, int]] = []
    lot_id, left = 0, 0
    for destination, minutes in shares:
        owed = minutes
        while owed:
            if left == 0:
                lot_id, left = next(slices)
            part = min(owed, left)
            out.append((destination, lot_id, part))
            owed -= part
            left -= part
    return out


class Model:
    def __init__(self) -> None:
        self.members: dict[int, MMember] = {}
        self.by_name: dict[str, int] = {}
        self.services: dict[int, MService] = {}
        self.lots: dict[int, MLot] = {}
        self.pool_lots: dict[int, MPoolLot] = {}
        #: (member, other) -> what the member is to the other.
        self.relations: dict[tuple[int, int], str] = {}
        #: member -> whom their minutes pass to on their death.
        self.beneficiaries: dict[int, int] = {}
        self.bookings: dict[int, MBooking] = {}
        self.redeemed: dict[str, int] = dict.fromkeys(REDEEMERS, 0)
        #: Minutes in the programme's expired account.
        self.expired = 0
        #: Successful redemptions, gifts, bookings, donations and grants by key.
        self.done: dict[str, Spending] = {}

    def balance(self, member_id: int) -> int:
        return sum(lot.remaining for lot in self.lots.values() if lot.member_id == member_id)

    def held(self, member_id: int, now: datetime) -> int:
        """Minutes the member's live bookings hold."""
        return sum(
            b.minutes
            for b in self.bookings.values()
            if b.member_id == member_id and b.status(now) == "booked"
        )

    def free(self, member_id: int, now: datetime) -> int:
        return self.balance(member_id) - self.held(member_id, now)

    def room(self, member_id: int, cap: int | None) -> int | None:
        """Minutes the member may still receive under the storage cap (None: no cap)."""
        return None if cap is None else max(cap - self.balance(member_id), 0)

    def pool_balance(self, region: str) -> int:
        return sum(lot.remaining for lot in self.pool_lots.values() if lot.region == region)

    def member_lots(self, member_id: int, *, open_only: bool = False) -> list[MLot]:
        """The member's lots in consumption order: earned first, then created first."""
        return sorted(
            (
                lot
                for lot in self.lots.values()
                if lot.member_id == member_id and (lot.remaining > 0 or not open_only)
            ),
            key=lambda lot: (lot.earned_on, lot.id),
        )

    def region_lots(self, region: str) -> list[MPoolLot]:
        """The pool's open lots in consumption order."""
        return sorted(
            (lot for lot in self.pool_lots.values() if lot.region == region and lot.remaining),
            key=lambda lot: (lot.earned_on, lot.id),
        )

    def consume(
        self, member_id: int, minutes: int, first_lot_id: int | None = None
    ) -> list[tuple[int, int]]:
        """Take minutes first in, first out (``first_lot_id`` first): (lot id, minutes)."""
        return take(self.member_lots(member_id, open_only=True), minutes, first_lot_id)

    def consume_pool(
        self, region: str, minutes: int, first_lot_id: int | None = None
    ) -> list[tuple[int, int]]:
        return take(self.region_lots(region), minutes, first_lot_id)

    def issued(self, site: str) -> int:
        return -sum(
            s.credited for s in self.services.values() if s.site == site and s.status == "confirmed"
        )

    def live_overlaps(self, volunteer_id: int, start: datetime, end: datetime) -> list[int]:
        return [
            s.id
            for s in self.services.values()
            if s.volunteer_id == volunteer_id and s.status in LIVE and s.overlaps(start, end)
        ]

    def record_refusals(self, rec: Recording, now: datetime) -> Refusal:
        """Every refusal that applies to a new recording (empty: it is recorded)."""
        found: set[type[TimebankError]] = set()
        if rec.ended_at > now:
            found.add(InvalidInputError)
        if rec.volunteer_id in rec.recipient_ids:
            found.add(InvalidInputError)
        if rec.raw_minutes > MAX_MINUTES:
            found.add(PolicyViolationError)
        people = [self.members[m] for m in (rec.volunteer_id, *rec.recipient_ids)]
        if any(p.status != "active" for p in people):
            found.add(MemberStateError)
        if self.members[rec.volunteer_id].acts_as == "recipient":
            found.add(MemberStateError)
        if any(self.members[m].acts_as == "volunteer" for m in rec.recipient_ids):
            found.add(MemberStateError)
        if self.live_overlaps(rec.volunteer_id, rec.started_at, rec.ended_at):
            found.add(OverlappingServiceError)
        return frozenset(found)


# --- the machine -------------------------------------------------------------------------------


_SQLITE_TEMPLATE: dict[str, Path] = {}
_TEMPLATE_MEMBERS: dict[str, int] = {}


class BankMachine(RuleBasedStateMachine):
    """Runs on a new SQLite file per example; subclasses choose another database."""

    def __init__(self) -> None:
        super().__init__()
        self._cleanup = ExitStack()
        self.clock = Clock()
        self.world: World = self.build_world()
        self._cleanup.callback(self.world.bank.dispose)
        self.bank = self.world.bank
        self.model = Model()
        self.keys = 0
        # The database as the last dump saw it, while no write has succeeded since.
        self._snapshot: Snapshot | None = None
        #: The policy versions: (in force from, policy).
        self.policies: list[tuple[datetime, Policy]] = [(datetime.min.replace(tzinfo=UTC), POLICY)]
        site_views = {s: self.bank.site(PROGRAMME, s) for s in REDEEMERS}
        self.issued_accounts = {s: site_views[s].issued_account for s in STATIONS}
        self.redeemed_accounts = {s: view.redeemed_account for s, view in site_views.items()}
        self.home_region = {s: site_views[s].region for s in STATIONS}
        self.pool_accounts = {r: self.bank.region(PROGRAMME, r).pool_account for r in REGIONS}
        self.expired_account = self.bank.programme(PROGRAMME).expired_account
        for name, member_id in self.world.members.items():
            view = self.bank.member(member_id)
            self.model.members[member_id] = MMember(
                member_id, view.acts_as, view.home_site, BORN.get(name, WORLD_BORN)
            )
            self.model.by_name[name] = member_id

    def build_world(self) -> World:
        """A copy of a SQLite file ``bankworld.build`` made once per process: building it
        (migrations included) for every example would cost ten times as much. The copy is
        the world as built at ``clocks.T0``, where this machine's clock starts too."""
        if "path" not in _SQLITE_TEMPLATE:
            template_dir = Path(tempfile.mkdtemp(prefix="tb_bank_state_template_"))
            atexit.register(shutil.rmtree, template_dir, ignore_errors=True)
            template = template_dir / "template.db"
            built = bankworld.build(f"sqlite:///{template}", Clock())
            built.bank.dispose()
            _SQLITE_TEMPLATE["path"] = template
            _TEMPLATE_MEMBERS.update(built.members)
        directory = Path(tempfile.mkdtemp(prefix="tb_bank_state_"))
        self._cleanup.callback(shutil.rmtree, directory, ignore_errors=True)
        shutil.copyfile(_SQLITE_TEMPLATE["path"], directory / "bank.db")
        ledger = Ledger.open(f"sqlite:///{directory / 'bank.db'}", clock=self.clock)
        bank = TimeBank(ledger, identity_secrets={PROGRAMME: bankworld.SECRET})
        return World(bank, self.clock, dict(_TEMPLATE_MEMBERS))

    def teardown(self) -> None:
        self._cleanup.close()

    # -- helpers --------------------------------------------------------------------------

    @property
    def now(self) -> datetime:
        return self.clock.now

    def policy_at(self, when: datetime) -> tuple[int, Policy]:
        """The version in force at ``when`` and its policy."""
        version = max(i for i, (start, _) in enumerate(self.policies) if start <= when)
        return version + 1, self.policies[version][1]

    @property
    def policy(self) -> Policy:
        return self.policy_at(self.now)[1]

    @property
    def cap(self) -> int | None:
        return self.policy.storage_cap_minutes

    def snapshot(self) -> Snapshot:
        return self._snapshot if self._snapshot is not None else dump(self.world.engine)

    def refused(
        self, expected: Iterable[type[TimebankError]], call: Callable[[], object]
    ) -> TimebankError:
        """``call`` must raise one of ``expected`` and leave every row as it was."""
        allowed = frozenset(expected)
        assert allowed
        event("refused: " + " or ".join(sorted(c.__name__ for c in allowed)))
        before = self.snapshot()
        with pytest.raises(TimebankError) as caught:
            call()
        exc = caught.value
        assert type(exc) in allowed, (
            f"expected {' or '.join(sorted(c.__name__ for c in allowed))}, "
            f"got {type(exc).__name__}: {exc}"
        )
        after = dump(self.world.engine)
        assert after == before, f"a refused call ({type(exc).__name__}) changed the database"
        self._snapshot = after
        return exc

    def unchanged(self, call: Callable[[], T]) -> T:
        """``call`` must succeed (a replay or a no-op) without changing any row of the
        library's tables (read through its own metadata: much cheaper than a dump, and
        replays are frequent)."""
        event("replay or no-op")
        before = self.rows()
        result = call()
        assert self.rows() == before, "a replay or no-op changed the database"
        return result

    def rows(self) -> dict[str, list[tuple[Any, ...]]]:
        with self.world.engine.connect() as conn:
            return {
                table.name: [
                    tuple(row)
                    for row in conn.execute(sa.select(table).order_by(*table.primary_key.columns))
                ]
                for table in tables_metadata.sorted_tables
            }

    def wrote(self, call: Callable[[], T]) -> T:
        self._snapshot = None
        return call()

    def member_ids(self) -> list[int]:
        return sorted(self.model.members)

    def free(self, member_id: int) -> int:
        return self.model.free(member_id, self.now)

    def region_of(self, member_id: int) -> str:
        return self.home_region[self.model.members[member_id].home_site]

    def pool_lot_rows(self) -> list[PoolLotRow]:
        """Every pool lot (there is no public listing): id, region, source entry, minutes,
        remaining minutes, origin station, earned day."""
        lot, region, site = pool_lots_table, regions_table, sites_table
        query = (
            sa.select(
                lot.c.id,
                region.c.code,
                lot.c.source_entry_id,
                lot.c.minutes,
                lot.c.remaining_minutes,
                site.c.code,
                lot.c.earned_on,
            )
            .join(region, region.c.id == lot.c.region_id)
            .join(site, site.c.id == lot.c.origin_site_id)
            .order_by(lot.c.id)
        )
        with self.world.engine.connect() as conn:
            return [(r[0], r[1], r[2], r[3], r[4], r[5], r[6]) for r in conn.execute(query)]

    def new_pool_lots(self) -> list[PoolLotRow]:
        return [row for row in self.pool_lot_rows() if row[0] not in self.model.pool_lots]

    def add_pool_lots(
        self, rows: list[PoolLotRow], slices: list[tuple[str, int, int]], entry_id: int | None
    ) -> None:
        """New pool lots, one per (region, source member lot, minutes) slice, in order; each
        keeps its source lot's origin and earned day (``entry_id``: the entry that made them,
        when known)."""
        assert len(rows) == len(slices), (rows, slices)
        for row, (region, source_id, part) in zip(rows, slices, strict=True):
            source = self.model.lots[source_id]
            entry = row[2] if entry_id is None else entry_id
            assert row == (row[0], region, entry, part, part, source.origin_site, source.earned_on)
            self.model.pool_lots[row[0]] = MPoolLot(
                row[0], region, entry, part, part, source.origin_site, source.earned_on
            )

    def some_service(self, data: st.DataObject) -> MService:
        service_id = data.draw(st.sampled_from(sorted(self.model.services)), label="service")
        return self.model.services[service_id]

    def check_view(self, view: ServiceView, service: MService) -> None:
        rec = service.recording
        assert view.id == service.id
        assert (
            view.idempotency_key,
            view.programme,
            view.volunteer_id,
            view.recipient_ids,
            view.site,
            view.service_type,
            view.rating,
            view.note,
        ) == (
            rec.key,
            PROGRAMME,
            rec.volunteer_id,
            tuple(sorted(set(rec.recipient_ids))),
            rec.site,
            rec.service_type,
            rec.rating,
            rec.note,
        )
        assert (view.started_at, view.ended_at) == (rec.started_at, rec.ended_at)
        assert view.started_at.utcoffset() == timedelta(0)
        assert (view.raw_minutes, view.weight_permille) == (
            rec.raw_minutes,
            service.weight_permille,
        )
        assert view.credited_minutes == service.credited
        assert view.credited_minutes == credited_minutes(view.raw_minutes, view.weight_permille)
        assert view.credited_minutes == view.raw_minutes * view.weight_permille // 1000
        assert (view.status, view.reason, view.recorded_by, view.policy_version) == (
            service.status,
            service.reason,
            RECORDER[rec.site],
            service.policy_version,
        )
        assert view.confirmed_by == tuple(service.parties.values())
        deposited = service.status in ("confirmed", "reversed")
        assert (view.deposit_entry_id is not None) == deposited
        assert view.deposit_entry_id == service.deposit_entry_id
        assert (view.reversal_entry_id is not None) == (service.status == "reversed")
        assert view.diverted_minutes == service.diverted

    def deposit_split(self, service: MService) -> tuple[int, int] | None:
        """(to the volunteer, to the pool) if the service's deposit were posted now; None if
        the storage cap refuses it."""
        credited = service.credited
        room = self.model.room(service.volunteer_id, self.cap)
        if room is None:
            return credited, 0
        if self.policy.cap_excess == "refuse":
            return None if credited > room else (credited, 0)
        return min(credited, room), credited - min(credited, room)

    def confirmed(self, service: MService, party: str, by: str, view: ServiceView) -> None:
        """The deposit was posted: the volunteer's lot (up to the cap) and the pool's lot
        (the rest), earned on the day the service ended."""
        split = self.deposit_split(service)
        assert split is not None, "the cap refuses this deposit"
        service.kept, service.diverted = split
        service.status = "confirmed"
        service.parties[party] = by
        service.deposit_entry_id = view.deposit_entry_id
        self.check_view(view, service)
        assert view.deposit_entry_id is not None
        if service.diverted:
            event("deposit partly diverted to the pool" if service.kept else "deposit to the pool")
        _, policy = self.policy_at(service.recording.started_at)
        earned_on = policy.local_date(service.recording.ended_at)
        expires_on = None
        if policy.lot_expiry_days is not None:
            expires_on = earned_on + timedelta(days=policy.lot_expiry_days)
        made = [
            lot
            for lot in self.bank.lots(service.volunteer_id, open_only=False)
            if lot.source_entry_id == view.deposit_entry_id
        ]
        assert len(made) == (1 if service.kept else 0), made
        if service.kept:
            service.lot_id = made[0].id
            assert service.lot_id not in self.model.lots
            self.model.lots[service.lot_id] = MLot(
                service.lot_id,
                service.volunteer_id,
                view.deposit_entry_id,
                service.kept,
                service.kept,
                service.site,
                earned_on,
                expires_on,
            )
        pooled = [row for row in self.pool_lot_rows() if row[2] == view.deposit_entry_id]
        assert len(pooled) == (1 if service.diverted else 0), pooled
        if service.diverted:
            region = self.region_of(service.volunteer_id)
            lot = MPoolLot(
                pooled[0][0],
                region,
                view.deposit_entry_id,
                service.diverted,
                service.diverted,
                service.site,
                earned_on,
            )
            assert pooled[0] == lot.row()
            assert lot.id not in self.model.pool_lots
            self.model.pool_lots[lot.id] = lot
            service.pool_lot_id, service.pool_region = lot.id, region

    # -- the policy and the first services --------------------------------------------------

    @initialize(
        data=st.data(),
        variant=st.sampled_from(list(VARIANTS)),
        kind=st.sampled_from(RELATIONS),
        count=st.integers(0, 4),
    )
    def seed(self, data: st.DataObject, variant: str, kind: str, count: int) -> None:
        """The policy variant, in force from now; two of the world's members related, so
        that gifts can happen; a few services, most of them confirmed, so that there are
        minutes to spend; now and then a donation, so that pools can grant, and a booking,
        so that minutes are held from the start."""
        self.use_policy(variant)
        names = data.draw(
            st.lists(
                st.sampled_from(sorted(self.world.members)), min_size=2, max_size=2, unique=True
            ),
            label="relatives",
        )
        self.relate(self.world.members[names[0]], self.world.members[names[1]], kind)
        self.seed_services(data, count)
        if data.draw(st.booleans(), label="seed a donation"):
            self.donate(data, elsewhere=False)
        if data.draw(st.booleans(), label="seed a booking"):
            self.book(
                data,
                site=data.draw(st.sampled_from(sorted(REDEEMERS)), label="site"),
                service_type=data.draw(st.sampled_from(SERVICE_TYPES), label="type"),
                for_other=False,
                when=data.draw(st.integers(0, 3 * 24 * 60), label="in minutes"),
                lapse=None,
                zone=UTC,
            )

    def use_policy(self, variant: str) -> None:
        event(f"policy: {variant}")
        if not VARIANTS[variant]:
            return
        policy = POLICY.model_copy(update=VARIANTS[variant])
        view = self.wrote(
            partial(
                self.bank.set_policy, PROGRAMME, policy, effective_from=self.now, operator="admin"
            )
        )
        assert (view.version, view.effective_from, view.policy) == (2, self.now, policy)
        self.policies.append((self.now, policy))
        # Two days on, so that the first services (yesterday's) run under it too.
        self.clock.advance(days=2)

    def seed_services(self, data: st.DataObject, count: int) -> None:
        """A few services the world's volunteers gave grandma yesterday (under the policy
        variant, if any: its cap, and lots that expire)."""
        grandma = self.world.members["grandma"]
        for hour in range(count):
            volunteer = self.world.members[
                data.draw(st.sampled_from(["wang", "li", "zhao"]), label="volunteer")
            ]
            start = self.now - timedelta(days=1, hours=hour)
            minutes = data.draw(st.integers(1, 60), label="minutes")
            self.keys += 1
            rec = Recording(
                f"svc-{self.keys}",
                volunteer,
                (grandma,),
                data.draw(st.sampled_from(STATIONS), label="site"),
                data.draw(st.sampled_from(SERVICE_TYPES), label="type"),
                start,
                start + timedelta(minutes=minutes),
            )
            assert not self.model.record_refusals(rec, self.now)
            self.record(rec, frozenset())
            if data.draw(st.sampled_from([True, True, False]), label="confirmed"):
                service = next(s for s in self.model.services.values() if s.recording == rec)
                confirmer = CONFIRMER[rec.site]
                call = partial(self.bank.confirm_service, service.id, operator=confirmer)
                if self.deposit_split(service) is None:
                    self.refused({CapExceededError}, call)
                    continue
                self.confirmed(service, "operator", confirmer, self.wrote(call))

    # -- members --------------------------------------------------------------------------

    @rule(
        name=st.sampled_from(NEW_PEOPLE),
        acts_as=st.sampled_from(ACTS_AS),
        home=st.sampled_from(STATIONS),
        same=st.sampled_from([True, True, True, False]),
    )
    def register_member(self, name: str, acts_as: str, home: str, same: bool) -> None:
        """A person (now and then recipient-only or volunteer-only); registering one again
        with the same data (``same``) finds them, with other data is refused."""
        known = self.model.by_name.get(name)
        if known is not None and same:
            acts_as = self.model.members[known].acts_as
            home = self.model.members[known].home_site

        def call() -> MemberView:
            return self.bank.register_member(
                PROGRAMME,
                identity=f"ID-{name}",
                display_name=name.title(),
                birth_date=BORN.get(name, NEW_BORN),
                home_site=home,
                operator=RECORDER[home],
                acts_as=acts_as,  # type: ignore[arg-type]
            )

        if known is not None:
            member = self.model.members[known]
            if (member.acts_as, member.home_site) != (acts_as, home):
                exc = self.refused({ExistsError}, call)
                assert isinstance(exc, ExistsError)
                assert exc.fields
                if member.acts_as != acts_as:
                    assert "acts_as" in exc.fields
                return
            view = self.unchanged(call)
            assert view.id == known
            return
        view = self.wrote(call)
        event(f"registered: {acts_as}")
        assert view.id not in self.model.members
        assert (
            view.programme,
            view.kind,
            view.acts_as,
            view.home_site,
            view.status,
            view.balance_minutes,
        ) == (PROGRAMME, "person", acts_as, home, "active", 0)
        self.model.members[view.id] = MMember(view.id, acts_as, home, BORN.get(name, NEW_BORN))
        self.model.by_name[name] = view.id

    @rule(
        data=st.data(),
        change=st.sampled_from([True, True, True, False]),
        reason=st.sampled_from(STATUS_REASONS),
    )
    def set_member_status(self, data: st.DataObject, change: bool, reason: str) -> None:
        """Freeze or unfreeze (``change``), or ask for the status the member has: with the
        same reason a no-op, with another one refused. A deceased member stays deceased."""
        frozen = [m for m in self.member_ids() if self.model.members[m].status == "frozen"]
        pick_frozen = data.draw(st.booleans(), label="a frozen one")
        pool = frozen if frozen and pick_frozen else self.member_ids()
        member = self.model.members[data.draw(st.sampled_from(pool), label="member")]
        if member.status == "deceased":
            status = member.status
            if change:
                status = data.draw(st.sampled_from(["active", "frozen"]), label="revive")
        else:
            status = {"active": "frozen", "frozen": "active"}[member.status]
            status = status if change else member.status

        def call() -> MemberView:
            return self.bank.set_member_status(
                member.id,
                status,  # type: ignore[arg-type]
                reason=reason,
                operator=ADMIN,
            )

        if member.status == status:
            if member.reason != reason:
                self.refused({ExistsError}, call)
                return
            view = self.unchanged(call)
        elif member.status == "deceased":
            self.refused({MemberStateError}, call)
            return
        else:
            view = self.wrote(call)
            event(f"member {status}")
            member.status, member.reason = status, reason
        assert (view.status, view.status_reason) == (member.status, member.reason)

    @rule(data=st.data(), whom=st.sampled_from(["other", "other", "other", "nobody", "self"]))
    def set_beneficiary(self, data: st.DataObject, whom: str) -> None:
        """Designate (or withdraw) whom a member's minutes pass to on their death: refused
        for oneself, or when either of them is not active."""
        member_id = self.pick_member(data, "member")
        beneficiary_id: int | None = None
        if whom == "self":
            beneficiary_id = member_id
        elif whom == "other":
            others = [m for m in self.member_ids() if m != member_id]
            beneficiary_id = data.draw(st.sampled_from(others), label="beneficiary")
        member = self.model.members[member_id]

        def call() -> MemberView:
            return self.bank.set_beneficiary(
                member_id, beneficiary_id, operator=RECORDER[member.home_site]
            )

        found: set[type[TimebankError]] = set()
        if member.status != "active":
            found.add(MemberStateError)
        if beneficiary_id == member_id:
            found.add(InvalidInputError)
        elif beneficiary_id is not None and self.model.members[beneficiary_id].status != "active":
            found.add(MemberStateError)
        if found:
            self.refused(found, call)
            return
        view = self.wrote(call)
        event(f"beneficiary: {whom}")
        if beneficiary_id is None:
            self.model.beneficiaries.pop(member_id, None)
        else:
            self.model.beneficiaries[member_id] = beneficiary_id
        assert view.beneficiary_id == beneficiary_id

    @precondition(lambda self: all(m.status != "deceased" for m in self.model.members.values()))
    @rule(data=st.data(), reason=st.sampled_from(DEATH_REASONS))
    def die(self, data: st.DataObject, reason: str) -> None:
        """A member dies (one per example, so that the others keep the example going; mostly
        one who designated a beneficiary, or has minutes): their live bookings are
        cancelled, their minutes pass to their beneficiary (if active, up to the storage cap)
        and the rest to the pool of their home region, lot by lot, first in, first out; their
        account is then frozen. ``set_member_status`` asks for it again."""
        designated = sorted(self.model.beneficiaries)
        if bool(designated) and data.draw(st.booleans(), label="one with a beneficiary"):
            member = self.model.members[data.draw(st.sampled_from(designated), label="deceased")]
        else:
            member = self.model.members[self.pick_member(data, "deceased")]

        def call() -> MemberView:
            return self.bank.set_member_status(member.id, "deceased", reason=reason, operator=ADMIN)

        heir = self.model.beneficiaries.get(member.id)
        if heir is not None and self.model.members[heir].status != "active":
            heir = None
        balance = self.model.balance(member.id)
        to_heir = 0
        if heir is not None:
            room = self.model.room(heir, self.cap)
            to_heir = balance if room is None else min(balance, room)
        live = [
            b
            for b in self.model.bookings.values()
            if b.member_id == member.id and b.status(self.now) == "booked"
        ]
        view = self.wrote(call)
        event("died" + (" with an heir" if to_heir else "") + (" and bookings" if live else ""))
        for booking in live:
            booking.state, booking.reason = "cancelled", reason or "deceased"
        member.status, member.reason = "deceased", reason
        assert (view.status, view.status_reason, view.balance_minutes, view.held_minutes) == (
            "deceased",
            reason,
            0,
            0,
        )
        if not balance:
            return
        taken = self.model.consume(member.id, balance)
        slices = share_out(taken, [(heir, to_heir), (None, balance - to_heir)])
        inherited = [s for s in slices if s[0] is not None]
        made = []
        if heir is not None:
            made = [
                lot
                for lot in self.bank.lots(heir, open_only=False)
                if lot.id not in self.model.lots
            ]
        assert len(made) == len(inherited), (made, inherited)
        entries = {lot.source_entry_id for lot in made}
        for new, (_, source_id, part) in zip(made, inherited, strict=True):
            assert heir is not None
            source = self.model.lots[source_id]
            self.model.lots[new.id] = MLot(
                new.id,
                heir,
                new.source_entry_id,
                part,
                part,
                source.origin_site,
                source.earned_on,
                source.expires_on,
            )
        pooled = self.new_pool_lots()
        entries |= {row[2] for row in pooled}
        assert len(entries) == 1, "an estate is one entry"
        region = self.region_of(member.id)
        self.add_pool_lots(
            pooled, [(region, lot, part) for dest, lot, part in slices if dest is None], None
        )

    # -- recording ------------------------------------------------------------------------

    def draw_start(self, data: st.DataObject, volunteer_id: int, minutes: int) -> datetime:
        """Mostly a start that ends in the past; near the volunteer's other services (to
        overlap them or just touch them) when there are any; now and then one that ends in
        the future."""
        others = [s for s in self.model.services.values() if s.volunteer_id == volunteer_id]
        how = data.draw(st.sampled_from(["ago", "ago", "near", "touch", "future"]), label="when")
        if how in ("near", "touch") and others:
            other = data.draw(st.sampled_from(sorted(others, key=lambda s: s.id)), label="next to")
            if how == "touch":
                after = data.draw(st.booleans(), label="touch after")
                if after:
                    return other.recording.ended_at
                return other.recording.started_at - timedelta(minutes=minutes)
            offset = data.draw(
                st.integers(-minutes - 5, other.recording.raw_minutes + 5), label="offset minutes"
            )
            return other.recording.started_at + timedelta(minutes=offset)
        if how == "future":
            return (
                self.now
                - timedelta(minutes=minutes)
                + timedelta(minutes=data.draw(st.integers(1, 60), label="minutes too late"))
            )
        gap = data.draw(st.one_of(st.integers(0, 180), st.integers(0, 3000)), label="gap")
        return self.now - timedelta(minutes=minutes + gap)

    def draw_recording(
        self, data: st.DataObject, volunteer_id: int, recipients: tuple[int, ...], minutes: int
    ) -> Recording:
        start = self.draw_start(data, volunteer_id, minutes)
        seconds = data.draw(st.sampled_from([0, 0, 0, 1, 59]), label="extra seconds")
        zone = data.draw(st.sampled_from(ZONES), label="zone")
        self.keys += 1
        return Recording(
            key=f"svc-{self.keys}",
            volunteer_id=volunteer_id,
            recipient_ids=recipients,
            site=data.draw(st.sampled_from(STATIONS), label="site"),
            service_type=data.draw(st.sampled_from(SERVICE_TYPES), label="type"),
            started_at=start.astimezone(zone),
            ended_at=(start + timedelta(minutes=minutes, seconds=seconds)).astimezone(zone),
            rating=data.draw(st.sampled_from([None, None, 1, 5]), label="rating"),
            note=data.draw(st.sampled_from(["", "", "walked the dog"]), label="note"),
        )

    def record(self, rec: Recording, expected: Refusal) -> None:
        call = rec.call(self.bank)
        if expected:
            exc = self.refused(expected, call)
            if isinstance(exc, OverlappingServiceError):
                assert exc.volunteer_id == rec.volunteer_id
                assert exc.other_service_id in self.model.live_overlaps(
                    rec.volunteer_id, rec.started_at, rec.ended_at
                )
            return
        view = self.wrote(call)
        event("recorded")
        assert view.id not in self.model.services
        version, policy = self.policy_at(rec.started_at)
        weight = policy.service_types[rec.service_type].weight_permille
        service = MService(view.id, rec, weight, version)
        self.check_view(view, service)
        self.model.services[view.id] = service

    @rule(
        data=st.data(),
        recipients=st.integers(1, 2),
        anyone=st.integers(0, 3),
        minutes=st.one_of(st.integers(1, MAX_MINUTES), st.integers(MAX_MINUTES - 5, 600)),
    )
    def record_service(
        self, data: st.DataObject, recipients: int, anyone: int, minutes: int
    ) -> None:
        """Mostly an active volunteer serving active members who may receive; when
        ``anyone`` is 0, any member serving any members (themselves included)."""
        members = self.model.members
        ids = self.member_ids()
        volunteers = [
            m for m in ids if members[m].status == "active" and members[m].acts_as != "recipient"
        ]
        if anyone == 0 or not volunteers:
            volunteers = ids
        volunteer = data.draw(st.sampled_from(volunteers), label="volunteer")
        served_by = [
            m
            for m in ids
            if m != volunteer
            and members[m].status == "active"
            and members[m].acts_as != "volunteer"
        ]
        if anyone == 0 or len(served_by) < recipients:
            served_by = ids
        served = tuple(
            data.draw(
                st.lists(
                    st.sampled_from(served_by),
                    min_size=recipients,
                    max_size=recipients,
                    unique=True,
                ),
                label="recipients",
            )
        )
        rec = self.draw_recording(data, volunteer, served, minutes)
        self.record(rec, self.model.record_refusals(rec, self.now))

    @precondition(lambda self: any(m.status == "frozen" for m in self.model.members.values()))
    @rule(data=st.data(), minutes=st.integers(1, 120))
    def record_for_frozen_volunteer(self, data: st.DataObject, minutes: int) -> None:
        """Otherwise valid: refused because the volunteer is frozen."""
        frozen = [m.id for m in self.model.members.values() if m.status == "frozen"]
        volunteer = data.draw(st.sampled_from(sorted(frozen)), label="frozen volunteer")
        fit = [
            m
            for m in self.member_ids()
            if m != volunteer and self.model.members[m].acts_as != "volunteer"
        ]
        recipient = data.draw(st.sampled_from(fit), label="recipient")
        # Before every service the volunteer has: nothing to overlap.
        earliest = min(
            [
                s.recording.started_at
                for s in self.model.services.values()
                if s.volunteer_id == volunteer
            ]
            + [self.now]
        )
        start = earliest - timedelta(minutes=minutes + data.draw(st.integers(0, 600)))
        self.keys += 1
        rec = Recording(
            f"svc-{self.keys}",
            volunteer,
            (recipient,),
            data.draw(st.sampled_from(STATIONS), label="site"),
            "shopping",
            start,
            start + timedelta(minutes=minutes),
        )
        assert self.model.record_refusals(rec, self.now) == {MemberStateError}
        self.record(rec, frozenset({MemberStateError}))

    @precondition(lambda self: bool(self.model.services))
    @rule(
        data=st.data(),
        change=st.sampled_from([None, None, None, None, "service_type", "ended_at", "note"]),
    )
    def replay_record(self, data: st.DataObject, change: str | None) -> None:
        """The same key and content (recipients in any order): the same service, nothing
        written, whatever happened to it or to its volunteer since; other content: a
        conflict."""
        service = self.some_service(data)
        rec = service.recording
        if change is None:
            if data.draw(st.booleans(), label="recipients reversed"):
                rec = replace(rec, recipient_ids=rec.recipient_ids[::-1])
            view = self.unchanged(rec.call(self.bank))
            self.check_view(view, service)
            return
        if change == "service_type":
            other = replace(
                rec, service_type=next(t for t in SERVICE_TYPES if t != rec.service_type)
            )
        elif change == "ended_at":
            other = replace(rec, ended_at=rec.ended_at - timedelta(seconds=1))
        else:
            other = replace(rec, note=rec.note + " again")
        exc = self.refused({IdempotencyConflictError}, other.call(self.bank))
        assert isinstance(exc, IdempotencyConflictError)
        assert (exc.key, exc.fields) == (rec.key, (change,))

    # -- deciding -------------------------------------------------------------------------

    @precondition(lambda self: bool(self.model.services))
    @rule(
        data=st.data(),
        by=st.sampled_from(
            ["confirmer", "confirmer", "recipient", "recipient", "stranger", "other station"]
        ),
    )
    def confirm_service(self, data: st.DataObject, by: str) -> None:
        service = self.some_service(data)
        recipients = service.recording.recipient_ids
        strangers = [m for m in self.member_ids() if m not in recipients]
        if by == "stranger" and not strangers:
            by = "recipient"
        recipient_id: int | None = None
        if by in ("confirmer", "other station"):
            site = (
                service.site
                if by == "confirmer"
                else next(s for s in STATIONS if s != service.site)
            )
            operator, party = CONFIRMER[site], "operator"
            who = operator
        else:
            operator, party = RECORDER[service.site], "recipient"
            recipient_id = data.draw(
                st.sampled_from(sorted(recipients) if by == "recipient" else strangers),
                label="recipient",
            )
            who = f"member:{recipient_id}"

        def call() -> ServiceView:
            return self.bank.confirm_service(
                service.id, operator=operator, recipient_id=recipient_id
            )

        if by == "other station":
            self.refused({PermissionDeniedError}, call)
        elif by == "stranger":
            self.refused({InvalidInputError}, call)
        elif party in service.parties or service.status == "confirmed":
            # A replay, or a confirmation after the deposit was posted: nothing to add.
            self.check_view(self.unchanged(call), service)
        elif service.status != "pending":
            self.refused({ServiceStateError}, call)
        elif self.model.members[service.volunteer_id].status != "active":
            self.refused({MemberStateError}, call)
        elif self.deposit_split(service) is None:
            exc = self.refused({CapExceededError}, call)
            assert isinstance(exc, CapExceededError)
            room = self.model.room(service.volunteer_id, self.cap)
            assert (exc.available_minutes, exc.requested_minutes) == (room, service.credited)
        else:
            view = self.wrote(call)
            event(f"confirmed by {party}")
            self.confirmed(service, party, who, view)

    @precondition(lambda self: bool(self.model.services))
    @rule(data=st.data(), reason=st.sampled_from(REASONS))
    def reject_service(self, data: st.DataObject, reason: str) -> None:
        service = self.some_service(data)

        def call() -> ServiceView:
            return self.bank.reject_service(
                service.id, reason=reason, operator=CONFIRMER[service.site]
            )

        if service.status == "rejected" and service.reason == reason:
            self.check_view(self.unchanged(call), service)
        elif service.status != "pending":
            self.refused({ServiceStateError}, call)
        else:
            view = self.wrote(call)
            event("rejected")
            service.status, service.reason = "rejected", reason
            self.check_view(view, service)

    @rule(
        minutes=st.one_of(st.integers(0, 180), st.integers(600, 3000)),
        back=st.sampled_from([None, 0, 0, 0, 60, 24 * 60, -1]),
        sweep=st.sampled_from([False, False, True]),
    )
    def advance_clock(self, minutes: int, back: int | None, sweep: bool) -> None:
        """Time passes (bookings lapse, and reserve nothing from then on); when ``sweep``,
        the scheduler marks the holds of lapsed bookings expired (housekeeping: at most one
        per lapsed booking, none a second time); then, unless ``back`` is None, it calls
        ``confirm_due`` as of ``back`` minutes ago (in the future when negative: refused),
        which confirms the due services of active volunteers oldest first, skipping those
        the storage cap refuses."""
        live = [b for b in self.model.bookings.values() if b.status(self.now) == "booked"]
        self.clock.advance(minutes=minutes)
        if any(b.status(self.now) == "expired" for b in live):
            event("a booking lapsed")
        if sweep:

            def housekeeping() -> int:
                return self.bank.expire_bookings(PROGRAMME, operator=ADMIN)

            lapsed = [b for b in self.model.bookings.values() if b.status(self.now) == "expired"]
            swept = self.wrote(housekeeping)
            assert 0 <= swept <= len(lapsed), (swept, lapsed)
            if swept:
                event("expire_bookings marked holds expired")
            assert self.unchanged(housekeeping) == 0
        if back is None:
            return
        as_of = self.now - timedelta(minutes=back)

        def call() -> int:
            return self.bank.confirm_due(PROGRAMME, as_of=as_of, operator=ADMIN)

        if as_of > self.now:
            self.refused({InvalidInputError}, call)
            return
        candidates = sorted(
            (
                s
                for s in self.model.services.values()
                if s.status == "pending"
                and s.recording.ended_at + AUTO_CONFIRM <= as_of
                and self.model.members[s.volunteer_id].status == "active"
            ),
            key=lambda s: (s.recording.ended_at, s.id),
        )
        due: list[MService] = []
        balances: dict[int, int] = {}
        for service in candidates:
            volunteer = service.volunteer_id
            balance = balances.get(volunteer, self.model.balance(volunteer))
            cap = self.cap
            if cap is not None and self.policy.cap_excess == "refuse":
                if service.credited > max(cap - balance, 0):
                    event("confirm_due skipped a deposit over the cap")
                    continue
                balances[volunteer] = balance + service.credited
            due.append(service)
        count = self.wrote(call)
        event(f"confirm_due: {min(count, 2)}{'+' if count >= 2 else ''}")
        assert count == len(due)
        for service in due:
            self.confirmed(service, "automatic", ADMIN, self.bank.service(service.id))

    @precondition(lambda self: bool(self.model.services))
    @rule(data=st.data(), reason=st.sampled_from(REASONS))
    def reverse_service(self, data: st.DataObject, reason: str) -> None:
        """An administrator's correction: refused if the volunteer's free minutes (or the
        pool's, for minutes diverted over the cap) no longer cover the deposit."""
        confirmed = [s for s in self.model.services.values() if s.status == "confirmed"]
        pick_confirmed = data.draw(st.booleans(), label="a confirmed one")
        if confirmed and pick_confirmed:
            service = data.draw(st.sampled_from(sorted(confirmed, key=lambda s: s.id)))
        else:
            service = self.some_service(data)

        def call() -> ServiceView:
            return self.bank.reverse_service(service.id, reason=reason, operator=ADMIN)

        if service.status == "reversed":
            self.check_view(self.unchanged(call), service)
            return
        if service.status != "confirmed":
            self.refused({ServiceStateError}, call)
            return
        if self.model.members[service.volunteer_id].status != "active":
            # A frozen (or deceased) member's account moves nothing.
            self.refused({AccountStateError, MemberStateError}, call)
            return
        short = self.free(service.volunteer_id) < service.kept
        if service.diverted and self.model.pool_balance(service.pool_region) < service.diverted:
            short = True
        if short:
            self.refused({LimitExceededError}, call)
            return
        view = self.wrote(call)
        event("reversed")
        service.status, service.reason = "reversed", reason
        self.check_view(view, service)
        if service.kept:
            self.model.consume(service.volunteer_id, service.kept, service.lot_id)
        if service.diverted:
            self.model.consume_pool(service.pool_region, service.diverted, service.pool_lot_id)

    # -- relations, redemptions and gifts -------------------------------------------------

    def pick_member(self, data: st.DataObject, label: str, *, related: bool = False) -> int:
        """Mostly a member with free minutes to spend (and a relative, when ``related``)
        when there is one, now and then anyone."""
        rich = [m for m in self.member_ids() if self.free(m) > 0]
        if related and any((m, o) in self.model.relations for m in rich for o in self.member_ids()):
            rich = [m for m in rich if any(k[0] == m for k in self.model.relations)]
        anyone = data.draw(st.integers(0, 3), label=f"{label}: anyone") == 0
        pool = rich if rich and not anyone else self.member_ids()
        return data.draw(st.sampled_from(pool), label=label)

    def draw_minutes(self, data: st.DataObject, member_id: int) -> int:
        """Mostly at most the member's free minutes (balance less live bookings); now and
        then more than that."""
        free = self.free(member_id)
        if free and data.draw(st.integers(0, 3), label="within free minutes"):
            return data.draw(st.integers(1, free), label="minutes")
        return data.draw(st.integers(free + 1, free + 200), label="minutes")

    @rule(data=st.data(), kind=st.sampled_from(RELATIONS))
    def relate_members(self, data: st.DataObject, kind: str) -> None:
        """``member`` is the ``kind`` of ``other`` (stored both ways); again: a no-op, or
        refused when it says another kind."""
        member, other = data.draw(
            st.lists(st.sampled_from(self.member_ids()), min_size=2, max_size=2, unique=True),
            label="relatives",
        )
        self.relate(member, other, kind)

    def relate(self, member: int, other: int, kind: str) -> None:
        operator = RECORDER[self.model.members[member].home_site]

        def call() -> None:
            self.bank.relate(member, other, kind, operator=operator)  # type: ignore[arg-type]

        stored = self.model.relations.get((member, other))
        if stored is not None and stored != kind:
            self.refused({ExistsError}, call)
        elif stored is not None:
            self.unchanged(call)
        else:
            self.wrote(call)
            event(f"related: {kind}")
            self.model.relations[member, other] = kind
            self.model.relations[other, member] = INVERSE[kind]

    @staticmethod
    def check_limit(
        exc: TimebankError, minutes: int, *, available: int, room: int | None = None
    ) -> None:
        """A refused amount names what was available: free minutes (or a pool's), or the
        room under the storage cap."""
        if type(exc) is LimitExceededError:
            assert (exc.available_minutes, exc.requested_minutes) == (available, minutes)
        if type(exc) is CapExceededError:
            assert (exc.available_minutes, exc.requested_minutes) == (room, minutes)

    def draw_recipient(self, data: st.DataObject, member_id: int, for_other: bool) -> int:
        """The member, or (``for_other``) their spouse if they have one, anyone otherwise."""
        if not for_other:
            return member_id
        spouses = [
            o
            for (m, o), kind in self.model.relations.items()
            if m == member_id and kind == "spouse"
        ]
        others = [m for m in self.member_ids() if m != member_id]
        return data.draw(st.sampled_from(spouses or others), label="recipient")

    def care_refusals(
        self, member_id: int, recipient_id: int, on: datetime
    ) -> set[type[TimebankError]]:
        """Who may pay for care for whom (a redemption or a booking): this policy lets a
        member's minutes pay for their own care only, from 60."""
        member, recipient = self.model.members[member_id], self.model.members[recipient_id]
        found: set[type[TimebankError]] = set()
        if member.status != "active" or recipient.status != "active":
            found.add(MemberStateError)
        if recipient_id != member_id:
            found.add(PolicyViolationError)  # spouse_redeems is off
        if recipient.age(POLICY.local_date(on)) < (POLICY.redemption_min_age or 0):
            found.add(PolicyViolationError)
        return found

    @rule(
        data=st.data(),
        site=st.sampled_from(sorted(REDEEMERS)),
        service_type=st.sampled_from(SERVICE_TYPES),
        for_other=st.sampled_from([False, False, False, True]),
    )
    def redeem(self, data: st.DataObject, site: str, service_type: str, for_other: bool) -> None:
        """A member's minutes pay for care for themselves (or, refused by this policy, for
        somebody else, their spouse included): refused for a frozen member, a recipient under
        60 or more minutes than the member has free (bookings hold the rest)."""
        member_id = self.pick_member(data, "member")
        recipient_id = self.draw_recipient(data, member_id, for_other)
        minutes = self.draw_minutes(data, member_id)
        self.keys += 1
        kwargs: dict[str, Any] = {
            "programme": PROGRAMME,
            "member_id": member_id,
            "site": site,
            "service_type": service_type,
            "minutes": minutes,
            "operator": REDEEMERS[site],
            "recipient_id": recipient_id if for_other else None,
        }
        key = f"red-{self.keys}"

        def call() -> RedemptionView:
            return self.bank.redeem(key, **kwargs)

        found = self.care_refusals(member_id, recipient_id, self.now)
        if minutes > self.free(member_id):
            found.add(LimitExceededError)
        if found:
            exc = self.refused(found, call)
            self.check_limit(exc, minutes, available=self.free(member_id))
            return
        view = self.wrote(call)
        event("redeemed")
        taken = self.model.consume(member_id, minutes)
        assert (
            view.idempotency_key,
            view.programme,
            view.member_id,
            view.recipient_id,
            view.site,
            view.service_type,
            view.minutes,
            view.occurred_at,
            view.redeemed_by,
        ) == (
            key,
            PROGRAMME,
            member_id,
            recipient_id,
            site,
            service_type,
            minutes,
            self.now,
            REDEEMERS[site],
        )
        assert view.lots == tuple(sorted(taken))
        self.model.redeemed[site] += minutes
        self.model.done[key] = Spending("redeem", key, kwargs, view)

    @rule(
        data=st.data(), to=st.sampled_from(["relative", "relative", "relative", "anyone", "self"])
    )
    def give(self, data: st.DataObject, to: str) -> None:
        """Minutes to a relative (spouse, parent or child); to a friend, a stranger or
        oneself refused, as are more minutes than the giver has free, a frozen party or a
        receiver without room under the storage cap."""
        giver_id = self.pick_member(data, "giver", related=True)
        relatives = sorted(o for (m, o) in self.model.relations if m == giver_id)
        if to == "self":
            receiver_id = giver_id
        else:
            receiver_id = data.draw(
                st.sampled_from(relatives if relatives and to == "relative" else self.member_ids()),
                label="receiver",
            )
        minutes = self.draw_minutes(data, giver_id)
        self.keys += 1
        giver = self.model.members[giver_id]
        operator = RECORDER[giver.home_site]
        kwargs: dict[str, Any] = {
            "programme": PROGRAMME,
            "giver_id": giver_id,
            "receiver_id": receiver_id,
            "minutes": minutes,
            "operator": operator,
        }
        key = f"gift-{self.keys}"

        def call() -> GiftView:
            return self.bank.give(key, **kwargs)

        found: set[type[TimebankError]] = set()
        if receiver_id == giver_id:
            found.update({InvalidInputError, PolicyViolationError})
        if giver.status != "active" or self.model.members[receiver_id].status != "active":
            found.add(MemberStateError)
        giver_is = self.model.relations.get((giver_id, receiver_id))
        if giver_is is None or INVERSE[giver_is] not in POLICY.gift_relations:
            found.add(PolicyViolationError)
        room = self.model.room(receiver_id, self.cap)
        if room is not None and minutes > room:
            found.add(CapExceededError)
        if minutes > self.free(giver_id):
            found.add(LimitExceededError)
        if found:
            exc = self.refused(found, call)
            self.check_limit(exc, minutes, available=self.free(giver_id), room=room)
            return
        view = self.wrote(call)
        event(f"gave to {INVERSE[giver_is or 'friend']}")
        taken = self.model.consume(giver_id, minutes)
        assert (
            view.idempotency_key,
            view.programme,
            view.giver_id,
            view.receiver_id,
            view.minutes,
            view.occurred_at,
            view.given_by,
        ) == (key, PROGRAMME, giver_id, receiver_id, minutes, self.now, operator)
        assert view.lots == tuple(sorted(taken))
        self.adopt_new_lots(receiver_id, view.entry_id, taken, self.model.lots, "keep")
        self.model.done[key] = Spending("give", key, kwargs, view)

    @precondition(lambda self: bool(self.model.done))
    @rule(data=st.data(), more=st.sampled_from([0, 0, 1, -1]))
    def replay_spending(self, data: st.DataObject, more: int) -> None:
        """A redemption, gift, booking, donation or grant again with its key: the same
        content returns it and writes nothing, whatever happened since (to the member too);
        other minutes (or another expiry of a booking) are a conflict."""
        spent = data.draw(st.sampled_from(list(self.model.done.values())), label="spending")
        kwargs = {**spent.kwargs, "minutes": spent.kwargs["minutes"] + more}
        if kwargs["minutes"] == 0:
            kwargs["minutes"] = 2
        changed = "minutes"
        if spent.method == "book" and more and data.draw(st.booleans(), label="other lapse"):
            # Another expiry instead: a booking's replay compares it too.
            assert isinstance(spent.view, BookingView)
            changed = "expires_at"
            kwargs["minutes"] = spent.kwargs["minutes"]
            kwargs["expires_at"] = spent.view.expires_at + timedelta(minutes=more)

        def call() -> Any:
            return getattr(self.bank, spent.method)(spent.key, **kwargs)

        if kwargs == spent.kwargs:
            replayed = self.unchanged(call)
            if isinstance(spent.view, BookingView):
                # The booking as it is now (completed, cancelled or expired since, maybe).
                assert replayed == self.bank.booking(spent.view.id)
                assert replayed.model_copy(update={"status": "booked"}) == spent.view.model_copy(
                    update={
                        "status": "booked",
                        "redemption_id": replayed.redemption_id,
                        "redeemed_minutes": replayed.redeemed_minutes,
                    }
                )
            else:
                assert replayed == spent.view
            return
        exc = self.refused({IdempotencyConflictError}, call)
        assert isinstance(exc, IdempotencyConflictError)
        assert (exc.key, tuple(exc.fields)) == (spent.key, (changed,))

    # -- bookings -------------------------------------------------------------------------

    @rule(
        data=st.data(),
        site=st.sampled_from(sorted(REDEEMERS)),
        service_type=st.sampled_from(SERVICE_TYPES),
        for_other=st.sampled_from([False, False, False, True]),
        when=st.one_of(st.integers(-120, 180), st.integers(0, 3 * 24 * 60)),
        lapse=st.sampled_from([None, None, None, "later", "later", "at", "before", "past"]),
        zone=st.sampled_from(ZONES),
    )
    def book(
        self,
        data: st.DataObject,
        *,
        site: str,
        service_type: str,
        for_other: bool,
        when: int,
        lapse: str | None,
        zone: timezone,
    ) -> None:
        """Book care ``when`` minutes from now: the member's minutes are held until it is
        completed, cancelled or lapses (a day after the scheduled time, unless
        ``expires_at`` says). The eligibility of a redemption; refused when the booking
        would lapse by now or before its time, or for more minutes than are free."""
        member_id = self.pick_member(data, "member")
        recipient_id = self.draw_recipient(data, member_id, for_other)
        minutes = self.draw_minutes(data, member_id)
        scheduled = (self.now + timedelta(minutes=when)).astimezone(zone)
        lapses = scheduled + BOOKING_GRACE
        if lapse == "later":
            lapses = scheduled + timedelta(minutes=data.draw(st.integers(1, 3000), label="later"))
        elif lapse == "at":
            lapses = scheduled
        elif lapse == "before":
            lapses = scheduled - timedelta(minutes=data.draw(st.integers(1, 120), label="before"))
        elif lapse == "past":
            lapses = self.now - timedelta(minutes=data.draw(st.integers(0, 60), label="ago"))
        self.keys += 1
        key = f"book-{self.keys}"
        kwargs: dict[str, Any] = {
            "programme": PROGRAMME,
            "member_id": member_id,
            "site": site,
            "service_type": service_type,
            "minutes": minutes,
            "scheduled_at": scheduled,
            "operator": REDEEMERS[site],
            "recipient_id": recipient_id if for_other else None,
            "expires_at": None if lapse is None else lapses,
        }

        def call() -> BookingView:
            return self.bank.book(key, **kwargs)

        found = self.care_refusals(member_id, recipient_id, scheduled)
        if lapses <= self.now or lapses < scheduled:
            found.add(InvalidInputError)
        if minutes > self.free(member_id):
            found.add(LimitExceededError)
        if found:
            exc = self.refused(found, call)
            self.check_limit(exc, minutes, available=self.free(member_id))
            return
        view = self.wrote(call)
        event("booked")
        assert (
            view.idempotency_key,
            view.programme,
            view.member_id,
            view.recipient_id,
            view.site,
            view.service_type,
            view.minutes,
            view.scheduled_at,
            view.expires_at,
            view.status,
            view.booked_by,
            view.redemption_id,
            view.redeemed_minutes,
        ) == (
            key,
            PROGRAMME,
            member_id,
            recipient_id,
            site,
            service_type,
            minutes,
            scheduled,
            lapses,
            "booked",
            REDEEMERS[site],
            None,
            0,
        )
        assert view.id not in self.model.bookings
        self.model.bookings[view.id] = MBooking(
            view.id, key, member_id, recipient_id, site, service_type, minutes, lapses
        )
        self.model.done[key] = Spending("book", key, kwargs, view)

    def some_booking(self, data: st.DataObject) -> MBooking:
        """Mostly a live booking when there is one, now and then any."""
        every = [self.model.bookings[b] for b in sorted(self.model.bookings)]
        live = [b for b in every if b.status(self.now) == "booked"]
        pick_live = data.draw(st.integers(0, 3), label="a live booking") > 0
        return data.draw(st.sampled_from(live if live and pick_live else every), label="booking")

    @precondition(lambda self: bool(self.model.bookings))
    @rule(
        data=st.data(),
        how=st.sampled_from(["all", "all", "fewer", "more"]),
        stranger=st.sampled_from([False, False, False, False, False, True]),
    )
    def complete_booking(self, data: st.DataObject, how: str, stranger: bool) -> None:
        """The booked care was given: at most the held minutes are redeemed, first in, first
        out, and the hold is released. Again with the same minutes: a replay; with others:
        a conflict. Refused for more minutes than held, a cancelled or expired booking, a
        member no longer active, or an operator of another site."""
        booking = self.some_booking(data)
        minutes: int | None = None
        if how == "fewer":
            minutes = data.draw(st.integers(1, booking.minutes), label="minutes")
        elif how == "more":
            minutes = booking.minutes + data.draw(st.integers(1, 30), label="minutes over")
        amount = booking.minutes if minutes is None else minutes
        operator = (STRANGER if stranger else REDEEMERS)[booking.site]

        def call() -> BookingView:
            return self.bank.complete_booking(booking.id, operator=operator, minutes=minutes)

        status = booking.status(self.now)
        if stranger:
            self.refused({PermissionDeniedError}, call)
            return
        if status == "completed":
            if amount != booking.redeemed:
                self.refused({IdempotencyConflictError}, call)
                return
            view = self.unchanged(call)
            assert (view.status, view.redeemed_minutes) == ("completed", booking.redeemed)
            return
        found: set[type[TimebankError]] = set()
        if status != "booked":
            found.add(ServiceStateError)
        if amount > booking.minutes:
            found.add(InvalidAmountError)
        if self.model.members[booking.member_id].status != "active":
            found.add(MemberStateError)
        if found:
            self.refused(found, call)
            return
        view = self.wrote(call)
        event("booking completed" + (" for fewer minutes" if amount < booking.minutes else ""))
        taken = self.model.consume(booking.member_id, amount)
        self.model.redeemed[booking.site] += amount
        booking.state, booking.redeemed = "completed", amount
        assert (view.status, view.redeemed_minutes) == ("completed", amount)
        assert view.redemption_id is not None
        redemption = self.bank.redemption(view.redemption_id)
        assert (
            redemption.idempotency_key,
            redemption.member_id,
            redemption.recipient_id,
            redemption.site,
            redemption.service_type,
            redemption.minutes,
            redemption.occurred_at,
            redemption.redeemed_by,
            redemption.lots,
        ) == (
            f"booking:{booking.key}",
            booking.member_id,
            booking.recipient_id,
            booking.site,
            booking.service_type,
            amount,
            self.now,
            operator,
            tuple(sorted(taken)),
        )

    @precondition(lambda self: bool(self.model.bookings))
    @rule(
        data=st.data(),
        reason=st.sampled_from(REASONS),
        stranger=st.sampled_from([False, False, False, False, False, True]),
    )
    def cancel_booking(self, data: st.DataObject, reason: str, stranger: bool) -> None:
        """Release a booking's minutes (a frozen member's too). Again with the same reason:
        a replay; with another: refused, as is cancelling a completed or expired one."""
        booking = self.some_booking(data)
        operator = (STRANGER if stranger else REDEEMERS)[booking.site]

        def call() -> BookingView:
            return self.bank.cancel_booking(booking.id, reason=reason, operator=operator)

        status = booking.status(self.now)
        if stranger:
            self.refused({PermissionDeniedError}, call)
        elif status == "cancelled" and booking.reason == reason:
            assert self.unchanged(call).status == "cancelled"
        elif status == "cancelled":
            self.refused({ExistsError}, call)
        elif status != "booked":
            self.refused({ServiceStateError}, call)
        else:
            view = self.wrote(call)
            event("booking cancelled")
            booking.state, booking.reason = "cancelled", reason
            assert (view.status, view.redemption_id) == ("cancelled", None)

    # -- pools ----------------------------------------------------------------------------

    @rule(data=st.data(), elsewhere=st.sampled_from([False, False, False, True]))
    def donate_minutes(self, data: st.DataObject, elsewhere: bool) -> None:
        self.donate(data, elsewhere=elsewhere)

    def donate(self, data: st.DataObject, *, elsewhere: bool) -> None:
        """A member's free minutes to the pool of their home region (or, ``elsewhere``,
        of any region): their lots move first in, first out into pool lots that keep their
        origin. Refused for a member not active or more minutes than are free."""
        member_id = self.pick_member(data, "donor")
        region = data.draw(st.sampled_from(REGIONS), label="region") if elsewhere else None
        minutes = self.draw_minutes(data, member_id)
        member = self.model.members[member_id]
        operator = RECORDER[member.home_site]
        self.keys += 1
        key = f"don-{self.keys}"
        kwargs: dict[str, Any] = {
            "programme": PROGRAMME,
            "member_id": member_id,
            "minutes": minutes,
            "operator": operator,
            "region": region,
        }

        def call() -> PoolMoveView:
            return self.bank.donate(key, **kwargs)

        found: set[type[TimebankError]] = set()
        if member.status != "active":
            found.add(MemberStateError)
        if minutes > self.free(member_id):
            found.add(LimitExceededError)
        if found:
            exc = self.refused(found, call)
            self.check_limit(exc, minutes, available=self.free(member_id))
            return
        view = self.wrote(call)
        event("donated" + (" elsewhere" if region else ""))
        to = self.region_of(member_id) if region is None else region
        taken = self.model.consume(member_id, minutes)
        assert (
            view.idempotency_key,
            view.programme,
            view.kind,
            view.member_id,
            view.region,
            view.beneficiary_id,
            view.minutes,
            view.pool_minutes,
            view.occurred_at,
            view.entered_by,
            view.lots,
        ) == (
            key,
            PROGRAMME,
            "donation",
            member_id,
            to,
            None,
            minutes,
            minutes,
            self.now,
            operator,
            tuple(sorted(taken)),
        )
        made = [row for row in self.pool_lot_rows() if row[2] == view.entry_id]
        self.add_pool_lots(made, [(to, lot, part) for lot, part in taken], view.entry_id)
        self.model.done[key] = Spending("donate", key, kwargs, view)

    @rule(
        data=st.data(),
        operator=st.sampled_from([ADMIN, ADMIN, "admin"]),
        who=st.sampled_from(["grandma", "grandma", "grandma", "anyone"]),
    )
    def grant(self, data: st.DataObject, operator: str, who: str) -> None:
        """Minutes from a region's pool (mostly one that has some) to an elder of 80 or more
        who lives under it, first in, first out from its lots; they expire from today as the
        policy says. Refused for an administrator of another region, an elder not active, a
        member too young or living elsewhere, more minutes than the pool holds or than fit
        under the elder's storage cap."""
        stocked = [r for r in REGIONS if self.model.pool_balance(r)]
        anywhere = data.draw(st.integers(0, 3), label="any region") == 0
        region = data.draw(
            st.sampled_from(stocked if stocked and not anywhere else REGIONS), label="region"
        )
        member_id = self.model.by_name["grandma"]
        if who == "anyone":
            member_id = data.draw(st.sampled_from(self.member_ids()), label="elder")
        member = self.model.members[member_id]
        stock = self.model.pool_balance(region)
        if stock and data.draw(st.integers(0, 3), label="within the pool"):
            minutes = data.draw(st.integers(1, stock), label="minutes")
        else:
            minutes = data.draw(st.integers(stock + 1, stock + 100), label="minutes")
        self.keys += 1
        key = f"grant-{self.keys}"
        kwargs: dict[str, Any] = {
            "programme": PROGRAMME,
            "region": region,
            "member_id": member_id,
            "minutes": minutes,
            "operator": operator,
        }

        def call() -> PoolMoveView:
            return self.bank.grant(key, **kwargs)

        today = self.policy.local_date(self.now)
        found: set[type[TimebankError]] = set()
        if region not in GRANTERS[operator]:
            found.add(PermissionDeniedError)
        if member.status != "active":
            found.add(MemberStateError)
        if region not in ABOVE[self.region_of(member_id)] or member.age(today) < GRANT_MIN_AGE:
            found.add(PolicyViolationError)
        room = self.model.room(member_id, self.cap)
        if room is not None and minutes > room:
            found.add(CapExceededError)
        if minutes > stock:
            found.add(LimitExceededError)
        if found:
            exc = self.refused(found, call)
            self.check_limit(exc, minutes, available=stock, room=room)
            return
        view = self.wrote(call)
        event("granted")
        taken = self.model.consume_pool(region, minutes)
        assert (
            view.idempotency_key,
            view.programme,
            view.kind,
            view.member_id,
            view.region,
            view.beneficiary_id,
            view.minutes,
            view.pool_minutes,
            view.occurred_at,
            view.entered_by,
            view.lots,
        ) == (
            key,
            PROGRAMME,
            "grant",
            member_id,
            region,
            None,
            minutes,
            minutes,
            self.now,
            operator,
            tuple(sorted(taken)),
        )
        days = self.policy.lot_expiry_days
        expires_on = None if days is None else today + timedelta(days=days)
        self.adopt_new_lots(member_id, view.entry_id, taken, self.model.pool_lots, expires_on)
        self.model.done[key] = Spending("grant", key, kwargs, view)

    # -- expiry ---------------------------------------------------------------------------

    @rule(back=st.sampled_from([0, 0, 60, 24 * 60, -1]))
    def expire(self, back: int) -> None:
        """The expiry sweep as of ``back`` minutes ago (in the future when negative:
        refused): the due lots of active members, oldest first, give up their minutes (to
        the programme's expired account or to the pool of the member's home region, as the
        policy in force then says), except the minutes live bookings hold. Run again at once,
        it expires nothing and writes nothing."""
        as_of = self.now - timedelta(minutes=back)

        def call() -> int:
            return self.bank.expire(PROGRAMME, as_of=as_of, operator=ADMIN)

        if as_of > self.now:
            self.refused({InvalidInputError}, call)
            return
        _, policy = self.policy_at(as_of)
        today = policy.local_date(as_of)
        plan: list[tuple[int, list[tuple[MLot, int]]]] = []
        for member_id in self.member_ids():
            if self.model.members[member_id].status != "active":
                continue
            due = [
                lot
                for lot in self.model.member_lots(member_id, open_only=True)
                if lot.expires_on is not None and lot.expires_on <= today
            ]
            free = self.free(member_id)
            parts: list[tuple[MLot, int]] = []
            for lot in due:
                part = min(lot.remaining, free)
                if part <= 0:
                    break
                parts.append((lot, part))
                free -= part
            if parts:
                if sum(part for _, part in parts) < sum(lot.remaining for lot in due):
                    event("expiry spared minutes that bookings hold")
                plan.append((member_id, parts))
        count = self.wrote(call)
        assert count == sum(1 for _, parts in plan for lot, part in parts if part == lot.remaining)
        event(f"expired: {min(count, 2)}{'+' if count >= 2 else ''} lots")
        slices: list[tuple[str, int, int]] = []
        for member_id, parts in plan:
            for lot, part in parts:
                lot.remaining -= part
                if policy.expired_to == "programme":
                    self.model.expired += part
                else:
                    slices.append((self.region_of(member_id), lot.id, part))
        self.add_pool_lots(self.new_pool_lots(), slices, None)
        assert self.unchanged(call) == 0, "a second sweep expired more"

    def adopt_new_lots(
        self,
        owner_id: int,
        entry_id: int,
        taken: list[tuple[int, int]],
        sources: Mapping[int, Any],
        expires_on: date | Literal["keep"] | None,
    ) -> None:
        """The lots ``entry_id`` made for ``owner_id``, one per slice taken from ``sources``
        (by lot id, in the order taken), join the model with their source's origin and
        earned day, and its expiry (``"keep"``) or ``expires_on``."""
        made = sorted(
            (
                lot
                for lot in self.bank.lots(owner_id, open_only=False)
                if lot.source_entry_id == entry_id
            ),
            key=lambda lot: lot.id,
        )
        assert len(made) == len(taken), (made, taken)
        for new, (source_id, part) in zip(made, taken, strict=True):
            source = sources[source_id]
            assert new.id not in self.model.lots
            self.model.lots[new.id] = MLot(
                new.id,
                owner_id,
                entry_id,
                part,
                part,
                source.origin_site,
                source.earned_on,
                source.expires_on if expires_on == "keep" else expires_on,
            )

    # -- invariants -----------------------------------------------------------------------

    @invariant()
    def balances_and_lots_match(self) -> None:
        cap = self.cap
        for member in self.model.members.values():
            expected = self.model.balance(member.id)
            held = self.model.held(member.id, self.now)
            assert 0 <= held <= expected, member
            assert cap is None or expected <= cap, f"member {member.id} holds over the cap"
            view = self.bank.member(member.id)
            assert (
                view.balance_minutes,
                view.held_minutes,
                view.status,
                view.status_reason,
                view.acts_as,
                view.beneficiary_id,
            ) == (
                expected,
                held,
                member.status,
                member.reason,
                member.acts_as,
                self.model.beneficiaries.get(member.id),
            ), member
            assert self.bank.lots_total(member.id) == expected, member
            open_lots = self.bank.lots(member.id)
            assert sum(lot.remaining_minutes for lot in open_lots) == expected, member
            assert all(lot.remaining_minutes > 0 for lot in open_lots)
            every = self.bank.lots(member.id, open_only=False)
            assert [
                (
                    lot.id,
                    lot.source_entry_id,
                    lot.minutes,
                    lot.remaining_minutes,
                    lot.origin_site,
                    lot.earned_on,
                    lot.expires_on,
                )
                for lot in every
            ] == [lot.row() for lot in self.model.member_lots(member.id)], member
            assert all(lot.member_id == member.id for lot in every)
            order = [(lot.earned_on, lot.id) for lot in open_lots]
            assert order == sorted(order), "lots are listed first in, first out"

    @invariant()
    def books_balance(self) -> None:
        """The trial balance is zero; stations, sites, the expired account and every
        region pool hold what the model says; no account with a floor is below it."""
        trial = self.bank.ledger.trial_balance()
        assert trial.total_minutes == 0
        posted = {line.account: line.posted_minutes for line in trial.lines}
        for site, account in self.issued_accounts.items():
            assert account is not None
            assert posted.get(account, 0) == self.model.issued(site), site
        for site, account in self.redeemed_accounts.items():
            assert posted.get(account, 0) == self.model.redeemed[site], site
        assert posted.get(self.expired_account, 0) == self.model.expired
        for region, account in self.pool_accounts.items():
            assert posted.get(account, 0) == self.model.pool_balance(region) >= 0, region

    @invariant()
    def pools_match(self) -> None:
        """Every pool lot as the model has it; each pool's lots add up to its balance."""
        assert self.pool_lot_rows() == [
            lot.row() for lot in sorted(self.model.pool_lots.values(), key=lambda lot: lot.id)
        ]
        for region in REGIONS:
            total = self.bank.pool_lots_total(PROGRAMME, region)
            assert total == self.model.pool_balance(region), region

    @invariant()
    def guarantee_is_what_members_and_pools_hold(self) -> None:
        """The exposure now is the members' and pools' balances the model predicts."""
        members = sum(self.model.balance(member) for member in self.model.members)
        pools = sum(self.model.pool_balance(region) for region in REGIONS)
        exposure = self.bank.guarantee_exposure(PROGRAMME)
        assert (exposure.member_minutes, exposure.pool_minutes) == (members, pools)
        assert exposure.members_with_balance == sum(
            1 for member in self.model.members if self.model.balance(member) > 0
        )

    @invariant()
    def bookings_match(self) -> None:
        for booking in self.model.bookings.values():
            view = self.bank.booking(booking.id)
            assert (
                view.member_id,
                view.recipient_id,
                view.site,
                view.minutes,
                view.expires_at,
                view.status,
                view.redeemed_minutes,
                view.redemption_id is not None,
            ) == (
                booking.member_id,
                booking.recipient_id,
                booking.site,
                booking.minutes,
                booking.expires_at,
                booking.status(self.now),
                booking.redeemed,
                booking.state == "completed",
            ), booking

    @invariant()
    def services_match(self) -> None:
        views = [self.bank.service(service_id) for service_id in sorted(self.model.services)]
        for view in views:
            self.check_view(view, self.model.services[view.id])
        live = [v for v in views if v.status in LIVE]
        for i, a in enumerate(live):
            for b in live[i + 1 :]:
                if a.volunteer_id == b.volunteer_id:
                    assert not (a.started_at < b.ended_at and b.started_at < a.ended_at), (
                        f"services {a.id} and {b.id} of member {a.volunteer_id} overlap"
                    )


class PostgresBankMachine(BankMachine):
    """The same machine on one PostgreSQL database, its schema dropped and created again
    before every example."""

    server_url: ClassVar[str] = ""

    def build_world(self) -> World:
        engine = sa.create_engine(self.server_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql("DROP SCHEMA public CASCADE")
                conn.exec_driver_sql("CREATE SCHEMA public")
        finally:
            engine.dispose()
        return bankworld.build(self.server_url, self.clock)


class MariaDBBankMachine(BankMachine):
    """The same machine on one MariaDB database, dropped and created again before every
    example."""

    server_url: ClassVar[str] = ""

    def build_world(self) -> World:
        engine = sa.create_engine(self.server_url, poolclass=NullPool, isolation_level="AUTOCOMMIT")
        name = engine.url.database
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql(f"DROP DATABASE `{name}`")
                conn.exec_driver_sql(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        finally:
            engine.dispose()
        return bankworld.build(self.server_url, self.clock)


SQLITE_SETTINGS = settings(
    max_examples=25,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
POSTGRES_SETTINGS = settings(
    max_examples=6,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
# Each MariaDB example drops and creates a database: shrink one failure, not every one.
MARIADB_SETTINGS = settings(
    max_examples=4,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
    report_multiple_bugs=False,
)


@pytest.mark.slow
def test_bank_matches_model_on_sqlite() -> None:
    run_state_machine_as_test(BankMachine, settings=SQLITE_SETTINGS)


@pytest.mark.slow
@pytest.mark.postgres
def test_bank_matches_model_on_postgres(postgres_url: str) -> None:
    machine = type("Machine", (PostgresBankMachine,), {"server_url": postgres_url})
    run_state_machine_as_test(machine, settings=POSTGRES_SETTINGS)


@pytest.mark.slow
@pytest.mark.mariadb
def test_bank_matches_model_on_mariadb(mariadb_url: str) -> None:
    machine = type("Machine", (MariaDBBankMachine,), {"server_url": mariadb_url})
    run_state_machine_as_test(machine, settings=MARIADB_SETTINGS)
