"""The time bank against an in-memory reference model, step by step (Hypothesis stateful).

The world is ``tests.bankworld``'s programme "langfang" (its policy: a service is at most
480 minutes, one confirmation deposits, pending services are confirmed 24 hours after they
ended). The model keeps members (role, status, reason, birth date), their relations, services
(content, status, confirming parties), lots (made by deposits and gifts, consumed first in,
first out by reversals, redemptions and gifts), redemptions and gifts; balances follow from
the lots. Before every step it predicts
success or the refusal: the set of error classes that apply (the library may check in any
order, so any one of them is accepted; when one applies, exactly that one). A refusal must
leave every row as it was (``tests.dbdump.dump`` before and after); a replay or a no-op
every row of the library's tables (read through its metadata: cheaper, and they are
frequent). After every step the invariants compare balances, lots, services and the trial
balance with the model.

Time is the injected ``tests.clocks.Clock``, which the machine advances. Every example starts
from the world ``bankworld.build`` makes: on SQLite a copy of one file built per process, on
PostgreSQL and MariaDB built again in a wiped database.
"""

from __future__ import annotations

import atexit
import shutil
import tempfile
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, timedelta, timezone
from functools import partial
from pathlib import Path
from typing import Any, ClassVar, TypeVar

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
    GiftView,
    MemberView,
    RedemptionView,
    ServiceView,
    TimeBank,
    credited_minutes,
)
from timebank.errors import (
    AccountStateError,
    ExistsError,
    IdempotencyConflictError,
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
Snapshot = dict[str, list[tuple[Any, ...]]]
Refusal = frozenset[type[TimebankError]]

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
#: Station software in China passes Beijing time; the bank stores UTC.
ZONES = (UTC, timezone(timedelta(hours=8)))
LIVE = ("pending", "confirmed")
#: Where minutes are redeemed, and who redeems there (a region administrator at a station).
REDEEMERS = {"sunrise": "sunrise-op", "xinyuan-sw": ADMIN, "xinyuan-vol": ADMIN}
#: Birth dates: the world's members are born in 1960 (grandma in 1938); the machine's people
#: in 1950, except one too young to redeem.
BORN = {"grandma": date(1938, 3, 3), "qian": date(2000, 1, 1)}
WORLD_BORN = date(1960, 5, 1)
NEW_BORN = date(1950, 1, 1)
#: What one member is to another (``relate``); gifts go to spouses, parents and children.
RELATIONS = ("parent", "child", "spouse", "friend")
INVERSE = {"parent": "child", "child": "parent", "spouse": "spouse", "friend": "friend"}


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
        return (self.id, self.source_entry_id, self.minutes, self.remaining, self.origin_site,
                self.earned_on, self.expires_on)


@dataclass(frozen=True)
class Spending:
    """A redemption or a gift that succeeded: its arguments and its view."""

    key: str
    kwargs: dict[str, Any]
    view: RedemptionView | GiftView


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
    status: str = "pending"
    reason: str = ""
    #: party ("operator", "recipient", "automatic") -> who confirmed, as the view shows it.
    parties: dict[str, str] = field(default_factory=dict)
    deposit_entry_id: int | None = None
    lot_id: int | None = None

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


class Model:
    def __init__(self) -> None:
        self.members: dict[int, MMember] = {}
        self.by_name: dict[str, int] = {}
        self.services: dict[int, MService] = {}
        self.lots: dict[int, MLot] = {}
        #: (member, other) -> what the member is to the other.
        self.relations: dict[tuple[int, int], str] = {}
        self.redeemed: dict[str, int] = dict.fromkeys(REDEEMERS, 0)
        self.redemptions: dict[str, Spending] = {}
        self.gifts: dict[str, Spending] = {}

    def balance(self, member_id: int) -> int:
        return sum(lot.remaining for lot in self.lots.values() if lot.member_id == member_id)

    def member_lots(self, member_id: int, *, open_only: bool = False) -> list[MLot]:
        """The member's lots in consumption order: earned first, then created first."""
        return sorted((lot for lot in self.lots.values() if lot.member_id == member_id
                       and (lot.remaining > 0 or not open_only)),
                      key=lambda lot: (lot.earned_on, lot.id))

    def consume(self, member_id: int, minutes: int, first_lot_id: int | None = None
                ) -> list[tuple[int, int]]:
        """Take minutes first in, first out (``first_lot_id`` first): (lot id, minutes)."""
        open_lots = self.member_lots(member_id, open_only=True)
        open_lots.sort(key=lambda lot: lot.id != first_lot_id)
        taken: list[tuple[int, int]] = []
        left = minutes
        for lot in open_lots:
            if left == 0:
                break
            part = min(left, lot.remaining)
            lot.remaining -= part
            taken.append((lot.id, part))
            left -= part
        assert left == 0, "the model consumed more than the member holds"
        return taken

    def issued(self, site: str) -> int:
        return -sum(s.credited for s in self.services.values()
                    if s.site == site and s.status == "confirmed")

    def live_overlaps(self, volunteer_id: int, start: datetime, end: datetime) -> list[int]:
        return [s.id for s in self.services.values()
                if s.volunteer_id == volunteer_id and s.status in LIVE and s.overlaps(start, end)]

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
        self.issued_accounts = {s: self.bank.site(PROGRAMME, s).issued_account for s in STATIONS}
        self.redeemed_accounts = {s: self.bank.site(PROGRAMME, s).redeemed_account
                                  for s in REDEEMERS}
        for name, member_id in self.world.members.items():
            view = self.bank.member(member_id)
            self.model.members[member_id] = MMember(member_id, view.acts_as, view.home_site,
                                                    BORN.get(name, WORLD_BORN))
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

    def snapshot(self) -> Snapshot:
        return self._snapshot if self._snapshot is not None else dump(self.world.engine)

    def refused(self, expected: Iterable[type[TimebankError]], call: Callable[[], object]
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
            f"got {type(exc).__name__}: {exc}")
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
                table.name: [tuple(row) for row in conn.execute(
                    sa.select(table).order_by(*table.primary_key.columns))]
                for table in tables_metadata.sorted_tables
            }

    def wrote(self, call: Callable[[], T]) -> T:
        self._snapshot = None
        return call()

    def member_ids(self) -> list[int]:
        return sorted(self.model.members)

    def some_service(self, data: st.DataObject) -> MService:
        service_id = data.draw(st.sampled_from(sorted(self.model.services)), label="service")
        return self.model.services[service_id]

    def check_view(self, view: ServiceView, service: MService) -> None:
        rec = service.recording
        assert view.id == service.id
        assert (view.idempotency_key, view.programme, view.volunteer_id, view.recipient_ids,
                view.site, view.service_type, view.rating, view.note) == (
            rec.key, PROGRAMME, rec.volunteer_id, tuple(sorted(set(rec.recipient_ids))),
            rec.site, rec.service_type, rec.rating, rec.note)
        assert (view.started_at, view.ended_at) == (rec.started_at, rec.ended_at)
        assert view.started_at.utcoffset() == timedelta(0)
        assert (view.raw_minutes, view.weight_permille) == (
            rec.raw_minutes, service.weight_permille)
        assert view.credited_minutes == service.credited
        assert view.credited_minutes == credited_minutes(view.raw_minutes, view.weight_permille)
        assert view.credited_minutes == view.raw_minutes * view.weight_permille // 1000
        assert (view.status, view.reason, view.recorded_by, view.policy_version) == (
            service.status, service.reason, RECORDER[rec.site], 1)
        assert view.confirmed_by == tuple(service.parties.values())
        deposited = service.status in ("confirmed", "reversed")
        assert (view.deposit_entry_id is not None) == deposited
        assert view.deposit_entry_id == service.deposit_entry_id
        assert (view.reversal_entry_id is not None) == (service.status == "reversed")

    def confirmed(self, service: MService, party: str, by: str, view: ServiceView) -> None:
        service.status = "confirmed"
        service.parties[party] = by
        service.deposit_entry_id = view.deposit_entry_id
        self.check_view(view, service)
        made = [lot for lot in self.bank.lots(service.volunteer_id, open_only=False)
                if lot.source_entry_id == view.deposit_entry_id]
        assert len(made) == 1, made
        service.lot_id = made[0].id
        assert service.lot_id not in self.model.lots
        self.model.lots[service.lot_id] = MLot(
            service.lot_id, service.volunteer_id, made[0].source_entry_id, service.credited,
            service.credited, service.site, POLICY.local_date(service.recording.ended_at))

    # -- members --------------------------------------------------------------------------

    @rule(name=st.sampled_from(NEW_PEOPLE), acts_as=st.sampled_from(ACTS_AS),
          home=st.sampled_from(STATIONS), same=st.sampled_from([True, True, True, False]))
    def register_member(self, name: str, acts_as: str, home: str, same: bool) -> None:
        """A person (now and then recipient-only or volunteer-only); registering one again
        with the same data (``same``) finds them, with other data is refused."""
        known = self.model.by_name.get(name)
        if known is not None and same:
            acts_as = self.model.members[known].acts_as
            home = self.model.members[known].home_site

        def call() -> MemberView:
            return self.bank.register_member(
                PROGRAMME, identity=f"ID-{name}", display_name=name.title(),
                birth_date=BORN.get(name, NEW_BORN), home_site=home, operator=RECORDER[home],
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
        assert (view.programme, view.kind, view.acts_as, view.home_site, view.status,
                view.balance_minutes) == (PROGRAMME, "person", acts_as, home, "active", 0)
        self.model.members[view.id] = MMember(view.id, acts_as, home, BORN.get(name, NEW_BORN))
        self.model.by_name[name] = view.id

    @rule(data=st.data(), change=st.sampled_from([True, True, True, False]),
          reason=st.sampled_from(STATUS_REASONS))
    def set_member_status(self, data: st.DataObject, change: bool, reason: str) -> None:
        """Freeze or unfreeze (``change``), or ask for the status the member has: with the
        same reason a no-op, with another one refused."""
        frozen = [m for m in self.member_ids() if self.model.members[m].status == "frozen"]
        pick_frozen = data.draw(st.booleans(), label="a frozen one")
        pool = frozen if frozen and pick_frozen else self.member_ids()
        member = self.model.members[data.draw(st.sampled_from(pool), label="member")]
        flipped = {"active": "frozen", "frozen": "active"}[member.status]
        status = flipped if change else member.status

        def call() -> MemberView:
            return self.bank.set_member_status(
                member.id, status, reason=reason, operator=ADMIN  # type: ignore[arg-type]
            )

        if member.status == status:
            if member.reason != reason:
                self.refused({ExistsError}, call)
                return
            view = self.unchanged(call)
        else:
            view = self.wrote(call)
            event(f"member {status}")
            member.status, member.reason = status, reason
        assert (view.status, view.status_reason) == (member.status, member.reason)

    # -- recording ------------------------------------------------------------------------

    def draw_start(self, data: st.DataObject, volunteer_id: int, minutes: int) -> datetime:
        """Mostly a start that ends in the past; near the volunteer's other services (to
        overlap them or just touch them) when there are any; now and then one that ends in
        the future."""
        others = [s for s in self.model.services.values() if s.volunteer_id == volunteer_id]
        how = data.draw(st.sampled_from(["ago", "ago", "near", "touch", "future"]), label="when")
        if how in ("near", "touch") and others:
            other = data.draw(st.sampled_from(sorted(others, key=lambda s: s.id)),
                              label="next to")
            if how == "touch":
                after = data.draw(st.booleans(), label="touch after")
                if after:
                    return other.recording.ended_at
                return other.recording.started_at - timedelta(minutes=minutes)
            offset = data.draw(st.integers(-minutes - 5, other.recording.raw_minutes + 5),
                               label="offset minutes")
            return other.recording.started_at + timedelta(minutes=offset)
        if how == "future":
            return self.now - timedelta(minutes=minutes) + timedelta(
                minutes=data.draw(st.integers(1, 60), label="minutes too late"))
        gap = data.draw(st.one_of(st.integers(0, 180), st.integers(0, 3000)), label="gap")
        return self.now - timedelta(minutes=minutes + gap)

    def draw_recording(self, data: st.DataObject, volunteer_id: int,
                       recipients: tuple[int, ...], minutes: int) -> Recording:
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
                    rec.volunteer_id, rec.started_at, rec.ended_at)
            return
        view = self.wrote(call)
        event("recorded")
        assert view.id not in self.model.services
        service = MService(view.id, rec, POLICY.service_types[rec.service_type].weight_permille)
        self.check_view(view, service)
        self.model.services[view.id] = service

    @initialize(data=st.data(), count=st.integers(0, 3))
    def seed_services(self, data: st.DataObject, count: int) -> None:
        """A few services the world's volunteers gave grandma yesterday, so that confirming,
        rejecting and reversing have something to work on from the first step; most of them
        confirmed, so that there are minutes to redeem and give."""
        grandma = self.world.members["grandma"]
        for hour in range(count):
            volunteer = self.world.members[data.draw(st.sampled_from(["wang", "li", "zhao"]),
                                                     label="volunteer")]
            start = self.now - timedelta(days=1, hours=hour)
            minutes = data.draw(st.integers(1, 60), label="minutes")
            self.keys += 1
            rec = Recording(f"svc-{self.keys}", volunteer, (grandma,),
                            data.draw(st.sampled_from(STATIONS), label="site"),
                            data.draw(st.sampled_from(SERVICE_TYPES), label="type"),
                            start, start + timedelta(minutes=minutes))
            assert not self.model.record_refusals(rec, self.now)
            self.record(rec, frozenset())
            if data.draw(st.sampled_from([True, True, False]), label="confirmed"):
                service = next(s for s in self.model.services.values() if s.recording == rec)
                confirmer = CONFIRMER[rec.site]
                view = self.wrote(partial(self.bank.confirm_service, service.id,
                                          operator=confirmer))
                self.confirmed(service, "operator", confirmer, view)

    @rule(data=st.data(), recipients=st.integers(1, 2), anyone=st.integers(0, 3),
          minutes=st.one_of(st.integers(1, MAX_MINUTES), st.integers(MAX_MINUTES - 5, 600)))
    def record_service(self, data: st.DataObject, recipients: int, anyone: int,
                       minutes: int) -> None:
        """Mostly an active volunteer serving active members who may receive; when
        ``anyone`` is 0, any member serving any members (themselves included)."""
        members = self.model.members
        ids = self.member_ids()
        volunteers = [m for m in ids if members[m].status == "active"
                      and members[m].acts_as != "recipient"]
        if anyone == 0 or not volunteers:
            volunteers = ids
        volunteer = data.draw(st.sampled_from(volunteers), label="volunteer")
        served_by = [m for m in ids if m != volunteer and members[m].status == "active"
                     and members[m].acts_as != "volunteer"]
        if anyone == 0 or len(served_by) < recipients:
            served_by = ids
        served = tuple(data.draw(st.lists(st.sampled_from(served_by), min_size=recipients,
                                          max_size=recipients, unique=True), label="recipients"))
        rec = self.draw_recording(data, volunteer, served, minutes)
        self.record(rec, self.model.record_refusals(rec, self.now))

    @precondition(lambda self: any(m.status == "frozen" for m in self.model.members.values()))
    @rule(data=st.data(), minutes=st.integers(1, 120))
    def record_for_frozen_volunteer(self, data: st.DataObject, minutes: int) -> None:
        """Otherwise valid: refused because the volunteer is frozen."""
        frozen = [m.id for m in self.model.members.values() if m.status == "frozen"]
        volunteer = data.draw(st.sampled_from(sorted(frozen)), label="frozen volunteer")
        fit = [m for m in self.member_ids()
               if m != volunteer and self.model.members[m].acts_as != "volunteer"]
        recipient = data.draw(st.sampled_from(fit), label="recipient")
        # Before every service the volunteer has: nothing to overlap.
        earliest = min([s.recording.started_at for s in self.model.services.values()
                        if s.volunteer_id == volunteer] + [self.now])
        start = earliest - timedelta(minutes=minutes + data.draw(st.integers(0, 600)))
        self.keys += 1
        rec = Recording(f"svc-{self.keys}", volunteer, (recipient,),
                        data.draw(st.sampled_from(STATIONS), label="site"), "shopping",
                        start, start + timedelta(minutes=minutes))
        assert self.model.record_refusals(rec, self.now) == {MemberStateError}
        self.record(rec, frozenset({MemberStateError}))

    @precondition(lambda self: bool(self.model.services))
    @rule(data=st.data(),
          change=st.sampled_from([None, None, None, None, "service_type", "ended_at", "note"]))
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
            other = replace(rec, service_type=next(t for t in SERVICE_TYPES
                                                   if t != rec.service_type))
        elif change == "ended_at":
            other = replace(rec, ended_at=rec.ended_at - timedelta(seconds=1))
        else:
            other = replace(rec, note=rec.note + " again")
        exc = self.refused({IdempotencyConflictError}, other.call(self.bank))
        assert isinstance(exc, IdempotencyConflictError)
        assert (exc.key, exc.fields) == (rec.key, (change,))

    # -- deciding -------------------------------------------------------------------------

    @precondition(lambda self: bool(self.model.services))
    @rule(data=st.data(),
          by=st.sampled_from(["confirmer", "confirmer", "recipient", "recipient", "stranger",
                              "other station"]))
    def confirm_service(self, data: st.DataObject, by: str) -> None:
        service = self.some_service(data)
        recipients = service.recording.recipient_ids
        strangers = [m for m in self.member_ids() if m not in recipients]
        if by == "stranger" and not strangers:
            by = "recipient"
        recipient_id: int | None = None
        if by in ("confirmer", "other station"):
            site = service.site if by == "confirmer" else next(
                s for s in STATIONS if s != service.site)
            operator, party = CONFIRMER[site], "operator"
            who = operator
        else:
            operator, party = RECORDER[service.site], "recipient"
            recipient_id = data.draw(st.sampled_from(
                sorted(recipients) if by == "recipient" else strangers), label="recipient")
            who = f"member:{recipient_id}"

        def call() -> ServiceView:
            return self.bank.confirm_service(service.id, operator=operator,
                                             recipient_id=recipient_id)

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
        else:
            view = self.wrote(call)
            event(f"confirmed by {party}")
            self.confirmed(service, party, who, view)

    @precondition(lambda self: bool(self.model.services))
    @rule(data=st.data(), reason=st.sampled_from(REASONS))
    def reject_service(self, data: st.DataObject, reason: str) -> None:
        service = self.some_service(data)

        def call() -> ServiceView:
            return self.bank.reject_service(service.id, reason=reason,
                                            operator=CONFIRMER[service.site])

        if service.status == "rejected" and service.reason == reason:
            self.check_view(self.unchanged(call), service)
        elif service.status != "pending":
            self.refused({ServiceStateError}, call)
        else:
            view = self.wrote(call)
            event("rejected")
            service.status, service.reason = "rejected", reason
            self.check_view(view, service)

    @rule(minutes=st.one_of(st.integers(0, 180), st.integers(600, 3000)),
          back=st.sampled_from([None, 0, 0, 0, 60, 24 * 60, -1]))
    def advance_clock(self, minutes: int, back: int | None) -> None:
        """Time passes; then, unless ``back`` is None, the scheduler calls ``confirm_due``
        as of ``back`` minutes ago (in the future when negative: refused)."""
        self.clock.advance(minutes=minutes)
        if back is None:
            return
        as_of = self.now - timedelta(minutes=back)

        def call() -> int:
            return self.bank.confirm_due(PROGRAMME, as_of=as_of, operator=ADMIN)

        if as_of > self.now:
            self.refused({InvalidInputError}, call)
            return
        due = [s for s in self.model.services.values()
               if s.status == "pending" and s.recording.ended_at + AUTO_CONFIRM <= as_of
               and self.model.members[s.volunteer_id].status == "active"]
        count = self.wrote(call)
        event(f"confirm_due: {min(count, 2)}{'+' if count >= 2 else ''}")
        assert count == len(due)
        for service in due:
            self.confirmed(service, "automatic", ADMIN, self.bank.service(service.id))

    @precondition(lambda self: bool(self.model.services))
    @rule(data=st.data(), reason=st.sampled_from(REASONS))
    def reverse_service(self, data: st.DataObject, reason: str) -> None:
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
        elif service.status != "confirmed":
            self.refused({ServiceStateError}, call)
        elif self.model.members[service.volunteer_id].status != "active":
            # A frozen member's account moves nothing.
            self.refused({AccountStateError, MemberStateError}, call)
        elif self.model.balance(service.volunteer_id) < service.credited:
            self.refused({LimitExceededError}, call)
        else:
            view = self.wrote(call)
            event("reversed")
            service.status, service.reason = "reversed", reason
            self.check_view(view, service)
            self.model.consume(service.volunteer_id, service.credited, service.lot_id)

    # -- relations, redemptions and gifts -------------------------------------------------

    def pick_member(self, data: st.DataObject, label: str, *, related: bool = False) -> int:
        """Mostly a member with minutes to spend (and a relative, when ``related``) when
        there is one, now and then anyone."""
        rich = [m for m in self.member_ids() if self.model.balance(m) > 0]
        if related and any((m, o) in self.model.relations
                            for m in rich for o in self.member_ids()):
            rich = [m for m in rich if any(k[0] == m for k in self.model.relations)]
        anyone = data.draw(st.integers(0, 3), label=f"{label}: anyone") == 0
        pool = rich if rich and not anyone else self.member_ids()
        return data.draw(st.sampled_from(pool), label=label)

    def draw_minutes(self, data: st.DataObject, member_id: int) -> int:
        """Mostly at most the member's balance; now and then more than it."""
        balance = self.model.balance(member_id)
        if balance and data.draw(st.integers(0, 3), label="within balance"):
            return data.draw(st.integers(1, balance), label="minutes")
        return data.draw(st.integers(balance + 1, balance + 200), label="minutes")

    @rule(data=st.data(), kind=st.sampled_from(RELATIONS))
    def relate_members(self, data: st.DataObject, kind: str) -> None:
        """``member`` is the ``kind`` of ``other`` (stored both ways); again: a no-op, or
        refused when it says another kind."""
        member, other = data.draw(st.lists(st.sampled_from(self.member_ids()), min_size=2,
                                           max_size=2, unique=True), label="relatives")
        self.relate(member, other, kind)

    @initialize(data=st.data(), kind=st.sampled_from(RELATIONS))
    def seed_relation(self, data: st.DataObject, kind: str) -> None:
        """Two of the world's members related from the start, so that gifts can happen."""
        names = data.draw(st.lists(st.sampled_from(sorted(self.world.members)), min_size=2,
                                   max_size=2, unique=True), label="relatives")
        self.relate(self.world.members[names[0]], self.world.members[names[1]], kind)

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

    def check_limit(self, exc: TimebankError, member_id: int, minutes: int) -> None:
        if isinstance(exc, LimitExceededError):
            assert (exc.available_minutes, exc.requested_minutes) == (
                self.model.balance(member_id), minutes)

    @rule(data=st.data(), site=st.sampled_from(sorted(REDEEMERS)),
          service_type=st.sampled_from(SERVICE_TYPES),
          for_other=st.sampled_from([False, False, False, True]))
    def redeem(self, data: st.DataObject, site: str, service_type: str,
               for_other: bool) -> None:
        """A member's minutes pay for care for themselves (or, refused by this policy, for
        somebody else, their spouse included): refused for a frozen member, a recipient under
        60 or more minutes than the member has."""
        member_id = self.pick_member(data, "member")
        recipient_id = member_id
        if for_other:
            spouses = [o for (m, o), kind in self.model.relations.items()
                       if m == member_id and kind == "spouse"]
            others = [m for m in self.member_ids() if m != member_id]
            recipient_id = data.draw(st.sampled_from(spouses or others), label="recipient")
        minutes = self.draw_minutes(data, member_id)
        self.keys += 1
        kwargs: dict[str, Any] = {
            "programme": PROGRAMME, "member_id": member_id, "site": site,
            "service_type": service_type, "minutes": minutes, "operator": REDEEMERS[site],
            "recipient_id": recipient_id if for_other else None}
        key = f"red-{self.keys}"

        def call() -> RedemptionView:
            return self.bank.redeem(key, **kwargs)

        member, recipient = self.model.members[member_id], self.model.members[recipient_id]
        found: set[type[TimebankError]] = set()
        if member.status != "active" or recipient.status != "active":
            found.add(MemberStateError)
        if recipient_id != member_id:
            found.add(PolicyViolationError)  # spouse_redeems is off
        if recipient.age(POLICY.local_date(self.now)) < (POLICY.redemption_min_age or 0):
            found.add(PolicyViolationError)
        if minutes > self.model.balance(member_id):
            found.add(LimitExceededError)
        if found:
            self.check_limit(self.refused(found, call), member_id, minutes)
            return
        view = self.wrote(call)
        event("redeemed")
        taken = self.model.consume(member_id, minutes)
        assert (view.idempotency_key, view.programme, view.member_id, view.recipient_id,
                view.site, view.service_type, view.minutes, view.occurred_at,
                view.redeemed_by) == (key, PROGRAMME, member_id, recipient_id, site,
                                      service_type, minutes, self.now, REDEEMERS[site])
        assert view.lots == tuple(sorted(taken))
        self.model.redeemed[site] += minutes
        self.model.redemptions[key] = Spending(key, kwargs, view)

    @rule(data=st.data(), to=st.sampled_from(["relative", "relative", "relative", "anyone",
                                              "self"]))
    def give(self, data: st.DataObject, to: str) -> None:
        """Minutes to a relative (spouse, parent or child); to a friend, a stranger or
        oneself refused, as are more minutes than the giver has or a frozen party."""
        giver_id = self.pick_member(data, "giver", related=True)
        relatives = sorted(o for (m, o) in self.model.relations if m == giver_id)
        if to == "self":
            receiver_id = giver_id
        else:
            receiver_id = data.draw(st.sampled_from(
                relatives if relatives and to == "relative" else self.member_ids()),
                label="receiver")
        minutes = self.draw_minutes(data, giver_id)
        self.keys += 1
        giver = self.model.members[giver_id]
        operator = RECORDER[giver.home_site]
        kwargs: dict[str, Any] = {"programme": PROGRAMME, "giver_id": giver_id,
                                  "receiver_id": receiver_id, "minutes": minutes,
                                  "operator": operator}
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
        if minutes > self.model.balance(giver_id):
            found.add(LimitExceededError)
        if found:
            self.check_limit(self.refused(found, call), giver_id, minutes)
            return
        view = self.wrote(call)
        event(f"gave to {INVERSE[giver_is or 'friend']}")
        taken = self.model.consume(giver_id, minutes)
        assert (view.idempotency_key, view.programme, view.giver_id, view.receiver_id,
                view.minutes, view.occurred_at, view.given_by) == (
            key, PROGRAMME, giver_id, receiver_id, minutes, self.now, operator)
        assert view.lots == tuple(sorted(taken))
        made = sorted((lot for lot in self.bank.lots(receiver_id, open_only=False)
                       if lot.source_entry_id == view.entry_id), key=lambda lot: lot.id)
        assert len(made) == len(taken), (made, taken)
        for new, (source_id, part) in zip(made, taken, strict=True):
            source = self.model.lots[source_id]
            assert new.id not in self.model.lots
            self.model.lots[new.id] = MLot(new.id, receiver_id, view.entry_id, part, part,
                                           source.origin_site, source.earned_on,
                                           source.expires_on)
        self.model.gifts[key] = Spending(key, kwargs, view)

    @precondition(lambda self: bool(self.model.redemptions or self.model.gifts))
    @rule(data=st.data(), more=st.sampled_from([0, 0, 1, -1]))
    def replay_spending(self, data: st.DataObject, more: int) -> None:
        """A redemption or a gift again with its key: the same content returns it and writes
        nothing, whatever happened since; other minutes are a conflict."""
        done = [*self.model.redemptions.values(), *self.model.gifts.values()]
        spent = data.draw(st.sampled_from(done), label="spending")
        kwargs = {**spent.kwargs, "minutes": spent.kwargs["minutes"] + more}
        if kwargs["minutes"] == 0:
            kwargs["minutes"] = 2

        def call() -> RedemptionView | GiftView:
            if isinstance(spent.view, RedemptionView):
                return self.bank.redeem(spent.key, **kwargs)
            return self.bank.give(spent.key, **kwargs)

        if kwargs == spent.kwargs:
            assert self.unchanged(call) == spent.view
            return
        exc = self.refused({IdempotencyConflictError}, call)
        assert isinstance(exc, IdempotencyConflictError)
        assert (exc.key, tuple(exc.fields)) == (spent.key, ("minutes",))

    # -- invariants -----------------------------------------------------------------------

    @invariant()
    def balances_and_lots_match(self) -> None:
        for member in self.model.members.values():
            expected = self.model.balance(member.id)
            assert expected >= 0
            view = self.bank.member(member.id)
            assert (view.balance_minutes, view.status, view.status_reason, view.acts_as) == (
                expected, member.status, member.reason, member.acts_as), member
            assert self.bank.lots_total(member.id) == expected, member
            open_lots = self.bank.lots(member.id)
            assert sum(lot.remaining_minutes for lot in open_lots) == expected, member
            assert all(lot.remaining_minutes > 0 for lot in open_lots)
            every = self.bank.lots(member.id, open_only=False)
            assert [
                (lot.id, lot.source_entry_id, lot.minutes, lot.remaining_minutes,
                 lot.origin_site, lot.earned_on, lot.expires_on) for lot in every
            ] == [lot.row() for lot in self.model.member_lots(member.id)], member
            assert all(lot.member_id == member.id for lot in every)
            order = [(lot.earned_on, lot.id) for lot in open_lots]
            assert order == sorted(order), "lots are listed first in, first out"

    @invariant()
    def books_balance(self) -> None:
        trial = self.bank.ledger.trial_balance()
        assert trial.total_minutes == 0
        posted = {line.account: line.posted_minutes for line in trial.lines}
        for site, account in self.issued_accounts.items():
            assert account is not None
            assert posted.get(account, 0) == self.model.issued(site), site
        for site, account in self.redeemed_accounts.items():
            assert posted.get(account, 0) == self.model.redeemed[site], site

    @invariant()
    def services_match(self) -> None:
        views = [self.bank.service(service_id) for service_id in sorted(self.model.services)]
        for view in views:
            self.check_view(view, self.model.services[view.id])
        live = [v for v in views if v.status in LIVE]
        for i, a in enumerate(live):
            for b in live[i + 1:]:
                if a.volunteer_id == b.volunteer_id:
                    assert not (a.started_at < b.ended_at and b.started_at < a.ended_at), (
                        f"services {a.id} and {b.id} of member {a.volunteer_id} overlap")


class PostgresBankMachine(BankMachine):
    """The same machine on one PostgreSQL database, its schema dropped and created again
    before every example."""

    server_url: ClassVar[str] = ""

    def build_world(self) -> World:
        engine = sa.create_engine(self.server_url, poolclass=NullPool,
                                  isolation_level="AUTOCOMMIT")
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
        engine = sa.create_engine(self.server_url, poolclass=NullPool,
                                  isolation_level="AUTOCOMMIT")
        name = engine.url.database
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql(f"DROP DATABASE `{name}`")
                conn.exec_driver_sql(f"CREATE DATABASE `{name}` CHARACTER SET utf8mb4")
        finally:
            engine.dispose()
        return bankworld.build(self.server_url, self.clock)


SQLITE_SETTINGS = settings(max_examples=20, stateful_step_count=25, deadline=None,
                           suppress_health_check=[HealthCheck.too_slow])
POSTGRES_SETTINGS = settings(max_examples=6, stateful_step_count=25, deadline=None,
                             suppress_health_check=[HealthCheck.too_slow])
# Each MariaDB example drops and creates a database: shrink one failure, not every one.
MARIADB_SETTINGS = settings(max_examples=4, stateful_step_count=25, deadline=None,
                            suppress_health_check=[HealthCheck.too_slow],
                            report_multiple_bugs=False)


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
