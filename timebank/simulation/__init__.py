"""Seeded simulations of a province's time bank, through the public API.

:func:`simulate` builds a programme from a :class:`Scenario` (regions, stations, care
homes, members and their families, the policy, daily rates) and runs it day by day with the
simulation's own clock (:class:`SimulationClock`) and one seeded generator, then checks the
invariants (:func:`check_invariants`). The same seed and scenario write the same ledger on
SQLite, PostgreSQL and MariaDB::

    from timebank.simulation import Scenario, simulate
    summary = simulate("sqlite:///sim.db", Scenario.small_province(), seed=7, progress=True)
    print(summary.render())
"""

from timebank.simulation._world import SIMULATION_SECRET
from timebank.simulation.clock import SimulationClock
from timebank.simulation.invariants import InvariantReport, check_invariants
from timebank.simulation.progress import Progress
from timebank.simulation.run import DatabaseNotEmptyError, simulate
from timebank.simulation.scenario import DEFAULT_POLICY, Population, Rates, Regions, Scenario
from timebank.simulation.summary import SimulationSummary

__all__ = [
    "DEFAULT_POLICY",
    "SIMULATION_SECRET",
    "DatabaseNotEmptyError",
    "InvariantReport",
    "Population",
    "Progress",
    "Rates",
    "Regions",
    "Scenario",
    "SimulationClock",
    "SimulationSummary",
    "check_invariants",
    "simulate",
]
