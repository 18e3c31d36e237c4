"""What a simulation did, and whether the ledger it left holds together."""

from __future__ import annotations

from datetime import date

from pydantic import BaseModel, ConfigDict

from timebank.simulation.invariants import InvariantReport


class SimulationSummary(BaseModel):
    """Counts, minutes and refusals of one run, with the invariant report at its end."""

    model_config = ConfigDict(frozen=True)

    programme: str
    seed: int
    database: str
    workers: int
    #: True for one worker: the same seed and scenario build the same ledger anywhere.
    deterministic: bool
    start: date
    end: date
    days: int
    members: int
    stations: int
    institutions: int
    services_recorded: int
    #: At the desk (by a confirmer or the recipient) and by the daily sweep.
    services_confirmed: int
    services_auto_confirmed: int
    services_rejected: int
    redemptions: int
    gifts: int
    bookings: int
    bookings_completed: int
    bookings_cancelled: int
    bookings_lapsed: int
    donations: int
    grants: int
    expiry_sweeps: int
    lots_expired: int
    duplicates_replayed: int
    #: Deliberately bad commands sent, and those the library accepted (must be 0).
    bad_inputs: int
    bad_inputs_accepted: int
    minutes_deposited: int
    minutes_redeemed: int
    minutes_expired: int
    #: Member and pool balances at the end: what the guarantor stands behind.
    minutes_outstanding: int
    #: Error class name -> how many commands were refused with it (bad input included).
    refusals: dict[str, int]
    operations: int
    seconds: float
    invariants: InvariantReport
    #: Anything the simulation itself noticed (a replay answering another object, a bad
    #: command accepted); empty when all went as expected.
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return self.invariants.ok and not self.problems and self.bad_inputs_accepted == 0

    def render(self) -> str:
        rate = self.operations / self.seconds if self.seconds > 0 else 0.0
        mode = (
            "deterministic" if self.deterministic else f"{self.workers} workers, not deterministic"
        )
        lines = [
            f"simulation of {self.programme!r} (seed {self.seed}, {self.database}, {mode})",
            f"  {self.start} to {self.end}: {self.days} days, {self.members:,} members, "
            f"{self.stations} stations, {self.institutions} institutions",
            f"  services: {self.services_recorded:,} recorded, {self.services_confirmed:,} "
            f"confirmed ({self.services_auto_confirmed:,} by the sweep), "
            f"{self.services_rejected:,} rejected",
            f"  redemptions {self.redemptions:,}, gifts {self.gifts:,}, donations "
            f"{self.donations:,}, grants {self.grants:,}",
            f"  bookings {self.bookings:,}: {self.bookings_completed:,} completed, "
            f"{self.bookings_cancelled:,} cancelled, {self.bookings_lapsed:,} lapsed",
            f"  expiry sweeps {self.expiry_sweeps}, lots expired {self.lots_expired:,}",
            f"  duplicates replayed {self.duplicates_replayed:,}; bad commands "
            f"{self.bad_inputs:,} ({self.bad_inputs_accepted} accepted)",
            f"  minutes: deposited {self.minutes_deposited:,}, redeemed "
            f"{self.minutes_redeemed:,}, expired {self.minutes_expired:,}, outstanding "
            f"{self.minutes_outstanding:,}",
            "  refusals: "
            + (
                ", ".join(f"{name} {count}" for name, count in sorted(self.refusals.items()))
                or "none"
            ),
            f"  {self.operations:,} operations in {self.seconds:,.1f} s ({rate:,.0f}/s)",
            *("  " + line for line in self.invariants.render().splitlines()),
        ]
        lines += [f"  ! {problem}" for problem in self.problems]
        return "\n".join(lines)
