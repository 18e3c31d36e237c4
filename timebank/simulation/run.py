"""``simulate``: build a programme and run it day by day."""

from __future__ import annotations

import queue
import random
import sys
import time as timer
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta
from typing import TextIO

from sqlalchemy import Connection, func, select

from timebank.bank.api import TimeBank
from timebank.bank.schema import programmes
from timebank.errors import InvalidInputError
from timebank.ledger import Ledger
from timebank.schema import accounts
from timebank.simulation._days import StationDay, evening, sweeps
from timebank.simulation._world import SIMULATION_SECRET, Station, Tally, World, build
from timebank.simulation.clock import SimulationClock
from timebank.simulation.invariants import check_invariants
from timebank.simulation.progress import Progress
from timebank.simulation.scenario import Scenario
from timebank.simulation.summary import SimulationSummary


class DatabaseNotEmptyError(InvalidInputError):
    """The simulation builds its programme in an empty database (or a new programme)."""


def simulate(
    target: str | TimeBank,
    scenario: Scenario,
    *,
    seed: int,
    progress: bool | TextIO = False,
    workers: int = 1,
) -> SimulationSummary:
    """Build ``scenario``'s programme and run its days; end with :func:`check_invariants`.

    ``target`` is a database URL (it must be empty: it is created at the schema's head) or a
    :class:`TimeBank` opened with ``clock=SimulationClock(...)`` (the simulation moves it)
    and ``identity_secrets={scenario.programme: SIMULATION_SECRET}``, which must not
    hold the programme yet.

    With one worker the run is deterministic: the same ``seed`` and ``scenario`` write the
    same ledger (entries, keys, amounts, times, balances) on any database. With
    ``workers > 1`` (PostgreSQL or MariaDB) the stations' work of each day runs in that many
    threads, each with its own connection; days stay in order, but the interleaving (and so
    which command meets which balance) is not reproducible: only the invariants are
    promised. ``progress`` writes a progress bar to stderr (``True``) or to a stream.
    """
    if type(workers) is not int or workers < 1:
        raise InvalidInputError("workers: a positive integer")
    stream = sys.stderr if progress is True else progress or None
    if isinstance(target, TimeBank):
        bank, owned = _adopt(target, scenario), False
        clock = bank.ledger.clock
        assert isinstance(clock, SimulationClock)
        clock.move_to(scenario.first_moment)
    else:
        clock = SimulationClock(scenario.first_moment)
        bank, owned = _fresh(target, scenario, clock), True
    try:
        database = bank.ledger.engine.dialect.name
        if workers > 1 and database == "sqlite":
            raise InvalidInputError(
                "workers > 1 needs PostgreSQL or MariaDB (SQLite writes one at a time)"
            )
        return _Run(bank, clock, scenario, seed=seed, workers=workers, stream=stream).run()
    finally:
        if owned:
            bank.dispose()


def _fresh(url: str, scenario: Scenario, clock: SimulationClock) -> TimeBank:
    bank = TimeBank(
        Ledger.open(url, clock=clock), identity_secrets={scenario.programme: SIMULATION_SECRET}
    )
    try:
        if bank._read(_has_accounts):
            raise DatabaseNotEmptyError(
                f"the database at {bank.ledger.engine.url!r} already holds a ledger: the "
                "simulation needs an empty database (or pass a TimeBank to add a programme)"
            )
    except BaseException:
        bank.dispose()
        raise
    return bank


def _adopt(bank: TimeBank, scenario: Scenario) -> TimeBank:
    if not isinstance(bank.ledger.clock, SimulationClock):
        raise InvalidInputError(
            "the TimeBank must be opened with clock=SimulationClock(...): the simulation "
            "moves the ledger's clock through its days"
        )
    bank._secret(scenario.programme)  # InvalidInputError when it was not given
    code = scenario.programme
    if bank._read(
        lambda conn: (
            conn.execute(select(programmes.c.id).where(programmes.c.code == code)).first()
            is not None
        )
    ):
        raise DatabaseNotEmptyError(f"programme {code!r} already exists in this database")
    return bank


def _has_accounts(conn: Connection) -> bool:
    return conn.execute(select(accounts.c.id).limit(1)).first() is not None


class _Run:
    def __init__(
        self,
        bank: TimeBank,
        clock: SimulationClock,
        scenario: Scenario,
        *,
        seed: int,
        workers: int,
        stream: TextIO | None,
    ) -> None:
        self.bank, self.clock, self.scenario = bank, clock, scenario
        self.seed, self.workers, self.stream = seed, workers, stream
        self.rng = random.Random(seed)
        self.tally = Tally()

    def run(self) -> SimulationSummary:
        started = timer.perf_counter()
        registering = (
            Progress(self.scenario.members, self.stream, label="members registered")
            if self.stream
            else None
        )
        world = build(self.bank, self.scenario, self.rng, self.tally, registering)
        progress = Progress(self.scenario.days, self.stream) if self.stream else None
        with self._banks() as banks:
            for number in range(self.scenario.days):
                self._day(world, number, banks)
                if progress is not None:
                    progress.update(number + 1, operations=self.tally.counts["operations"])
        if progress is not None:
            progress.close()
        return self._summary(world, timer.perf_counter() - started)

    @contextmanager
    def _banks(self) -> Iterator[queue.SimpleQueue[TimeBank]]:
        """One TimeBank per worker, each on its own connection of the same engine."""
        banks: queue.SimpleQueue[TimeBank] = queue.SimpleQueue()
        if self.workers == 1:
            banks.put(self.bank)
        else:
            secrets = {self.scenario.programme: SIMULATION_SECRET}
            for _ in range(self.workers):
                ledger = Ledger(self.bank.ledger.engine, clock=self.clock, check_schema=False)
                banks.put(TimeBank(ledger, identity_secrets=secrets))
        yield banks

    def _day(self, world: World, number: int, banks: queue.SimpleQueue[TimeBank]) -> None:
        day = self.scenario.start + timedelta(days=number)
        # Each station gets its own generator, seeded from the run's, in a fixed order.
        seeds = [self.rng.getrandbits(64) for _ in world.stations]
        self.clock.at(day, 18, zone=world.zone)

        def station_day(station: Station, station_seed: int) -> Tally:
            bank = banks.get()
            try:
                return StationDay(bank, world, station, day, random.Random(station_seed)).run()
            finally:
                banks.put(bank)

        if self.workers == 1:
            tallies = [station_day(s, n) for s, n in zip(world.stations, seeds, strict=True)]
        else:
            with ThreadPoolExecutor(max_workers=self.workers) as pool:
                tallies = list(pool.map(station_day, world.stations, seeds))
        for tally in tallies:
            self.tally.merge(tally)
        self.clock.at(day, 20, zone=world.zone)
        self.tally.merge(evening(self.bank, world, day, rng=self.rng, now=self.clock))
        if (number + 1) % self.scenario.rates.expiry_sweep_every_days == 0:
            self.clock.at(day, 21, zone=world.zone)
            self.tally.merge(sweeps(self.bank, world, self.clock))

    def _summary(self, world: World, seconds: float) -> SimulationSummary:
        invariants = check_invariants(self.bank, world.code)
        by_type = dict(
            self.bank._read(
                lambda conn: conn.execute(
                    select(accounts.c.type, func.sum(accounts.c.posted_minutes)).group_by(
                        accounts.c.type
                    )
                ).all()
            )
        )
        minutes = {str(k): int(v) for k, v in by_type.items()}
        counts = self.tally.counts
        return SimulationSummary(
            programme=world.code,
            seed=self.seed,
            database=self.bank.ledger.engine.dialect.name,
            workers=self.workers,
            deterministic=self.workers == 1,
            start=self.scenario.start,
            end=self.scenario.start + timedelta(days=self.scenario.days - 1),
            days=self.scenario.days,
            members=len(world.members),
            stations=len(world.stations),
            institutions=len(world.institutions),
            services_recorded=counts["services_recorded"],
            services_confirmed=counts["services_confirmed"] + counts["services_auto_confirmed"],
            services_auto_confirmed=counts["services_auto_confirmed"],
            services_rejected=counts["services_rejected"],
            redemptions=counts["redemptions"] + counts["bookings_completed"],
            gifts=counts["gifts"],
            bookings=counts["bookings"],
            bookings_completed=counts["bookings_completed"],
            bookings_cancelled=counts["bookings_cancelled"],
            bookings_lapsed=counts["bookings_lapsed"],
            donations=counts["donations"],
            grants=counts["grants"],
            expiry_sweeps=counts["expiry_sweeps"],
            lots_expired=counts["lots_expired"],
            duplicates_replayed=counts["duplicates_replayed"],
            bad_inputs=counts["bad_inputs"],
            bad_inputs_accepted=counts["bad_inputs_accepted"],
            minutes_deposited=-minutes.get("station_issued", 0),
            minutes_redeemed=minutes.get("site_redeemed", 0),
            minutes_expired=minutes.get("programme_expired", 0),
            minutes_outstanding=minutes.get("member", 0) + minutes.get("region_pool", 0),
            refusals=dict(sorted(self.tally.refusals.items())),
            operations=counts["operations"],
            seconds=round(seconds, 3),
            invariants=invariants,
            problems=tuple(self.tally.problems),
        )
