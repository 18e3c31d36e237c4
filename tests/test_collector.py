"""The collector pause around the library's big builds: it must always hand the collector
back as it found it."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest

from timebank import Ledger
from timebank._collector import paused


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


def test_a_trial_balance_hands_the_collector_back(tmp_path: object) -> None:
    gc.enable()
    ledger = Ledger.open(f"sqlite:///{tmp_path}/tb.db")
    try:
        ledger.open_account("a", "member")
        assert [line.account for line in ledger.trial_balance().lines] == ["a"]
        assert gc.isenabled()
    finally:
        ledger.dispose()
