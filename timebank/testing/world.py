"""A small time bank to test against, and a clock that only moves when told to.

:func:`make_world` builds, in an empty database, the programme ``"riverside"``::

    north (province)                     root region; operator "admin" (programme admin)
    └── river-city (city)
        └── east (county)                operators "east-admin" (administrator),
            │                                      "auditor" (auditor: never writes)
            └── old-town (township)      the members' home region (its pool takes donations)
                ├── station-a  social-work station: "recorder-a" (recorder),
                │                                   "confirmer-a" (confirmer)
                ├── station-b  volunteer station:   "staff-b" (recorder and confirmer)
                └── care-home  institution:         "redeemer" (redeemer)

and four members, all living at ``station-a``: ``ann``, ``bob`` and ``cai`` (born 1960,
volunteers and recipients; ann and bob are spouses, so they may give each other minutes)
and ``dora`` (born 1938, recipient only). Everybody is old enough to redeem under the
default policy (from 60). The policy (:data:`POLICY`) has three service types (``care``
weighs 2, ``shopping`` 1, ``company`` 1.5), one confirmation deposits, services last at
most 8 hours, and lots never expire; pass ``policy=`` for another.

Time is a :class:`ManualClock` starting at :data:`T0` (pass your own): the bank never reads
the wall clock, so a test decides when "now" is.

:func:`make_world` runs the migrations and some twenty writes. To give every test (or every
Hypothesis example) its own world quickly, :func:`sqlite_world` builds one SQLite template
per process and policy and copies the file.
"""

from __future__ import annotations

import atexit
import contextlib
import shutil
import sqlite3
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Final

from sqlalchemy import Engine

from timebank import Ledger
from timebank.bank import MemberView, Policy, ServiceType, ServiceView, TimeBank
from timebank.bank.models import ActsAs

__all__ = [
    "ADMIN",
    "AUDITOR",
    "CONFIRMER",
    "HOME_REGION",
    "INSTITUTION",
    "MEMBERS",
    "POLICY",
    "PROGRAMME",
    "RECORDER",
    "REDEEMER",
    "REGION_ADMIN",
    "SECRET",
    "SPOUSES",
    "STATIONS",
    "T0",
    "ManualClock",
    "World",
    "make_world",
    "sqlite_world",
]

#: When a :class:`ManualClock` starts unless told otherwise.
T0: Final = datetime(2026, 11, 2, 9, 0, tzinfo=UTC)
PROGRAMME: Final = "riverside"
#: The key of the members' identity hashes (a test secret: never use it in production).
SECRET: Final = b"timebank-testing-identity-secret"
POLICY: Final = Policy(
    service_types={
        "care": ServiceType(name="Personal care", weight_permille=2000),
        "shopping": ServiceType(name="Shopping", weight_permille=1000),
        "company": ServiceType(name="Keeping company", weight_permille=1500),
    },
    confirmations_required=1,
    auto_confirm_after_minutes=24 * 60,
    service_minutes_max=8 * 60,
)
#: The stations where services are recorded.
STATIONS: Final = ("station-a", "station-b")
#: Who records, and who confirms, at each station.
RECORDER: Final = {"station-a": "recorder-a", "station-b": "staff-b"}
CONFIRMER: Final = {"station-a": "confirmer-a", "station-b": "staff-b"}
#: Where minutes are redeemed and bookings made, and the operator who does it there.
INSTITUTION: Final = "care-home"
REDEEMER: Final = "redeemer"
#: The programme's administrator (root region), and the county's.
ADMIN: Final = "admin"
REGION_ADMIN: Final = "east-admin"
AUDITOR: Final = "auditor"
#: The region of the members' home station, whose pool receives their donations.
HOME_REGION: Final = "old-town"
#: The members: name -> (birth date, acts_as). Identity is ``"ID-" + name``.
MEMBERS: Final[dict[str, tuple[date, ActsAs]]] = {
    "ann": (date(1960, 5, 1), "both"),
    "bob": (date(1960, 5, 1), "both"),
    "cai": (date(1960, 5, 1), "both"),
    "dora": (date(1938, 3, 3), "recipient"),
}
#: Related members: ann and bob are spouses.
SPOUSES: Final = ("ann", "bob")


class ManualClock:
    """An injectable clock (pass it as ``Ledger.open(url, clock=...)``): time stands still
    until the test moves it with :meth:`advance` or :meth:`set`. Always timezone-aware."""

    def __init__(self, now: datetime = T0) -> None:
        if now.utcoffset() is None:
            raise ValueError("a ManualClock needs a timezone-aware datetime")
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> datetime:
        """Move forward by ``timedelta(**delta)`` (``hours=2``, ``days=1``...); returns now."""
        step = timedelta(**delta)
        if step < timedelta(0):
            raise ValueError("a ManualClock only moves forward")
        self.now += step
        return self.now

    def set(self, now: datetime) -> datetime:
        """Jump to ``now`` (aware, not earlier than the current time)."""
        if now.utcoffset() is None or now < self.now:
            raise ValueError("set the clock to an aware datetime, not in the past")
        self.now = now
        return self.now

    def __repr__(self) -> str:
        return f"ManualClock({self.now.isoformat()})"


@dataclass
class World:
    """A built world: the bank, its clock, and the member ids by name."""

    bank: TimeBank
    clock: ManualClock
    policy: Policy = POLICY
    members: dict[str, int] = field(default_factory=dict)
    programme: str = PROGRAMME

    @property
    def engine(self) -> Engine:
        return self.bank.ledger.engine

    def register(
        self,
        name: str,
        *,
        birth_date: date = date(1960, 5, 1),
        acts_as: ActsAs = "both",
        home_site: str = "station-a",
    ) -> int:
        """Register another member (identity ``"ID-" + name``), known as ``name``."""
        view = self.bank.register_member(
            self.programme,
            identity=f"ID-{name}",
            display_name=name.title(),
            birth_date=birth_date,
            home_site=home_site,
            operator=RECORDER.get(home_site, ADMIN),
            acts_as=acts_as,
        )
        self.members[name] = view.id
        return view.id

    def serve(
        self,
        volunteer: str,
        recipient: str,
        *,
        minutes: int = 60,
        service_type: str = "shopping",
        station: str = "station-a",
        key: str | None = None,
        confirm: bool = True,
    ) -> ServiceView:
        """Record a service of ``minutes`` that ends now, and (by default) confirm it, which
        credits the volunteer. The clock first moves forward by ``minutes``, so services
        recorded one after another never overlap."""
        self.clock.advance(minutes=minutes)
        end = self.clock.now
        service = self.bank.record_service(
            key or f"serve-{volunteer}-{end.isoformat()}",
            programme=self.programme,
            volunteer_id=self.members[volunteer],
            recipient_ids=[self.members[recipient]],
            site=station,
            service_type=service_type,
            started_at=end - timedelta(minutes=minutes),
            ended_at=end,
            operator=RECORDER[station],
        )
        if confirm:
            service = self.bank.confirm_service(service.id, operator=CONFIRMER[station])
        return service

    def member(self, name: str) -> MemberView:
        return self.bank.member(self.members[name])

    def balance(self, name: str) -> int:
        return self.member(name).balance_minutes


def make_world(url: str, *, clock: ManualClock | None = None, policy: Policy = POLICY) -> World:
    """Build the world described in this module in the empty database at ``url`` (migrated
    on the way) and return it. The caller owns it: ``world.bank.dispose()`` when done."""
    clock = clock or ManualClock()
    bank = TimeBank(Ledger.open(url, clock=clock), identity_secrets={PROGRAMME: SECRET})
    try:
        _build(bank, policy)
    except BaseException:
        bank.dispose()
        raise
    world = World(bank, clock, policy)
    for name, (born, acts_as) in MEMBERS.items():
        world.register(name, birth_date=born, acts_as=acts_as)
    bank.relate(
        world.members[SPOUSES[0]], world.members[SPOUSES[1]], "spouse", operator=REGION_ADMIN
    )
    return world


def _build(bank: TimeBank, policy: Policy) -> None:
    p = PROGRAMME
    bank.create_programme(
        p,
        "Riverside time bank",
        policy=policy,
        root_region="north",
        root_region_name="North province",
        administrator=ADMIN,
        administrator_name="Programme administrator",
    )
    bank.add_region(p, "river-city", "River City", level="city", parent="north", operator=ADMIN)
    bank.add_region(p, "east", "East county", level="county", parent="river-city", operator=ADMIN)
    bank.add_region(p, HOME_REGION, "Old Town", level="township", parent="east", operator=ADMIN)
    bank.add_site(
        p,
        "station-a",
        "Old Town social-work station",
        kind="social_work_station",
        region=HOME_REGION,
        operator=ADMIN,
    )
    bank.add_site(
        p,
        "station-b",
        "Old Town volunteer station",
        kind="volunteer_station",
        region=HOME_REGION,
        operator=ADMIN,
    )
    bank.add_site(
        p, INSTITUTION, "Old Town care home", kind="institution", region=HOME_REGION, operator=ADMIN
    )
    bank.add_operator(
        p, REGION_ADMIN, "County administrator", roles=["administrator"], region="east", by=ADMIN
    )
    bank.add_operator(p, AUDITOR, "Auditor", roles=["auditor"], region="east", by=ADMIN)
    bank.add_operator(
        p, "recorder-a", "Recorder", roles=["recorder"], site="station-a", by=REGION_ADMIN
    )
    bank.add_operator(
        p, "confirmer-a", "Confirmer", roles=["confirmer"], site="station-a", by=REGION_ADMIN
    )
    bank.add_operator(
        p,
        "staff-b",
        "Station staff",
        roles=["recorder", "confirmer"],
        site="station-b",
        by=REGION_ADMIN,
    )
    bank.add_operator(
        p, REDEEMER, "Care home desk", roles=["redeemer"], site=INSTITUTION, by=REGION_ADMIN
    )


# --- one SQLite template per process, clock start and policy; copied for each world ---------

_TEMPLATES: dict[tuple[datetime, str], tuple[Path, dict[str, int]]] = {}


def copy_sqlite(source: str | Path, target: str | Path) -> None:
    """The SQLite database ``source`` into a new file ``target`` through SQLite's backup:
    whole and consistent whatever its write-ahead log still holds, where a copy of the file
    alone holds only what was copied back into it."""
    with (
        contextlib.closing(sqlite3.connect(source)) as old,
        contextlib.closing(sqlite3.connect(target)) as new,
    ):
        old.backup(new)


def sqlite_world(
    path: str | Path, *, clock: ManualClock | None = None, policy: Policy = POLICY
) -> World:
    """The world of :func:`make_world` in a new SQLite file at ``path`` (which must not
    exist), copied from a template built once per process (per clock start and policy):
    many times faster than building it again. The template lives in a temporary directory
    removed when the process exits."""
    clock = clock or ManualClock()
    target = Path(path)
    if target.exists():
        raise FileExistsError(f"{target} exists: sqlite_world makes a new database file")
    cache_key = (clock.now, policy.model_dump_json())
    if cache_key not in _TEMPLATES:
        directory = Path(tempfile.mkdtemp(prefix="timebank_world_"))
        atexit.register(shutil.rmtree, directory, ignore_errors=True)
        template = directory / "world.db"
        built = make_world(f"sqlite:///{template}", clock=ManualClock(clock.now), policy=policy)
        built.bank.dispose()
        _TEMPLATES[cache_key] = (template, dict(built.members))
    template, members = _TEMPLATES[cache_key]
    copy_sqlite(template, target)
    bank = TimeBank(
        Ledger.open(f"sqlite:///{target}", clock=clock), identity_secrets={PROGRAMME: SECRET}
    )
    return World(bank, clock, policy, dict(members))
