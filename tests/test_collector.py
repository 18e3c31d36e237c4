"""The collector pause around the library's big builds: it must always hand the collector
back as it found it."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest

from timebank import Ledger, _reads
from timebank._collector import paused
from timebank.models import TrialBalanceLine


@pytest.fixture(autouse=True)
def _collector_restored() -> Iterator[None]:
    was = gc.isenabled()
    yield
    if was:
        gc.enable()
    else:
        gc.disable()


def test_the_collector_is_paused_inside_and_enabled_after() -> None:
    gc.enable()
    with paused():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_the_collector_is_enabled_again_when_the_block_raises() -> None:
    gc.enable()
    with pytest.raises(ZeroDivisionError), paused():
        _ = 1 / 0
    assert gc.isenabled()


def test_a_collector_the_application_disabled_stays_disabled() -> None:
    gc.disable()
    with paused():
        assert not gc.isenabled()
    assert not gc.isenabled()


def test_a_nested_pause_leaves_the_outer_one_paused() -> None:
    gc.enable()
    with paused():
        with paused():
            pass
        assert not gc.isenabled()
    assert gc.isenabled()


def test_a_trial_balance_builds_its_lines_paused_and_hands_the_collector_back(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    built_while: list[bool] = []

    def line(**fields: Any) -> TrialBalanceLine:
        built_while.append(gc.isenabled())
        return TrialBalanceLine(**fields)

    monkeypatch.setattr(_reads, "TrialBalanceLine", line)
    gc.enable()
    ledger = Ledger.open(f"sqlite:///{tmp_path}/tb.db")
    try:
        ledger.open_account("a", "member")
        ledger.open_account("b", "member")
        assert [line.account for line in ledger.trial_balance().lines] == ["a", "b"]
        assert built_while == [False, False]
        assert gc.isenabled()
    finally:
        ledger.dispose()
