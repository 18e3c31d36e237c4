"""``timebank demo``: a month of a small province, simulated into a database, then read back
the way its staff would: the simulation's summary, the busiest station's report, the
clearing positions between counties, the guarantee exposure and the invariant checks."""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import timedelta
from typing import TextIO

from timebank.bank import TimeBank
from timebank.simulation import (
    SIMULATION_SECRET,
    DatabaseNotEmptyError,
    Scenario,
    SimulationSummary,
    check_invariants,
    simulate,
)

Say = Callable[[str], object]


def run_demo(url: str, say: Say, *, seed: int = 7, progress: TextIO | None = None) -> bool:
    """Simulate ``Scenario.small_province()`` into the empty database at ``url`` and print
    what it did; whether every invariant held. A database that is not empty raises
    DatabaseNotEmptyError, saying how to start afresh."""
    scenario = Scenario.small_province()
    say(f"timebank demo: {scenario.days} days of a small province, simulated into {url}")
    try:
        summary = simulate(url, scenario, seed=seed, progress=progress or sys.stderr)
    except DatabaseNotEmptyError as error:
        raise DatabaseNotEmptyError(
            f"{error} Pass --db with a new file to start afresh."
        ) from None
    say(summary.render())
    with TimeBank.open(url, identity_secrets={scenario.programme: SIMULATION_SECRET}) as bank:
        _reports(bank, summary, say)
        report = check_invariants(bank, scenario.programme)
    say("")
    say(f"invariants, checked again after the reports: {'ok' if report.ok else 'FAILED'}")
    for problem in report.problems:
        say(f"  {problem}")
    return report.ok


def _reports(bank: TimeBank, summary: SimulationSummary, say: Say) -> None:
    # The summary's end is the last simulated day; a report's period ends the day after.
    programme, start = summary.programme, summary.start
    end = start + timedelta(days=summary.days)
    period = {"start": start, "end": end}
    stations = [
        bank.station_report(programme, site.code, **period)
        for site in bank.sites(programme)
        if site.kind != "institution"
    ]
    busiest = max(stations, key=lambda report: (report.services_confirmed, report.code))
    say("")
    say(busiest.render())
    clearing = bank.clearing(programme, level="county", **period)
    say("")
    say(
        f"Clearing between counties, {start} to {end}: {clearing.redeemed_minutes} minutes "
        f"redeemed, {clearing.local_minutes} where they were earned"
    )
    for position in clearing.positions:
        say(f"  {position.debtor} owes {position.creditor} {position.minutes} min")
    if not clearing.positions:
        say("  every county redeemed only its own minutes")
    exposure = bank.guarantee_exposure(programme, at=end - timedelta(days=1))
    say("")
    say(
        f"Guarantee exposure at the end of {end - timedelta(days=1)}: "
        f"{exposure.total_minutes} min ({exposure.member_minutes} held by "
        f"{exposure.members_with_balance} members, {exposure.pool_minutes} in pools)"
    )
