"""The set-based rounds of ``benchmarks/set_based_spike.py`` decide what the rules decide row
by row, on any history, not only on W.

The spike is the evidence for issue 10's design (the import's rules judged in the database
with set-based SQL): on W it matched the library's bulk import row for row. W is one history
with ordered dates and few gifts; these properties draw small histories that W never shows
(a handful of members giving to each other, earned dates out of order, overlapping services,
a storage cap drawn small enough to bite, refusing or diverting to the pool, a gift limit,
two calendar years, batches of any size) and require the spike's refusals with their
reasons, balances, lots, lot uses and pool lots to be the sequential reference's, on SQLite
and on PostgreSQL.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Literal

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import make_url

# A benchmark script, not part of the package: found on its own folder's path.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import set_based_spike as spike

YEARS = (2025, 2026)
#: Member 0 earns 100 minutes and gives 60 to member 1, who gives them on to member 2, who
#: redeems 50; then member 0 gives 60 again (short), member 1 gives 30 (short once that is
#: refused), member 2 redeems 20 (short once that is refused): three rounds of refusals.
CHAIN: list[spike.Row] = [
    (0, "d", 0, None, 100, 1, 2026, 0, 100),
    (1, "g", 0, 1, 60, 1, 2026, None, None),
    (2, "g", 1, 2, 60, 1, 2026, None, None),
    (3, "r", 2, None, 50, 1, 2026, None, None),
    (4, "g", 0, 1, 60, 1, 2026, None, None),
    (5, "g", 1, 2, 30, 1, 2026, None, None),
    (6, "r", 2, None, 20, 1, 2026, None, None),
]


@st.composite
def histories(draw: st.DrawFn) -> tuple[list[spike.Row], spike.Scenario, int]:
    """Rows in file order, the policy's limits, and the batch size."""
    members = draw(st.integers(2, 5))
    count = draw(st.integers(1, 60))
    rows: list[spike.Row] = []
    for seq in range(count):
        kind = draw(st.sampled_from("ddrg"))
        member = draw(st.integers(0, members - 1))
        minutes = draw(st.integers(1, 150) | st.integers(1, 4))  # small ones meet edges
        day = draw(st.integers(0, 4))  # earned dates out of order and tied
        year = YEARS[seq * len(YEARS) // count]
        if kind == "d":
            ended = draw(st.integers(0, 600))
            rows.append((seq, "d", member, None, minutes, day, year, ended - minutes, ended))
        elif kind == "r":
            rows.append((seq, "r", member, None, minutes, day, year, None, None))
        else:
            other = draw(st.sampled_from([m for m in range(members) if m != member]))
            rows.append((seq, "g", member, other, minutes, day, year, None, None))
    scenario = spike.Scenario(
        "drawn",
        cap=draw(st.none() | st.integers(100, 500) | st.integers(1, 8)),
        gift_limit=draw(st.none() | st.integers(20, 300)),
        cap_excess=draw(st.sampled_from(["refuse", "pool"])),
    )
    return rows, scenario, draw(st.integers(1, 25))


def check(url: str, history: tuple[list[spike.Row], spike.Scenario, int]) -> spike.Measured:
    """The spike's decisions on ``history`` are the reference's; returns the spike's run."""
    rows, scenario, batch_rows = history
    backend: Literal["sqlite", "postgres"] = (
        "postgres" if url.startswith("postgresql") else "sqlite"
    )
    measured = spike.decide(backend, make_url(url), rows, scenario, batch_rows)
    found = measured.outcome
    expected = spike.reference(rows, scenario)
    assert found.refused == expected.refused
    assert {m: b for m, b in found.balances.items() if b} == {
        m: b for m, b in expected.balances.items() if b
    }
    assert sorted(found.lots) == sorted(expected.lots)
    assert sorted(found.uses) == sorted(expected.uses)
    assert sorted(found.pooled) == sorted(expected.pooled)
    return measured


# One database for every example: the spike makes its tables again for each.
_QUIET = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]


@settings(max_examples=120, deadline=None, suppress_health_check=_QUIET)
@given(history=histories())
def test_rounds_decide_what_the_rules_decide_on_sqlite(
    sqlite_url: str, history: tuple[list[spike.Row], spike.Scenario, int]
) -> None:
    check(sqlite_url, history)


# Fewer on PostgreSQL: the same rounds in its dialect, and each example's tables cost a few
# tenths of a second to make there (36 s for 120 examples in CI beside the other tests).
@settings(max_examples=40, deadline=None, suppress_health_check=_QUIET)
@given(history=histories())
def test_rounds_decide_what_the_rules_decide_on_postgres(
    postgres_url: str, history: tuple[list[spike.Row], spike.Scenario, int]
) -> None:
    check(postgres_url, history)


def test_the_reference_refuses_the_chain_row_by_row() -> None:
    """The reference itself, on the chain worked out by hand."""
    expected = spike.reference(CHAIN, spike.PLAIN)
    assert expected.refused == {4: "short of minutes", 5: "short of minutes",
                                6: "short of minutes"}


def test_rounds_follow_the_chain(tmp_path: Path) -> None:
    """The chain through the SQL in one batch: a round for each refusal, as each waits for
    the one before it (and a last round that finds nothing); and a row a batch."""
    whole = check(f"sqlite:///{tmp_path / 'whole.db'}", (CHAIN, spike.PLAIN, len(CHAIN)))
    assert whole.refusal_rounds == [4]
    single = check(f"sqlite:///{tmp_path / 'single.db'}", (CHAIN, spike.PLAIN, 1))
    assert single.refusal_rounds == [1, 1, 1, 1, 2, 2, 2]
